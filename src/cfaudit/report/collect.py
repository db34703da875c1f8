"""Finding and reading the outputs a report is made from.

Each ``--from`` folder is searched (itself and subfolders up to :data:`MAX_DEPTH` levels down) for marker files:

* ``index.csv`` -> a data set (:class:`DatasetInput`);
* ``table2.csv`` -> an evaluation (:class:`EvaluationInput`, with ``axioms.csv``, ``table2.md``, ``table2.png``);
* ``edits.csv`` -> an edit job (:class:`EditJobInput`, with ``job.json``);
* ``discovery.json`` (or, without it, ``candidates.csv``) -> a discovery (:class:`DiscoveryInput`, with
  ``candidates.csv``, ``cochange.csv``, ``clusters.csv``, ``power.csv``, ``maps/`` and its edit job in
  ``edits/``); a discovery made before error rates (no q-values, no ``error_rates`` in ``discovery.json``, no
  ``power.csv``) is read as it is;
* ``queue.json`` of ``cfaudit review queue`` -> an expert review (:class:`ReviewInput`, with the ``ratings.csv``
  beside it, checked against the edit folder it names); a ``queue.json`` of anything else is noted and skipped.

A ``--from`` may also name one of these files directly (any ``*.csv`` that is not another marker is read as an
index). Missing parts are not errors: the report leaves their section out and says so (:attr:`ReportInputs.notes`).
A file that is there but malformed (a missing column, a non-number where a number belongs, broken JSON) is a
:class:`~cfaudit.errors.CfauditError` naming the file, because a report silently built from half an input would
mislead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import pandas as pd

from cfaudit.config_files import read_json
from cfaudit.data.edit_folder import (
    EDITS_CSV,
    IMAGES_FOLDER,
    INVERSIONS_FOLDER,
    JOB_JSON,
    ROWS_FOLDER,
    SHOWN_COLUMNS,
    read_edits_table,
)
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.records import DataIndex
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError
from cfaudit.review.queue import QUEUE_FORMAT, QueueChanges, ReviewQueue, changed_items, read_queue
from cfaudit.review.ratings import Rating, read_ratings

MAX_DEPTH = 3
#: The age from which the association matrix counts a patient as old (a common geriatric threshold).
OLD_AGE = 65
#: A label enters the association matrix when at least this many images have it and this many lack it.
MIN_LABEL_COUNT = 5
INDEX_FILE = "index.csv"
TABLE2_FILE = "table2.csv"
DISCOVERY_FILE = "discovery.json"
CANDIDATES_FILE = "candidates.csv"
QUEUE_FILE = "queue.json"
MARKERS: tuple[str, ...] = (INDEX_FILE, TABLE2_FILE, EDITS_CSV, DISCOVERY_FILE, CANDIDATES_FILE, QUEUE_FILE)
#: Folders never searched: caches and per-image internals of cfaudit's own outputs (an edit job's ``images/`` has
#: a folder per image, a phantom's ``ground_truth/`` a file per image); none holds a marker.
SKIPPED_FOLDERS = frozenset(
    {IMAGES_FOLDER, INVERSIONS_FOLDER, ROWS_FOLDER, "ground_truth", "__pycache__", "node_modules"}
)

TABLE2_REQUIRED = ("method", "column", "metric", "mean")
TABLE2_NUMERIC = ("mean", "ci_low", "ci_high", "n")
CANDIDATES_REQUIRED = ("intervention", "target", "effect")
CANDIDATES_NUMERIC = (
    "rank", "effect", "ci_low", "ci_high", "null_control", "offtarget_control", "label_association", "excess",
    "n_images", "frequency", "x", "y", "p_value", "data_p", "q_value", "detectable", "classifier_bias",
)  # fmt: skip
COCHANGE_REQUIRED = ("intervention", "head", "effect")
COCHANGE_NUMERIC = (
    "effect", "ci_low", "ci_high", "null_control", "label_association", "n_images", "classifier_bias", "spread",
    "p_value", "data_p", "q_value", "detectable",
)  # fmt: skip
CLUSTERS_REQUIRED = ("intervention", "cluster")
CLUSTERS_NUMERIC = (
    "frequency", "n_images", "x", "y", "x0", "y0", "x1", "y1", "area", "p_value", "data_p", "q_value", "detectable",
)  # fmt: skip
POWER_FILE = "power.csv"
POWER_REQUIRED = ("intervention", "n_images")
POWER_NUMERIC = (
    "n_images", "requested", "eligible", "level", "detectable_share", "detectable_head", "heads_tested",
    "heads_undetectable",
)  # fmt: skip
#: How ``discovery.json`` names the q-value adjustments (``error_rates.fdr``).
FDR_METHODS = {"bh": "Benjamini-Hochberg", "by": "Benjamini-Yekutieli"}


@dataclass
class DatasetInput:
    """An index (its rows, image root and provenance)."""

    index_csv: Path
    index: DataIndex
    note: str = ""

    def binary_labels(self, policy: LabelPolicy = DEFAULT_POLICY) -> pd.DataFrame:
        """Yes/no columns: ``Female``, ``Age ≥ 65`` and every finding (by the label policy; NaN = unknown)."""
        table = self.index.table
        labels = policy.binarize(table.loc[:, list(FINDINGS)])
        labels.insert(0, "Age ≥ 65", (table["age"] >= OLD_AGE).astype(float))
        labels.insert(0, "Female", (table["sex"] == "Female").astype(float))
        return labels

    def label_associations(
        self, policy: LabelPolicy = DEFAULT_POLICY, min_count: int = MIN_LABEL_COUNT
    ) -> tuple[pd.DataFrame, list[str]]:
        """The phi coefficient (Pearson correlation of 0/1 values) between every two labels, and the labels left out.

        A label is left out when fewer than ``min_count`` images have it, or fewer than ``min_count`` lack it:
        a correlation from a handful of cases is noise (two findings seen once, together, have phi = 1).
        """
        labels = self.binary_labels(policy)
        kept = [c for c in labels.columns if min((labels[c] == 1).sum(), (labels[c] == 0).sum()) >= min_count]
        left_out = [c for c in labels.columns if c not in kept]
        return labels[kept].corr(method="pearson", min_periods=min_count), left_out


@dataclass
class EvaluationInput:
    """The outputs of ``cfaudit evaluate``: Table 2 (long format) and what came with it."""

    folder: Path
    table2: pd.DataFrame
    axioms: pd.DataFrame | None = None
    markdown: str | None = None
    figure: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class EditJobInput:
    """An edit job folder: ``edits.csv`` (one row per edit) and its settings in ``job.json``."""

    folder: Path
    edits: pd.DataFrame
    job: dict[str, Any] = field(default_factory=dict)
    #: Set when the job is the edits of a discovery (``DIR/edits``).
    part_of: Path | None = None


@dataclass
class DiscoveryInput:
    """The outputs of ``cfaudit discover``."""

    folder: Path
    meta: dict[str, Any]
    candidates: pd.DataFrame | None = None
    cochange: pd.DataFrame | None = None
    clusters: pd.DataFrame | None = None
    maps: dict[str, Path] = field(default_factory=dict)
    #: What the run could have detected, per intervention (``power.csv``, else ``discovery.json``'s ``power``).
    power: pd.DataFrame | None = None
    #: Where :attr:`power` was read from: ``power.csv`` or ``discovery.json`` (whose JSON writes an infinite
    #: value, "too few images", and a missing one alike as null).
    power_source: str = ""
    #: The run's family of tests (``discovery.json``'s ``error_rates``): alpha, fdr, tests, rejections, level.
    error_rates: dict[str, Any] | None = None

    @property
    def alpha(self) -> float | None:
        """The false discovery rate a relation is flagged at (None: a discovery made before error rates)."""
        if self.error_rates is not None:
            return float(self.error_rates["alpha"])
        value = self.meta.get("alpha")
        return float(value) if _is_fraction(value) else None

    @property
    def has_error_rates(self) -> bool:
        """Whether the run computed p- and q-values (a discovery made before them has neither)."""
        tables = (self.candidates, self.cochange, self.clusters)
        return self.error_rates is not None or any(t is not None and "q_value" in t for t in tables)


@dataclass
class ReviewInput:
    """An expert review: its queue, every rating in the file, and the queue's items whose edit changed since."""

    queue: ReviewQueue
    ratings: list[Rating]
    changes: QueueChanges

    @property
    def folder(self) -> Path:
        return self.queue.folder


@dataclass
class ReportInputs:
    """Everything found under the ``--from`` folders, in the order found, without duplicates."""

    sources: list[Path]
    datasets: list[DatasetInput] = field(default_factory=list)
    evaluations: list[EvaluationInput] = field(default_factory=list)
    edit_jobs: list[EditJobInput] = field(default_factory=list)
    discoveries: list[DiscoveryInput] = field(default_factory=list)
    reviews: list[ReviewInput] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.datasets or self.evaluations or self.edit_jobs or self.discoveries or self.reviews)


# --- finding the markers -----------------------------------------------------------------------------------


def find_markers(folder: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Marker files in ``folder`` and its subfolders down to ``max_depth`` levels, in a stable order."""
    found: list[Path] = []
    root_depth = len(folder.parts)
    for current, dirs, files in os.walk(folder):
        here = Path(current)
        depth = len(here.parts) - root_depth
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_FOLDERS)
        if depth >= max_depth:
            dirs[:] = []
        found += [here / name for name in MARKERS if name in files]
    return found


def _marker_kind(path: Path) -> str:
    if path.name in MARKERS:
        return path.name
    if path.suffix.lower() == ".csv":
        return INDEX_FILE
    if path.suffix.lower() == ".json":
        return QUEUE_FILE  # a review queue written under another name (cfaudit review queue --out FILE.json)
    raise CfauditError(
        f"--from {path}: not a folder nor one of {', '.join(MARKERS)}; "
        "give a folder with outputs of cfaudit (data index, evaluate, edit, discover, review queue)"
    )


# --- reading helpers ---------------------------------------------------------------------------------------


def read_table(
    path: Path, required: Sequence[str], numeric: Sequence[str] = (), producer: str = "cfaudit"
) -> pd.DataFrame:
    """A CSV with ``required`` columns; ``numeric`` columns (where present) must hold numbers or blanks."""
    try:
        table = pd.read_csv(path, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise CfauditError(f"{path}: the file is empty; re-run {producer}") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise CfauditError(f"{path}: not a readable CSV ({error}); re-run {producer}") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise CfauditError(
            f"{path}: missing column(s) {', '.join(missing)}; it needs {', '.join(required)} "
            f"(was it written by {producer}?)"
        )
    for column in numeric:
        if column not in table.columns:
            continue
        values = table[column]
        if values.dtype == bool:
            table[column] = values.astype(float)
            continue
        converted = pd.to_numeric(values, errors="coerce")
        bad = converted.isna() & values.notna() & (values.astype(str).str.strip() != "")
        if bad.any():
            position = int(bad.to_numpy().nonzero()[0][0])
            raise CfauditError(
                f"{path}, line {position + 2}: column {column} holds {values.iloc[position]!r}, "
                "not a number; fix the row or re-run " + producer
            )
        table[column] = converted.astype(float)
    return table


def _is_fraction(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_error_rates(meta: dict[str, Any], path: Path, producer: str) -> dict[str, Any] | None:
    """``discovery.json``'s ``error_rates`` checked (None where the discovery predates them)."""
    value = meta.get("error_rates")
    if value is None:
        return None
    problem = ""
    if not isinstance(value, dict):
        problem = f"is a {type(value).__name__}, not an object"
    elif not _is_fraction(value.get("alpha")):
        problem = f"alpha is {value.get('alpha')!r}, not a number between 0 and 1"
    elif value.get("fdr", "bh") not in FDR_METHODS:
        problem = f"fdr is {value.get('fdr')!r}, not one of {', '.join(FDR_METHODS)}"
    elif not (_is_count(value.get("tests")) and _is_count(value.get("rejections"))):
        problem = "tests and rejections must be whole numbers of at least 0"
    elif value.get("level") is not None and not isinstance(value.get("level"), int | float):
        problem = f"level is {value.get('level')!r}, not a number"
    if problem:
        raise CfauditError(f"{path}: error_rates {problem}; re-run {producer}")
    return {"fdr": "bh", "level": None, **value}


def read_power(folder: Path, meta: dict[str, Any], producer: str) -> tuple[pd.DataFrame | None, str]:
    """The power table: ``power.csv``, else ``discovery.json``'s ``power`` records; (None, "") if neither."""
    if (folder / POWER_FILE).is_file():
        power = read_table(folder / POWER_FILE, POWER_REQUIRED, POWER_NUMERIC, producer)
        power["intervention"] = power["intervention"].astype(str)
        return power, POWER_FILE
    records = meta.get("power")
    if records is None:
        return None, ""
    if not isinstance(records, list) or not all(
        isinstance(r, dict) and all(k in r for k in POWER_REQUIRED) for r in records
    ):
        raise CfauditError(
            f"{folder / DISCOVERY_FILE}: power must be a list of objects with {', '.join(POWER_REQUIRED)}; "
            f"re-run {producer}"
        )
    power = pd.DataFrame(records)
    for column in POWER_NUMERIC:
        if column in power:
            converted = pd.to_numeric(power[column], errors="coerce")
            bad = converted.isna() & power[column].notna()
            if bad.any():
                raise CfauditError(
                    f"{folder / DISCOVERY_FILE}: power's {column} holds "
                    f"{power[column][bad].iloc[0]!r}, not a number; re-run {producer}"
                )
            power[column] = converted.astype(float)
    if not power.empty:
        power["intervention"] = power["intervention"].astype(str)
    return power, DISCOVERY_FILE


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "y")
    try:
        return bool(value) and not pd.isna(value)
    except (TypeError, ValueError):
        return bool(value)


# --- the readers, one per kind -----------------------------------------------------------------------------


def read_dataset(index_csv: Path) -> DatasetInput:
    return DatasetInput(index_csv, DataIndex.read(index_csv))


def read_evaluation(table2_csv: Path) -> EvaluationInput:
    folder = table2_csv.parent
    producer = "`cfaudit evaluate`"
    table2 = read_table(table2_csv, TABLE2_REQUIRED, TABLE2_NUMERIC, producer)
    for column in ("method", "column", "metric"):
        table2[column] = table2[column].astype(str)
    axioms = None
    if (folder / "axioms.csv").is_file():
        axioms = read_table(folder / "axioms.csv", (), (), producer)
    markdown = (
        (folder / "table2.md").read_text(encoding="utf-8") if (folder / "table2.md").is_file() else None
    )
    figure = folder / "table2.png" if (folder / "table2.png").is_file() else None
    meta: dict[str, Any] = {}
    for name in ("evaluation.json", "evaluate.json", "table2.json"):
        if (folder / name).is_file():
            meta = read_json(folder / name, f"re-run {producer}")
            break
    return EvaluationInput(folder, table2, axioms, markdown, figure, meta)


def read_edit_job(edits_csv: Path) -> EditJobInput:
    folder = edits_csv.parent
    producer = "`cfaudit edit` (or `cfaudit scm edit`)"
    edits = read_table(edits_csv, SHOWN_COLUMNS, ("edit_l1", "diff_scale", "seconds"), producer)
    for column in SHOWN_COLUMNS:
        edits[column] = edits[column].astype(str)
    read_edits_table(edits_csv)  # refuses what every reader of edits.csv refuses (a repeated edit ...), alike
    if "method" not in edits.columns:
        edits["method"] = "edit"
    edits["method"] = edits["method"].fillna("edit").astype(str)
    job = read_json(folder / JOB_JSON, f"re-run {producer}") if (folder / JOB_JSON).is_file() else {}
    return EditJobInput(folder, edits, job)


def read_discovery(folder: Path) -> DiscoveryInput:
    """A discovery folder; its provenance (``discovery.json``) may be missing, its tables are optional."""
    producer = "`cfaudit discover`"
    meta = (
        read_json(folder / DISCOVERY_FILE, f"re-run {producer}")
        if (folder / DISCOVERY_FILE).is_file()
        else {}
    )
    result = DiscoveryInput(folder, meta)
    result.error_rates = read_error_rates(meta, folder / DISCOVERY_FILE, producer)
    result.power, result.power_source = read_power(folder, meta, producer)
    if (folder / "candidates.csv").is_file():
        candidates = read_table(folder / "candidates.csv", CANDIDATES_REQUIRED, CANDIDATES_NUMERIC, producer)
        candidates["flagged"] = candidates["flagged"].map(_flag) if "flagged" in candidates else False
        if "rank" not in candidates.columns or candidates["rank"].isna().all():
            candidates["rank"] = range(1, len(candidates) + 1)
        for column in ("intervention", "target"):
            candidates[column] = candidates[column].astype(str)
        for column in ("status", "rests_on", "cross_check"):
            if column in candidates:
                candidates[column] = candidates[column].fillna("").astype(str)
        result.candidates = candidates.sort_values("rank", kind="stable").reset_index(drop=True)
    if (folder / "cochange.csv").is_file():
        cochange = read_table(folder / "cochange.csv", COCHANGE_REQUIRED, COCHANGE_NUMERIC, producer)
        cochange["intervention"] = cochange["intervention"].astype(str)
        cochange["head"] = cochange["head"].astype(str)
        result.cochange = cochange
    if (folder / "clusters.csv").is_file():
        clusters = read_table(folder / "clusters.csv", CLUSTERS_REQUIRED, CLUSTERS_NUMERIC, producer)
        clusters["intervention"] = clusters["intervention"].astype(str)
        result.clusters = clusters
    if (folder / "maps").is_dir():
        suffix = "_mean.png"
        result.maps = {
            p.name[: -len(suffix)]: p for p in sorted((folder / "maps").glob(f"*{suffix}")) if p.is_file()
        }
    return result


def read_review(queue_json: Path) -> ReviewInput | None:
    """The review a ``queue.json`` holds, or None when the file is some other program's ``queue.json``.

    A changed edit folder is not an error here (the report only reads): its changed items' ratings are left out
    and the section says so. A corrupt ratings file is, as every malformed input is.
    """
    try:
        marker = json.loads(queue_json.read_text(encoding="utf-8")).get("format")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        marker = None
    if marker != QUEUE_FORMAT:
        return None
    queue = read_queue(queue_json)
    return ReviewInput(queue, read_ratings(queue.ratings_path), changed_items(queue))


# --- all together ------------------------------------------------------------------------------------------


def _resolve_index_from(meta: dict[str, Any], base: Path) -> Path | None:
    """The index a discovery names in its provenance, if that file still exists."""
    value = meta.get("index")
    if isinstance(value, dict):
        value = value.get("path") or value.get("file")
    if not isinstance(value, str) or not value:
        return None
    path = Path(value)
    path = path if path.is_absolute() else base / path
    return path if path.is_file() else None


def collect_inputs(sources: Iterable[str | os.PathLike[str]]) -> ReportInputs:
    """Find and read every input under ``sources`` (see the module docstring)."""
    source_paths = [Path(s) for s in sources]
    if not source_paths:
        raise CfauditError("no --from folder given; name the folders with cfaudit outputs to report on")
    inputs = ReportInputs(source_paths)
    markers: list[Path] = []
    for source in source_paths:
        if source.is_dir():
            found = find_markers(source)
            if not found:
                inputs.notes.append(
                    f"{source}: no {', '.join(MARKERS)} within {MAX_DEPTH} folder levels; nothing read from it"
                )
            markers += found
        elif source.is_file():
            markers.append(source)
        else:
            raise CfauditError(f"--from {source}: no such folder")
    seen: set[Path] = set()
    for marker in markers:
        key = marker.resolve()
        if key in seen:
            continue
        seen.add(key)
        kind = _marker_kind(marker)
        if kind in (DISCOVERY_FILE, CANDIDATES_FILE):
            key = marker.parent.resolve()  # both files mark the same discovery folder
            if key in seen:
                continue
            seen.add(key)
        if kind == INDEX_FILE:
            inputs.datasets.append(read_dataset(marker))
        elif kind == TABLE2_FILE:
            inputs.evaluations.append(read_evaluation(marker))
        elif kind == EDITS_CSV:
            inputs.edit_jobs.append(read_edit_job(marker))
        elif kind == QUEUE_FILE:
            review = read_review(marker)
            if review is None:
                inputs.notes.append(f"{marker}: not a review queue of cfaudit; skipped")
            else:
                inputs.reviews.append(review)
        else:
            discovery = read_discovery(marker.parent)
            if not discovery.meta:
                inputs.notes.append(
                    f"{marker.parent}: no {DISCOVERY_FILE}; the discovery's provenance is unknown"
                )
            inputs.discoveries.append(discovery)
    # A discovery's own edits (DIR/edits/edits.csv) are labelled as such; read them if the search missed them.
    for discovery in inputs.discoveries:
        edits_csv = (discovery.folder / "edits" / EDITS_CSV).resolve()
        job = next((j for j in inputs.edit_jobs if (j.folder / EDITS_CSV).resolve() == edits_csv), None)
        if job is None and edits_csv.is_file():
            job = read_edit_job(edits_csv)
            inputs.edit_jobs.append(job)
        if job is not None:
            job.part_of = discovery.folder
    # Without an index among the folders, use the one a discovery was run on (its provenance names it).
    if not inputs.datasets:
        for discovery in inputs.discoveries:
            index_csv = _resolve_index_from(discovery.meta, discovery.folder)
            if index_csv is not None:
                dataset = read_dataset(index_csv)
                dataset.note = f"the index named in {discovery.folder / DISCOVERY_FILE}"
                inputs.datasets.append(dataset)
                break
    return inputs
