import math

import numpy as np
import pandas as pd
import pytest

from cfaudit.data.interventions import Intervention
from cfaudit.discover.heads import HEAD_COLUMNS, head_columns, intervened_heads
from cfaudit.discover.label_statistics import LabelStatistics, classifier_error


def table(n=400, seed=0):
    rng = np.random.default_rng(seed)
    cardiomegaly = (rng.random(n) < 0.5).astype(float)
    devices = (rng.random(n) < np.where(cardiomegaly == 1, 0.8, 0.2)).astype(float)
    age = rng.uniform(20, 90, n)
    effusion = (rng.random(n) < (age - 20) / 70).astype(float)  # P rises by 1/70 per year
    frame = pd.DataFrame(
        {"age": age, "sex": np.where(rng.random(n) < 0.5, "Male", "Female"), "race": "White",
         "Cardiomegaly": cardiomegaly, "Support Devices": devices, "Pleural Effusion": effusion}
    )  # fmt: skip
    for column in ("No Finding", "Enlarged Cardiomediastinum", "Lung Opacity", "Lung Lesion", "Edema",
                   "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Other", "Fracture"):  # fmt: skip
        frame[column] = np.nan
    return frame


def test_label_association_recovers_a_planted_binary_relation():
    frame = table()
    statistics = LabelStatistics(frame)
    records = frame[frame["Cardiomegaly"] == 1].to_dict("records")
    association = statistics.association(Intervention.parse("Cardiomegaly=0"), records)
    assert association["Support Devices"] == pytest.approx(-0.6, abs=0.12)
    assert abs(association["sex"]) < 0.15  # unrelated
    assert association["Cardiomegaly"] == pytest.approx(-1.0)


def test_label_association_of_an_age_shift_follows_the_slope():
    frame = table(2000, seed=1)
    statistics = LabelStatistics(frame)
    records = frame[(frame["age"] > 30) & (frame["age"] < 60)].to_dict("records")
    association = statistics.association(Intervention.parse("age=+20"), records)
    assert association["Pleural Effusion"] == pytest.approx(20 / 70, abs=0.08)
    assert association["age"] == pytest.approx(20, abs=3)


def test_values_override_gives_the_data_association_and_sparse_cells_are_unknown():
    frame = table()
    values = np.zeros((len(frame), len(HEAD_COLUMNS)))
    values[:, HEAD_COLUMNS.index("Edema")] = frame["Cardiomegaly"].to_numpy() * 0.5
    statistics = LabelStatistics(frame, values=values)
    records = frame[frame["Cardiomegaly"] == 1].to_dict("records")
    assert statistics.association(Intervention.parse("Cardiomegaly=0"), records)["Edema"] == pytest.approx(
        -0.5
    )
    few = LabelStatistics(frame.head(12))
    result = few.association(Intervention.parse("Cardiomegaly=0"), records[:3])
    assert math.isnan(result["Support Devices"])  # fewer than MIN_ROWS rows in a stratum


def test_head_columns_and_targets():
    outputs = {"sex": np.array([0.2]), "race": np.array([[0.1, 0.6, 0.2, 0.1]]), "age": np.array([50.0])}
    outputs |= {
        c: np.array([0.5]) for c in HEAD_COLUMNS if c not in ("sex", "age") and not c.startswith("race:")
    }
    columns = head_columns(outputs)
    assert list(columns) == list(HEAD_COLUMNS) and columns["race:White"][0] == pytest.approx(0.6)
    assert intervened_heads(("Cardiomegaly",)) == {"Cardiomegaly", "No Finding"}
    assert {"race:Asian", "race:Other"} <= intervened_heads(("race",))


def test_sex_and_race_interventions_with_unknown_values_in_a_string_column():
    frame = table(300, seed=2)
    frame["race"] = pd.array(["White", "Black", "Unknown", None] * 75, dtype="string")
    frame["sex"] = pd.array(["Male", "Female", None] * 100, dtype="string")
    frame["Support Devices"] = (frame["race"] == "Black").fillna(False).astype(float)
    statistics = LabelStatistics(frame)
    records = frame[frame["race"] == "White"].to_dict("records")
    association = statistics.association(Intervention.parse("race=Black"), records)
    assert association["Support Devices"] == pytest.approx(1.0)
    assert association["race:Black"] == pytest.approx(1.0) and association["race:White"] == pytest.approx(
        -1.0
    )
    males = frame[frame["sex"] == "Male"].to_dict("records")
    assert abs(statistics.association(Intervention.parse("sex=Female"), males)["sex"] + 1.0) < 1e-9


def test_classifier_error_gives_the_classifiers_bias_conditional_on_the_edited_finding():
    frame = table(2000, seed=3)
    frame["Edema"] = (np.random.default_rng(4).random(len(frame)) < 0.3).astype(float)
    predicted = LabelStatistics(frame).values.copy()  # a perfect classifier ...
    age = HEAD_COLUMNS.index("age")
    predicted[:, age] += 12.0 * frame["Edema"].to_numpy()  # ... whose age head adds 12 years with edema
    predicted[:, HEAD_COLUMNS.index("sex")] = np.clip(predicted[:, HEAD_COLUMNS.index("sex")], 0.1, 0.9)
    records = frame[frame["Edema"] == 0].to_dict("records")
    bias = classifier_error(frame, predicted).association(Intervention.parse("Edema=1"), records)
    assert bias["age"] == pytest.approx(12.0, abs=1e-6)  # mean(pred - age | edema) - mean(... | no edema)
    assert abs(bias["sex"]) < 0.05  # sex is misread (squeezed to 0.1..0.9) the same way with or without edema
    assert bias["Cardiomegaly"] == pytest.approx(0.0)


def _z_scores(planted: float, repeats: int, n: int = 300) -> np.ndarray:
    """Data association / its standard error for do(Cardiomegaly=0) on values that move ``planted`` with it."""
    z = []
    for seed in range(repeats):
        frame = table(n, seed=100 + seed)
        rng = np.random.default_rng(seed)
        values = rng.normal(0.0, 1.0, (n, len(HEAD_COLUMNS)))
        values[:, HEAD_COLUMNS.index("Edema")] += planted * frame["Cardiomegaly"].to_numpy()
        statistics = LabelStatistics(frame, values=values)
        records = frame[frame["Cardiomegaly"] == 1].to_dict("records")
        mean, error = statistics.association_with_error(Intervention.parse("Cardiomegaly=0"), records)
        z.append(mean["Edema"] / error["Edema"])
    return np.array(z)


def test_association_error_is_calibrated_under_a_null_and_finds_a_planted_contrast():
    from scipy import stats

    null = _z_scores(0.0, 300)
    assert stats.kstest(null, "norm").pvalue > 0.01  # the contrast over its error is standard normal
    assert 0.02 <= np.mean(np.abs(null) > 1.96) <= 0.09
    planted = _z_scores(0.5, 20)  # 0.5 SD between two groups of ~150: z ~ -4.3
    assert np.all(planted < -2.5)


def test_association_error_of_an_age_shift_is_finite_and_conservative():
    frame = table(600, seed=3)
    rng = np.random.default_rng(3)
    statistics = LabelStatistics(frame, values=rng.normal(0.0, 1.0, (600, len(HEAD_COLUMNS))))
    records = frame[(frame["age"] > 30) & (frame["age"] < 60)].to_dict("records")
    mean, error = statistics.association_with_error(Intervention.parse("age=+20"), records)
    assert all(np.isfinite(error[h]) and error[h] > 0 for h in HEAD_COLUMNS)
    assert abs(mean["Edema"]) < 3 * error["Edema"]
