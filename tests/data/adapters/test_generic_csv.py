from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from cfaudit.data.adapters.generic_csv import ColumnMap, load_csv
from cfaudit.data.records import INDEX_COLUMNS
from cfaudit.errors import CfauditError

EXAMPLE = Path(__file__).resolve().parents[3] / "configs" / "columns.example.yaml"
HEADER = (
    "file,patient,age_years,gender,exam,projection,ethnicity,normal,cardiomegaly,effusion,devices,Edema\n"
)
ROWS = [
    "img/a.png,007,54,1,e1,frontal-pa,WHITE,no,yes,no,yes,1",
    "img/b.png,007,54,1,e1,LATERAL,WHITE,no,yes,no,yes,1",
    "img/c.png,012,61.5,2,e2,,hisp,no,no,maybe,no,",
    "img/d.png,013,30,F,,AP,,yes,no,no,no,0",
]


@pytest.fixture
def dataset(tmp_path, fake):
    """A CSV matching configs/columns.example.yaml, with images; returns a function writing the CSV rows."""

    def build(rows: list[str] = ROWS) -> Path:
        (tmp_path / "labels.csv").write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
        for row in rows:
            fake.write_png(tmp_path / row.split(",")[0])
        return tmp_path

    return build


def test_example_column_map_reads_a_csv(dataset):
    root = dataset()
    result = load_csv(root, columns=EXAMPLE)
    table = result.table
    assert list(table.columns) == list(INDEX_COLUMNS)
    assert list(table["image_id"]) == ["img/a", "img/c", "img/d"]  # b is lateral: skipped
    assert list(table["subject_id"]) == ["007", "012", "013"]  # leading zeros kept
    assert list(table["study_id"]) == ["e1", "e2", "img/d"]  # blank study -> the image id
    assert list(table["view"]) == ["PA", "PA", "AP"]  # blank view -> default_view PA
    assert list(table["sex"]) == ["Male", "Female", "Female"]  # value map 1 -> M, 2 -> F; F passes unchanged
    assert list(table["race"]) == ["White", "Other", "Unknown"]  # hisp -> Other, blank -> Unknown
    assert list(table["age"]) == [54.0, 61.5, 30.0]
    a, c, d = (table.iloc[i] for i in range(3))
    assert (a["No Finding"], a["Cardiomegaly"], a["Pleural Effusion"], a["Support Devices"], a["Edema"]) == (
        0.0, 1.0, 0.0, 1.0, 1.0,
    )  # fmt: skip
    assert c["Pleural Effusion"] == -1.0 and math.isnan(c["Edema"])
    assert d["No Finding"] == 1.0 and d["Edema"] == 0.0
    assert table["Fracture"].isna().all() and table["Atelectasis"].isna().all()
    (warning,) = result.summary.warnings
    assert "Atelectasis" in warning and "Fracture" not in warning and "Edema" not in warning
    assert result.summary.skipped["not a frontal AP/PA view"]["count"] == 1
    assert result.provenance["column_map"]["csv"] == "labels.csv"


def test_json_column_map_and_same_name_findings(tmp_path, fake):
    rows = [
        {"image": f"x{i}.png", "pid": f"p{i}", "years": 40 + i, "sex": "M", **fake.labels(Edema=1.0)}
        for i in range(3)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "metadata.csv", index=False)
    for row in rows:
        fake.write_png(tmp_path / row["image"])
    column_map = tmp_path / "map.json"
    column_map.write_text(
        json.dumps(
            {
                "columns": {"path": "image", "subject_id": "pid", "age": "years", "sex": "sex"},
                "default_view": "ap",
            }
        ),
        encoding="utf-8",
    )
    result = load_csv(tmp_path, columns=column_map)
    assert list(result.table["view"]) == ["AP"] * 3
    assert list(result.table["race"]) == ["Unknown"] * 3
    assert list(result.table["Edema"]) == [1.0] * 3 and list(result.table["Cardiomegaly"]) == [0.0] * 3
    assert result.summary.warnings == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"columns": {"path": "f", "subject_id": "s", "age": "a"}}, r"columns\.sex is required"),
        ({"columns": {"path": "f", "subject_id": "s", "age": "a", "sex": "x"}, "colour": 1}, r"unknown key\(s\) colour"),
        ({"columns": {"path": "f", "subject_id": "s", "age": "a", "sex": "x", "weight": "w"}}, r"unknown field\(s\) weight"),
        ({"columns": {"path": "f", "subject_id": "s", "age": "a", "sex": "x"}, "findings": {"Flu": "f"}}, r"unknown finding 'Flu'"),
        ({"columns": {"path": "f", "subject_id": "s", "age": "a", "sex": "x"}, "default_view": "LL"}, r"default_view 'LL'"),
        ({"columns": {"path": "f", "subject_id": "s", "age": "a", "sex": "x"}, "values": {"age": {}}}, r"values\.age is not"),
        ([1, 2], r"expected a mapping"),
    ],
)  # fmt: skip
def test_column_map_mistakes(data, message):
    with pytest.raises(CfauditError, match=message):
        ColumnMap.from_dict(data, "map.yaml")


def test_yaml_booleans_in_value_maps_match_words(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text(
        "columns: {path: f, subject_id: s, age: a, sex: x}\nvalues:\n  findings: {yes: 1, no: 0}\n",
        encoding="utf-8",
    )
    column_map = ColumnMap.read(path)
    assert column_map.values["findings"]["yes"] == "1" and column_map.values["findings"]["no"] == "0"
    path.write_text("columns: [unclosed\n", encoding="utf-8")
    with pytest.raises(CfauditError, match=r"map\.yaml: not valid YAML"):
        ColumnMap.read(path)
    with pytest.raises(CfauditError, match=r"needs a column map"):
        load_csv(tmp_path)


def test_missing_csv_column_names_file_and_column(dataset):
    root = dataset()
    table = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False).drop(columns=["age_years"])
    table.to_csv(root / "labels.csv", index=False)
    with pytest.raises(
        CfauditError, match=r"labels\.csv: missing column\(s\) 'age_years'; the csv adapter needs"
    ):
        load_csv(root, columns=EXAMPLE)


BAD_ROWS = [
    # (row index to replace, replacement, reason in the summary, message pattern)
    (0, "img/a.png,007,54,1,e1,frontal-pa,Martian,no,yes,no,yes,1", "unknown race",
     r"labels\.csv, line 2: unknown race \(value 'Martian'\)"),
    (2, "img/c.png,012,131,2,e2,,hisp,no,no,maybe,no,", "age outside 0..120",
     r"labels\.csv, line 4: age outside 0\.\.120 \(value '131'\)"),
    (2, "img/c.png,012,old,2,e2,,hisp,no,no,maybe,no,", "age is not a number",
     r"labels\.csv, line 4: age is not a number \(value 'old'\)"),
    (3, "img/d.png,013,30,Q,,AP,,yes,no,no,no,0", "unknown sex",
     r"labels\.csv, line 5: unknown sex \(value 'Q'\)"),
    (3, "img/a.png,013,30,F,,AP,,yes,no,no,no,0", "duplicate image",
     r"labels\.csv, line 5: duplicate image \(value 'img/a \(first on line 2\)'\)"),
    (3, "img/d.png,013,30,F,,AP,,yes,no,no,no,7", "finding label not 1, 0, -1 or blank",
     r"labels\.csv, line 5: finding label not 1, 0, -1 or blank \(value 'Edema=7'\)"),
    (3, "img/zz.png,013,30,F,,AP,,yes,no,no,no,0", "image file missing",
     r"labels\.csv, line 5: image file missing \(value '.*img/zz\.png'\)"),
]  # fmt: skip


@pytest.mark.parametrize(("position", "row", "reason", "message"), BAD_ROWS)
def test_each_bad_row_is_one_error_or_a_counted_skip(dataset, position, row, reason, message):
    rows = list(ROWS)
    rows[position] = row
    root = dataset(rows)
    (root / "img/zz.png").unlink(missing_ok=True)
    with pytest.raises(CfauditError, match=message + r".*--on-bad-row skip"):
        load_csv(root, columns=EXAMPLE)
    result = load_csv(root, columns=EXAMPLE, on_bad_row="skip")
    entry = result.summary.skipped[reason]
    assert entry["count"] == 1 and "labels.csv, line" in entry["examples"][0]
    assert result.summary.rows_kept == 2 and result.summary.rows_read == 4
    assert result.summary.rows_skipped == 2  # the bad row and the lateral


def test_skip_examples_are_capped_at_five(tmp_path, fake):
    rows = [{"f": f"i{i}.png", "s": f"s{i}", "a": "x" if i < 8 else 50, "sex": "M"} for i in range(10)]
    pd.DataFrame(rows).to_csv(tmp_path / "metadata.csv", index=False)
    column_map = {"columns": {"path": "f", "subject_id": "s", "age": "a", "sex": "sex"}, "default_view": "PA"}
    result = load_csv(tmp_path, columns=column_map, on_bad_row="skip", check_images="none")
    entry = result.summary.skipped["age is not a number"]
    assert entry["count"] == 8 and len(entry["examples"]) == 5
    assert entry["examples"][0].endswith("metadata.csv, line 2: 'x'")
    assert list(result.table["subject_id"]) == ["s8", "s9"]
