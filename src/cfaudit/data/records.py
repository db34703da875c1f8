"""The normalised index: one row per frontal image, the schema every later command reads.

``index.csv`` holds one row per image with the columns :data:`INDEX_COLUMNS`; ``index.json`` beside it records
where the images live (``root``) and where the index came from (source, adapter options, label policy, split
seed, rows skipped and why). Image paths in the CSV are relative to ``root`` so an index can move with its data.
Finding columns keep CheXpert's four states (1, 0, -1, blank) as in torchxrayvision; see
:mod:`cfaudit.data.labels` for turning them into binary labels.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit import __version__, atomic_io
from cfaudit.data.labels import LabelPolicy
from cfaudit.data.vocabulary import AGE_MAX, AGE_MIN, FINDINGS, RACES, SEXES, UNKNOWN, VIEWS
from cfaudit.errors import CfauditError

SPLITS: tuple[str, ...] = ("train", "val", "test")
ID_COLUMNS: tuple[str, ...] = ("image_id", "path", "subject_id", "study_id")
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("view", "age", "sex", "race")
INDEX_COLUMNS: tuple[str, ...] = (*ID_COLUMNS, *DEMOGRAPHIC_COLUMNS, *FINDINGS, "split")
_STRING_COLUMNS = ("image_id", "path", "subject_id", "study_id", "view", "sex", "race", "split")


def plain_value(value: Any) -> str:
    """A cell as a message shows it: a number plainly (``300``, ``45.5``), text quoted (``'M'``), a missing or
    empty cell as ``blank`` (never a numpy repr such as ``np.float64(300.0)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT or value == "":
        return "blank"
    if isinstance(value, float):
        if math.isnan(value):
            return "blank"
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (bool, int)):
        return str(value)
    return repr(value)


def sidecar_path(index_csv: str | os.PathLike[str]) -> Path:
    """``index.csv`` -> ``index.json``: the provenance file beside an index."""
    return Path(index_csv).with_suffix(".json")


def validate_index(table: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check an index table against the schema and return it with canonical dtypes and column order.

    ``origin`` names the file (or adapter) in error messages. Row numbers in messages are CSV line numbers
    (the header is line 1).
    """
    missing = [c for c in INDEX_COLUMNS if c not in table.columns]
    if missing:
        raise CfauditError(
            f"{origin}: missing column(s) {', '.join(missing)}; an index needs {', '.join(INDEX_COLUMNS)}"
        )
    table = table.loc[:, list(INDEX_COLUMNS)].copy()
    for column in _STRING_COLUMNS:
        table[column] = table[column].astype("string").fillna("")

    def fail(mask: pd.Series, column: str, what: str) -> None:
        if mask.any():
            position = int(mask.to_numpy().nonzero()[0][0])
            value = original[column].iloc[position]
            raise CfauditError(
                f"{origin}, line {position + 2}: {column} {what} (value {plain_value(value)}); fix or remove the row"
            )

    original = table.copy()
    fail(table["image_id"] == "", "image_id", "is empty")
    fail(table["path"] == "", "path", "is empty")
    fail(table["subject_id"] == "", "subject_id", "is empty")
    fail(~table["view"].isin(VIEWS), "view", f"must be one of {', '.join(VIEWS)}")
    fail(~table["sex"].isin(SEXES), "sex", f"must be one of {', '.join(SEXES)}")
    fail(~table["race"].isin([*RACES, UNKNOWN]), "race", f"must be one of {', '.join([*RACES, UNKNOWN])}")
    age = pd.to_numeric(table["age"], errors="coerce").astype(float)
    fail(
        age.isna() | (age < AGE_MIN) | (age > AGE_MAX), "age", f"must be a number in {AGE_MIN:g}..{AGE_MAX:g}"
    )
    for finding in FINDINGS:
        values = pd.to_numeric(table[finding], errors="coerce").astype(float)
        bad = ~(values.isna() | values.isin([1.0, 0.0, -1.0])) | (values.isna() & original[finding].notna())
        fail(bad, finding, "must be 1, 0, -1 or blank")
    fail(~table["split"].isin(["", *SPLITS]), "split", f"must be one of {', '.join(SPLITS)} or blank")
    fail(table["image_id"].duplicated(), "image_id", "appears twice")
    table["age"] = age
    for finding in FINDINGS:
        table[finding] = pd.to_numeric(table[finding], errors="coerce").astype(float)
    return table.reset_index(drop=True)


@dataclass
class DataIndex:
    """An index table with the folder its relative image paths start from and its provenance."""

    table: pd.DataFrame
    root: Path
    meta: dict[str, Any] = field(default_factory=dict)
    #: The index.json whose ``root`` gave :attr:`root` (set by :meth:`read`): named when that folder is missing.
    root_source: Path | None = field(default=None, repr=False, compare=False)
    _root_checked: bool = field(default=False, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.table)

    def image_path(self, row: int | pd.Series) -> Path:
        """The absolute path of the image of a row (given by position or as the row itself).

        A relative path under a ``root`` read from index.json that is not a folder is a :class:`CfauditError`
        naming index.json and its ``root`` key (checked once per index).
        """
        record = self.table.iloc[row] if isinstance(row, int) else row
        path = Path(str(record["path"]))
        if path.is_absolute():
            return path
        if not self._root_checked and self.root_source is not None:
            if not self.root.is_dir():
                recorded = str(self.meta.get("root"))
                resolved = f" ({self.root})" if str(self.root) != recorded else ""
                raise CfauditError(
                    f'{self.root_source}: "root" is {recorded!r}, which is not a folder{resolved}; the '
                    'index\'s image paths start there: set "root" to the folder that holds the images, or re-run '
                    "`cfaudit data index`"
                )
            self._root_checked = True
        return self.root / path

    def image_paths(self) -> list[Path]:
        return [self.image_path(i) for i in range(len(self.table))]

    def split(self, name: str | None) -> DataIndex:
        """The rows of one split (``None`` or ``"all"``: every row)."""
        if name in (None, "all"):
            return self
        if name not in SPLITS:
            raise CfauditError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)} or all")
        rows = self.table[self.table["split"] == name].reset_index(drop=True)
        return DataIndex(rows, self.root, {**self.meta, "selected_split": name}, self.root_source)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> DataIndex:
        """Read ``index.csv`` and its ``index.json``; without the JSON, paths are relative to the CSV's folder."""
        path = Path(path)
        if not path.is_file():
            raise CfauditError(f"{path}: no such index file; make one with `cfaudit data index`")
        try:
            table = pd.read_csv(path, dtype={c: "string" for c in _STRING_COLUMNS}, keep_default_na=True)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
            raise CfauditError(f"{path}: not a readable CSV index ({error})") from None
        table = validate_index(table, str(path))
        meta: dict[str, Any] = {}
        sidecar = sidecar_path(path)
        if sidecar.is_file():
            try:
                meta = json.loads(sidecar.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise CfauditError(
                    f"{sidecar}: not valid JSON ({error}); delete it or re-run `cfaudit data index`"
                ) from None
            _check_meta(meta, sidecar)
        root = Path(meta.get("root") or path.parent)
        if not root.is_absolute():
            root = (path.parent / root).resolve()
        return cls(table, root, meta, sidecar if meta.get("root") else None)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write ``index.csv`` and ``index.json`` atomically (the JSON records root and provenance)."""
        path = Path(path)
        table = validate_index(self.table, "index being written")
        atomic_io.write_csv(path, table)
        meta = {
            **self.meta,
            "root": str(self.root.resolve()),
            "rows": len(table),
            "cfaudit_version": __version__,
        }
        atomic_io.write_json(sidecar_path(path), meta)


def _check_meta(meta: Any, sidecar: Path) -> None:
    """The keys of index.json that commands use: an object, ``root`` a path (text), ``label_policy`` valid."""
    fix = "fix it, or re-run `cfaudit data index` to write it again"
    if not isinstance(meta, dict):
        kinds = {list: "a list", str: "a string", bool: "true/false", type(None): "null"}
        kind = kinds.get(type(meta), "a number")
        raise CfauditError(
            f"{sidecar}: holds {kind}, not the JSON object `cfaudit data index` writes (with keys such as "
            f'"root"); {fix}'
        )
    root = meta.get("root")
    if root is not None and not isinstance(root, str):
        raise CfauditError(
            f'{sidecar}: "root" is {json.dumps(root)}, not a folder path (text such as "/data/mimic-cxr-jpg"); {fix}'
        )
    if "label_policy" in meta:
        try:
            LabelPolicy.from_dict(meta["label_policy"], origin=f'{sidecar}: "label_policy"')
        except CfauditError as error:
            raise CfauditError(f"{error}; {fix}") from None


def empty_label_row() -> dict[str, float]:
    """All findings blank (not mentioned)."""
    return {finding: math.nan for finding in FINDINGS}
