"""Tests for cfaudit.data.phantom.ground_truth: masks read back, images drawn again, the age cues' pixel change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfaudit.data.phantom import generate_phantom, load_config
from cfaudit.data.phantom.ground_truth import PhantomReplay, projected_change, read_masks
from cfaudit.errors import CfauditError


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "run"
    generate_phantom(out, load_config().with_overrides(n=24, size=64), seed=5, workers=1)
    return out


def _ids(phantom: Path) -> list[str]:
    return pd.read_csv(phantom / "metadata.csv")["image_id"].tolist()


def test_replay_draws_every_image_again_bit_for_bit(phantom: Path) -> None:
    replay = PhantomReplay(phantom)
    for image_id in _ids(phantom)[:6]:
        saved = np.asarray(Image.open(phantom / "images" / f"{image_id}.png"))
        assert np.array_equal(replay.render(image_id), saved)
    with pytest.raises(CfauditError, match="no image 'nope'"):
        replay.plan("nope")


def test_grain_free_drawing_differs_from_the_image_by_the_grain_only(phantom: Path) -> None:
    replay = PhantomReplay(phantom)
    image_id = _ids(phantom)[0]
    grainy, clean = replay.render(image_id).astype(float), replay.render(image_id, grain=False).astype(float)
    difference = grainy - clean
    assert 2.0 < np.abs(difference).mean() < 8.0  # the default grain: ~5 gray levels
    assert abs(difference.mean()) < 1.0  # zero-mean noise, not a shift


def test_age_cue_change_brightens_the_knob_and_fades_the_bones(phantom: Path) -> None:
    replay = PhantomReplay(phantom)
    image_id = _ids(phantom)[1]
    change = replay.cue_change(image_id, 20.0)
    assert (change > 0).any() and (change < 0).any()  # the knob grows, ribs and clavicles fade
    assert projected_change(change, change) == pytest.approx(1.0)
    assert projected_change(-change, change) == pytest.approx(-1.0)
    assert projected_change(np.zeros_like(change), change) == 0.0
    older, younger = replay.aged_anatomy(image_id, 20.0), replay.aged_anatomy(image_id, -20.0)
    base = replay.plan(image_id).anatomy
    assert older["aortic_knob"] > base.aortic_knob > younger["aortic_knob"]
    assert older["bone_density"] < base.bone_density < younger["bone_density"]


def test_masks_are_read_per_part(phantom: Path) -> None:
    image_id = _ids(phantom)[0]
    masks = read_masks(phantom, image_id)
    assert masks["heart"].any() and masks["lungs"].any() and masks["heart"].shape == (64, 64)
    assert not (masks["heart"] & masks["lungs"]).any()
    with pytest.raises(CfauditError, match="not found"):
        read_masks(phantom, "nope")
