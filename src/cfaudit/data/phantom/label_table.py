"""The label table the phantom samples its metadata from: counts of (sex, age bin, view, 14 finding states).

The shipped table (``chexpert_label_table.csv.gz``, made by ``scripts/derive_label_table.py``) aggregates
CheXpert's frontal training labels, so the phantom's joint statistics of sex, age, view and findings (with
their uncertain and blank states) look like a real data set's. A user may point ``label_table:`` at their own
CSV with the same columns: ``sex`` (M/F), ``age_bin`` (``lo-hi`` inclusive years), ``view`` (AP/PA), the 14
findings (1, 0, -1 or blank) and ``count`` (a positive whole number).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit.data.phantom.config import BUILTIN_LABEL_TABLE
from cfaudit.data.records import plain_value
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError

BUILTIN_PATH = Path(__file__).resolve().parent / "chexpert_label_table.csv.gz"
COLUMNS: tuple[str, ...] = ("sex", "age_bin", "view", *FINDINGS, "count")
_BIN = re.compile(r"^\s*(\d{1,3})\s*-\s*(\d{1,3})\s*$")
_SEXES = {"M": "M", "F": "F", "MALE": "M", "FEMALE": "F"}


def _parse_bin(value: object) -> tuple[int, int]:
    """``"60-64"`` -> (60, 64); (-1, -1) when not a valid bin."""
    match = _BIN.match(str(value)) if not pd.isna(value) else None
    if not match or not int(match.group(1)) <= int(match.group(2)) <= 120:
        return -1, -1
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class LabelTable:
    """Rows of combinations with their counts, and samplers by sex and age."""

    frame: pd.DataFrame  # COLUMNS plus age_low / age_high
    source: str
    sha256: str

    # Derived in __post_init__; not arguments, and left out of repr and comparisons
    _groups: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = field(
        init=False, repr=False, compare=False
    )
    _all_cum: np.ndarray = field(init=False, repr=False, compare=False)
    _bins: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        frame = self.frame
        groups: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        for (sex, low), rows in frame.groupby(["sex", "age_low"], sort=True):
            counts = rows["count"].to_numpy(float)
            groups[(str(sex), int(low))] = (rows.index.to_numpy(), np.cumsum(counts) / counts.sum())
        object.__setattr__(self, "_groups", groups)
        object.__setattr__(self, "_all_cum", np.cumsum(frame["count"].to_numpy(float)) / frame["count"].sum())
        bins = frame[["age_low", "age_high"]].drop_duplicates().sort_values("age_low").to_numpy(int)
        object.__setattr__(self, "_bins", bins)

    @property
    def age_range(self) -> tuple[int, int]:
        return int(self._bins[0, 0]), int(self._bins[-1, 1])

    def sample_any(self, rng: np.random.Generator) -> int:
        """A row index drawn by count from the whole table."""
        return int(
            np.searchsorted(self._all_cum, rng.random(), side="right").clip(max=len(self._all_cum) - 1)
        )

    def sample_given(self, sex: str, age: float, rng: np.random.Generator) -> int:
        """A row index drawn by count among rows of this sex whose age bin holds ``age`` (nearest bin if none)."""
        lows = self._bins[:, 0]
        position = int(np.clip(np.searchsorted(lows, age, side="right") - 1, 0, len(lows) - 1))
        order = sorted(range(len(lows)), key=lambda i: (abs(i - position), i))
        for i in order:
            key = (sex, int(lows[i]))
            if key in self._groups:
                rows, cum = self._groups[key]
                return int(rows[min(int(np.searchsorted(cum, rng.random(), side="right")), len(rows) - 1)])
        raise CfauditError(f"{self.source}: no rows with sex {sex}; the label table needs both M and F rows")


def load_label_table(spec: str = BUILTIN_LABEL_TABLE) -> LabelTable:
    """Read and validate the built-in table (``"builtin"``) or a user's CSV of the same form."""
    path = BUILTIN_PATH if spec == BUILTIN_LABEL_TABLE else Path(spec)
    if not path.is_file():
        raise CfauditError(
            f"label table {path}: no such file; use 'builtin' or a CSV with columns {', '.join(COLUMNS)}"
        )
    raw = path.read_bytes()
    try:
        frame = pd.read_csv(path, dtype={"sex": "string", "age_bin": "string", "view": "string"})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        raise CfauditError(f"label table {path}: not a readable CSV ({error})") from None
    source = "builtin:chexpert_label_table.csv.gz" if spec == BUILTIN_LABEL_TABLE else str(path)
    return LabelTable(validate_label_table(frame, str(path)), source, hashlib.sha256(raw).hexdigest())


def validate_label_table(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Check columns and values; return the table with parsed age bounds. Errors name the CSV line."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise CfauditError(
            f"label table {origin}: missing column(s) {', '.join(missing)}; needs {', '.join(COLUMNS)}"
        )
    frame = frame.loc[:, list(COLUMNS)].copy()
    if frame.empty:
        raise CfauditError(f"label table {origin}: no rows")

    def fail(position: int, column: str, what: str) -> CfauditError:
        value = plain_value(frame.iloc[position][column])
        return CfauditError(
            f"label table {origin}, line {position + 2}: {column} {value} {what}; fix or remove the row"
        )

    # Categorical columns hold a handful of distinct values: parse those once, not 80,000 times.
    def parse_categorical(column: str, parse: Callable[[Any], str | None], what: str) -> None:
        codes, values = pd.factorize(frame[column], use_na_sentinel=False)
        parsed = np.asarray([parse(v) for v in values], dtype=object)[codes]
        bad = pd.isna(parsed)
        if bad.any():
            raise fail(int(bad.nonzero()[0][0]), column, what)
        frame[column] = parsed.astype(str)

    parse_categorical(
        "sex", lambda v: _SEXES.get(str(v).strip().upper()) if not pd.isna(v) else None, "is not M or F"
    )
    parse_categorical(
        "view",
        lambda v: str(v).strip().upper() if str(v).strip().upper() in ("AP", "PA") else None,
        "is not AP or PA",
    )
    bin_codes, bin_values = pd.factorize(frame["age_bin"], use_na_sentinel=False)
    bounds = np.asarray([_parse_bin(v) for v in bin_values], dtype=np.int64).reshape(-1, 2)[bin_codes]
    bad = bounds[:, 0] < 0
    if bad.any():
        raise fail(int(bad.nonzero()[0][0]), "age_bin", "is not 'lo-hi' whole years with lo <= hi <= 120")
    frame["age_low"], frame["age_high"] = bounds[:, 0], bounds[:, 1]
    for finding in FINDINGS:
        values = pd.to_numeric(frame[finding], errors="coerce")
        bad = ~(values.isna() | values.isin([1.0, 0.0, -1.0])).to_numpy(bool) | (
            values.isna() & frame[finding].notna()
        ).to_numpy(bool)
        if bad.any():
            raise fail(int(bad.nonzero()[0][0]), finding, "is not 1, 0, -1 or blank")
        frame[finding] = values.astype(float)
    counts = pd.to_numeric(frame["count"], errors="coerce")
    bad = ~(counts.notna() & (counts > 0) & (counts == counts.round())).to_numpy(bool)
    if bad.any():
        raise fail(int(bad.nonzero()[0][0]), "count", "is not a positive whole number")
    frame["count"] = counts.astype(np.int64)
    return frame.reset_index(drop=True)
