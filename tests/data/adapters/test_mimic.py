from __future__ import annotations

import gzip
import math
from pathlib import Path

import pandas as pd
import pytest

from cfaudit.data.adapters import build_index
from cfaudit.data.adapters.mimic import find_mimic_iv, load_mimic
from cfaudit.data.records import INDEX_COLUMNS, validate_index
from cfaudit.errors import CfauditError

# Hand-computed from the fake data set in conftest.py: age = anchor_age + year(StudyDate) - anchor_year.
EXPECTED = {
    "d1": ("10000001", "50000001", "PA", 52.0, "Female", "White"),
    "d2": ("10000002", "50000002", "AP", 29.0, "Male", "Black"),
    "d4": ("10000004", "50000004", "PA", 75.0, "Male", "Unknown"),
    "d5": ("01000005", "50000005", "PA", 20.0, "Female", "Asian"),
}


def _rewrite(path: Path, edit) -> None:
    """Read a (gzipped) fake CSV as strings, edit the frame, write it back the same way."""
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = edit(table)
    text = table.to_csv(index=False)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("version", "gz", "layout"),
    [(2, True, "hosp"), (1, False, "core"), (2, False, "flat"), (1, True, "flat")],
)
def test_records_ages_races_and_paths(mimic_dataset, version, gz, layout):
    root, mimic_iv = mimic_dataset(version=version, gz=gz, layout=layout)
    result = load_mimic(root, mimic_iv=mimic_iv)
    table = result.table
    assert list(table.columns) == list(INDEX_COLUMNS)
    assert list(table["image_id"]) == list(EXPECTED)
    for _, row in table.iterrows():
        subject, study, view, age, sex, race = EXPECTED[row["image_id"]]
        assert (row["subject_id"], row["study_id"], row["view"], row["age"], row["sex"], row["race"]) == (
            subject, study, view, age, sex, race,
        )  # fmt: skip
        assert row["path"] == f"files/p{subject[:2]}/p{subject}/s{study}/{row['image_id']}.jpg"
        assert row["split"] == ""
    validate_index(table, "test")  # the adapter's output satisfies the schema


def test_findings_kept_in_four_states_and_blank_without_chexpert_row(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    table = load_mimic(root, mimic_iv=mimic_iv).table.set_index("image_id")
    assert table.loc["d1", "Cardiomegaly"] == 1.0 and table.loc["d1", "Support Devices"] == 1.0
    assert table.loc["d2", "Pleural Effusion"] == -1.0
    assert math.isnan(table.loc["d2", "Edema"])
    assert table.loc["d5", "Pleural Effusion"] == 1.0
    assert table.loc["d4", list(INDEX_COLUMNS[8:22])].isna().all()  # study without a chexpert row: all blank


def test_laterals_and_conflicting_races_are_counted_not_errors(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    summary = load_mimic(root, mimic_iv=mimic_iv, on_bad_row="error").summary
    assert (summary.rows_read, summary.rows_kept, summary.rows_skipped) == (6, 4, 2)
    assert summary.skipped["not a frontal AP/PA view"]["count"] == 1
    assert "'LATERAL'" in summary.skipped["not a frontal AP/PA view"]["examples"][0]
    conflict = summary.skipped["conflicting race across admissions"]
    assert conflict["count"] == 1 and "'Asian, White'" in conflict["examples"][0]
    assert any("1 subject(s) dropped" in w for w in summary.warnings)


def test_provenance_records_files_and_official_split(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    result = load_mimic(root, mimic_iv=mimic_iv)
    names = [Path(f["path"]).name for f in result.provenance["files"]]
    assert names == [
        "mimic-cxr-2.0.0-metadata.csv.gz",
        "mimic-cxr-2.0.0-chexpert.csv.gz",
        "patients.csv.gz",
        "admissions.csv.gz",
        "mimic-cxr-2.0.0-split.csv.gz",
    ]
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in result.provenance["files"])
    assert result.provenance["options"]["race_column"] == "race"
    assert result.official_split.to_dict() == {
        "d1": "train", "d1lat": "train", "d2": "val", "d3": "test", "d4": "test", "d5": "train",
    }  # fmt: skip


def test_official_split_through_build_index(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    index = build_index("mimic", root, mimic_iv=mimic_iv, split_source="official")
    assert dict(zip(index.table["image_id"], index.table["split"], strict=True)) == {
        "d1": "train", "d2": "val", "d4": "test", "d5": "train",
    }  # fmt: skip
    assert index.meta["split"]["method"] == "official"
    assert index.meta["summary"]["skipped"]["not a frontal AP/PA view"]["count"] == 1


def test_missing_mimic_iv_says_what_to_pass(mimic_dataset, tmp_path):
    root, _ = mimic_dataset()
    with pytest.raises(CfauditError, match=r"pass --mimic-iv DIR"):
        load_mimic(root)
    with pytest.raises(CfauditError, match=r"no such folder"):
        find_mimic_iv(tmp_path / "nowhere", root)


def test_missing_column_names_file_and_column(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    meta = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    _rewrite(meta, lambda t: t.drop(columns=["StudyDate"]))
    with pytest.raises(
        CfauditError, match=r"metadata\.csv\.gz: missing column\(s\) 'StudyDate'; the mimic adapter"
    ):
        load_mimic(root, mimic_iv=mimic_iv)


def test_missing_columns_list_the_whole_header_not_only_the_matches(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    _rewrite(root / "mimic-cxr-2.0.0-metadata.csv.gz", lambda t: t.rename(columns=str.lower))
    with pytest.raises(CfauditError) as caught:
        load_mimic(root, mimic_iv=mimic_iv)
    message = str(caught.value)
    assert "metadata.csv.gz: missing column(s) 'ViewPosition', 'StudyDate'; the mimic adapter" in message
    assert "'performedprocedurestepdescription', 'viewposition', 'rows', 'columns', 'studydate'" in message
    assert (
        "found 'viewposition' for 'ViewPosition', 'studydate' for 'StudyDate' that differ only in case"
        in message
    )


def test_admissions_without_race_or_ethnicity_column(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    _rewrite(mimic_iv / "hosp" / "admissions.csv.gz", lambda t: t.drop(columns=["race"]))
    with pytest.raises(CfauditError, match=r"missing column 'race' \(MIMIC-IV v2\+\) or 'ethnicity' \(v1\)"):
        load_mimic(root, mimic_iv=mimic_iv)


def test_subject_missing_from_patients_is_a_bad_row(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    _rewrite(mimic_iv / "hosp" / "patients.csv.gz", lambda t: t[t["subject_id"] != "10000002"])
    with pytest.raises(CfauditError, match=r"metadata\.csv\.gz, line 4: subject not in MIMIC-IV patients "
                                           r"\(value '10000002'\).*--on-bad-row skip"):  # fmt: skip
        load_mimic(root, mimic_iv=mimic_iv)
    result = load_mimic(root, mimic_iv=mimic_iv, on_bad_row="skip")
    assert "d2" not in set(result.table["image_id"])
    assert result.summary.skipped["subject not in MIMIC-IV patients"]["count"] == 1


def test_unknown_race_spelling_names_admissions_line(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    _rewrite(
        mimic_iv / "hosp" / "admissions.csv.gz",
        lambda t: t.assign(race=t["race"].where(t["race"] != "BLACK/CAPE VERDEAN", "MARTIAN")),
    )
    with pytest.raises(CfauditError, match=r"admissions\.csv\.gz, line 4: unknown race \(value 'MARTIAN'\)"):
        load_mimic(root, mimic_iv=mimic_iv)
    result = load_mimic(root, mimic_iv=mimic_iv, on_bad_row="skip")
    assert result.summary.skipped["unknown race"]["count"] == 1
    assert list(result.table["image_id"]) == ["d1", "d4", "d5"]


def test_bad_gender_and_bad_anchor_age_name_patients_line(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    patients = mimic_iv / "hosp" / "patients.csv.gz"
    _rewrite(patients, lambda t: t.assign(gender=t["gender"].where(t["subject_id"] != "10000004", "X")))
    with pytest.raises(CfauditError, match=r"patients\.csv\.gz, line 5: unknown sex \(value 'X'\)"):
        load_mimic(root, mimic_iv=mimic_iv)
    _rewrite(
        patients, lambda t: t.assign(gender="F", anchor_age=t["anchor_age"].where(t.index != 0, "fifty"))
    )
    with pytest.raises(
        CfauditError, match=r"patients\.csv\.gz, line 2: anchor_age is not a number \(value 'fifty'\)"
    ):
        load_mimic(root, mimic_iv=mimic_iv)


def test_age_out_of_range_names_metadata_line(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    _rewrite(
        root / "mimic-cxr-2.0.0-metadata.csv.gz",
        lambda t: t.assign(StudyDate=t["StudyDate"].where(t["dicom_id"] != "d5", "22900301")),
    )
    with pytest.raises(CfauditError, match=r"metadata\.csv\.gz, line 7: age outside 0\.\.120 .*-> age 150"):
        load_mimic(root, mimic_iv=mimic_iv)


def test_bad_label_names_chexpert_file_line_and_finding(mimic_dataset):
    root, mimic_iv = mimic_dataset()
    _rewrite(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz",
        lambda t: t.assign(Cardiomegaly=t["Cardiomegaly"].where(t["study_id"] != "50000002", "2")),
    )
    with pytest.raises(CfauditError, match=r"chexpert\.csv\.gz, line 3: finding label not 1, 0, -1 or blank "
                                           r"\(value 'Cardiomegaly=2'\)"):  # fmt: skip
        load_mimic(root, mimic_iv=mimic_iv)


def test_missing_image_and_duplicate_dicom(mimic_dataset, fake):
    root, mimic_iv = mimic_dataset()
    (root / fake.mimic_path("10000002", "50000002", "d2")).unlink()
    with pytest.raises(CfauditError, match=r"metadata\.csv\.gz, line 4: image file missing .*d2\.jpg"):
        load_mimic(root, mimic_iv=mimic_iv)
    result = load_mimic(root, mimic_iv=mimic_iv, on_bad_row="skip")
    assert result.summary.skipped["image file missing"]["count"] == 1
    assert list(result.table["image_id"]) == ["d1", "d4", "d5"]
    assert len(load_mimic(root, mimic_iv=mimic_iv, check_images="none").table) == 4

    meta = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    _rewrite(meta, lambda t: pd.concat([t, t.iloc[[0]]], ignore_index=True))
    with pytest.raises(CfauditError, match=r"line 8: duplicate image \(value 'd1 \(first on line 2\)'\)"):
        load_mimic(root, mimic_iv=mimic_iv, check_images="none")
