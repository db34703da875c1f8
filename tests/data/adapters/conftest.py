"""Fake data sets shaped like MIMIC-CXR-JPG + MIMIC-IV, CheXpert and the phantom, with tiny 16x16 PNG images
(the smallest the image loader takes)."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfaudit.data.vocabulary import FINDINGS


def write_png(path: Path, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16), value, dtype=np.uint8)).save(path)


def write_table(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """Write rows as CSV (gzipped when the name ends in .gz), blanks for missing keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=columns)
    text = frame.to_csv(index=False)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def labels(**positive: float) -> dict[str, float | str]:
    """All findings 0 except the keyword ones (underscores for spaces); ``None`` writes a blank cell."""
    row: dict[str, float | str] = dict.fromkeys(FINDINGS, 0.0)
    for key, value in positive.items():
        row[key.replace("_", " ")] = "" if value is None else value
    return row


# --- MIMIC ------------------------------------------------------------------------------------------------------
# Subjects (hand-checked expectations in tests/data/adapters/test_mimic.py):
#   10000001  F  anchor 50 @ 2150  White (WHITE + UNKNOWN admissions)  study 21520101 -> age 52; PA + LATERAL
#   10000002  M  anchor 30 @ 2180  Black                                 study 21791231 -> age 29; AP
#   10000003  F  anchor 60 @ 2120  WHITE and ASIAN admissions -> dropped (conflict)
#   10000004  M  anchor 70 @ 2100  no admission -> Unknown               study 21050615 -> age 75; no chexpert row
#   01000005  F  anchor 20 @ 2160  Asian (+ UNABLE TO OBTAIN)            study 21600301 -> age 20; PA (leading 0)
MIMIC_IMAGES = [
    # dicom_id, subject, study, view, date
    ("d1", "10000001", "50000001", "PA", "21520101"),
    ("d1lat", "10000001", "50000001", "LATERAL", "21520101"),
    ("d2", "10000002", "50000002", "AP", "21791231"),
    ("d3", "10000003", "50000003", "PA", "21200505"),
    ("d4", "10000004", "50000004", "PA", "21050615"),
    ("d5", "01000005", "50000005", "PA", "21600301"),
]
MIMIC_PATIENTS = [
    ("10000001", "F", 50, 2150),
    ("10000002", "M", 30, 2180),
    ("10000003", "F", 60, 2120),
    ("10000004", "M", 70, 2100),
    ("01000005", "F", 20, 2160),
]
MIMIC_RACES = {
    2: [
        ("10000001", "WHITE"),
        ("10000001", "UNKNOWN"),
        ("10000002", "BLACK/CAPE VERDEAN"),
        ("10000003", "WHITE - RUSSIAN"),
        ("10000003", "ASIAN - CHINESE"),
        ("01000005", "UNABLE TO OBTAIN"),
        ("01000005", "ASIAN"),
    ],
    1: [
        ("10000001", "WHITE"),
        ("10000001", "UNKNOWN/NOT SPECIFIED"),
        ("10000002", "BLACK/AFRICAN AMERICAN"),
        ("10000003", "WHITE"),
        ("10000003", "ASIAN"),
        ("01000005", "UNABLE TO OBTAIN"),
        ("01000005", "ASIAN"),
    ],
}
MIMIC_CHEXPERT = [
    ("10000001", "50000001", labels(Cardiomegaly=1.0, Support_Devices=1.0)),
    ("10000002", "50000002", labels(Pleural_Effusion=-1.0, Edema=None)),
    ("10000003", "50000003", labels(No_Finding=1.0)),
    ("01000005", "50000005", labels(Pleural_Effusion=1.0)),
]
MIMIC_SPLIT = {"d1": "train", "d1lat": "train", "d2": "validate", "d3": "test", "d4": "test", "d5": "train"}


def mimic_path(subject: str, study: str, dicom: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def build_mimic(
    base: Path, *, version: int = 2, gz: bool = True, layout: str = "hosp", images: bool = True
) -> tuple[Path, Path]:
    """A MIMIC-CXR-JPG folder and a MIMIC-IV folder; returns (cxr_root, mimic_iv_dir_to_pass)."""
    root, mimic_iv = base / "mimic-cxr-jpg", base / "mimic-iv"
    ext = ".csv.gz" if gz else ".csv"
    write_table(
        root / f"mimic-cxr-2.0.0-metadata{ext}",
        [
            {"dicom_id": d, "subject_id": s, "study_id": t, "PerformedProcedureStepDescription": "CHEST",
             "ViewPosition": v, "Rows": 8, "Columns": 8, "StudyDate": date, "StudyTime": "101010.5"}
            for d, s, t, v, date in MIMIC_IMAGES
        ],
    )  # fmt: skip
    write_table(
        root / f"mimic-cxr-2.0.0-chexpert{ext}",
        [{"subject_id": s, "study_id": t, **row} for s, t, row in MIMIC_CHEXPERT],
    )
    write_table(
        root / f"mimic-cxr-2.0.0-split{ext}",
        [
            {"dicom_id": d, "study_id": t, "subject_id": s, "split": MIMIC_SPLIT[d]}
            for d, s, t, _, _ in MIMIC_IMAGES
        ],
    )
    folder = {"hosp": mimic_iv / "hosp", "core": mimic_iv / "core", "flat": mimic_iv}[layout]
    write_table(
        folder / f"patients{ext}",
        [{"subject_id": s, "gender": g, "anchor_age": a, "anchor_year": y, "anchor_year_group": "2008 - 2010",
          "dod": ""} for s, g, a, y in MIMIC_PATIENTS],
    )  # fmt: skip
    race_column = "race" if version >= 2 else "ethnicity"
    write_table(
        folder / f"admissions{ext}",
        [{"subject_id": s, "hadm_id": 20000000 + i, "admission_type": "EW EMER.", race_column: r}
         for i, (s, r) in enumerate(MIMIC_RACES[version])],
    )  # fmt: skip
    if images:
        for d, s, t, _, _ in MIMIC_IMAGES:
            write_png(root / mimic_path(s, t, d))
    return root, mimic_iv


@pytest.fixture
def mimic_dataset(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    return lambda **kwargs: build_mimic(tmp_path, **kwargs)


# --- CheXpert -----------------------------------------------------------------------------------------------------
CHEXPERT_ROWS = [
    # path (below the CheXpert folder), sex, age, frontal/lateral, AP/PA, labels
    (
        "train/patient00001/study1/view1_frontal.jpg",
        "Female",
        68,
        "Frontal",
        "AP",
        labels(Pleural_Effusion=1.0),
    ),
    (
        "train/patient00001/study1/view2_lateral.jpg",
        "Female",
        68,
        "Lateral",
        "",
        labels(Pleural_Effusion=1.0),
    ),
    ("train/patient00002/study2/view1_frontal.jpg", "Male", 87, "Frontal", "PA", labels(Cardiomegaly=-1.0)),
    ("train/patient00003/study1/view1_frontal.jpg", "Unknown", 40, "Frontal", "AP", labels()),
    ("train/patient00004/study1/view1_frontal.jpg", "Male", 33, "Frontal", "PA", labels(Fracture=None)),
]
CHEXPERT_VALID = [
    ("valid/patient64541/study1/view1_frontal.jpg", "Male", 73, "Frontal", "AP", labels(Edema=1.0)),
]
CHEXPERT_DEMO = [
    ("patient00001", "F", 68, "White, non-Hispanic"),
    ("patient00002", "M", 87, "Black or African American"),
    ("patient00004", "M", 33, "Race and Ethnicity Unknown"),
    ("patient64541", "M", 73, "Asian - Historical Conv"),
]


def chexpert_rows(rows: list[tuple], prefix: str) -> list[dict]:
    return [
        {"Path": f"{prefix}/{p}", "Sex": sex, "Age": age, "Frontal/Lateral": fl, "AP/PA": view, **row}
        for p, sex, age, fl, view, row in rows
    ]


def build_chexpert(base: Path, *, prefix: str = "CheXpert-v1.0-small", demo: bool = True) -> Path:
    """``base/<prefix>/`` with train.csv, valid.csv, images and (optionally) a demographics CSV; returns base."""
    folder = base / prefix
    write_table(folder / "train.csv", chexpert_rows(CHEXPERT_ROWS, prefix))
    write_table(folder / "valid.csv", chexpert_rows(CHEXPERT_VALID, prefix))
    for p, *_ in CHEXPERT_ROWS + CHEXPERT_VALID:
        write_png(folder / p)
    if demo:
        write_table(
            base / "CHEXPERT DEMO.csv",
            [{"PATIENT": p, "GENDER": g, "AGE_AT_CXR": a, "PRIMARY_RACE": r, "ETHNICITY": "Non-Hispanic/Non-Latino"}
             for p, g, a, r in CHEXPERT_DEMO],
        )  # fmt: skip
    return base


@pytest.fixture
def chexpert_dataset(tmp_path: Path) -> Callable[..., Path]:
    return lambda **kwargs: build_chexpert(tmp_path, **kwargs)


# --- phantom-shaped / generic CSV ---------------------------------------------------------------------------------
def phantom_rows(n_subjects: int = 6, images_per_subject: int = 2) -> list[dict]:
    races = ["White", "Black", "Asian", "Other"]
    rows = []
    for s in range(n_subjects):
        for i in range(images_per_subject):
            k = s * images_per_subject + i
            rows.append(
                {
                    "image_id": f"ph{k:04d}",
                    "path": f"images/ph{k:04d}.png",
                    "subject_id": f"{s:05d}",
                    "study_id": f"{s:05d}-{i}",
                    "ViewPosition": "PA" if k % 2 else "AP",
                    "age": 30 + s,
                    "sex": "M" if s % 2 else "F",
                    "race": races[s % len(races)],
                    **labels(
                        Pleural_Effusion=1.0 if s % 3 == 0 else 0.0, Cardiomegaly=-1.0 if k == 1 else 0.0
                    ),
                }
            )
    return rows


def build_phantom(folder: Path, rows: list[dict] | None = None) -> Path:
    rows = phantom_rows() if rows is None else rows
    write_table(folder / "metadata.csv", rows)
    for row in rows:
        write_png(folder / row["path"])
    return folder


@pytest.fixture
def phantom_dataset(tmp_path: Path) -> Callable[..., Path]:
    return lambda rows=None: build_phantom(tmp_path / "phantom", rows)


@pytest.fixture
def fake() -> SimpleNamespace:
    """The helpers and constants above, for tests that build variations of the fake data sets."""
    return SimpleNamespace(
        write_png=write_png,
        write_table=write_table,
        labels=labels,
        mimic_path=mimic_path,
        build_mimic=build_mimic,
        build_chexpert=build_chexpert,
        build_phantom=build_phantom,
        phantom_rows=phantom_rows,
        chexpert_rows=chexpert_rows,
        CHEXPERT_ROWS=CHEXPERT_ROWS,
        MIMIC_IMAGES=MIMIC_IMAGES,
    )
