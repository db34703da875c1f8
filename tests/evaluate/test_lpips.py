"""LPIPS v0.1 AlexNet: the authors' known answers, and the properties the metric must have."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cfaudit.errors import CfauditError
from cfaudit.models import lpips_weights
from cfaudit.models.lpips import LPIPS

FIXTURES = Path(__file__).parent / "fixtures" / "lpips"


@pytest.fixture(scope="module")
def model() -> LPIPS:
    torch.set_num_threads(1)
    # Downloads and converts once per machine (cached under cfaudit's cache folder); CI runs
    # `cfaudit assets fetch` before the tests.
    path = lpips_weights.fetch_lpips_weights()
    return LPIPS.from_pretrained(path)


def read_rgb(name: str) -> torch.Tensor:
    pixels = np.asarray(Image.open(FIXTURES / f"{name}.png").convert("RGB"), dtype=np.float32)
    return torch.from_numpy(pixels / 127.5 - 1.0).permute(2, 0, 1).unsqueeze(0)


def test_known_answers_of_the_lpips_authors(model: LPIPS) -> None:
    ref, p0, p1 = read_rgb("ex_ref"), read_rgb("ex_p0"), read_rgb("ex_p1")
    distances = model(torch.cat([ref, ref, ref]), torch.cat([p0, p1, ref]))
    assert distances.shape == (3,)
    assert distances[0].item() == pytest.approx(0.7219, abs=5e-4)
    assert distances[1].item() == pytest.approx(0.1376, abs=5e-4)
    assert distances[2].item() == 0.0


def test_batched_equals_one_pair_at_a_time(model: LPIPS) -> None:
    ref, p0, p1 = read_rgb("ex_ref"), read_rgb("ex_p0"), read_rgb("ex_p1")
    batched = model(torch.cat([p0, p1]), torch.cat([ref, ref]))
    single = torch.stack([model(p0, ref)[0], model(p1, ref)[0]])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    # symmetric in its two arguments
    torch.testing.assert_close(model(ref, p0), model(p0, ref), rtol=1e-5, atol=1e-6)


def test_grayscale_is_repeated_to_three_channels(model: LPIPS) -> None:
    generator = torch.Generator().manual_seed(0)
    gray_a = torch.rand(2, 1, 48, 48, generator=generator) * 2 - 1
    gray_b = (gray_a + 0.2 * torch.randn(2, 1, 48, 48, generator=generator)).clamp(-1, 1)
    as_gray = model(gray_a, gray_b)
    as_rgb = model(gray_a.repeat(1, 3, 1, 1), gray_b.repeat(1, 3, 1, 1))
    as_hw = model(gray_a[:, 0], gray_b[:, 0])
    torch.testing.assert_close(as_gray, as_rgb)
    torch.testing.assert_close(as_gray, as_hw)
    assert (as_gray > 0).all()


def test_identical_is_zero_and_distance_grows_with_noise(model: LPIPS) -> None:
    generator = torch.Generator().manual_seed(1)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 96), torch.linspace(-1, 1, 96), indexing="ij")
    base = (0.6 * torch.exp(-(xs**2 + ys**2) * 3) - 0.3).view(1, 1, 96, 96)
    noise = torch.randn(1, 1, 96, 96, generator=generator)
    levels = [0.0, 0.02, 0.05, 0.1, 0.2, 0.4]
    noisy = torch.cat([(base + level * noise).clamp(-1, 1) for level in levels])
    distances = model(base.expand(len(levels), -1, -1, -1), noisy)
    assert distances[0].item() == 0.0
    assert torch.all(distances[1:] > distances[:-1]), distances


def test_inputs_outside_minus_one_to_one_are_refused(model: LPIPS) -> None:
    image = torch.full((1, 1, 64, 64), 128.0)
    with pytest.raises(CfauditError, match=r"\[-1, 1\]"):
        model(image, image)
    with pytest.raises(CfauditError, match="shape"):
        model(torch.zeros(1, 2, 64, 64), torch.zeros(1, 2, 64, 64))


def test_state_dict_follows_torchvision_and_lpips_names(model: LPIPS) -> None:
    state = model.state_dict()
    assert set(state) == set(lpips_weights.expected_shapes())
    assert tuple(state["features.0.weight"].shape) == (64, 3, 11, 11)
    assert tuple(state["lins.4.weight"].shape) == (1, 256, 1, 1)
    # the learned heads are non-negative channel weights (LPIPS clamps them at training time)
    assert all((state[f"lins.{i}.weight"] >= 0).all() for i in range(5))


def test_missing_weights_name_the_file_and_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CFAUDIT_HOME", str(tmp_path))
    with pytest.raises(CfauditError) as error:
        LPIPS.from_pretrained()
    message = str(error.value)
    assert str(tmp_path / "lpips" / "alexnet_v0.1.safetensors") in message
    assert "cfaudit assets fetch" in message


def test_weights_with_wrong_tensors_are_refused(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"features.0.weight": np.zeros((64, 3, 5, 5), dtype=np.float32)}, str(path))
    with pytest.raises(CfauditError, match="do not match"):
        lpips_weights.load_lpips_state(path)


class _Shell:
    def __reduce__(self):
        import os

        return (os.system, ("echo should-never-run",))


def test_unpickler_refuses_anything_but_numpy_arrays() -> None:
    hostile = pickle.dumps({"AlexNet_0": _Shell()})
    with pytest.raises(CfauditError, match="not allowed"):
        lpips_weights.load_numpy_pickle(hostile, "hostile.ckpt")
    integers = pickle.dumps({"a": np.arange(3)})
    with pytest.raises(CfauditError, match="floating point"):
        lpips_weights.load_numpy_pickle(integers, "ints.ckpt")
    plain = pickle.dumps({"a": {"kernel": np.ones((1, 1, 2, 3), dtype=np.float32)}})
    tree = lpips_weights.load_numpy_pickle(plain, "plain.ckpt")
    assert tree["a"]["kernel"].shape == (1, 1, 2, 3)


def test_flax_kernels_are_transposed_to_oihw() -> None:
    rng = np.random.default_rng(0)
    params: dict = {"AlexNet_0": {}}
    for conv, (out_c, in_c, kh, kw) in enumerate(lpips_weights.TRUNK_CONVS.values()):
        params["AlexNet_0"][f"Conv_{conv}"] = {
            "kernel": rng.standard_normal((kh, kw, in_c, out_c)).astype(np.float32),
            "bias": rng.standard_normal(out_c).astype(np.float32),
        }
    for tap, channels in enumerate(lpips_weights.TAP_CHANNELS):
        params[f"NetLinLayer_{tap}"] = {"Conv_0": {"kernel": np.ones((1, 1, channels, 1), np.float32)}}
    state = lpips_weights.convert_flax_alexnet(params)
    kernel = params["AlexNet_0"]["Conv_1"]["kernel"]
    assert state["features.3.weight"].shape == (192, 64, 5, 5)
    assert state["features.3.weight"][7, 2, 1, 4] == kernel[1, 4, 2, 7]
    assert state["lins.2.weight"].shape == (1, 384, 1, 1)
    del params["NetLinLayer_3"]
    with pytest.raises(CfauditError, match="NetLinLayer_3"):
        lpips_weights.convert_flax_alexnet(params)
