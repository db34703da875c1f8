from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cfaudit.errors import CfauditError
from cfaudit.models.loading import load_components
from cfaudit.train.config import VaeTrainConfig
from cfaudit.train.vae import train_vae


def test_vae_training_lowers_the_loss_and_sets_the_latent_scale(
    tiny_model_dir: Path, tiny_index: Path, tmp_path: Path
) -> None:
    config = VaeTrainConfig(model=str(tiny_model_dir), index=str(tiny_index), output_dir=str(tmp_path / "vae"),
                            resolution=32, max_steps=30, batch_size=4, learning_rate=3e-3)  # fmt: skip
    result = train_vae(config, progress=False)
    assert result.step == 30
    assert sum(result.losses[-5:]) < sum(result.losses[:5])
    trained = load_components(result.model_dir)
    assert trained.vae.config.scaling_factor == pytest.approx(result.scaling_factor)
    assert result.scaling_factor != 1.0
    assert json.loads((result.model_dir / "vae_provenance.json").read_text())["steps"] == 30


def test_a_stopped_vae_run_resumes_to_the_same_weights(
    tiny_model_dir: Path, tiny_index: Path, tmp_path: Path
) -> None:
    def config(out: str) -> VaeTrainConfig:
        return VaeTrainConfig(model=str(tiny_model_dir), index=str(tiny_index), output_dir=str(tmp_path / out),
                              resolution=32, crop=16, max_steps=6, batch_size=2, checkpoint_every=2,
                              lr_schedule="cosine", lr_warmup_steps=2, eval_images=2, eval_split="train")  # fmt: skip

    whole = train_vae(config("whole"), progress=False)
    first = train_vae(config("parts"), stop_after=3, progress=False)
    assert first.step == 3 and first.model_dir is None
    rest = train_vae(config("parts"), resume="latest", progress=False)
    assert rest.step == 6 and len(rest.losses) == 3
    assert first.losses + rest.losses == pytest.approx(whole.losses, rel=1e-5)
    a, b = (load_components(r.model_dir).vae.state_dict() for r in (whole, rest))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert sorted(rest.held_out_l1) == [2, 3, 4, 6]


def test_vae_needs_rows(tiny_model_dir: Path, tiny_index: Path, tmp_path: Path) -> None:
    config = VaeTrainConfig(
        model=str(tiny_model_dir), index=str(tiny_index), split="test", output_dir=str(tmp_path)
    )
    with pytest.raises(CfauditError, match="split 'test' has no rows"):
        train_vae(config, progress=False)
