"""Tests for cfaudit.data.phantom.ground_truth: masks read back, images drawn again, the age cues' pixel change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfaudit.data.phantom.ground_truth import (
    PhantomReplay,
    grating_energy,
    projected_change,
    read_masks,
)
from cfaudit.errors import CfauditError


def _ids(small_phantom: Path) -> list[str]:
    return pd.read_csv(small_phantom / "metadata.csv")["image_id"].tolist()


def test_replay_draws_every_image_again_bit_for_bit(small_phantom: Path) -> None:
    replay = PhantomReplay(small_phantom)
    for image_id in _ids(small_phantom)[:6]:
        saved = np.asarray(Image.open(small_phantom / "images" / f"{image_id}.png"))
        assert np.array_equal(replay.render(image_id), saved)
    with pytest.raises(CfauditError, match="no image 'nope'"):
        replay.plan("nope")


def test_grain_free_drawing_differs_from_the_image_by_the_grain_only(small_phantom: Path) -> None:
    replay = PhantomReplay(small_phantom)
    image_id = _ids(small_phantom)[0]
    grainy, clean = replay.render(image_id).astype(float), replay.render(image_id, grain=False).astype(float)
    difference = grainy - clean
    assert 2.0 < np.abs(difference).mean() < 8.0  # the default grain: ~5 gray levels
    assert abs(difference.mean()) < 1.0  # zero-mean noise, not a shift


def test_age_cue_change_brightens_the_knob_and_fades_the_bones(small_phantom: Path) -> None:
    replay = PhantomReplay(small_phantom)
    image_id = _ids(small_phantom)[1]
    change = replay.cue_change(image_id, 20.0)
    assert (change > 0).any() and (change < 0).any()  # the knob grows, ribs and clavicles fade
    assert projected_change(change, change) == pytest.approx(1.0)
    assert projected_change(-change, change) == pytest.approx(-1.0)
    assert projected_change(np.zeros_like(change), change) == 0.0
    older, younger = replay.aged_anatomy(image_id, 20.0), replay.aged_anatomy(image_id, -20.0)
    base = replay.plan(image_id).anatomy
    assert older["aortic_knob"] > base.aortic_knob > younger["aortic_knob"]
    assert older["bone_density"] < base.bone_density < younger["bone_density"]


def test_race_grating_is_the_patients_own_or_another_groups_and_its_energy_ignores_the_phase(
    small_phantom: Path,
) -> None:
    replay = PhantomReplay(small_phantom)
    image_id = _ids(small_phantom)[2]
    plan = replay.plan(image_id)
    own = replay.race_grating(image_id)
    drawn = replay.render(image_id, grain=False).astype(float) - replay.render(
        image_id, grain=False, texture_amplitude=0.0
    )
    assert np.allclose(own, drawn / 255.0) and np.abs(own).max() > 0.005  # ~1.2% of full scale over the body
    others = [
        r for r, t in replay.config.cues.race_texture.items() if t.frequency != plan.anatomy.texture_frequency
    ]
    other = replay.race_grating(image_id, others[0])
    # Each grating's energy is at its own frequencies: far more there than at the other group's.
    assert grating_energy(own, own) > 20 * grating_energy(own, other)
    assert grating_energy(other, other) > 20 * grating_energy(other, own)
    # Blind to the phase: the same grating drawn half a period on scores alike (same spectrum).
    shifted = replay.render(image_id, grain=False, texture_phase=plan.anatomy.texture_phase + np.pi).astype(
        float
    )
    moved = (shifted - replay.render(image_id, grain=False, texture_amplitude=0.0)) / 255.0
    assert grating_energy(moved, own) == pytest.approx(grating_energy(own, own), rel=0.1)
    assert np.isnan(grating_energy(own, np.zeros_like(own)))
    with pytest.raises(ValueError, match="differ in shape"):
        grating_energy(own, own[:-1])
    with pytest.raises(CfauditError, match="no grating for race 'Martian'"):
        replay.race_grating(image_id, "Martian")


def test_masks_are_read_per_part(small_phantom: Path) -> None:
    image_id = _ids(small_phantom)[0]
    masks = read_masks(small_phantom, image_id)
    assert masks["heart"].any() and masks["lungs"].any() and masks["heart"].shape == (64, 64)
    assert not (masks["heart"] & masks["lungs"]).any()
    with pytest.raises(CfauditError, match="not found"):
        read_masks(small_phantom, "nope")
