"""Planted relations are recovered from the ground truth (tests cfaudit.data.phantom.relations and plan).

Default vs null at n = 3000, 32 px: P(pacemaker | Cardiomegaly) and P(pacemaker | no Cardiomegaly) among
images with Support Devices = 1 match the config within 3 standard errors, other devices do not depend on
Cardiomegaly, the age -> effusion slope rises by the planted 0.5 log-odds per decade over the null config's,
and the null config shows no pacemaker-cardiomegaly relation. Custom relations are recovered at the plan level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfaudit.data.phantom import default_config_path, generate_phantom, load_config, load_label_table
from cfaudit.data.phantom.plan import plan_image
from cfaudit.data.phantom.population import IMAGE_STREAM, sample_population, stream

N = 3000


def run(folder: Path, name: str) -> pd.DataFrame:
    config = load_config(default_config_path(name)).with_overrides(n=N, size=32)
    generate_phantom(folder / name, config, seed=11, workers=2)
    metadata = pd.read_csv(folder / name / "metadata.csv")
    summary = pd.read_csv(folder / name / "ground_truth" / "summary.csv")
    assert (metadata["image_id"] == summary["image_id"]).all()
    return pd.concat(
        [metadata, summary.drop(columns=["image_id", "subject_id", "study_id", "sex", "age", "race"])], axis=1
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("relations")
    return {"default": run(folder, "default"), "null": run(folder, "null")}


def rate(values: pd.Series) -> tuple[float, float]:
    """Proportion and its standard error."""
    p = float(values.mean())
    return p, max(np.sqrt(p * (1 - p) / len(values)), 1e-3)


def split_by_cardiomegaly(table: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    devices = table[table["Support Devices"] == 1.0]
    cm = devices["Cardiomegaly"] == 1.0
    return devices.loc[cm, column], devices.loc[~cm, column]


def test_pacemaker_follows_cardiomegaly_as_planted(runs: dict[str, pd.DataFrame]) -> None:
    with_cm, without_cm = split_by_cardiomegaly(runs["default"], "device_pacemaker")
    assert len(with_cm) > 100 and len(without_cm) > 500
    p, se = rate(with_cm)
    assert abs(p - 0.7) < 3 * se, (p, se)
    p, se = rate(without_cm)
    assert abs(p - 0.05) < 3 * se, (p, se)


@pytest.mark.parametrize("kind", ["chest_tube", "central_line", "endotracheal_tube", "nasogastric_tube"])
def test_other_devices_are_independent_of_cardiomegaly(runs: dict[str, pd.DataFrame], kind: str) -> None:
    probability = load_config().devices.probability[kind]
    for values in split_by_cardiomegaly(runs["default"], f"device_{kind}"):
        p, se = rate(values)
        assert abs(p - probability) < 3 * se, (kind, p, se)


def test_null_config_has_no_pacemaker_relation(runs: dict[str, pd.DataFrame]) -> None:
    with_cm, without_cm = split_by_cardiomegaly(runs["null"], "device_pacemaker")
    (p1, se1), (p0, se0) = rate(with_cm), rate(without_cm)
    assert abs(p1 - p0) < 3 * np.hypot(se1, se0), (p1, p0)
    assert abs(p0 - load_config(default_config_path("null")).devices.probability["pacemaker"]) < 3 * se0


def logistic_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Slope of a logistic regression of y on x (Newton's method)."""
    design = np.column_stack([np.ones_like(x), x])
    beta = np.zeros(2)
    for _ in range(25):
        p = 1 / (1 + np.exp(-design @ beta))
        gradient = design.T @ (y - p)
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        beta += np.linalg.solve(hessian, gradient)
    return float(beta[1])


def test_age_raises_effusion_by_the_planted_slope(runs: dict[str, pd.DataFrame]) -> None:
    slopes = {}
    for name, table in runs.items():
        decades = (table["age"].to_numpy(float) - 60) / 10
        slopes[name] = logistic_slope(decades, (table["Pleural Effusion"] == 1.0).to_numpy(float))
    assert slopes["default"] - slopes["null"] == pytest.approx(0.5, abs=0.15), slopes
    # The ground truth draws what the metadata says: effusion sides exist exactly for Pleural Effusion != 0/blank.
    table = runs["default"]
    drawn = (table["effusion_right"] + table["effusion_left"]) > 0
    assert (drawn == table["Pleural Effusion"].isin([1.0, -1.0])).all()


def plan_level(config_text: str, tmp_path: Path, n: int = 3000) -> tuple[pd.DataFrame, list]:
    path = tmp_path / "custom.yaml"
    path.write_text(config_text)
    config = load_config(path).with_overrides(n=n, size=32)
    population = sample_population(config, load_label_table(), seed=5)
    metadata = population.metadata
    plans = []
    for index, record in enumerate(metadata.to_dict(orient="records")):
        record["true_race"] = population.hidden.at[index, "true_race"]
        identity = population.identities[int(population.hidden.at[index, "subject_index"])]
        plans.append(plan_image(index, record, identity, config, stream(5, IMAGE_STREAM, index)))
    return metadata, plans


def test_a_relation_of_ones_own_sex_to_chest_tube_is_recovered(tmp_path: Path) -> None:
    metadata, plans = plan_level(
        "relations:\n  - {cause: sex, value: F, effect: device.chest_tube, p_if_present: 0.6, p_if_absent: 0.1}\n",
        tmp_path,
    )
    tube = pd.Series([int("chest_tube" in plan.device_kinds()) for plan in plans])
    devices = (metadata["Support Devices"] == 1.0).to_numpy()
    female = (metadata["sex"] == "F").to_numpy()
    for mask, expected in ((devices & female, 0.6), (devices & ~female, 0.1)):
        p, se = rate(tube[mask])
        assert abs(p - expected) < 3 * se, (expected, p, se)


def test_finding_and_anatomy_effects_are_recovered(tmp_path: Path) -> None:
    metadata, plans = plan_level(
        "relations:\n"
        "  - {cause: sex, value: M, effect: Edema, p_if_present: 0.5, p_if_absent: 0.1}\n"
        "  - {cause: Edema, effect: anatomy.bone_density, shift_if_present: -0.3}\n",
        tmp_path,
    )
    edema = metadata["Edema"] == 1.0
    male = metadata["sex"] == "M"
    for mask, expected in ((male, 0.5), (~male, 0.1)):
        p, se = rate(edema[mask])
        assert abs(p - expected) < 3 * se, (expected, p, se)
    bone = np.asarray([plan.anatomy.bone_density for plan in plans])
    ages = metadata["age"].to_numpy(float)
    # Remove the age cue (bone density falls 0.08 per decade) before comparing.
    adjusted = bone + 0.08 * (ages - 50) / 10
    difference = adjusted[edema.to_numpy()].mean() - adjusted[~edema.to_numpy()].mean()
    assert difference == pytest.approx(-0.3, abs=0.03)


def test_an_anatomy_shift_beyond_a_drawable_chest_is_refused_before_any_file(tmp_path: Path) -> None:
    """A relation may not push a rendered parameter out of :data:`ANATOMY_RANGES` (a negative heart): the error
    names the relation, the value and the range, and the output folder is not started."""
    from cfaudit.errors import CfauditError

    path = tmp_path / "shift.yaml"
    path.write_text(
        "relations:\n  - {cause: sex, value: M, effect: anatomy.heart_ctr, shift_if_present: -10}\n",
        encoding="utf-8",
    )
    config = load_config(path).with_overrides(n=6, size=32)
    out = tmp_path / "phantom"
    with pytest.raises(CfauditError, match=r"relations\[0\] \(sex -> anatomy.heart_ctr\) makes heart_ctr -9"):
        generate_phantom(out, config, seed=0)
    assert not out.exists()
    path.write_text(
        "relations:\n  - {cause: sex, value: M, effect: anatomy.heart_ctr, shift_if_present: 0.05}\n",
        encoding="utf-8",
    )
    result = generate_phantom(out, load_config(path).with_overrides(n=6, size=32), seed=0)
    assert result is not None and (out / "metadata.csv").is_file()
