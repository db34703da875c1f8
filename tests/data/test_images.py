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
    pixels = np.full((8, 8), 1000, dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "dark16.png")
    assert load_image(tmp_path / "dark16.png") == pytest.approx(np.full((8, 8), 1000 / 65535), abs=1e-7)


def test_colour_becomes_luminance(tmp_path):
    Image.fromarray(np.full((4, 4, 3), 128, dtype=np.uint8), mode="RGB").save(tmp_path / "rgb.png")
    assert load_image(tmp_path / "rgb.png") == pytest.approx(np.full((4, 4), 128 / 255))


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
