"""Step 1 of ``cfaudit evaluate``: the edits of each folder as rows, and the record of each edit's original.

A folder is an editing job (``edits.csv`` + ``job.json`` of ``cfaudit edit`` or ``cfaudit scm edit``, read through
:mod:`cfaudit.data.edit_folder`) or any folder of pairs (``pairs.csv`` with ``original``, ``counterfactual``,
``intervention``). Every edit gets its method, its paper column (``do(sex)``, ``do(disease)`` for any of the 14
findings, ``do(race)``, ``do(age)``, or e.g. ``do(sex, age)`` for an edit of several attributes) and, where known,
the original's record (from ``--index`` by image id, else read back from the job's source caption).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cfaudit.data.edit_folder import (
    EDITS_CSV,
    JOB_REQUIRED,
    PAIRS_CSV,
    PAIRS_REQUIRED,
    read_edits_table,
    read_job_json,
    resolve_path,
    unfinished_job,
)
from cfaudit.data.interventions import Intervention, caption_record
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy, known_label_value
from cfaudit.data.records import DataIndex
from cfaudit.data.vocabulary import FINDINGS, PATHOLOGIES
from cfaudit.errors import CfauditError
from cfaudit.models.lpips import MIN_SIZE as LPIPS_MIN_SIZE

#: Paper columns in the order the paper prints them; combined columns follow, sorted.
KIND_ORDER: tuple[str, ...] = ("sex", "disease", "race", "age")
PAPER_COLUMNS: tuple[str, ...] = tuple(f"do({kind})" for kind in KIND_ORDER)


# --- 1. reading edit folders --------------------------------------------------------------------------------


@dataclass
class EditFolder:
    """One folder of edits as read: its kind (``job`` or ``pairs``), ``job.json`` and the normalised rows."""

    path: Path
    kind: str
    job: dict[str, Any] | None
    rows: pd.DataFrame
    source_file: Path


def attribute_kind(attribute: str) -> str:
    """``sex``, ``race``, ``age`` or ``disease`` (any of the 14 findings)."""
    return attribute if attribute in ("sex", "race", "age") else "disease"


def paper_column(intervention: Intervention) -> str:
    """The Table 2 column of an intervention: ``do(sex)``, ``do(disease)`` ... or ``do(sex, age)`` for several."""
    kinds = {attribute_kind(name) for name, _ in intervention.changes}
    return "do(" + ", ".join(kind for kind in KIND_ORDER if kind in kinds) + ")"


def column_order(columns: Iterable[str]) -> list[str]:
    present = set(columns)
    return [c for c in PAPER_COLUMNS if c in present] + sorted(present - set(PAPER_COLUMNS))


def _number(value: Any) -> float:
    try:
        return float(value) if str(value).strip() not in ("", "None", "nan") else math.nan
    except ValueError:
        return math.nan


def read_edit_folder(folder: str | Path) -> EditFolder:
    """Read an editing job's folder (``edits.csv`` + ``job.json``) or a folder with ``pairs.csv``.

    Rows are checked here (columns, intervention syntax, image files present); images are decoded later.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CfauditError(f"{folder}: no such folder; give --edits the --out folder of `cfaudit edit`")
    if (folder / EDITS_CSV).is_file():
        source, kind, required = folder / EDITS_CSV, "job", JOB_REQUIRED
    elif (folder / PAIRS_CSV).is_file():
        source, kind, required = folder / PAIRS_CSV, "pairs", PAIRS_REQUIRED
    elif (unfinished := unfinished_job(folder)) is not None:
        raise CfauditError(f"{folder}: {unfinished}")
    else:
        raise CfauditError(
            f"{folder}: neither {EDITS_CSV} (an editing job's output) nor {PAIRS_CSV} (columns "
            f"{', '.join(PAIRS_REQUIRED)}) is there"
        )
    table = read_edits_table(source)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise CfauditError(f"{source}: no column(s) {', '.join(missing)}; it needs {', '.join(required)}")
    if table.empty:
        raise CfauditError(f"{source}: no edits in it (only a header)")
    job: dict[str, Any] | None = None
    if kind == "job":
        job = read_job_json(folder)
    rows: list[dict[str, Any]] = []
    for position, row in enumerate(table.to_dict("records")):
        line = position + 2  # the header is line 1
        where = f"{source}, line {line}"
        try:
            intervention = Intervention.parse(str(row["intervention"]))
        except CfauditError as error:
            raise CfauditError(f"{where}: {error}") from None
        paths: dict[str, str] = {}
        for name in ("original", "counterfactual", "reconstruction"):
            value = str(row.get(name) or "").strip()
            if not value:
                if name == "reconstruction":
                    paths[name] = ""
                    continue
                raise CfauditError(f"{where}: the {name} column is empty; give the image's path")
            path = resolve_path(folder, value)
            if not path.is_file():
                raise CfauditError(f"{where}: {name} image {value!r} not found ({path})")
            paths[name] = str(path)
        image_id = str(row.get("image_id") or "").strip() or Path(paths["original"]).stem
        rows.append(
            {
                "folder": str(folder),
                "source": str(source),
                "line": line,
                "method": str(row.get("method") or "").strip() or folder.name,
                "image_id": image_id,
                "intervention": str(intervention),
                "column": paper_column(intervention),
                "source_prompt": str(row.get("source_prompt") or "").strip(),
                "reconstruction_l1": _number(row.get("reconstruction_l1", "")),
                "identity_l1": _number(row.get("identity_l1", "")),
                **paths,
            }
        )
    return EditFolder(folder, kind, job, pd.DataFrame(rows), source)


def _model_key(edit_folder: EditFolder) -> str:
    """What makes two folders' edits one method: the model and the editing settings (steps, prompts, attention),
    less the settings that change only speed (batch size) or what else the job wrote (identity check)."""
    job = edit_folder.job or {}
    settings = {
        k: v for k, v in (job.get("settings") or {}).items() if k not in ("batch_size", "identity_check")
    }
    return f"{job.get('model', '')}|{job.get('model_fingerprint', '')}|{json.dumps(settings, sort_keys=True)}"


def label_methods(folders: Sequence[EditFolder]) -> None:
    """Method labels: the ``method`` column; where folders share a method but not its model and settings (another
    model, other steps...), the folder name is added."""
    models: dict[str, set[str]] = {}
    for f in folders:
        for method in f.rows["method"].unique():
            models.setdefault(method, set()).add(_model_key(f))
    for f in folders:
        f.rows["label"] = [
            m if len(models[m]) == 1 else f"{m} [{f.path.name}]" for m in f.rows["method"].tolist()
        ]


def common_size(rows: pd.DataFrame, note: Callable[[str], None] | None = None) -> int:
    """The comparison size no method reaches by upsampling: the shorter side of the smallest counterfactual
    (one image per method is read; each method writes its images at one resolution). LPIPS's AlexNet needs 32 px,
    so smaller counterfactuals are compared at 32, upsampled, and ``note`` says so."""
    from PIL import Image

    sizes = []
    for _, first in rows.groupby("label", sort=False).head(1).iterrows():
        path = Path(first["counterfactual"])
        try:
            with Image.open(path) as image:
                sizes.append(min(image.size))
        except OSError as error:
            raise CfauditError(f"{path}: cannot read the counterfactual image ({error})") from None
    size = min(sizes)
    if size < LPIPS_MIN_SIZE:
        if note is not None:
            note(f"the smallest counterfactuals are {size} px; compared at {LPIPS_MIN_SIZE} px (upsampled), the "
                 "least LPIPS's AlexNet reads")  # fmt: skip
        size = LPIPS_MIN_SIZE
    return size


# --- records: the original's attribute values ---------------------------------------------------------------


def _caption_or_none(caption: str) -> dict[str, Any] | None:
    if not caption:
        return None
    try:
        record = caption_record(caption)
    except CfauditError:
        return None
    for finding in FINDINGS:  # a caption names the positive findings only: the rest are negative
        if finding not in record or pd.isna(record[finding]):
            record[finding] = 0.0
    if all(record[f] == 0.0 for f in PATHOLOGIES):
        record["No Finding"] = 1.0
    return record


def load_records(rows: pd.DataFrame, index: str | Path | DataIndex | None) -> list[dict[str, Any] | None]:
    """The record of each row's original: the index row of its image id, else its source caption read back."""
    by_id: dict[str, dict[str, Any]] = {}
    if index is not None:
        table = _index_table(index)
        by_id = {str(r["image_id"]): r for r in table.to_dict("records")}
    records: list[dict[str, Any] | None] = []
    captions: dict[str, dict[str, Any] | None] = {}
    for image_id, caption in zip(rows["image_id"], rows["source_prompt"], strict=True):
        if image_id in by_id:
            records.append(by_id[image_id])
            continue
        if caption not in captions:
            captions[caption] = _caption_or_none(caption)
        records.append(captions[caption])
    return records


def index_age_range(index: str | Path | DataIndex | None) -> tuple[float, float] | None:
    """The youngest and oldest age in ``index`` (None without an index or without known ages): a model trained on
    it never saw a prompt outside them."""
    if index is None:
        return None
    ages = pd.to_numeric(_index_table(index)["age"], errors="coerce").dropna()
    return (float(ages.min()), float(ages.max())) if len(ages) else None


def _index_table(index: str | Path | DataIndex) -> pd.DataFrame:
    return index.table if isinstance(index, DataIndex) else DataIndex.read(index).table


def factual_value(record: Mapping[str, Any], attribute: str, policy: LabelPolicy = DEFAULT_POLICY) -> Any:
    """The record's value of an attribute in the intervention's encoding (findings: 1.0 / 0.0 after the policy)."""
    if attribute in ("sex", "race"):
        return str(record.get(attribute))
    if attribute == "age":
        age: Any = record.get("age")  # float() raises for a record without one
        return float(age)
    return known_label_value(record, attribute, policy)


def changes_record(intervention: Intervention, record: Mapping[str, Any] | None) -> bool:
    """Does the intervention change the record? (Unknown records count as changed.)"""
    if record is None:
        return True
    if intervention.is_relative:
        try:
            intervention = intervention.resolve(record)
        except CfauditError:  # no age to move (or out of range): not known to leave the record as it was
            return True
    for name, value in intervention.changes:
        factual = factual_value(record, name)
        if name == "age":
            if factual is None or math.isnan(factual) or abs(float(value) - factual) >= 0.5:
                return True
        elif factual != value:  # findings: 1.0 == 1
            return True
    return False
