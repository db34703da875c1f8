"""Your own data set: one CSV plus a column map saying which column holds what.

The column map is a YAML or JSON file (``--columns FILE``); ``configs/columns.example.yaml`` is a complete
example. Keys:

``csv``
    The CSV file, relative to ``--root`` (or absolute). Default ``metadata.csv``.
``columns``
    Which CSV column holds each field. Required: ``path`` (image file, relative to ``--root`` or absolute),
    ``subject_id``, ``age`` (years, 0..120), ``sex``. Optional: ``image_id`` (default: the path without its
    extension), ``study_id`` (default: the image id, i.e. every image its own study), ``view`` (AP/PA; other views
    are skipped and counted), ``race`` (default: every row ``Unknown``).
``default_view``
    ``AP`` or ``PA`` for rows whose view is blank, or for every row when there is no view column.
``findings``
    CheXpert finding -> CSV column (findings may be spelled in any case, with ``_`` or ``-``). A finding not named
    here is read from a column spelled as CheXpert does (``Pleural Effusion``) when the CSV has one, else left
    blank with a warning listing such findings; ``null`` leaves a finding blank on purpose (no warning).
    Cells must read 1, 0, -1 or blank after the value map.
``values``
    Value maps applied to cells before they are checked, keyed by ``sex``, ``race``, ``view`` or ``findings``
    (one map for all finding columns); keys match case-insensitively, unmapped cells pass unchanged. Sex must
    end as M/F/Male/Female, race as a spelling :func:`~cfaudit.data.vocabulary.normalize_race` knows. YAML reads
    unquoted ``yes``/``no``/``on``/``off`` keys as booleans; they are matched back to those words.

Example::

    csv: labels.csv
    columns: {path: file, subject_id: patient, age: age_years, sex: gender, race: ethnicity, view: projection}
    findings: {cardiomegaly: cardio, pleural_effusion: effusion, Fracture: null}
    values:
      sex: {1: M, 2: F}
      findings: {yes: 1, no: 0, maybe: -1}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cfaudit.data.adapters import common
from cfaudit.data.vocabulary import FINDINGS, UNKNOWN, VIEWS, canonical_finding, normalize_race, normalize_sex
from cfaudit.errors import CfauditError

FIELDS: tuple[str, ...] = ("path", "subject_id", "age", "sex", "image_id", "study_id", "view", "race")
REQUIRED_FIELDS: tuple[str, ...] = ("path", "subject_id", "age", "sex")
VALUE_MAP_FIELDS: tuple[str, ...] = ("sex", "race", "view", "findings")
_TOP_KEYS = ("csv", "columns", "default_view", "findings", "values")
_BOOL_WORDS = {True: ("true", "yes", "on", "y"), False: ("false", "no", "off", "n")}


@dataclass(frozen=True)
class ColumnMap:
    """Which CSV column holds each index field; see the module docstring for the file format."""

    columns: Mapping[str, str]
    csv: str = "metadata.csv"
    default_view: str | None = None
    #: finding -> column, or None for "leave blank"; findings absent here default to their CheXpert name.
    findings: Mapping[str, str | None] = field(default_factory=dict)
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, origin: str = "column map") -> ColumnMap:
        if not isinstance(data, Mapping):
            raise CfauditError(f"{origin}: expected a mapping with keys {', '.join(_TOP_KEYS)}")
        unknown = sorted(set(map(str, data)) - set(_TOP_KEYS))
        if unknown:
            raise CfauditError(
                f"{origin}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(_TOP_KEYS)}"
            )
        columns = _mapping(data.get("columns"), f"{origin}: columns")
        bad = sorted(set(columns) - set(FIELDS))
        if bad:
            raise CfauditError(
                f"{origin}: unknown field(s) {', '.join(bad)} under columns; valid: {', '.join(FIELDS)}"
            )
        for name in REQUIRED_FIELDS:
            if not columns.get(name):
                raise CfauditError(
                    f"{origin}: columns.{name} is required (the CSV column holding the {name})"
                )
        columns = {k: str(v) for k, v in columns.items() if v is not None and str(v) != ""}
        default_view = data.get("default_view")
        if default_view is not None:
            default_view = str(default_view).strip().upper()
            if default_view not in VIEWS:
                raise CfauditError(
                    f"{origin}: default_view {data['default_view']!r} must be one of {', '.join(VIEWS)}"
                )
        findings: dict[str, str | None] = {}
        for name, column in _mapping(data.get("findings"), f"{origin}: findings").items():
            try:
                finding = canonical_finding(str(name))
            except CfauditError as error:
                raise CfauditError(f"{origin}: findings: {error}") from None
            findings[finding] = None if column is None or str(column) == "" else str(column)
        values: dict[str, dict[str, str]] = {}
        for name, mapping in _mapping(data.get("values"), f"{origin}: values").items():
            if name not in VALUE_MAP_FIELDS:
                raise CfauditError(
                    f"{origin}: values.{name} is not a field with a value map; valid: {', '.join(VALUE_MAP_FIELDS)}"
                )
            values[name] = _value_map(mapping, f"{origin}: values.{name}")
        return cls(
            columns=columns,
            csv=str(data.get("csv") or "metadata.csv"),
            default_view=default_view,
            findings=findings,
            values=values,
        )

    @classmethod
    def read(cls, path: str | Path) -> ColumnMap:
        """Read a column map from YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
        path = Path(path)
        if not path.is_file():
            raise CfauditError(
                f"{path}: no such column map file; see configs/columns.example.yaml for the format"
            )
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except (json.JSONDecodeError, ValueError) as error:
            raise CfauditError(f"{path}: not valid JSON ({error})") from None
        except Exception as error:  # yaml.YAMLError and friends
            raise CfauditError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        return {
            "csv": self.csv,
            "columns": dict(self.columns),
            "default_view": self.default_view,
            "findings": dict(self.findings),
            "values": {k: dict(v) for k, v in self.values.items()},
        }


def _mapping(value: Any, origin: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise CfauditError(f"{origin}: expected a mapping (key: value), got {value!r}")
    return {str(k): v for k, v in value.items()}


def _value_map(mapping: Any, origin: str) -> dict[str, str]:
    if not isinstance(mapping, Mapping):
        raise CfauditError(f"{origin}: expected a mapping of cell value -> meaning, got {mapping!r}")
    out: dict[str, str] = {}
    for key, value in mapping.items():
        keys = _BOOL_WORDS[key] if isinstance(key, bool) else (str(key).strip().lower(),)
        for word in keys:
            out[word] = "" if value is None else str(value)
    return out


def apply_value_map(cells: pd.Series, mapping: Mapping[str, str] | None) -> pd.Series:
    """Replace cells found (case-insensitively) in ``mapping``; leave the others as they are."""
    if not mapping:
        return cells
    mapped = cells.str.strip().str.lower().map(dict(mapping))
    return mapped.where(mapped.notna(), cells).astype(str)


def load_csv(
    root: str | Path,
    *,
    columns: str | Path | ColumnMap | Mapping[str, Any] | None = None,
    on_bad_row: str = "error",
    check_images: str = "exists",
    source: str = "csv",
) -> common.AdapterResult:
    """Read a CSV described by a column map into index records (split blank)."""
    root = Path(root)
    common.check_reading_options(on_bad_row, check_images)
    if columns is None:
        raise CfauditError(
            "the csv source needs a column map: pass --columns FILE (see configs/columns.example.yaml)"
        )
    if isinstance(columns, ColumnMap):
        column_map = columns
    elif isinstance(columns, Mapping):
        column_map = ColumnMap.from_dict(columns)
    else:
        column_map = ColumnMap.read(columns)
    if not root.is_dir():
        raise CfauditError(
            f"{root}: no such folder; --root must be the folder the CSV's image paths start from"
        )
    csv_path = Path(column_map.csv)
    csv_path = csv_path if csv_path.is_absolute() else root / csv_path

    # 1. Read: mapped columns are required, same-name finding columns are used when present.
    mapped = dict(column_map.columns)
    explicit = {f: c for f, c in column_map.findings.items() if c is not None}
    defaults = [f for f in FINDINGS if f not in column_map.findings]
    raw = common.read_source_csv(
        csv_path,
        required=[*mapped.values(), *explicit.values()],
        optional=defaults,
        needed_by=(
            "the phantom folder's metadata.csv is not as `cfaudit phantom` writes it: generate the phantom again"
            if source == "phantom"
            else f"the {source} adapter needs the columns its column map names"
        ),
    )
    finding_columns = {**{f: f for f in defaults if f in raw.columns}, **explicit}
    blank = [f for f in defaults if f not in raw.columns]
    table = pd.DataFrame({"_line": raw["_line"]}, index=raw.index)
    for name, column in mapped.items():
        table[name] = raw[column].astype(str).str.strip()
    rows = common.RowFilter(table, policy=on_bad_row, file=csv_path)
    if blank:
        rows.warn(f"{csv_path}: no column for finding(s) {', '.join(blank)}; they are left blank")

    # 2. Identifiers.
    rows.drop_blank("path", "image path", f"fill column {mapped['path']!r}")
    rows.drop_blank("subject_id", "subject id", f"fill column {mapped['subject_id']!r}")
    t = rows.table
    if "image_id" not in mapped:
        t["image_id"] = t["path"].str.replace(r"\.[A-Za-z0-9]+$", "", regex=True)
    rows.drop_blank("image_id", "image id", f"fill column {mapped.get('image_id', mapped['path'])!r}")
    t = rows.table
    if "study_id" not in mapped:
        t["study_id"] = t["image_id"]
    t["study_id"] = t["study_id"].where(t["study_id"] != "", t["image_id"])

    # 3. View: blank -> default_view; non-AP/PA -> skipped (counted).
    views = t["view"] if "view" in mapped else pd.Series("", index=t.index)
    views = apply_value_map(views, column_map.values.get("view")).str.strip().str.upper()
    if column_map.default_view:
        views = views.where(views != "", column_map.default_view)
    t["view"] = views
    rows.drop_non_frontal(views)

    # 4. Demographics.
    def normalize_column(column: str, normalize: Callable[[Any], str], hint: str) -> None:
        """Map the column's values (``values.<column>``), normalise them; skip the rows whose value is unknown."""
        t = rows.table
        normalized = common.normalize_values(
            apply_value_map(t[column], column_map.values.get(column)), normalize
        )
        rows.drop(f"unknown {column}", normalized.isna().to_numpy(), value=t[column], hint=hint)
        rows.table[column] = normalized.loc[rows.table.index]

    normalize_column(
        "sex", normalize_sex, "use M/F/Male/Female, or map the value under values.sex in the column map"
    )
    if "race" in mapped:
        normalize_column(
            "race", normalize_race, "use Asian/White/Black/Other/Unknown, or map the value under values.race"
        )
    else:
        rows.table["race"] = UNKNOWN
    rows.table["age"] = rows.drop_bad_ages(rows.table["age"])

    # 5. Findings.
    t = rows.table
    cells = pd.DataFrame(index=t.index)
    for finding in FINDINGS:
        if finding in finding_columns:
            column = raw.loc[t.index, finding_columns[finding]].astype(str)
            cells[finding] = apply_value_map(column, column_map.values.get("findings"))
        else:
            cells[finding] = ""
    labels = rows.drop_bad_labels(cells)

    # 6. Duplicates, then image files.
    rows.drop_duplicates(["image_id", "path"])
    rows.check_images(root, check_images)

    rows.summary.rows_kept = len(rows.table)
    provenance = {
        "source": source,
        "root": str(root.resolve()),
        "files": [common.file_record(csv_path)],
        "column_map": column_map.to_dict(),
        "options": {"on_bad_row": on_bad_row, "check_images": check_images},
    }
    return common.AdapterResult(common.finish_table(rows.table, labels), rows.summary, provenance, root)
