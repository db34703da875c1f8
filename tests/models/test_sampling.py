from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cfaudit.errors import CfauditError
from cfaudit.models.loading import load_components
from cfaudit.models.sampling import sample_images, write_samples


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_components(tiny_model_dir)


def test_each_image_depends_on_its_own_seed_only(tiny) -> None:
    together = sample_images(tiny, ["a", "b", "a"], [1, 2, 1], steps=3, guidance=3.0, batch_size=3)
    alone = sample_images(tiny, ["b"], [2], steps=3, guidance=3.0)
    assert together.shape == (3, 1, 128, 128)
    assert float(together.min()) >= 0.0 and float(together.max()) <= 1.0
    assert torch.allclose(together[1], alone[0], atol=1e-5)
    assert torch.allclose(together[0], together[2], atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_guidance_changes_the_result(tiny) -> None:
    plain = sample_images(tiny, ["a"], [0], steps=2, guidance=1.0)
    guided = sample_images(tiny, ["a"], [0], steps=2, guidance=5.0)
    assert not torch.allclose(plain, guided)


def test_bad_arguments(tiny) -> None:
    with pytest.raises(CfauditError, match="one seed per image"):
        sample_images(tiny, ["a", "b"], [0], steps=2)
    with pytest.raises(CfauditError, match="at least 1"):
        sample_images(tiny, ["a"], [0], steps=0)


def test_write_samples_files(tiny_model_dir: Path, tmp_path: Path) -> None:
    import json

    from cfaudit.data.images import load_image

    record = write_samples(
        str(tiny_model_dir), ["x", "y"], tmp_path / "out", n=2, seed=5, steps=2, guidance=2.0
    )
    assert [e["seed"] for e in record["images"]] == [5, 6, 5, 6]
    assert [e["prompt"] for e in record["images"]] == ["x", "x", "y", "y"]
    saved = json.loads((tmp_path / "out" / "samples.json").read_text())
    assert saved["images"] == record["images"] and saved["steps"] == 2
    assert load_image(tmp_path / "out" / record["images"][3]["file"]).shape == (128, 128)


def test_write_samples_resolves_the_device_as_every_command_does(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # one rule for --device (cfaudit.devices): a name torch does not know is one clear error, before any work
    with pytest.raises(CfauditError, match="unknown device 'gpu0'"):
        write_samples(str(tiny_model_dir), ["x"], tmp_path / "out", steps=1, device="gpu0")
    assert not (tmp_path / "out").exists()
