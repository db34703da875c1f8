"""What every adapter shares: reading source CSVs, the bad-row policy, image checks and the load summary.

An adapter reads its source files into one working table (one row per image, the columns of
:data:`~cfaudit.data.records.INDEX_COLUMNS` plus private ``_file`` / ``_line`` columns naming where each row came
from), then runs checks through a :class:`RowFilter`. Each check is a vectorised mask; under the ``error`` policy
the first failing row becomes one :class:`~cfaudit.errors.CfauditError` naming file, CSV line (header = line 1),
value and what to do; under ``skip`` the rows are dropped and counted by reason, with up to five example rows
each. Some reasons are never errors (a lateral view, a subject whose admissions disagree on race): they are
always skipped and counted, because the data set is expected to contain them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit.data.records import INDEX_COLUMNS
from cfaudit.data.vocabulary import AGE_MAX, AGE_MIN, FINDINGS, VIEWS
from cfaudit.errors import CfauditError

BAD_ROW_POLICIES: tuple[str, ...] = ("error", "skip")
IMAGE_CHECKS: tuple[str, ...] = ("exists", "decode", "none")
MAX_EXAMPLES = 5
#: A missing-column message lists up to this many of the file's columns.
MAX_HEADER_SHOWN = 40
#: Source files up to this size get a sha256 in the provenance; bigger ones only size and mtime.
HASH_LIMIT_BYTES = 64 * 1024 * 1024
_SKIP_HINT = "or pass --on-bad-row skip to skip such rows"
_LABEL_VALUES = (1.0, 0.0, -1.0)


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise CfauditError(f"{name} {value!r} is not one of {', '.join(choices)}")
    return value


def check_reading_options(on_bad_row: str, check_images: str) -> None:
    """The two options every adapter takes: what to do with a bad row, and how to check the image files."""
    check_choice("--on-bad-row", on_bad_row, BAD_ROW_POLICIES)
    check_choice("--check-images", check_images, IMAGE_CHECKS)


# --- reading source files --------------------------------------------------------------------------------------


def find_source_file(folder: Path, stem: str, what: str, *, required: bool = True) -> Path | None:
    """``folder/stem.csv`` or the ``.csv.gz`` a data set release ships; a clear error when neither is there."""
    for suffix in (".csv", ".csv.gz"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    if required:
        raise CfauditError(f"{folder}: no {stem}.csv or {stem}.csv.gz; {what}")
    return None


def read_source_csv(
    path: Path,
    *,
    required: Iterable[str],
    needed_by: str,
    optional: Iterable[str] = (),
    all_columns: bool = False,
) -> pd.DataFrame:
    """Read a CSV (plain or gzipped) with every cell as a string ("" for blank), plus a ``_line`` column.

    Only ``required`` and ``optional`` columns are read unless ``all_columns``; a missing required column is a
    :class:`CfauditError` naming the file, the columns and ``needed_by`` (what the adapter needs them for).
    Reading everything as strings keeps identifiers exact (leading zeros) and lets checks report the raw value.
    """
    required, optional = list(required), list(optional)
    if not path.is_file():
        raise CfauditError(f"{path}: no such file; {needed_by}")
    wanted = set(required) | set(optional)
    try:
        table = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            usecols=None if all_columns else (lambda column: column in wanted),
            encoding_errors="strict",
        )
    except pd.errors.EmptyDataError:
        raise CfauditError(f"{path}: the file is empty; expected a CSV with a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CfauditError(
            f"{path}: not a readable CSV ({message}); check the file is a complete CSV"
        ) from None
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise CfauditError(_missing_columns_message(path, missing, needed_by))
    table["_line"] = np.arange(2, len(table) + 2)
    return table


def _missing_columns_message(path: Path, missing: Sequence[str], needed_by: str) -> str:
    """Name the missing columns, what needs them, the file's real header (read again: the table was read with
    only the wanted columns) and, for a missing name that a present one matches but for case or spaces, that."""
    try:
        header = [str(c) for c in pd.read_csv(path, nrows=0, dtype=str, encoding_errors="replace").columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, EOFError, ValueError):
        header = []
    near = []
    for column in missing:
        found = [c for c in header if c != column and _loose(c) == _loose(column)]
        if found:
            near.append(f"{found[0]!r} for {column!r}")
    shown = ", ".join(repr(c) for c in header[:MAX_HEADER_SHOWN])
    if len(header) > MAX_HEADER_SHOWN:
        shown += f", ... ({len(header)} columns)"
    message = (
        f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; {needed_by} "
        f"(the file has: {shown or 'no columns'})"
    )
    if near:
        more = f" and {len(near) - 3} more" if len(near) > 3 else ""
        message += (
            f"; found {', '.join(near[:3])}{more} that differ only in case or spaces: column names are case- "
            "and space-sensitive, rename the column(s) as needed"
        )
    return message


def _loose(name: str) -> str:
    """A column name without case and surrounding or repeated spaces, to spot a near miss."""
    return " ".join(name.split()).casefold()


def file_record(path: Path) -> dict[str, Any]:
    """Provenance of one file read: absolute path, size, mtime and (for files up to 64 MiB) sha256."""
    stat = path.stat()
    record: dict[str, Any] = {"path": str(path.resolve()), "bytes": stat.st_size, "mtime": int(stat.st_mtime)}
    if stat.st_size <= HASH_LIMIT_BYTES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        record["sha256"] = digest.hexdigest()
    return record


# --- values ------------------------------------------------------------------------------------------------------


def normalize_values(values: pd.Series, normalize: Callable[[Any], str]) -> pd.Series:
    """Apply a vocabulary normaliser once per distinct value; values it rejects become ``<NA>``.

    Distinct values are few (sexes, race spellings) even at MIMIC scale, so this stays vectorised.
    """
    mapping: dict[Any, Any] = {}
    for value in pd.unique(values):
        try:
            mapping[value] = normalize(value)
        except CfauditError:
            mapping[value] = pd.NA
    return values.map(mapping).astype("string")


def parse_labels(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """CheXpert label cells (``1``, ``0``, ``-1``, ``1.0``..., blank) -> floats, and the mask of invalid cells."""
    numbers = pd.to_numeric(raw, errors="coerce").astype(float)
    unparsed = numbers.isna().to_numpy()
    bad = pd.Series(False, index=raw.index)
    # Only cells that did not parse are looked at as text (blank is fine, anything else is not).
    bad[unparsed] = raw[unparsed].astype(str).str.strip() != ""
    bad |= ~(numbers.isna() | numbers.isin(_LABEL_VALUES))
    return numbers, bad


def first_occurrence_line(keys: pd.Series, lines: pd.Series) -> pd.Series:
    """For each row, the line of the first row with the same key (to name it in duplicate messages)."""
    return lines.groupby(keys.to_numpy(), sort=False).transform("first")


# --- the bad-row policy -------------------------------------------------------------------------------------------


@dataclass
class LoadSummary:
    """Rows read, kept and skipped by reason (with up to five examples each), and warnings."""

    rows_read: int = 0
    rows_kept: int = 0
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def rows_skipped(self) -> int:
        return sum(entry["count"] for entry in self.skipped.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_skipped": self.rows_skipped,
            "skipped": self.skipped,
            "warnings": list(self.warnings),
        }


class RowFilter:
    """The working table of an adapter and the bad-row policy applied to it, check by check.

    ``table`` must have a ``_line`` column (CSV line of the row in its main file) and either a ``_file`` column or
    a ``file`` given here. Checks that concern a joined file (``patients.csv``...) pass that file and the column
    holding its line numbers.
    """

    def __init__(self, table: pd.DataFrame, *, policy: str, file: Path | None = None) -> None:
        self.policy = check_choice("--on-bad-row", policy, BAD_ROW_POLICIES)
        if "_file" not in table.columns:
            if file is None:
                raise ValueError("RowFilter needs a _file column or a file")
            table = table.assign(_file=str(file))
        self.table = table
        self.summary = LoadSummary(rows_read=len(table))

    def drop(
        self,
        reason: str,
        mask: pd.Series | np.ndarray,
        *,
        value: str | pd.Series,
        hint: str,
        file: Path | str | None = None,
        line: str = "_line",
        always_skip: bool = False,
    ) -> None:
        """Apply the policy to the rows of ``mask``: raise for the first one, or drop and count them all.

        ``value`` is a column name or a Series aligned with the table; ``always_skip`` marks reasons that are
        expected in the data (never an error).
        """
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        bad = self.table[mask]
        values = bad[value] if isinstance(value, str) else value.loc[bad.index]
        files = pd.Series(str(file), index=bad.index) if file is not None else bad["_file"].astype(str)
        lines = bad[line]
        if self.policy == "error" and not always_skip:
            raise CfauditError(
                f"{files.iloc[0]}, line {_line_text(lines.iloc[0])}: {reason} (value {_show(values.iloc[0])}); "
                f"{hint}, {_SKIP_HINT}"
            )
        entry = self.summary.skipped.setdefault(reason, {"count": 0, "examples": []})
        entry["count"] += int(mask.sum())
        room = MAX_EXAMPLES - len(entry["examples"])
        for f, n, v in list(zip(files, lines, values, strict=True))[: max(room, 0)]:
            entry["examples"].append(f"{f}, line {_line_text(n)}: {_show(v)}")
        self.table = self.table[~mask]

    def warn(self, message: str) -> None:
        self.summary.warnings.append(message)

    # Checks shared by the adapters -----------------------------------------------------------------------------

    def drop_blank(self, column: str, what: str, hint: str) -> None:
        self.drop(
            f"missing {what}", self.table[column].astype(str).str.strip() == "", value=column, hint=hint
        )

    def drop_non_frontal(self, views: pd.Series) -> None:
        """Keep AP/PA views (``views`` already upper-cased); lateral and other views are skipped, never errors."""
        self.drop(
            "not a frontal AP/PA view",
            ~views.isin(VIEWS).to_numpy(),
            value=views,
            hint="only frontal AP/PA images are indexed",
            always_skip=True,
        )

    def drop_bad_ages(
        self, raw: pd.Series, *, file: Path | str | None = None, line: str = "_line"
    ) -> pd.Series:
        """Parse ages; rows with a non-number or an age outside 0..120 are bad rows. Returns the kept ages."""
        ages = pd.to_numeric(raw.astype(str).str.strip(), errors="coerce").astype(float)
        self.drop(
            "age is not a number",
            ages.isna().to_numpy(),
            value=raw,
            file=file,
            line=line,
            hint="give the age in years as a number",
        )
        ages = ages.loc[self.table.index]
        out_of_range = ((ages < AGE_MIN) | (ages > AGE_MAX)).to_numpy()
        self.drop(
            f"age outside {AGE_MIN:g}..{AGE_MAX:g}",
            out_of_range,
            value=raw.loc[self.table.index],
            file=file,
            line=line,
            hint="fix the age (years)",
        )
        return ages.loc[self.table.index]

    def drop_bad_labels(
        self, raw: pd.DataFrame, *, file: Path | str | None = None, line: str = "_line"
    ) -> pd.DataFrame:
        """Parse the 14 finding columns of ``raw`` (aligned with the table); invalid cells make bad rows."""
        labels = pd.DataFrame(index=raw.index)
        bad_any = pd.Series(False, index=raw.index)
        first_bad = pd.Series("", index=raw.index, dtype=object)
        for finding in FINDINGS:
            numbers, bad = parse_labels(raw[finding])
            labels[finding] = numbers
            new = bad & ~bad_any
            first_bad[new] = finding + "=" + raw.loc[new, finding].astype(str)
            bad_any |= bad
        self.drop(
            "finding label not 1, 0, -1 or blank",
            bad_any.to_numpy(),
            value=first_bad,
            file=file,
            line=line,
            hint="use 1 (positive), 0 (negative), -1 (uncertain) or leave blank",
        )
        return labels.loc[self.table.index]

    def drop_duplicates(self, columns: Sequence[str], what: str = "image") -> None:
        """Later rows repeating the first row's value in any of ``columns`` are duplicate images."""
        for column in columns:
            keys = self.table[column]
            firsts = first_occurrence_line(keys, self.table["_line"])
            files = self.table["_file"].astype(str)
            first_files = files.groupby(keys.to_numpy(), sort=False).transform("first")
            where = np.where(
                first_files == files,
                "line " + firsts.astype(str),
                first_files + ", line " + firsts.astype(str),
            )
            value = keys.astype(str) + " (first on " + pd.Series(where, index=keys.index) + ")"
            self.drop(
                f"duplicate {what}",
                keys.duplicated().to_numpy(),
                value=value,
                hint=f"each {what} must appear once; remove the repeated row",
            )

    def check_images(self, root: Path, mode: str, path_column: str = "path") -> None:
        """``exists``: one stat per file; ``decode``: :func:`~cfaudit.data.images.verify_image` on each; ``none``."""
        check_choice("--check-images", mode, IMAGE_CHECKS)
        if mode == "none" or self.table.empty:
            return
        paths = [_resolve(root, p) for p in self.table[path_column].astype(str)]
        missing = np.fromiter((not os.path.isfile(p) for p in paths), dtype=bool, count=len(paths))
        shown = pd.Series([str(p) for p in paths], index=self.table.index)
        self.drop("image file missing", missing, value=shown, hint="check --root and the image path column")
        if mode != "decode" or self.table.empty:
            return
        from cfaudit.data.images import _BAD_IMAGE_HINT, verify_image

        problems = pd.Series("", index=self.table.index, dtype=object)
        for position, p in enumerate(self.table[path_column].astype(str)):
            try:
                verify_image(_resolve(root, p))
            except CfauditError as error:
                # The loader's hint names this very command; the bad-row hint below says it for here.
                problems.iloc[position] = str(error).replace(f"; {_BAD_IMAGE_HINT}", "")
        self.drop(
            "image file unreadable",
            (problems != "").to_numpy(),
            value=problems,
            hint="replace the file",
        )


def _resolve(root: Path, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else root / candidate


def _line_text(line: Any) -> str:
    try:
        return str(int(line))
    except (TypeError, ValueError):
        return str(line)


def _show(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "''"
    return repr(value)


def finish_table(table: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The kept rows as an index table: :data:`INDEX_COLUMNS` in order, split left blank."""
    out = table.loc[:, [c for c in INDEX_COLUMNS if c in table.columns and c not in FINDINGS]].copy()
    for finding in FINDINGS:
        out[finding] = labels.loc[table.index, finding].astype(float)
    out["split"] = ""
    return out.loc[:, list(INDEX_COLUMNS)].reset_index(drop=True)


@dataclass
class AdapterResult:
    """What an adapter hands back: the index table (split blank), its summary and its provenance.

    ``root`` is the folder the table's image paths start from; ``official_split`` (image_id -> train/val/test)
    is set by sources that ship a split (MIMIC-CXR-JPG).
    """

    table: pd.DataFrame
    summary: LoadSummary
    provenance: dict[str, Any]
    root: Path
    official_split: pd.Series | None = None
