"""Tests for cfaudit.evaluate.prompt_effects: the intervals and the choice of cases (the model-level effects are
tested on the shipped model in tests/models/test_shipped_model.py)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cfaudit.evaluate.prompt_effects import intervention_for, plan_cases, wilson_interval


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
        }
    )
    cases = plan_cases(table, images=2)
    assert cases["cardiomegaly_removed"] == [0, 4]  # with cardiomegaly, without effusion (row 1 has one)
    assert cases["cardiomegaly_added"] == [2, 3]
    assert cases["sex_swapped"] == [0, 1]
    assert cases["age_plus_20"] == [0, 2]  # up to 70 years, so that +20 stays within 90
    assert str(intervention_for("sex_swapped", {"sex": "Female"})) == "do(sex=Male)"
    assert str(intervention_for("age_plus_20", {"sex": "Female"})) == "do(age=+20)"
    with pytest.raises(KeyError):
        plan_cases(table.drop(columns="age"), images=1)
