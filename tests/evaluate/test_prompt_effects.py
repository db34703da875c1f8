"""Tests for cfaudit.evaluate.prompt_effects: the intervals and the choice of cases (the model-level effects are
tested on the shipped model in tests/models/test_shipped_model.py)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfaudit.data.phantom.ground_truth import PhantomReplay
from cfaudit.evaluate import prompt_effects
from cfaudit.evaluate.prompt_effects import (
    RACE_TARGETS,
    _score,
    intervention_for,
    plan_cases,
    race_edit_share,
    race_grating_shift,
    race_sample_share,
    race_swap_shift,
    wilson_interval,
)


def test_wilson_interval_contains_the_share_and_narrows_with_n() -> None:
    low, high = wilson_interval(8, 10)
    assert low < 0.8 < high and low >= 0.0 and high <= 1.0
    wide, narrow = wilson_interval(4, 5), wilson_interval(80, 100)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0) and wilson_interval(10, 10)[1] == pytest.approx(
        1.0
    )
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_cases_are_the_first_eligible_images_per_effect() -> None:
    table = pd.DataFrame(
        {
            "Cardiomegaly": [1, 1, 0, None, 1],
            "Pleural Effusion": [0, 1, 0, 0, None],
            "sex": ["Male", "Female", "Male", "Female", "Male"],
            "age": [50, 80, 70, 30, 71],
            "race": ["Unknown", "White", "Black", "Asian", "Other"],
        }
    )
    cases = plan_cases(table, images=2)
    assert cases["cardiomegaly_removed"] == [0, 4]  # with cardiomegaly, without effusion (row 1 has one)
    assert cases["cardiomegaly_added"] == [2, 3]
    assert cases["sex_swapped"] == [0, 1]
    assert cases["age_plus_20"] == [0, 2]  # up to 70 years, so that +20 stays within 90
    assert str(intervention_for("sex_swapped", {"sex": "Female"})) == "do(sex=Male)"
    assert str(intervention_for("age_plus_20", {"sex": "Female"})) == "do(age=+20)"
    assert cases["race_changed"] == [1, 2]  # a recorded group the phantom draws; not Unknown
    assert str(intervention_for("race_changed", {"race": "White"})) == "do(race=Black)"
    assert str(intervention_for("race_changed", {"race": "Asian"})) == "do(race=White)"
    with pytest.raises(KeyError):
        plan_cases(table.drop(columns="age"), images=1)


def test_race_edit_scores_by_whose_grating_it_draws(small_phantom: Path) -> None:
    """An edit that swaps the patient's grating for the named group's scores well above zero, at any phase; no
    change scores zero; an edit that strengthens the patient's own grating scores below zero."""
    replay = PhantomReplay(small_phantom)
    metadata = pd.read_csv(small_phantom / "metadata.csv")
    rows = metadata[metadata["race"].isin(list(RACE_TARGETS))].head(4)
    assert len(rows) == 4
    for record in rows.to_dict("records"):
        image_id = str(record["image_id"])
        picture = replay.render(image_id).astype(np.float64) / 255.0  # with grain, as an image is
        own = replay.race_grating(image_id)
        target_race = RACE_TARGETS[record["race"]]
        anatomy = replay.plan(image_id).anatomy
        texture = replay.config.cues.race_texture[target_race]
        drawn = replay.render(
            image_id,
            grain=False,
            texture_frequency=texture.frequency,
            texture_angle=texture.angle,
            texture_phase=anatomy.texture_phase + 1.0,
        ).astype(np.float64)
        target = (drawn - replay.render(image_id, grain=False, texture_amplitude=0.0)) / 255.0
        assert race_grating_shift(replay, record, picture, picture - own + target) > 0.3
        assert race_grating_shift(replay, record, picture, picture) == pytest.approx(0.0)
        assert race_grating_shift(replay, record, picture, picture + own) < -0.3
    # A phantom that draws no grating has no race edit to score: nan, which the summary leaves out.
    bare = dataclasses.replace(replay.config.cues, race_texture_amplitude=0.0)
    replay.config = dataclasses.replace(replay.config, cues=bare)
    record = rows.iloc[0].to_dict()
    picture = replay.render(str(record["image_id"])).astype(np.float64) / 255.0
    assert math.isnan(race_grating_shift(replay, record, picture, picture * 0.9))
    assert math.isnan(race_swap_shift(replay, record, picture.shape[-1]))
    assert not _score("race_changed", record, picture, picture * 0.9, {}, 1, replay)["eligible"]


def test_race_edit_counts_when_it_goes_half_as_far_as_a_real_swap(small_phantom: Path) -> None:
    """The race effect is the edit's shift over the phantom's own swap: the patient drawn of the named group
    scores 1 (and counts), an edit that draws a tenth of that group's grating scores little (and does not), and
    the scale is the phantom's, not a constant: a fainter grating makes a smaller swap."""
    replay = PhantomReplay(small_phantom)
    metadata = pd.read_csv(small_phantom / "metadata.csv")
    swaps = []
    for record in metadata[metadata["race"].isin(list(RACE_TARGETS))].head(4).to_dict("records"):
        image_id, size = str(record["image_id"]), replay.size
        texture = replay.config.cues.race_texture[RACE_TARGETS[record["race"]]]
        picture = replay.render(image_id).astype(np.float64) / 255.0
        swapped = (
            replay.render(image_id, texture_frequency=texture.frequency, texture_angle=texture.angle) / 255.0
        )
        swaps.append(race_swap_shift(replay, record, size))
        assert (
            swaps[-1] == pytest.approx(race_grating_shift(replay, record, picture, swapped))
            and swaps[-1] > 0.3
        )
        full = _score("race_changed", record, picture, swapped, {}, 1, replay)
        assert full["eligible"] and full["hit"] and full["effect_size"] == pytest.approx(1.0)
        slight = _score("race_changed", record, picture, picture + 0.1 * (swapped - picture), {}, 1, replay)
        assert 0.0 < slight["effect_size"] < 0.5 and not slight["hit"]
        assert slight["shift"] == pytest.approx(
            race_grating_shift(replay, record, picture, picture + 0.1 * (swapped - picture))
        )
    # A config that draws no grating for the named group: nothing to score, not an error.
    white = metadata[metadata["race"] == "White"].iloc[0].to_dict()
    textures = {k: v for k, v in replay.config.cues.race_texture.items() if k != RACE_TARGETS["White"]}
    without = dataclasses.replace(
        replay.config, cues=dataclasses.replace(replay.config.cues, race_texture=textures)
    )
    picture = replay.render(str(white["image_id"])).astype(np.float64) / 255.0
    original = replay.config
    replay.config = without
    assert math.isnan(race_grating_shift(replay, white, picture, picture * 0.9))
    assert math.isnan(race_swap_shift(replay, white, replay.size))
    assert all(math.isnan(v) for v in race_edit_share(replay, white, picture, picture * 0.9))
    replay.config = original
    # A swap that moves nothing gives no scale: the share is nan (never a division by zero), the shift stays.
    record = metadata[metadata["race"].isin(list(RACE_TARGETS))].iloc[0].to_dict()
    picture = replay.render(str(record["image_id"])).astype(np.float64) / 255.0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prompt_effects, "_race_swap", lambda replay, record, size: (picture, picture))
        shift, share = race_edit_share(replay, record, picture, picture * 0.9)
    assert math.isfinite(shift) and math.isnan(share)
    fainter = dataclasses.replace(
        replay.config.cues, race_texture_amplitude=0.3 * replay.config.cues.race_texture_amplitude
    )
    replay.config = dataclasses.replace(replay.config, cues=fainter)
    record = metadata[metadata["race"].isin(list(RACE_TARGETS))].iloc[0].to_dict()
    assert 0.0 < race_swap_shift(replay, record, replay.size) < swaps[0]


def test_race_in_samples_is_scored_against_the_real_groups(small_phantom: Path) -> None:
    """Images that differ by group as the real ones do score 1, images the words do not select score 0, images
    of the wrong group -1; no grating or mixed sizes cannot be scored."""
    replay = PhantomReplay(small_phantom)
    metadata = pd.read_csv(small_phantom / "metadata.csv")
    real = {
        group: [
            replay.render(i).astype(np.float64) / 255.0
            for i in metadata[metadata["race"] == group]["image_id"]
        ]
        for group in ("White", "Black")
    }
    assert len(real["White"]) >= 2 and len(real["Black"]) >= 1
    assert race_sample_share(replay, real, real) == pytest.approx(1.0)
    assert race_sample_share(replay, real, {"White": real["Black"], "Black": real["White"]}) == pytest.approx(
        -1.0
    )
    assert race_sample_share(replay, real, {"White": real["White"], "Black": real["White"]}) == pytest.approx(
        0.0
    )
    # The same patients drawn as the other group: the gratings alone differ, and they differ the right way.
    texture = replay.config.cues.race_texture["Black"]
    white_ids = metadata[metadata["race"] == "White"]["image_id"]
    as_black = [
        replay.render(i, texture_frequency=texture.frequency, texture_angle=texture.angle) / 255.0
        for i in white_ids
    ]
    assert race_sample_share(replay, real, {"White": real["White"], "Black": as_black}) > 0.5
    with pytest.raises(ValueError, match="one size"):
        race_sample_share(replay, real, {"White": [np.zeros((32, 32))], "Black": real["Black"]})
    bare = dataclasses.replace(replay.config.cues, race_texture_amplitude=0.0)
    replay.config = dataclasses.replace(replay.config, cues=bare)
    assert math.isnan(race_sample_share(replay, real, real))
