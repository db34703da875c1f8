"""CheXpert (Stanford): ``train.csv`` / ``valid.csv`` plus, optionally, the CheXpert demographics table.

``--root`` is the CheXpert folder itself (the one holding ``train.csv``, e.g. ``CheXpert-v1.0-small``) or the
folder above it. Each row's ``Path`` (``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``) gives
the subject (``patient00001``) and the study; since CheXpert numbers studies per patient (``study1`` exists for
every patient), the study id is made unique as ``patient00001_study1``. The leading folder of ``Path`` is
dropped and paths are resolved against the folder holding ``train.csv``, so a renamed folder still works.

Only frontal AP/PA images are indexed (laterals and frontal images without AP/PA are skipped and counted), and
rows whose ``Sex`` is ``Unknown`` are skipped and counted. Race comes from the demographics table
(``CHEXPERT DEMO.xlsx`` or a CSV export of it, columns PATIENT and PRIMARY_RACE; found beside ``train.csv`` or
in ``--root``, or given with ``--demographics``); without it every race is ``Unknown``. Reading ``.xlsx`` needs
openpyxl (``pip install 'cfaudit[xlsx]'``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from cfaudit.data.adapters import common
from cfaudit.data.vocabulary import FINDINGS, UNKNOWN, normalize_race, normalize_sex
from cfaudit.errors import CfauditError

LABEL_FILES: tuple[str, ...] = ("train.csv", "valid.csv")
DEMOGRAPHICS_NAMES: tuple[str, ...] = ("CHEXPERT DEMO.xlsx", "CHEXPERT DEMO.csv")
_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *FINDINGS)
_PATH_PATTERN = r"(?:^|/)(patient\d+)/(study\d+)/[^/]+$"
#: CheXpert demographics spellings that say nothing about race (beyond those the vocabulary knows).
_UNKNOWN_RACES = {"race and ethnicity unknown", "patient refused", "declines to state", "declined"}


def find_label_folder(root: Path) -> Path:
    """The folder holding train.csv/valid.csv: ``root`` itself or its one sub-folder that has them."""
    if not root.is_dir():
        raise CfauditError(
            f"{root}: no such folder; --root must be the CheXpert folder (with train.csv) or its parent"
        )
    if any((root / name).is_file() for name in LABEL_FILES):
        return root
    found = sorted(p for p in root.iterdir() if p.is_dir() and any((p / n).is_file() for n in LABEL_FILES))
    if len(found) == 1:
        return found[0]
    if found:
        raise CfauditError(
            f"{root}: several CheXpert folders ({', '.join(p.name for p in found)}); pass the one to index as --root"
        )
    raise CfauditError(
        f"{root}: no train.csv or valid.csv here or in a sub-folder; --root must be the CheXpert folder"
    )


def _race_of(value: object) -> str:
    if str(value).strip().lower() in _UNKNOWN_RACES:
        return UNKNOWN
    return normalize_race(value)


def read_demographics(path: Path) -> pd.DataFrame:
    """PATIENT, PRIMARY_RACE (as strings) and ``_line`` from the demographics xlsx or CSV."""
    needed = "the chexpert adapter needs PATIENT and PRIMARY_RACE from the demographics table"
    if path.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
        if not path.is_file():
            raise CfauditError(f"{path}: no such file; {needed}")
        if importlib.util.find_spec("openpyxl") is None:
            raise CfauditError(
                f"{path}: reading .xlsx needs openpyxl; install it (`pip install 'cfaudit[xlsx]'`) "
                "or save the sheet as CSV and pass that file with --demographics"
            )
        try:
            table = pd.read_excel(path, dtype=str, keep_default_na=False)
        except Exception as error:  # openpyxl raises many types for damaged files
            raise CfauditError(
                f"{path}: not a readable spreadsheet ({error}); save it as CSV instead"
            ) from None
        missing = [c for c in ("PATIENT", "PRIMARY_RACE") if c not in table.columns]
        if missing:
            raise CfauditError(f"{path}: missing column(s) {', '.join(missing)}; {needed}")
        table = table.loc[:, ["PATIENT", "PRIMARY_RACE"]].copy()
        table["_line"] = range(2, len(table) + 2)
    else:
        table = common.read_source_csv(path, required=["PATIENT", "PRIMARY_RACE"], needed_by=needed)
    table["PATIENT"] = table["PATIENT"].astype(str).str.strip()
    duplicated = table["PATIENT"].duplicated()
    if duplicated.any():
        row = table[duplicated].iloc[0]
        raise CfauditError(
            f"{path}, line {row['_line']}: PATIENT {row['PATIENT']!r} appears twice; keep one row"
        )
    return table.set_index("PATIENT")


def load_chexpert(
    root: str | Path,
    *,
    demographics: str | Path | None = None,
    on_bad_row: str = "error",
    check_images: str = "exists",
) -> common.AdapterResult:
    """Read CheXpert's label CSVs (+ demographics) into index records (split blank)."""
    root = Path(root)
    common.check_reading_options(on_bad_row, check_images)
    folder = find_label_folder(root)

    # 1. train.csv and valid.csv, one working table.
    label_files = [folder / name for name in LABEL_FILES if (folder / name).is_file()]
    parts = []
    for path in label_files:
        part = common.read_source_csv(
            path, required=_COLUMNS, needed_by="the chexpert adapter needs CheXpert's columns"
        )
        parts.append(part.assign(_file=str(path)))
    raw = pd.concat(parts, ignore_index=True)
    table = pd.DataFrame({"_file": raw["_file"], "_line": raw["_line"], "_raw_path": raw["Path"].str.strip()})
    rows = common.RowFilter(table, policy=on_bad_row)

    # 2. Subject and study from the Path.
    parsed = table["_raw_path"].str.extract(_PATH_PATTERN)
    rows.drop(
        "Path not like .../patientNNNNN/studyN/FILE",
        parsed[0].isna().to_numpy(),
        value="_raw_path",
        hint="keep CheXpert's Path column as released",
    )
    t = rows.table
    t["subject_id"] = parsed.loc[t.index, 0]
    t["study_id"] = parsed.loc[t.index, 0] + "_" + parsed.loc[t.index, 1]
    first = t["_raw_path"].str.split("/", n=1)
    has_prefix = ~first.str[0].isin(["train", "valid", "test"]) & (first.str.len() == 2)
    t["path"] = t["_raw_path"].where(~has_prefix, first.str[1])
    t["image_id"] = t["path"].str.replace(r"\.[A-Za-z0-9]+$", "", regex=True)

    # 3. Frontal AP/PA only; Sex "Unknown" skipped.
    frontal = raw.loc[t.index, "Frontal/Lateral"].str.strip().str.lower() == "frontal"
    views = raw.loc[t.index, "AP/PA"].str.strip().str.upper()
    t["view"] = views.where(frontal, "LATERAL")
    rows.drop_non_frontal(t["view"])
    t = rows.table
    sex_cells = raw.loc[t.index, "Sex"].str.strip()
    rows.drop(
        "sex Unknown",
        (sex_cells.str.lower() == "unknown").to_numpy(),
        value=sex_cells,
        hint="",
        always_skip=True,
    )
    t = rows.table
    sexes = common.normalize_values(raw.loc[t.index, "Sex"].str.strip(), normalize_sex)
    rows.drop("unknown sex", sexes.isna().to_numpy(), value=raw["Sex"], hint="Sex must be Male or Female")
    rows.table["sex"] = sexes.loc[rows.table.index]
    rows.table["age"] = rows.drop_bad_ages(raw.loc[rows.table.index, "Age"])

    # 4. Race from the demographics table, when there is one.
    demo_path = _demographics_path(demographics, folder, root)
    if demo_path is None:
        rows.table["race"] = UNKNOWN
        rows.warn("no CheXpert demographics table (CHEXPERT DEMO.xlsx/.csv): race is Unknown for every row")
    else:
        demo = read_demographics(demo_path)
        t = rows.table
        cells = t["subject_id"].map(demo["PRIMARY_RACE"]).fillna("")
        races = common.normalize_values(cells, _race_of)
        t["_d_line"] = t["subject_id"].map(demo["_line"])
        rows.drop(
            "unknown race",
            races.isna().to_numpy(),
            value=cells,
            file=demo_path,
            line="_d_line",
            hint="a PRIMARY_RACE spelling cfaudit does not know; report it, or fix the value",
        )
        rows.table["race"] = races.loc[rows.table.index]

    # 5. Findings, duplicates, image files.
    labels = rows.drop_bad_labels(raw.loc[rows.table.index, list(FINDINGS)])
    rows.drop_duplicates(["image_id"])
    rows.check_images(folder, check_images)
    rows.summary.rows_kept = len(rows.table)

    files = [*label_files, demo_path] if demo_path is not None else label_files
    provenance = {
        "source": "chexpert",
        "root": str(folder.resolve()),
        "files": [common.file_record(p) for p in files],
        "options": {
            "demographics": str(demo_path.resolve()) if demo_path else None,
            "on_bad_row": on_bad_row,
            "check_images": check_images,
        },
    }
    return common.AdapterResult(common.finish_table(rows.table, labels), rows.summary, provenance, folder)


def _demographics_path(demographics: str | Path | None, folder: Path, root: Path) -> Path | None:
    if demographics is not None:
        path = Path(demographics)
        if not path.is_file():
            raise CfauditError(
                f"{path}: no such demographics file; give the CHEXPERT DEMO .xlsx or a CSV of it"
            )
        return path
    for base in dict.fromkeys((folder, root)):
        for name in DEMOGRAPHICS_NAMES:
            if (base / name).is_file():
                return base / name
    return None
