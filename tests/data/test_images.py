import numpy as np
import pytest
from PIL import Image

from cfaudit.data.images import (
    load_image,
    resize_and_crop,
    save_image,
    to_model_tensor,
    to_uint,
    verify_image,
)
from cfaudit.errors import CfauditError


@pytest.fixture
def ramp() -> np.ndarray:
    return np.linspace(0.0, 1.0, 40 * 30, dtype=np.float32).reshape(40, 30)


@pytest.mark.parametrize(
    ("bits", "suffix", "tolerance"), [(8, ".png", 0.5 / 255), (16, ".png", 0.5 / 65535), (8, ".jpg", 0.02)]
)
def test_round_trip_keeps_intensities(tmp_path, ramp, bits, suffix, tolerance):
    path = tmp_path / f"ramp{suffix}"
    save_image(ramp, path, bits=bits)
    loaded = load_image(path)
    assert loaded.dtype == np.float32 and loaded.shape == ramp.shape
    assert np.abs(loaded - ramp).max() <= tolerance + 1e-7


def test_sixteen_bit_scaled_by_bit_depth_not_by_content(tmp_path):
    pixels = np.full((16, 16), 1000, dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "dark16.png")
    assert load_image(tmp_path / "dark16.png") == pytest.approx(np.full((16, 16), 1000 / 65535), abs=1e-7)


def test_colour_becomes_luminance(tmp_path):
    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8), mode="RGB").save(tmp_path / "rgb.png")
    assert load_image(tmp_path / "rgb.png") == pytest.approx(np.full((16, 16), 128 / 255))


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(CfauditError, match="no such image file"):
        load_image(tmp_path / "absent.png")
    fake = tmp_path / "text.png"
    fake.write_text("not an image")
    with pytest.raises(CfauditError, match=r"text\.png: cannot decode"):
        verify_image(fake)
    truncated = tmp_path / "truncated.png"
    save_image(np.random.default_rng(0).random((64, 64)), truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(CfauditError, match=r"truncated\.png"):
        load_image(truncated)


def test_resize_and_crop_is_centred_square(ramp):
    out = resize_and_crop(ramp, 16)
    assert out.shape == (16, 16)
    # The ramp increases row by row; a centred crop keeps the middle rows' mean near 0.5.
    assert out.mean() == pytest.approx(0.5, abs=0.05)
    assert out[0].mean() < out[-1].mean()


def test_model_tensor_range(ramp):
    tensor = to_model_tensor(ramp, 8)
    assert tuple(tensor.shape) == (1, 8, 8)
    assert -1.0 <= float(tensor.min()) < -0.5 and 0.5 < float(tensor.max()) <= 1.0


def test_to_uint_clips_and_rounds():
    assert to_uint(np.array([-0.5, 0.5, 2.0])).tolist() == [0, 128, 255]
    assert to_uint(np.array([1.0]), bits=16).tolist() == [65535]


def test_unsupported_suffix(tmp_path, ramp):
    with pytest.raises(CfauditError, match="unsupported image suffix"):
        save_image(ramp, tmp_path / "x.bmp")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 1), r"only 1x1 pixels .*at least 16 pixels a side"),
        ((8, 8), r"only 8x8 pixels"),
        ((3, 2000), r"only 2000x3 pixels"),
        ((300, 2000), r"2000x300 pixels .*more than 4:1 apart"),
        ((2000, 400), r"400x2000 pixels .*more than 4:1 apart"),
    ],
)
def test_degenerate_sizes_are_refused_naming_file_and_size(tmp_path, shape, message):
    path = tmp_path / "odd.png"
    Image.fromarray(np.full(shape, 100, dtype=np.uint8)).save(path)
    with pytest.raises(CfauditError, match=rf"odd\.png: .*{message}"):
        load_image(path)


@pytest.mark.parametrize(
    ("shape", "bits"), [((16, 16), 8), ((64, 256), 8), ((512, 512), 8), ((3056, 2544), 16)]
)
def test_small_square_phantom_and_real_xray_sizes_load(tmp_path, shape, bits):
    path = tmp_path / "ok.png"
    save_image(np.random.default_rng(0).random(shape, dtype=np.float32), path, bits=bits)
    assert load_image(path).shape == shape


def test_transparent_pixels_are_refused_and_an_opaque_alpha_is_dropped(tmp_path):
    grey = np.full((32, 32, 3), 100, dtype=np.uint8)
    alpha = np.full((32, 32, 1), 255, dtype=np.uint8)
    Image.fromarray(np.concatenate([grey, alpha], axis=2), mode="RGBA").save(tmp_path / "opaque.png")
    assert load_image(tmp_path / "opaque.png") == pytest.approx(np.full((32, 32), 100 / 255))
    alpha[:16] = 0
    Image.fromarray(np.concatenate([grey, alpha], axis=2), mode="RGBA").save(tmp_path / "clear.png")
    with pytest.raises(
        CfauditError, match=r"clear\.png: 50% of the image's pixels are transparent .*mode RGBA"
    ):
        load_image(tmp_path / "clear.png")
    Image.fromarray(np.full((32, 32), 7, dtype=np.uint8)).save(tmp_path / "keyed.png", transparency=7)
    with pytest.raises(CfauditError, match=r"keyed\.png: 100% .*transparent"):
        load_image(tmp_path / "keyed.png")


def test_the_bad_image_hint_names_flags_that_data_index_has(tmp_path, capsys):
    from cfaudit.cli.main import main

    fake = tmp_path / "text.png"
    fake.write_text("not an image")
    with pytest.raises(CfauditError) as caught:
        load_image(fake)
    message = str(caught.value)
    # shown by edit, evaluate and report, which have no --on-bad-row: the hint names the command that has it
    assert message.endswith(
        "replace the file; if it is an image of a data set, `cfaudit data index --check-images decode "
        "--on-bad-row skip` leaves such images out of the index"
    )
    assert main(["data", "index", "--help"]) == 0
    usage = capsys.readouterr().out
    assert "--check-images" in usage and "decode" in usage and "--on-bad-row" in usage and "skip" in usage
