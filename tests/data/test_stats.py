from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from cfaudit.data.labels import LabelPolicy
from cfaudit.data.records import INDEX_COLUMNS, DataIndex
from cfaudit.data.stats import TABLE1_COLUMNS, format_table1, table1
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError

NAN = float("nan")
# split, subject, sex, race, Pleural Effusion
ROWS = [
    ("train", "a", "Male", "White", 1.0),
    ("train", "a", "Male", "White", -1.0),
    ("train", "b", "Male", "Asian", NAN),
    ("train", "c", "Female", "Other", 0.0),
    ("val", "d", "Female", "Black", 1.0),
    ("val", "e", "Female", "Unknown", 1.0),
]


def index_table() -> pd.DataFrame:
    records = []
    for i, (split, subject, sex, race, effusion) in enumerate(ROWS):
        record = dict.fromkeys(FINDINGS, 0.0) | {"Pleural Effusion": effusion}
        record |= {"image_id": f"i{i}", "path": f"i{i}.png", "subject_id": subject, "study_id": f"s{i}", "view": "PA",
                   "age": 50.0, "sex": sex, "race": race, "split": split}  # fmt: skip
        records.append(record)
    return pd.DataFrame(records)[list(INDEX_COLUMNS)]


def test_table1_matches_hand_counts():
    frame = table1(index_table())
    assert list(frame.columns) == list(TABLE1_COLUMNS)
    assert list(frame.index) == ["train", "val", "test", "all"]
    train, val, test, everything = (frame.loc[name] for name in ("train", "val", "test", "all"))
    # train: 3 of 4 male; PE positive 1 of 4 (uncertain and blank count as negative); A/W/B 1, 2, 0 of 4
    assert train.tolist() == [75.0, 25.0, 25.0, 25.0, 50.0, 0.0, 4, 3]
    assert val.tolist() == [0.0, 100.0, 100.0, 0.0, 0.0, 50.0, 2, 2]
    assert test["Samples"] == 0 and test["Subjects"] == 0
    assert all(math.isnan(test[c]) for c in TABLE1_COLUMNS[:6])
    assert everything.tolist() == pytest.approx([50.0, 50.0, 50.0, 100 / 6, 200 / 6, 100 / 6, 6, 5])


def test_label_policy_changes_the_effusion_share_and_its_denominator():
    table = index_table()
    u_ones = table1(table, LabelPolicy(uncertain="positive"))
    assert u_ones.loc["train", "Pleural Effusion %"] == 50.0  # 1 and -1 of 4
    blank_out = table1(table, LabelPolicy(blank="blank"))
    assert blank_out.loc["train", "Pleural Effusion %"] == pytest.approx(
        100 / 3
    )  # the blank row leaves the denominator
    cardio = table1(table, finding="Cardiomegaly")
    assert "Cardiomegaly %" in cardio.columns and cardio.loc["all", "Cardiomegaly %"] == 0.0
    with pytest.raises(CfauditError, match=r"unknown finding 'Flu'"):
        table1(table, finding="Flu")


def test_data_index_and_formats(tmp_path: Path):
    index = DataIndex(index_table(), tmp_path)
    pd.testing.assert_frame_equal(table1(index), table1(index_table()))
    markdown = format_table1(table1(index), "markdown").splitlines()
    assert markdown[0] == "| Split | Sex [%] [M/F] | PE [%] | Race [%] [A/W/B] | [#] Samples | [#] Subjects |"
    assert markdown[2] == "| Train | 75.0 / 25.0 | 25.0 | 25.0 / 50.0 / 0.0 | 4 | 3 |"
    assert markdown[4] == "| Test | - / - | - | - / - / - | 0 | 0 |"
    csv = format_table1(table1(index), "csv").splitlines()
    assert csv[0] == "split,Sex M %,Sex F %,Pleural Effusion %,Race A %,Race W %,Race B %,Samples,Subjects"
    assert csv[1] == "train,75.000,25.000,25.000,25.000,50.000,0.000,4,3"
    with pytest.raises(CfauditError, match=r"--format 'html'"):
        format_table1(table1(index), "html")
