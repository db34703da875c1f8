"""Tests for cfaudit.data.phantom.label_table and population: the shipped table, user tables, bad rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cfaudit.data.phantom import load_config, load_label_table
from cfaudit.data.phantom.config import PAPER_RACE_SHARES
from cfaudit.data.phantom.label_table import COLUMNS
from cfaudit.data.phantom.population import sample_population
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError


def test_builtin_table_is_aggregated_chexpert_frontal_labels() -> None:
    table = load_label_table()
    frame = table.frame
    assert tuple(frame.columns[: len(COLUMNS)]) == COLUMNS
    assert int(frame["count"].sum()) == 191_006  # frontal AP/PA adults with a known sex
    assert set(frame["sex"]) == {"M", "F"} and set(frame["view"]) == {"AP", "PA"}
    assert table.age_range == (18, 90)
    assert not frame.duplicated(subset=list(COLUMNS[:-1])).any()  # counts of combinations, not raw rows
    for finding in FINDINGS:
        assert frame[finding].dropna().isin([1.0, 0.0, -1.0]).all()
    effusion = (frame["count"] * (frame["Pleural Effusion"] == 1.0)).sum() / frame["count"].sum()
    assert 0.3 < effusion < 0.6  # CheXpert's training set is effusion-heavy
    assert table.source.startswith("builtin") and len(table.sha256) == 64


def user_table(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "table.csv"
    path.write_text(",".join(COLUMNS) + "\n" + "\n".join(rows) + "\n")
    return path


def row(sex: str = "F", age_bin: str = "40-44", view: str = "PA", states: str = "", count: str = "3") -> str:
    cells = states.split(",") if states else [""] * len(FINDINGS)
    return ",".join([sex, age_bin, view, *cells, count])


def test_a_users_table_drives_the_metadata(tmp_path: Path) -> None:
    states = ",".join(["1"] + [""] * 12 + ["0"])  # No Finding = 1, Support Devices = 0
    path = user_table(tmp_path, [row(states=states)])
    config_path = tmp_path / "config.yaml"
    config_path.write_text(f"label_table: {path.name}\nrelations: []\n")
    config = load_config(config_path).with_overrides(n=30)
    population = sample_population(config, load_label_table(config.label_table), seed=0)
    metadata = population.metadata
    assert (metadata["sex"] == "F").all() and (metadata["ViewPosition"] == "PA").all()
    assert (metadata["No Finding"] == 1.0).all() and (metadata["Support Devices"] == 0.0).all()
    assert math.isnan(metadata["Edema"].iloc[0])
    first_studies = metadata.groupby("subject_id", sort=False).head(1)
    assert first_studies["age"].between(40, 44).all()


@pytest.mark.parametrize(
    ("bad", "column"),
    [
        (row(sex="X"), "sex"),
        (row(age_bin="forty"), "age_bin"),
        (row(age_bin="50-40"), "age_bin"),
        (row(view="LL"), "view"),
        (row(count="0"), "count"),
        (row(states=",".join(["2"] + [""] * 13)), "No Finding"),
    ],
)
def test_bad_rows_name_the_line_and_column(tmp_path: Path, bad: str, column: str) -> None:
    path = user_table(tmp_path, [row(), bad])
    with pytest.raises(CfauditError) as caught:
        load_label_table(str(path))
    assert f"line 3: {column}" in str(caught.value) and str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("bad", "shown"),
    [(row(count="-5"), "count -5 is"), (row(count="2.5"), "count 2.5 is"), (row(count=""), "count blank is")],
)
def test_bad_counts_are_shown_plainly_not_as_numpy_reprs(tmp_path: Path, bad: str, shown: str) -> None:
    path = user_table(tmp_path, [row(), bad])
    with pytest.raises(CfauditError) as caught:
        load_label_table(str(path))
    assert f"line 3: {shown} not a positive whole number" in str(caught.value)
    assert "np." not in str(caught.value)


def test_missing_table_or_columns_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CfauditError, match="no such file"):
        load_label_table(str(tmp_path / "absent.csv"))
    path = tmp_path / "short.csv"
    path.write_text("sex,age_bin\nF,40-44\n")
    with pytest.raises(CfauditError, match="missing column"):
        load_label_table(str(path))


def test_population_is_reproducible_and_race_follows_the_config() -> None:
    config = load_config().with_overrides(n=2000)
    table = load_label_table()
    first = sample_population(config, table, seed=9)
    second = sample_population(config, table, seed=9)
    assert first.metadata.equals(second.metadata)
    subjects = first.metadata.drop_duplicates("subject_id")
    white = (subjects["race"] == "White").mean()
    share = config.population.race["White"]
    assert share == PAPER_RACE_SHARES["White"]
    assert abs(white - share) < 4 * np.sqrt(share * (1 - share) / len(subjects))
    unknown = first.hidden["true_race"][first.metadata["race"] == "Unknown"]
    assert len(unknown) > 0 and unknown.isin(["Asian", "White", "Black", "Other"]).all()
