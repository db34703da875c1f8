from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cfaudit.errors import CfauditError
from cfaudit.models.loading import check_pipeline_folder, load_components, resolve_model
from cfaudit.models.random_init import build_random


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_round_trip_keeps_every_weight(tiny_model_dir: Path) -> None:
    original = build_random("tiny", seed=0)
    loaded = load_components(tiny_model_dir)
    for name in ("unet", "vae", "text_encoder"):
        mine, theirs = getattr(original, name).state_dict(), getattr(loaded, name).state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert loaded.prediction_type == "epsilon" and loaded.resolution == 128 and loaded.image_channels == 1
    assert not any(p.requires_grad for p in loaded.unet.parameters())
    assert type(loaded.noise_scheduler).__name__ == "DDPMScheduler"
    assert loaded.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert (
        json.loads((tiny_model_dir / "model_index.json").read_text())["_class_name"]
        == "StableDiffusionPipeline"
    )


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("unet", "missing unet/config.json"),
        ("vae/diffusion_pytorch_model.safetensors", "missing vae/diffusion_pytorch_model.safetensors"),
        ("text_encoder/model.safetensors", "missing text_encoder/model.safetensors"),
        ("tokenizer", "missing tokenizer/"),
        ("scheduler", "missing scheduler/scheduler_config.json"),
    ],
)
def test_partial_folder_names_what_is_missing(
    tiny_model_dir: Path, tmp_path: Path, remove: str, message: str
) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    target = folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(CfauditError, match=message):
        load_components(folder)


def test_pickle_weights_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").rename(
        folder / "unet" / "diffusion_pytorch_model.bin"
    )
    with pytest.raises(CfauditError, match="only pickle weights"):
        check_pipeline_folder(folder)


def test_truncated_weights_are_not_filled_with_random_values(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    for part, name in (
        ("text_encoder", "model.safetensors"),
        ("unet", "diffusion_pytorch_model.safetensors"),
    ):
        path = folder / part / name
        weights = load_file(str(path))
        dropped = sorted(weights)[len(weights) // 2]
        save_file({k: v for k, v in weights.items() if k != dropped}, str(path), metadata={"format": "pt"})
        with pytest.raises(CfauditError, match=f"{part}: weights file is partial.*{dropped}"):
            load_components(folder)
        save_file(weights, str(path), metadata={"format": "pt"})


def test_unknown_model_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CfauditError, match="no such model folder"):
        load_components(tmp_path / "nowhere")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CfauditError, match="not in the local hub cache"):
        resolve_model("someone/not-a-cached-model")


def test_v_prediction_model_loads_as_such(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "m")
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    assert load_components(folder).prediction_type == "v_prediction"


def test_saved_pipeline_folder_has_normal_permissions(tiny_model_dir: Path) -> None:
    import os
    import stat

    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(tiny_model_dir.stat().st_mode) == 0o777 & ~mask  # not mkdtemp's private 0700
    weights = tiny_model_dir / "unet" / "diffusion_pytorch_model.safetensors"
    assert stat.S_IMODE(weights.stat().st_mode) == 0o666 & ~mask
