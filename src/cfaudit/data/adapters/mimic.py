"""MIMIC-CXR-JPG 2.0.0 joined with MIMIC-IV demographics.

Files read (each may be the ``.csv.gz`` the release ships):

* ``--root``: ``mimic-cxr-2.0.0-metadata.csv`` (one row per DICOM: dicom_id, subject_id, study_id, ViewPosition,
  StudyDate YYYYMMDD), ``mimic-cxr-2.0.0-chexpert.csv`` (subject_id, study_id, 14 findings) and, optionally,
  ``mimic-cxr-2.0.0-split.csv`` (dicom_id, split in train/validate/test).
* ``--mimic-iv``: ``patients.csv`` (subject_id, gender, anchor_age, anchor_year) and ``admissions.csv``
  (subject_id and ``race`` from v2, ``ethnicity`` in v1), in the folder itself or under ``hosp/`` (v2+) or
  ``core/`` (v1).

Records: frontal AP/PA images only (other views are skipped and counted); age at the study is
``anchor_age + (year(StudyDate) - anchor_year)``; race is every admission's value collapsed by
:func:`~cfaudit.data.vocabulary.normalize_race`, ignoring Unknown ones; a subject whose known admissions
disagree is dropped (counted). Studies without a CheXpert row get blank findings. Image paths follow the
release: ``files/pXX/pSUBJECT/sSTUDY/DICOM.jpg`` (XX = the subject id's first two digits).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cfaudit.data.adapters import common
from cfaudit.data.vocabulary import FINDINGS, UNKNOWN, normalize_race, normalize_sex
from cfaudit.errors import CfauditError

METADATA = "mimic-cxr-2.0.0-metadata"
CHEXPERT = "mimic-cxr-2.0.0-chexpert"
SPLIT = "mimic-cxr-2.0.0-split"
_OFFICIAL_SPLITS = {"train": "train", "validate": "val", "test": "test"}
_RELEASE_HINT = "--root must be the MIMIC-CXR-JPG folder holding the release's CSV files"
_MIMIC_IV_HINT = (
    "MIMIC-CXR-JPG carries no age, sex or race: pass --mimic-iv DIR, the MIMIC-IV folder holding "
    "patients.csv(.gz) and admissions.csv(.gz) (directly or under hosp/ or core/)"
)


def find_mimic_iv(mimic_iv: str | Path | None, root: Path) -> tuple[Path, Path]:
    """``patients`` and ``admissions`` files in ``mimic_iv`` (or ``root`` if None), directly or in hosp/ or core/."""
    base = Path(mimic_iv) if mimic_iv is not None else root
    if mimic_iv is not None and not base.is_dir():
        raise CfauditError(f"{base}: no such folder; {_MIMIC_IV_HINT}")
    for folder in (base, base / "hosp", base / "core"):
        patients = common.find_source_file(folder, "patients", "", required=False)
        admissions = common.find_source_file(folder, "admissions", "", required=False)
        if patients is not None and admissions is not None:
            return patients, admissions
    raise CfauditError(f"{base}: no patients/admissions files found; {_MIMIC_IV_HINT}")


def image_paths(subject_ids: pd.Series, study_ids: pd.Series, dicom_ids: pd.Series) -> pd.Series:
    """``files/pXX/pSUBJECT/sSTUDY/DICOM.jpg`` for each row (vectorised string concatenation)."""
    return "files/p" + subject_ids.str[:2] + "/p" + subject_ids + "/s" + study_ids + "/" + dicom_ids + ".jpg"


def load_mimic(
    root: str | Path,
    *,
    mimic_iv: str | Path | None = None,
    on_bad_row: str = "error",
    check_images: str = "exists",
) -> common.AdapterResult:
    """Read MIMIC-CXR-JPG (+ MIMIC-IV demographics) into index records (split blank, official split attached)."""
    root = Path(root)
    common.check_reading_options(on_bad_row, check_images)
    if not root.is_dir():
        raise CfauditError(f"{root}: no such folder; {_RELEASE_HINT}")
    metadata_path = common.find_source_file(root, METADATA, _RELEASE_HINT)
    chexpert_path = common.find_source_file(root, CHEXPERT, _RELEASE_HINT)
    split_path = common.find_source_file(root, SPLIT, "", required=False)
    patients_path, admissions_path = find_mimic_iv(mimic_iv, root)
    assert metadata_path is not None and chexpert_path is not None

    # 1. One row per DICOM; frontal AP/PA only.
    meta = common.read_source_csv(
        metadata_path,
        required=["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"],
        needed_by="the mimic adapter needs dicom_id, subject_id, study_id, ViewPosition and StudyDate",
    )
    table = pd.DataFrame(
        {
            "image_id": meta["dicom_id"].str.strip(),
            "subject_id": meta["subject_id"].str.strip(),
            "study_id": meta["study_id"].str.strip(),
            "view": meta["ViewPosition"].str.strip().str.upper(),
            "_study_date": meta["StudyDate"].str.strip(),
            "_line": meta["_line"],
        }
    )
    rows = common.RowFilter(table, policy=on_bad_row, file=metadata_path)
    for column, what in (("image_id", "dicom_id"), ("subject_id", "subject_id"), ("study_id", "study_id")):
        rows.drop_blank(column, what, f"fill the {what} column")
    rows.drop_non_frontal(rows.table["view"])

    # 2. Sex and age from patients.csv.
    patients = common.read_source_csv(
        patients_path,
        required=["subject_id", "gender", "anchor_age", "anchor_year"],
        needed_by="the mimic adapter needs subject_id, gender, anchor_age and anchor_year from MIMIC-IV patients",
    )
    patients["subject_id"] = patients["subject_id"].str.strip()
    _refuse_duplicates(patients, "subject_id", patients_path)
    patients = patients.set_index("subject_id")
    t = rows.table
    for column in ("gender", "anchor_age", "anchor_year", "_line"):
        t["_p_" + column] = t["subject_id"].map(patients[column])
    rows.drop(
        "subject not in MIMIC-IV patients",
        t["_p__line"].isna().to_numpy(),
        value="subject_id",
        hint=f"use the MIMIC-IV release whose {patients_path.name} lists every MIMIC-CXR subject",
    )
    t = rows.table
    sexes = common.normalize_values(t["_p_gender"], normalize_sex)
    rows.drop(
        "unknown sex",
        sexes.isna().to_numpy(),
        value="_p_gender",
        file=patients_path,
        line="_p__line",
        hint="gender must be M or F",
    )
    rows.table["sex"] = sexes.loc[rows.table.index]
    for column in ("anchor_age", "anchor_year"):
        t = rows.table
        numbers = pd.to_numeric(t["_p_" + column].str.strip(), errors="coerce")
        rows.drop(
            f"{column} is not a number",
            numbers.isna().to_numpy(),
            value="_p_" + column,
            file=patients_path,
            line="_p__line",
            hint=f"fix {column} in {patients_path.name}",
        )
    t = rows.table
    date_ok = t["_study_date"].str.fullmatch(r"\d{8}(\.0+)?")
    rows.drop(
        "StudyDate is not YYYYMMDD",
        ~date_ok.to_numpy(dtype=bool),
        value="_study_date",
        hint="StudyDate must read YYYYMMDD",
    )
    t = rows.table
    ages = (
        pd.to_numeric(t["_p_anchor_age"]).astype(float)
        + pd.to_numeric(t["_study_date"].str[:4]).astype(float)
        - pd.to_numeric(t["_p_anchor_year"]).astype(float)
    )
    shown = (
        "anchor_age "
        + t["_p_anchor_age"]
        + ", anchor_year "
        + t["_p_anchor_year"]
        + ", StudyDate "
        + t["_study_date"]
        + " -> age "
        + ages.map("{:g}".format)
    )
    rows.drop(
        "age outside 0..120",
        ((ages < 0) | (ages > 120)).to_numpy(),
        value=shown,
        hint="check the StudyDate and the patient's anchor_age/anchor_year",
    )
    rows.table["age"] = ages.loc[rows.table.index]

    # 3. Race from every admission of the subject.
    race_column = _race_column(admissions_path)
    admissions = common.read_source_csv(
        admissions_path,
        required=["subject_id", race_column],
        needed_by="the mimic adapter needs subject_id and race (v2+) or ethnicity (v1) from MIMIC-IV admissions",
    )
    admissions["subject_id"] = admissions["subject_id"].str.strip()
    admissions = admissions[admissions["subject_id"].isin(rows.table["subject_id"].unique())]
    races, conflicts = _subject_races(admissions, race_column)

    def drop_subjects(reason: str, values: pd.Series, lines: pd.Series, hint: str, always_skip: bool) -> None:
        """Skip the rows of the subjects that have a ``values`` entry, citing their admissions ``lines``."""
        t = rows.table
        value = t["subject_id"].map(values).fillna("")
        t["_a_line"] = t["subject_id"].map(lines)
        mask = (value != "").to_numpy()
        rows.drop(
            reason,
            mask,
            value=value,
            file=admissions_path,
            line="_a_line",
            hint=hint,
            always_skip=always_skip,
        )

    drop_subjects(
        "unknown race",
        races["_bad_value"],
        races["_bad_line"],
        "a race/ethnicity spelling cfaudit does not know; report it, or fix the value",
        always_skip=False,
    )
    drop_subjects(
        "conflicting race across admissions", conflicts["races"], conflicts["_line"], "", always_skip=True
    )
    if len(conflicts):
        rows.warn(
            f"{len(conflicts)} subject(s) dropped: their admissions in {admissions_path.name} disagree on race"
        )
    rows.table["race"] = rows.table["subject_id"].map(races["race"]).fillna(UNKNOWN)

    # 4. Findings from the CheXpert labeler file (blank for studies it does not list).
    chexpert = common.read_source_csv(
        chexpert_path,
        required=["subject_id", "study_id", *FINDINGS],
        needed_by="the mimic adapter needs subject_id, study_id and the 14 CheXpert findings",
    )
    chexpert["_key"] = chexpert["subject_id"].str.strip() + "/" + chexpert["study_id"].str.strip()
    _refuse_duplicates(chexpert, "_key", chexpert_path, what="study (subject_id/study_id)")
    chexpert = chexpert.set_index("_key")
    t = rows.table
    keys = t["subject_id"] + "/" + t["study_id"]
    cells = chexpert.reindex(keys.to_numpy())[list(FINDINGS)].fillna("")
    cells.index = t.index
    t["_c_line"] = keys.map(chexpert["_line"])
    labels = rows.drop_bad_labels(cells, file=chexpert_path, line="_c_line")

    # 5. Paths, duplicates, image files.
    t = rows.table
    t["path"] = image_paths(t["subject_id"], t["study_id"], t["image_id"])
    rows.drop_duplicates(["image_id"])
    rows.check_images(root, check_images)
    rows.summary.rows_kept = len(rows.table)

    official = _official_split(split_path) if split_path is not None else None
    files = [metadata_path, chexpert_path, patients_path, admissions_path]
    provenance = {
        "source": "mimic",
        "root": str(root.resolve()),
        "files": [common.file_record(p) for p in ([*files, split_path] if split_path else files)],
        "options": {
            "mimic_iv": str(Path(mimic_iv).resolve()) if mimic_iv else None,
            "on_bad_row": on_bad_row,
            "check_images": check_images,
            "race_column": race_column,
        },
    }
    return common.AdapterResult(
        common.finish_table(rows.table, labels), rows.summary, provenance, root, official
    )


def _refuse_duplicates(table: pd.DataFrame, column: str, path: Path, what: str | None = None) -> None:
    duplicated = table[column].duplicated()
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise CfauditError(
            f"{path}, line {row['_line']}: {what or column} {row[column]!r} appears twice; "
            "the file looks damaged, use the original release file"
        )


def _race_column(admissions_path: Path) -> str:
    """``race`` (MIMIC-IV v2+) or ``ethnicity`` (v1)."""
    try:
        header = pd.read_csv(admissions_path, nrows=0).columns
    except Exception as error:
        raise CfauditError(f"{admissions_path}: not a readable CSV ({error})") from None
    for column in ("race", "ethnicity"):
        if column in header:
            return column
    raise CfauditError(
        f"{admissions_path}: missing column 'race' (MIMIC-IV v2+) or 'ethnicity' (v1); "
        "the mimic adapter needs one of them for each subject's race"
    )


def _subject_races(admissions: pd.DataFrame, column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per subject: the agreed race (or Unknown), the first unrecognised spelling; and the subjects in conflict.

    Returns ``races`` indexed by subject_id with columns race, _bad_value, _bad_line, and ``conflicts`` indexed
    by subject_id with columns races ("Black, White") and _line (the subject's first admission line).
    """
    collapsed = common.normalize_values(admissions[column], normalize_race)
    admissions = admissions.assign(_race=collapsed)
    unrecognised = admissions[admissions["_race"].isna()].drop_duplicates("subject_id")
    known = admissions[admissions["_race"].notna() & (admissions["_race"] != UNKNOWN)]
    distinct = known.drop_duplicates(["subject_id", "_race"])
    counts = distinct.groupby("subject_id", sort=False)["_race"].agg(["first", "count"])
    in_conflict = counts.index[counts["count"] > 1]
    conflict_rows = distinct[distinct["subject_id"].isin(in_conflict)]
    conflicts = conflict_rows.groupby("subject_id").agg(
        races=("_race", lambda values: ", ".join(sorted(values))), _line=("_line", "min")
    )
    races = pd.DataFrame(index=pd.Index(admissions["subject_id"].unique(), name="subject_id"))
    races["race"] = counts["first"].where(counts["count"] == 1)
    races["race"] = races["race"].fillna(UNKNOWN)
    races["_bad_value"] = unrecognised.set_index("subject_id")[column]
    races["_bad_line"] = unrecognised.set_index("subject_id")["_line"]
    return races, conflicts


def _official_split(path: Path) -> pd.Series:
    """dicom_id -> train/val/test from the release's split file (``validate`` becomes ``val``)."""
    split = common.read_source_csv(
        path, required=["dicom_id", "split"], needed_by="the official split needs dicom_id, split"
    )
    names = split["split"].str.strip().str.lower()
    unknown = ~names.isin(list(_OFFICIAL_SPLITS))
    if unknown.any():
        row = split[unknown].iloc[0]
        raise CfauditError(
            f"{path}, line {row['_line']}: split {row['split']!r} is not train, validate or test; "
            "use the original release file"
        )
    return pd.Series(names.map(_OFFICIAL_SPLITS).to_numpy(), index=split["dicom_id"].str.strip().to_numpy())
