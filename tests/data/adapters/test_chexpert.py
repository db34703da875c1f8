from __future__ import annotations

import math

import pandas as pd
import pytest

from cfaudit.data.adapters import chexpert as chexpert_module
from cfaudit.data.adapters.chexpert import load_chexpert
from cfaudit.data.records import INDEX_COLUMNS
from cfaudit.errors import CfauditError

EXPECTED = [
    # image_id, subject, study, view, age, sex, race
    (
        "train/patient00001/study1/view1_frontal",
        "patient00001",
        "patient00001_study1",
        "AP",
        68.0,
        "Female",
        "White",
    ),
    (
        "train/patient00002/study2/view1_frontal",
        "patient00002",
        "patient00002_study2",
        "PA",
        87.0,
        "Male",
        "Black",
    ),
    (
        "train/patient00004/study1/view1_frontal",
        "patient00004",
        "patient00004_study1",
        "PA",
        33.0,
        "Male",
        "Unknown",
    ),
    (
        "valid/patient64541/study1/view1_frontal",
        "patient64541",
        "patient64541_study1",
        "AP",
        73.0,
        "Male",
        "Asian",
    ),
]


def _records(table: pd.DataFrame) -> list[tuple]:
    columns = ["image_id", "subject_id", "study_id", "view", "age", "sex", "race"]
    return [tuple(row) for row in table[columns].itertuples(index=False)]


def test_records_from_parent_folder_with_demographics(chexpert_dataset, tmp_path):
    base = chexpert_dataset()
    result = load_chexpert(base)
    assert list(result.table.columns) == list(INDEX_COLUMNS)
    assert _records(result.table) == EXPECTED
    assert list(result.table["path"]) == [f"{image_id}.jpg" for image_id, *_ in EXPECTED]
    assert result.root == base / "CheXpert-v1.0-small"
    table = result.table.set_index("subject_id")
    assert table.loc["patient00001", "Pleural Effusion"] == 1.0
    assert table.loc["patient00002", "Cardiomegaly"] == -1.0
    assert math.isnan(table.loc["patient00004", "Fracture"])
    summary = result.summary
    assert (summary.rows_read, summary.rows_kept) == (6, 4)
    assert summary.skipped["not a frontal AP/PA view"]["count"] == 1
    assert summary.skipped["sex Unknown"]["count"] == 1
    assert "train.csv, line 5" in summary.skipped["sex Unknown"]["examples"][0]
    assert [p.rsplit("/", 1)[-1] for p in (f["path"] for f in result.provenance["files"])] == [
        "train.csv",
        "valid.csv",
        "CHEXPERT DEMO.csv",
    ]


def test_root_may_be_the_chexpert_folder_itself_or_renamed(chexpert_dataset, tmp_path):
    base = chexpert_dataset()
    inner = base / "CheXpert-v1.0-small"
    (base / "CHEXPERT DEMO.csv").rename(inner / "CHEXPERT DEMO.csv")  # demographics beside train.csv
    assert _records(load_chexpert(inner).table) == EXPECTED
    renamed = base / "chexpert"
    inner.rename(renamed)  # Path still says CheXpert-v1.0-small/...: the prefix is dropped, not looked up
    result = load_chexpert(renamed)
    assert _records(result.table) == EXPECTED
    assert (result.root / result.table["path"].iloc[0]).is_file()


def test_without_demographics_every_race_is_unknown_with_a_warning(chexpert_dataset):
    base = chexpert_dataset(demo=False)
    result = load_chexpert(base)
    assert set(result.table["race"]) == {"Unknown"}
    assert any("race is Unknown" in w for w in result.summary.warnings)


def test_explicit_demographics_file_and_xlsx_without_openpyxl(chexpert_dataset, monkeypatch, tmp_path):
    base = chexpert_dataset(demo=False)
    demo = tmp_path / "demo.csv"
    demo.write_text("PATIENT,GENDER,AGE_AT_CXR,PRIMARY_RACE\npatient00002,M,87,Other\n", encoding="utf-8")
    races = load_chexpert(base, demographics=demo).table.set_index("subject_id")["race"]
    assert races.to_dict() == {
        "patient00001": "Unknown", "patient00002": "Other", "patient00004": "Unknown", "patient64541": "Unknown",
    }  # fmt: skip
    xlsx = tmp_path / "CHEXPERT DEMO.xlsx"
    xlsx.write_bytes(b"PK\x03\x04 not really a workbook")
    monkeypatch.setattr(chexpert_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        CfauditError, match=r"CHEXPERT DEMO\.xlsx: reading \.xlsx needs openpyxl.*save the sheet as CSV"
    ):
        load_chexpert(base, demographics=xlsx)
    with pytest.raises(CfauditError, match=r"no such demographics file"):
        load_chexpert(base, demographics=tmp_path / "absent.csv")


def test_bad_age_sex_and_race_name_file_line_and_value(chexpert_dataset, fake):
    base = chexpert_dataset()
    train = base / "CheXpert-v1.0-small" / "train.csv"
    original = train.read_text(encoding="utf-8")
    table = pd.read_csv(train, dtype=str, keep_default_na=False)

    table.loc[2, "Age"] = "eighty"
    train.write_text(table.to_csv(index=False), encoding="utf-8")
    with pytest.raises(CfauditError, match=r"train\.csv, line 4: age is not a number \(value 'eighty'\)"):
        load_chexpert(base)
    skipped = load_chexpert(base, on_bad_row="skip")
    assert skipped.summary.skipped["age is not a number"]["count"] == 1
    assert len(skipped.table) == 3

    train.write_text(original, encoding="utf-8")
    table = pd.read_csv(train, dtype=str, keep_default_na=False)
    table.loc[4, "Sex"] = "X"
    train.write_text(table.to_csv(index=False), encoding="utf-8")
    with pytest.raises(CfauditError, match=r"train\.csv, line 6: unknown sex \(value 'X'\)"):
        load_chexpert(base)

    train.write_text(original, encoding="utf-8")
    demo = base / "CHEXPERT DEMO.csv"
    demo.write_text(
        demo.read_text(encoding="utf-8").replace("Black or African American", "Zebra"), encoding="utf-8"
    )
    with pytest.raises(CfauditError, match=r"CHEXPERT DEMO\.csv, line 3: unknown race \(value 'Zebra'\)"):
        load_chexpert(base)


def test_missing_column_and_missing_folder(chexpert_dataset, tmp_path):
    base = chexpert_dataset()
    valid = base / "CheXpert-v1.0-small" / "valid.csv"
    valid.write_text(pd.read_csv(valid).drop(columns=["AP/PA"]).to_csv(index=False), encoding="utf-8")
    with pytest.raises(CfauditError, match=r"valid\.csv: missing column\(s\) 'AP/PA'; the chexpert adapter"):
        load_chexpert(base)
    with pytest.raises(CfauditError, match=r"no train\.csv or valid\.csv"):
        load_chexpert(tmp_path / "CheXpert-v1.0-small" / "train")


def test_missing_columns_show_the_real_header_and_case_near_misses(chexpert_dataset):
    base = chexpert_dataset()
    train = base / "CheXpert-v1.0-small" / "train.csv"
    table = pd.read_csv(train, dtype=str, keep_default_na=False)
    table.rename(columns=str.lower).to_csv(train, index=False)
    with pytest.raises(CfauditError) as caught:
        load_chexpert(base)
    message = str(caught.value)
    assert "train.csv: missing column(s) 'Path', 'Sex', 'Age'" in message
    assert "(the file has: 'path', 'sex', 'age', 'frontal/lateral', 'ap/pa', 'no finding'," in message
    assert "found 'path' for 'Path', 'sex' for 'Sex', 'age' for 'Age' and 16 more" in message
    assert "column names are case- and space-sensitive" in message
    table.rename(columns={"Sex": " Sex "}).to_csv(train, index=False)
    with pytest.raises(
        CfauditError, match=r"missing column\(s\) 'Sex';.*found ' Sex ' for 'Sex' that differ"
    ):
        load_chexpert(base)


def test_corrupt_image_with_decode_check(chexpert_dataset):
    base = chexpert_dataset()
    (base / "CheXpert-v1.0-small" / "train/patient00002/study2/view1_frontal.jpg").write_bytes(
        b"not an image"
    )
    assert len(load_chexpert(base).table) == 4  # "exists" only stats the file
    with pytest.raises(CfauditError, match=r"train\.csv, line 4: image file unreadable .*view1_frontal\.jpg"):
        load_chexpert(base, check_images="decode")
    result = load_chexpert(base, check_images="decode", on_bad_row="skip")
    assert result.summary.skipped["image file unreadable"]["count"] == 1
    assert "patient00002" not in set(result.table["subject_id"])
