"""The shipped demo model: it loads from the package, and its prompts visibly matter on the phantom's own measure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cfaudit.data.phantom.measure import heart_width_ratio
from cfaudit.models.loading import load_components
from cfaudit.models.sampling import sample_images
from cfaudit.models.shipped_model import DEMO_DIR, install_demo

PROMPT = "chest x-ray of 65-years old white male subject with {}"
SEEDS = list(range(16))


def test_demo_is_small_and_documented() -> None:
    weights = sum(p.stat().st_size for p in DEMO_DIR.rglob("*.safetensors"))
    assert weights < 20 * 2**20
    provenance = json.loads((DEMO_DIR / "provenance.json").read_text())
    assert provenance["config"]["seed"] == 0 and len(provenance["data"]["index_sha256"]) == 64
    text = (DEMO_DIR / "PROVENANCE.txt").read_text()
    assert "configs/train/demo.yaml" in text and provenance["data"]["index_sha256"] in text


def test_cardiomegaly_prompt_gives_a_larger_heart_than_no_finding() -> None:
    components = load_components("demo")
    prompts = [PROMPT.format("cardiomegaly")] * len(SEEDS) + [PROMPT.format("no finding")] * len(SEEDS)
    images = sample_images(components, prompts, SEEDS + SEEDS, steps=25, guidance=5.0, batch_size=16)
    ratios = np.array([heart_width_ratio(image[0].numpy()) for image in images])
    big, small = ratios[: len(SEEDS)], ratios[len(SEEDS) :]
    assert np.isfinite(ratios).mean() > 0.8  # the samples look like chests to the phantom's measure
    # measured when shipped: 0.43 vs 0.37, larger in 14 of 16 pairs (the phantom's own images: 0.49 vs 0.41)
    assert np.nanmean(big) > np.nanmean(small) + 0.03
    assert np.nanmean(big > small) >= 0.7  # per seed (same starting noise), most pairs agree


def test_install_demo_round_trip(tmp_path: Path) -> None:
    installed = install_demo(DEMO_DIR, tmp_path / "demo")
    assert (installed / "PROVENANCE.txt").is_file() and (installed / "unet" / "config.json").is_file()
    load_components(installed)
