"""The frozen text encoder's per-caption cache: the same states as encoding every step, and the same training."""

from __future__ import annotations

from pathlib import Path

import torch

from cfaudit.models.loading import load_components
from cfaudit.models.text_encoding import encode_ids, tokenize
from cfaudit.train.config import TrainConfig
from cfaudit.train.text_cache import build_text_cache
from cfaudit.train.trainer import train

PROMPTS = ["chest x-ray of subject with cardiomegaly", "chest x-ray of subject with no finding"]


def test_cache_holds_each_distinct_caption_once_and_gives_its_states(tiny_model_dir: Path) -> None:
    components = load_components(tiny_model_dir)
    ids = tokenize(components.tokenizer, [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[0]])
    empty = tokenize(components.tokenizer, [""])[0]
    cache = build_text_cache(components.text_encoder, ids, empty, budget_mb=64)
    assert cache is not None and cache.states.shape[0] == 2
    rows = torch.tensor([2, 1, 3])
    dropped = torch.tensor([False, False, True])
    with torch.no_grad():
        expected = encode_ids(components.text_encoder, ids[rows])
        expected[2] = encode_ids(components.text_encoder, empty[None])[0]
    assert torch.allclose(cache.lookup(rows, dropped), expected, atol=1e-6)


def test_cache_over_budget_is_not_built(tiny_model_dir: Path) -> None:
    components = load_components(tiny_model_dir)
    ids = tokenize(components.tokenizer, PROMPTS)
    assert build_text_cache(components.text_encoder, ids, ids[0], budget_mb=0.01) is None


def test_training_with_the_cache_follows_the_same_loss_curve(
    tiny_model_dir: Path, tiny_index: Path, tmp_path: Path
) -> None:
    def run(name: str, cache_text: bool) -> list[float]:
        config = TrainConfig.from_dict(
            {"model": str(tiny_model_dir), "index": str(tiny_index), "output_dir": str(tmp_path / name),
             "resolution": 64, "max_steps": 4, "batch_size": 4, "learning_rate": 1e-3, "caption_dropout": 0.5,
             "checkpoint_every": 100, "latent_cache_dir": str(tmp_path / "cache"), "cache_text": cache_text}
        )  # fmt: skip
        return train(config, progress=False).losses

    run("warm", True)  # encode the latent cache first, so that both runs below read the same latents
    cached, plain = run("cached", True), run("plain", False)
    assert len(cached) == 4
    assert torch.allclose(torch.tensor(cached), torch.tensor(plain), rtol=1e-4, atol=1e-6), (cached, plain)
