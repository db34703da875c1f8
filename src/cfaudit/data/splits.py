"""Patient-level train/val/test splits: seeded, deterministic, and shippable as a small ids-only CSV.

A split assigns *subjects*, never images, so no patient's images are in two splits. The random split sorts the
unique subject ids (as strings), permutes them with ``numpy.random.default_rng(seed)`` and cuts the permutation at
the cumulative fractions (70/15/15 by default, rounded to whole subjects): the same seed and the same subjects
always give the same split.

``splits.csv`` (``subject_id,split``) is written beside every index so a split can be shipped and applied to
another copy of the data with ``cfaudit data index ... --splits FILE``. Applying a saved split:

* a subject in the data but missing from the file is an **error**: silently putting new subjects somewhere
  would change the test set;
* subjects in the file but not in the data are **counted as a warning**, not an error: a split is usually shipped
  for the whole data set, and the receiving copy legitimately loses subjects to filtering (lateral-only
  subjects, conflicting races, rows skipped with ``--on-bad-row skip``, a subset of the data).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cfaudit import atomic_io
from cfaudit.data.records import SPLITS
from cfaudit.errors import CfauditError

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)
SPLITS_FILE_NAME = "splits.csv"
_SPLIT_SPELLINGS = {"train": "train", "val": "val", "validate": "val", "valid": "val", "test": "test"}
_EXAMPLES = 5


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative fractions (train, val, test) that sum to 1."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not math.isfinite(f) or f < 0 for f in values) or abs(sum(values) - 1) > 1e-6:
        raise CfauditError(
            f"split fractions {', '.join(map(str, fractions))}: give three non-negative numbers for "
            "train, val and test that sum to 1, e.g. 0.7,0.15,0.15"
        )
    return values


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.7,0.15,0.15"`` -> (0.7, 0.15, 0.15)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise CfauditError(f"--fractions {text!r}: expected three numbers like 0.7,0.15,0.15") from None
    return check_fractions(values)


def random_subject_splits(
    subject_ids: Iterable[str], *, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> pd.Series:
    """subject_id -> train/val/test for the distinct subjects given (index sorted by subject id)."""
    fractions = check_fractions(fractions)
    subjects = np.array(sorted({str(s) for s in subject_ids}), dtype=object)
    n = len(subjects)
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.rint(np.cumsum(fractions) * n).astype(int)
    bounds[-1] = n
    labels = np.empty(n, dtype=object)
    start = 0
    for name, stop in zip(SPLITS, bounds, strict=True):
        labels[order[start:stop]] = name
        start = stop
    return pd.Series(labels, index=pd.Index(subjects, name="subject_id"), name="split", dtype=object)


def subject_splits(table: pd.DataFrame) -> pd.Series:
    """subject_id -> split of an index table whose splits are assigned; a subject in two splits is an error."""
    assigned = table.loc[table["split"].astype(str) != "", ["subject_id", "split"]].astype(str)
    if len(assigned) != len(table):
        raise CfauditError("the index has rows without a split; assign splits before saving them")
    per_subject = assigned.drop_duplicates()
    crossing = per_subject["subject_id"].duplicated(keep=False)
    if crossing.any():
        subject = per_subject.loc[crossing, "subject_id"].iloc[0]
        names = sorted(per_subject.loc[per_subject["subject_id"] == subject, "split"])
        raise CfauditError(
            f"subject {subject!r} has images in several splits ({', '.join(names)}); splits must be per subject"
        )
    series = per_subject.set_index("subject_id")["split"].sort_index()
    series.index.name, series.name = "subject_id", "split"
    return series


def apply_subject_splits(table: pd.DataFrame, splits: pd.Series, origin: str) -> tuple[pd.DataFrame, int]:
    """Fill ``table['split']`` from subject_id -> split; returns the table and the count of unused subjects.

    A subject of the table missing from ``splits`` is an error (see the module docstring); subjects of ``splits``
    absent from the table are only counted.
    """
    subjects = table["subject_id"].astype(str)
    mapped = subjects.map(splits)
    missing = pd.unique(subjects[mapped.isna()])
    if len(missing):
        shown = ", ".join(repr(s) for s in missing[:_EXAMPLES])
        raise CfauditError(
            f"{origin}: {len(missing)} subject(s) of the data are not in the split file (e.g. {shown}); "
            "use the split file made for this data set, or drop --splits to make a new random split"
        )
    unused = int((~splits.index.isin(pd.unique(subjects))).sum())
    return table.assign(split=mapped.astype(str).to_numpy()), unused


def apply_image_splits(table: pd.DataFrame, image_splits: pd.Series, origin: str) -> pd.DataFrame:
    """Fill ``table['split']`` from image_id -> split (a data set's official split file)."""
    mapped = table["image_id"].astype(str).map(image_splits)
    if mapped.isna().any():
        missing = table.loc[mapped.isna(), "image_id"].astype(str)
        raise CfauditError(
            f"{origin}: {len(missing)} image(s) are not in the official split file (e.g. {missing.iloc[0]!r}); "
            "use the split file of the same release, or --split-source random"
        )
    out = table.assign(split=mapped.astype(str).to_numpy())
    subject_splits(out)  # raises if the official file splits a subject
    return out


def read_splits(path: str | os.PathLike[str]) -> pd.Series:
    """Read a ``subject_id,split`` CSV (as written by :func:`write_splits`)."""
    path = Path(path)
    if not path.is_file():
        raise CfauditError(f"{path}: no such split file; it is the splits.csv written beside an index")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CfauditError(f"{path}: not a readable split CSV ({str(error).splitlines()[0]})") from None
    missing = [c for c in ("subject_id", "split") if c not in table.columns]
    if missing:
        raise CfauditError(
            f"{path}: missing column(s) {', '.join(missing)}; a split file has subject_id,split"
        )
    subjects = table["subject_id"].str.strip()
    names = table["split"].str.strip().str.lower().map(_SPLIT_SPELLINGS)
    for position in np.flatnonzero((subjects == "").to_numpy() | names.isna().to_numpy()):
        row = table.iloc[position]
        raise CfauditError(
            f"{path}, line {position + 2}: bad row (subject_id {row['subject_id']!r}, split {row['split']!r}); "
            f"give a subject id and one of {', '.join(SPLITS)}"
        )
    frame = pd.DataFrame({"subject_id": subjects, "split": names}).drop_duplicates()
    conflicting = frame["subject_id"].duplicated()
    if conflicting.any():
        subject = frame.loc[conflicting, "subject_id"].iloc[0]
        line = int(np.flatnonzero((subjects == subject).to_numpy())[-1]) + 2
        raise CfauditError(
            f"{path}, line {line}: subject {subject!r} is given two different splits; keep one"
        )
    series = frame.set_index("subject_id")["split"].sort_index()
    series.index.name, series.name = "subject_id", "split"
    return series


def write_splits(path: str | os.PathLike[str], splits: pd.Series) -> None:
    """Write ``subject_id,split`` sorted by subject id, atomically."""
    frame = pd.DataFrame({"subject_id": splits.index.astype(str), "split": splits.astype(str).to_numpy()})
    atomic_io.write_csv(path, frame.sort_values("subject_id", kind="stable"))


def split_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images and subjects per split (and ``all``)."""
    counts = {}
    for name in (*SPLITS, "all"):
        rows = table if name == "all" else table[table["split"] == name]
        counts[name] = {"images": len(rows), "subjects": int(rows["subject_id"].nunique())}
    return counts
