"""The paper's Table 2 and the soundness axioms, from the outputs of editing jobs (``cfaudit evaluate``).

:func:`evaluate_edits` reads one or more edit folders and writes the tables. In order:

1. **Read** each folder: an editing job (``edits.csv`` + ``job.json`` of ``cfaudit edit`` or ``cfaudit scm edit``)
   or any folder of pairs (``pairs.csv`` with ``original``, ``counterfactual``, ``intervention``). Every edit gets
   its method, its paper column (``do(sex)``, ``do(disease)`` for any of the 14 findings, ``do(race)``,
   ``do(age)``, or e.g. ``do(sex, age)`` for an edit of several attributes) and, where known, the original's
   record (from ``--index`` by image id, else read back from the job's source caption).
2. **Score** every edit at one stated resolution (``size``; default: the smallest counterfactual's, so that no
   method is compared at a size it reaches only by upsampling): LPIPS (AlexNet, v0.1 heads), L1 on the 0-255 scale,
   the attribute classifier's outputs on original, counterfactual and reconstruction, and from them the
   counterfactual prediction gain (CPG) of each intervened attribute, absolute (the paper) and signed towards
   the target.
3. **Summarise** per method x column (Table 2) and per method x intervention (the axioms of Monteiro et al.,
   2023: effectiveness, minimality, identity), each with a percentile bootstrap interval and the count.
   An edit whose intervention leaves the record as it was (``do(sex=Female)`` of a woman) is a *null edit*: it
   is left out of Table 2 and of effectiveness and minimality, and reported as an identity measure instead.
4. **Model axioms**: when a job's model can be loaded, composition (the null edit applied 1 and 10 times) and
   reversibility (the stored counterfactual edited back to the original value) on the first images.
5. **Realism** (with an index): FD and KID of each method's counterfactuals and reconstructions against real
   images of the same split (:mod:`cfaudit.evaluate.realism`).
6. **Write** ``table2.csv``, ``table2.md``, ``table2.png``, ``axioms.csv``, ``scores.csv``, ``realism.csv``
   (when measured) and ``evaluation.json`` (provenance), each atomically.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit import __version__, atomic_io
from cfaudit.data.images import load_image, resize_and_crop, to_model_tensor
from cfaudit.data.interventions import Intervention, caption_record
from cfaudit.data.labels import DEFAULT_POLICY
from cfaudit.data.prompts import record_prompt
from cfaudit.data.vocabulary import FINDINGS, PATHOLOGIES, RACES
from cfaudit.digests import file_sha256
from cfaudit.errors import CfauditError
from cfaudit.evaluate import metrics
from cfaudit.evaluate import realism as realism_measures
from cfaudit.evaluate.lpips import MIN_SIZE as LPIPS_MIN_SIZE

EDITS_CSV, JOB_JSON, PAIRS_CSV = "edits.csv", "job.json", "pairs.csv"
PAIRS_REQUIRED: tuple[str, ...] = ("original", "counterfactual", "intervention")
JOB_REQUIRED: tuple[str, ...] = ("image_id", "intervention", "method", "original", "counterfactual")
#: Paper columns in the order the paper prints them; combined columns follow, sorted.
KIND_ORDER: tuple[str, ...] = ("sex", "disease", "race", "age")
PAPER_COLUMNS: tuple[str, ...] = tuple(f"do({kind})" for kind in KIND_ORDER)
#: "CPG null edit": the same gain between the original and the method's own reconstruction (no intervention),
#: the level a CPG must clear before it says more about the edit than about the reconstruction.
#: "LPIPS null edit" and "L1 null edit": the original vs the reconstruction, the part of a method's LPIPS and L1
#: that its reconstruction makes before any intervention.
TABLE_METRICS: tuple[str, ...] = (
    "LPIPS", "LPIPS null edit", "L1", "L1 null edit", "CPG", "CPG signed", "CPG null edit"
)  # fmt: skip
COMPOSITION_TIMES: tuple[int, ...] = (1, 10)
SCM_METHOD = "scm-hvae"
BATCH = 32  # edits loaded and scored together (bounds memory on large jobs)

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Warn = Callable[[str], None]


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


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CfauditError(f"{path}: not a readable CSV ({error})") from None


def _resolve(folder: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


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
    else:
        raise CfauditError(
            f"{folder}: neither {EDITS_CSV} (an editing job's output) nor {PAIRS_CSV} (columns "
            f"{', '.join(PAIRS_REQUIRED)}) is there"
        )
    table = _read_csv(source)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise CfauditError(f"{source}: no column(s) {', '.join(missing)}; it needs {', '.join(required)}")
    if table.empty:
        raise CfauditError(f"{source}: no edits in it (only a header)")
    job: dict[str, Any] | None = None
    if kind == "job":
        job_path = folder / JOB_JSON
        if not job_path.is_file():
            raise CfauditError(f"{job_path}: missing; an editing job writes it beside {EDITS_CSV}")
        try:
            job = json.loads(job_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise CfauditError(f"{job_path}: not valid JSON ({error})") from None
    rows = []
    for position, row in enumerate(table.to_dict("records")):
        line = position + 2  # the header is line 1
        where = f"{source}, line {line}"
        try:
            intervention = Intervention.parse(str(row["intervention"]))
        except CfauditError as error:
            raise CfauditError(f"{where}: {error}") from None
        paths = {}
        for name in ("original", "counterfactual", "reconstruction"):
            value = str(row.get(name) or "").strip()
            if not value:
                if name == "reconstruction":
                    paths[name] = ""
                    continue
                raise CfauditError(f"{where}: the {name} column is empty; give the image's path")
            path = _resolve(folder, value)
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
    import json

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


def load_records(rows: pd.DataFrame, index: str | Path | None) -> list[dict[str, Any] | None]:
    """The record of each row's original: the index row of its image id, else its source caption read back."""
    by_id: dict[str, dict[str, Any]] = {}
    if index is not None:
        from cfaudit.data.records import DataIndex

        table = DataIndex.read(index).table
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


def factual_value(record: Mapping[str, Any], attribute: str) -> Any:
    """The record's value of an attribute in the intervention's encoding (findings: 1.0 / 0.0 after the policy)."""
    if attribute in ("sex", "race"):
        return str(record.get(attribute))
    if attribute == "age":
        return float(record.get("age"))
    labels = pd.DataFrame([{f: record.get(f, math.nan) for f in FINDINGS}])
    value = DEFAULT_POLICY.binarize(labels).iloc[0][attribute]
    return None if pd.isna(value) else float(value)


def changes_record(intervention: Intervention, record: Mapping[str, Any] | None) -> bool:
    """Does the intervention change the record? (Unknown records count as changed.)"""
    if record is None:
        return True
    for name, value in intervention.changes:
        factual = factual_value(record, name)
        if name == "age":
            if factual is None or math.isnan(factual) or abs(float(value) - factual) >= 0.5:
                return True
        elif factual != value:  # findings: 1.0 == 1
            return True
    return False


# --- 2. scoring --------------------------------------------------------------------------------------------


def _predict(classifier: Any, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    predict = classifier.predict if hasattr(classifier, "predict") else classifier
    outputs = predict(images)
    return {head: np.asarray(values, dtype=np.float64) for head, values in outputs.items()}


def head_kind(head: str, values: np.ndarray) -> str:
    if values.ndim == 2:
        return "categorical"
    return "regression" if head in metrics.REGRESSION_HEADS else "binary"


def _load(path: str, where: str, name: str) -> np.ndarray:
    try:
        return load_image(path)
    except CfauditError as error:
        raise CfauditError(f"{where}: {name} image cannot be read: {error}") from None


@dataclass
class ScoredRows:
    """Per-edit distances and the classifier's outputs (head -> array over edits) for one method's rows."""

    lpips: np.ndarray
    l1: np.ndarray
    reconstruction_l1: np.ndarray  # d(original, reconstruction) at the compare size; NaN without one
    reconstruction_lpips: np.ndarray  # the same in LPIPS
    before: dict[str, np.ndarray]
    after: dict[str, np.ndarray]
    reconstructed: dict[str, np.ndarray]  # outputs on the reconstruction (NaN rows without one)


def score_rows(
    rows: pd.DataFrame,
    classifier: Any,
    size: int,
    *,
    device: str | None = None,
    lpips_model: Any = None,
    progress: Callable[[int], None] | None = None,
) -> ScoredRows:
    """LPIPS and L1 (original vs counterfactual) at ``size`` and classifier outputs, in batches of edits."""
    wheres = [f"{source}, line {line}" for source, line in zip(rows["source"], rows["line"], strict=True)]
    original_cache: dict[str, dict[str, np.ndarray]] = {}
    recon_cache: dict[str, tuple[float, float, dict[str, np.ndarray]]] = {}
    lpips_parts, l1_parts, rec_parts, rec_lpips_parts = [], [], [], []
    before_parts: list[dict[str, np.ndarray]] = []
    after_parts: list[dict[str, np.ndarray]] = []
    rec_pred_parts: list[dict[str, np.ndarray]] = []
    records = rows.to_dict("records")
    for start in range(0, len(records), BATCH):
        chunk = records[start : start + BATCH]
        where = wheres[start : start + BATCH]
        originals = [_load(r["original"], w, "original") for r, w in zip(chunk, where, strict=True)]
        counterfactuals = [_load(r["counterfactual"], w, "counterfactual") for r, w in zip(chunk, where, strict=True)]  # fmt: skip
        l1_parts.append(metrics.l1_distance(originals, counterfactuals, size))
        lpips_parts.append(
            metrics.lpips_distance(originals, counterfactuals, size, model=lpips_model, device=device)
        )
        # classifier outputs: originals (and reconstructions) once per file
        new = [i for i, r in enumerate(chunk) if r["original"] not in original_cache]
        unique = {chunk[i]["original"]: originals[i] for i in new}
        if unique:
            outputs = _predict(classifier, list(unique.values()))
            for k, path in enumerate(unique):
                original_cache[path] = {h: v[k] for h, v in outputs.items()}
        before_parts.append(_stack([original_cache[r["original"]] for r in chunk]))
        after_parts.append(_predict(classifier, counterfactuals))
        pending = {}
        for i, r in enumerate(chunk):
            path = r["reconstruction"]
            if path and path not in recon_cache and path not in pending:
                pending[path] = (originals[i], _load(path, where[i], "reconstruction"))
        if pending:
            pairs = list(pending.values())
            distances = metrics.l1_distance([p[0] for p in pairs], [p[1] for p in pairs], size)
            perceptual = metrics.lpips_distance([p[0] for p in pairs], [p[1] for p in pairs], size,
                                                model=lpips_model, device=device)  # fmt: skip
            outputs = _predict(classifier, [p[1] for p in pairs])
            for k, path in enumerate(pending):
                recon_cache[path] = (
                    float(distances[k]),
                    float(perceptual[k]),
                    {h: v[k] for h, v in outputs.items()},
                )
        rec_parts.append(np.array([recon_cache[r["reconstruction"]][0] if r["reconstruction"] else math.nan
                                   for r in chunk]))  # fmt: skip
        rec_lpips_parts.append(np.array([recon_cache[r["reconstruction"]][1] if r["reconstruction"] else math.nan
                                         for r in chunk]))  # fmt: skip
        rec_pred_parts.append(_stack([
            recon_cache[r["reconstruction"]][2] if r["reconstruction"] else None for r in chunk
        ], like=before_parts[-1]))  # fmt: skip
        if progress is not None:
            progress(len(chunk))
    return ScoredRows(
        np.concatenate(lpips_parts),
        np.concatenate(l1_parts),
        np.concatenate(rec_parts),
        np.concatenate(rec_lpips_parts),
        _concat(before_parts),
        _concat(after_parts),
        _concat(rec_pred_parts),
    )


def _stack(
    items: Sequence[Mapping[str, np.ndarray] | None], like: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    template = next((item for item in items if item is not None), None)
    if template is None:
        assert like is not None
        return {h: np.full_like(v, np.nan, dtype=np.float64) for h, v in like.items()}
    out = {}
    for head, value in template.items():
        blank = np.full_like(np.asarray(value, dtype=np.float64), np.nan)
        out[head] = np.stack([np.asarray(item[head]) if item is not None else blank for item in items])
    return out


def _concat(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {head: np.concatenate([part[head] for part in parts]) for head in parts[0]}


@dataclass(frozen=True)
class AttributeTarget:
    """What the classifier should say after ``do(attribute=value)``: its head, kind and target."""

    attribute: str
    head: str
    kind: str
    target: float | None
    unit: str


def attribute_target(attribute: str, value: Any, outputs: Mapping[str, np.ndarray]) -> AttributeTarget:
    """The classifier head that judges an attribute and the target value in that head's terms."""
    if attribute not in outputs:
        raise CfauditError(
            f"the classifier has no head {attribute!r} (it has {', '.join(outputs)}); CPG of "
            f"do({attribute}=...) needs one: use a classifier trained with `cfaudit classifiers train`"
        )
    kind = head_kind(attribute, outputs[attribute])
    if attribute == "sex":
        return AttributeTarget(attribute, "sex", kind, 1.0 if value == "Male" else 0.0, "P(male)")
    if attribute == "race":
        target = float(RACES.index(value)) if value in RACES else None
        return AttributeTarget(attribute, "race", kind, target, f"P({value})")
    if attribute == "age":
        return AttributeTarget(attribute, "age", kind, float(value), "years")
    return AttributeTarget(attribute, attribute, kind, float(value), f"P({attribute})")


def _head_value(values: np.ndarray, target: AttributeTarget) -> np.ndarray:
    """The head's output as one number per edit: P(target class) for a categorical head."""
    if values.ndim == 2:
        return values[:, int(target.target)] if target.target is not None else values.max(axis=1)
    return values


def _kept_heads(intervention: Intervention, heads: Iterable[str]) -> list[str]:
    """The heads that should keep their decision: not intervened on, and not tied to an intervened one.

    A finding intervention may change "No Finding", and ``do(No Finding=1)`` changes every finding.
    """
    names = {name for name, _ in intervention.changes}
    excluded = set(names)
    if names & set(PATHOLOGIES):
        excluded.add("No Finding")
    if "No Finding" in names:
        excluded.update(PATHOLOGIES)
    return [head for head in heads if head not in excluded]


def edit_scores(
    rows: pd.DataFrame, scored: ScoredRows, records: Sequence[dict[str, Any] | None]
) -> pd.DataFrame:
    """One row per edit and intervened attribute: distances, CPG, classifier outputs, effectiveness."""
    out = []
    intervention_of = {text: Intervention.parse(text) for text in rows["intervention"].unique()}
    positions = np.arange(len(rows))
    for text, intervention in intervention_of.items():
        idx = positions[(rows["intervention"] == text).to_numpy()]
        before = {h: v[idx] for h, v in scored.before.items()}
        after = {h: v[idx] for h, v in scored.after.items()}
        rebuilt = {h: v[idx] for h, v in scored.reconstructed.items()}
        kinds = {h: head_kind(h, v) for h, v in before.items()}
        kept_heads = _kept_heads(intervention, before)
        for attribute, value in intervention.changes:
            target = attribute_target(attribute, value, before)
            b, a, r = before[target.head], after[target.head], rebuilt[target.head]
            gain = metrics.prediction_gain(b, a, target.target, kind=kinds[target.head])
            has_rec = ~np.isnan(r.reshape(len(idx), -1)).any(axis=1)
            rec_gain = np.full(len(idx), np.nan)
            if has_rec.any():
                rec_gain[has_rec] = metrics.prediction_gain(b[has_rec], r[has_rec], target.target, kind=kinds[target.head]).absolute  # fmt: skip
            hit = already = np.full(len(idx), np.nan)
            kept_rate = np.full(len(idx), np.nan)
            kept: dict[str, np.ndarray] = {}
            if target.target is not None:
                eff = metrics.effectiveness(
                    {h: before[h] for h in [target.head, *kept_heads]},
                    {h: after[h] for h in [target.head, *kept_heads]},
                    target.head,
                    target.target,
                    kinds=kinds,
                )
                hit, already = eff.hit.astype(float), eff.already.astype(float)
                kept = eff.kept
                if kept:
                    kept_rate = np.mean(np.stack([v.astype(float) for v in kept.values()]), axis=0)
            for k, row_index in enumerate(idx):
                row = rows.iloc[row_index]
                record = records[row_index]
                out.append(
                    {
                        "method": row["label"],
                        "column": row["column"],
                        "intervention": text,
                        "image_id": row["image_id"],
                        "attribute": attribute,
                        "kind": attribute_kind(attribute),
                        "target": value,
                        "factual": None if record is None else factual_value(record, attribute),
                        "changes_record": changes_record(intervention, record),
                        "lpips": scored.lpips[row_index],
                        "l1": scored.l1[row_index],
                        "reconstruction_l1": scored.reconstruction_l1[row_index],
                        "reconstruction_lpips": scored.reconstruction_lpips[row_index],
                        "minimality_excess": scored.l1[row_index] - scored.reconstruction_l1[row_index],
                        "cpg": gain.absolute[k],
                        "cpg_signed": np.nan if gain.signed is None else gain.signed[k],
                        "cpg_unit": target.unit,
                        "head": target.head,
                        "before": _head_value(b, target)[k],
                        "after": _head_value(a, target)[k],
                        "reconstruction_cpg": rec_gain[k],
                        "hit": hit[k],
                        "already": already[k],
                        "kept_rate": kept_rate[k],
                        **{f"kept:{h}": float(v[k]) for h, v in kept.items()},
                        "job_reconstruction_l1": row["reconstruction_l1"] * 255.0,
                        "job_identity_l1": row["identity_l1"] * 255.0,
                        "folder": row["folder"],
                        "line": row["line"],
                        "original": row["original"],
                        "counterfactual": row["counterfactual"],
                    }
                )
    table = pd.DataFrame(out)
    return table.sort_values(["method", "folder", "line", "attribute"], kind="stable").reset_index(drop=True)


# --- 3. summaries ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    mean: float
    low: float
    high: float
    n: int


def summarise(values: Iterable[float], n_boot: int, seed: int) -> Summary:
    """Mean with a 95% percentile bootstrap interval (``n_boot`` resamples; 0: no interval)."""
    data = np.asarray(list(values), dtype=np.float64)
    data = data[~np.isnan(data)]
    if data.size == 0:
        return Summary(math.nan, math.nan, math.nan, 0)
    if n_boot < 1:
        return Summary(float(data.mean()), math.nan, math.nan, int(data.size))
    interval = metrics.bootstrap_ci(data, resamples=n_boot, seed=seed)
    return Summary(interval.estimate, interval.low, interval.high, interval.n)


def per_edit(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per edit (an edit of several attributes has one score row per attribute)."""
    return scores.drop_duplicates(["method", "folder", "line"])


def _cpg_unit(kind: str) -> str:
    return {"sex": "P(male)", "race": "P(target race)", "age": "years", "disease": "P(finding)"}[kind]


def table2_rows(
    scores: pd.DataFrame, size: int, classifier_name: str, n_boot: int, seed: int
) -> pd.DataFrame:
    """Table 2 in long form: method, column, metric, attribute, mean, ci_low, ci_high, n, unit, size, classifier."""
    rows = []
    for method in scores["method"].unique():
        mine = scores[scores["method"] == method]
        for column in column_order(mine["column"].unique()):
            cell = mine[mine["column"] == column]
            edits = per_edit(cell)
            entries = [("LPIPS", "", edits["lpips"], "AlexNet v0.1")]
            has_reconstructions = edits["reconstruction_l1"].notna().any()
            if has_reconstructions:  # the reconstruction's share, before any intervention
                entries.append(("LPIPS null edit", "", edits["reconstruction_lpips"], "AlexNet v0.1"))
            entries.append(("L1", "", edits["l1"], "0-255"))
            if has_reconstructions:
                entries.append(("L1 null edit", "", edits["reconstruction_l1"], "0-255"))
            for kind in [k for k in KIND_ORDER if k in set(cell["kind"])]:
                # several attributes of one kind in one edit (two findings): their mean per edit
                grouped = cell[cell["kind"] == kind].groupby(["folder", "line"], sort=False)
                unit = _cpg_unit(kind)
                entries.append(("CPG", kind, grouped["cpg"].mean(), unit))
                entries.append(("CPG signed", kind, grouped["cpg_signed"].mean(), unit))
                if cell["reconstruction_cpg"].notna().any():  # the folder has reconstructions
                    entries.append(("CPG null edit", kind, grouped["reconstruction_cpg"].mean(), unit))
            for metric, attribute, values, unit in entries:
                s = summarise(values, n_boot, seed)
                rows.append({"method": method, "column": column, "metric": metric, "attribute": attribute,
                             "mean": s.mean, "ci_low": s.low, "ci_high": s.high, "n": s.n, "unit": unit,
                             "size": size, "classifier": classifier_name})  # fmt: skip
    return pd.DataFrame(
        rows,
        columns=["method", "column", "metric", "attribute", "mean", "ci_low", "ci_high", "n", "unit", "size",
                 "classifier"],
    )  # fmt: skip


AXIOM_COLUMNS: tuple[str, ...] = (
    "method", "edits", "column", "intervention", "axiom", "measure", "mean", "ci_low", "ci_high", "n", "unit",
    "note",
)  # fmt: skip


def axiom_rows(scores: pd.DataFrame, size: int, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Effectiveness, minimality and identity per method x intervention, from the scores."""
    rows: list[dict[str, Any]] = []

    def add(method, folder, column, intervention, axiom, measure, values, unit, note=""):
        s = summarise(values, n_boot, seed)
        rows.append({"method": method, "edits": folder, "column": column, "intervention": intervention,
                     "axiom": axiom, "measure": measure, "mean": s.mean, "ci_low": s.low, "ci_high": s.high,
                     "n": s.n, "unit": unit, "note": note})  # fmt: skip

    at = f"0-255 at {size} px"
    for method in scores["method"].unique():
        mine = scores[scores["method"] == method]
        folders = ";".join(Path(f).name for f in mine["folder"].unique())
        for intervention in mine["intervention"].unique():
            group = mine[mine["intervention"] == intervention]
            column = group["column"].iloc[0]
            real, null = group[group["changes_record"]], group[~group["changes_record"]]
            for attribute in group["attribute"].unique():
                edits = real[real["attribute"] == attribute]
                label = attribute if len(group["attribute"].unique()) > 1 else ""
                suffix = f" ({label})" if label else ""
                add(method, folders, column, intervention, "effectiveness", f"rate{suffix}", edits["hit"],
                    "share classified as the target")  # fmt: skip
                add(method, folders, column, intervention, "effectiveness", f"flip rate{suffix}",
                    edits.loc[edits["already"] == 0.0, "hit"], "share reaching the target among edits not "
                    "already classified as it")  # fmt: skip
                add(method, folders, column, intervention, "identity", f"reconstruction CPG{suffix}",
                    per_edit(group[group["attribute"] == attribute]).drop_duplicates("image_id")["reconstruction_cpg"],
                    "CPG of the null edit (reconstruction vs original)")  # fmt: skip
            edits = per_edit(real)
            add(method, folders, column, intervention, "effectiveness", "kept rate", edits["kept_rate"],
                "share of the other classifier heads whose decision stayed")  # fmt: skip
            for head in sorted(
                c[5:] for c in edits.columns if c.startswith("kept:") and edits[c].notna().any()
            ):
                add(method, folders, column, intervention, "effectiveness", f"kept: {head}", edits[f"kept:{head}"],
                    "share whose decision stayed")  # fmt: skip
            add(method, folders, column, intervention, "minimality", "change L1", edits["l1"], at)
            add(method, folders, column, intervention, "minimality", "reconstruction L1",
                edits["reconstruction_l1"], at)  # fmt: skip
            add(method, folders, column, intervention, "minimality", "excess L1", edits["minimality_excess"],
                f"{at}: change minus reconstruction")  # fmt: skip
            if len(null):
                nulls = per_edit(null)
                add(method, folders, column, intervention, "identity", "null intervention L1", nulls["l1"], at,
                    "edits whose intervention leaves the record unchanged")  # fmt: skip
                add(method, folders, column, intervention, "identity", "null intervention LPIPS", nulls["lpips"],
                    f"AlexNet v0.1 at {size} px", "edits whose intervention leaves the record unchanged")  # fmt: skip
        images = per_edit(mine).drop_duplicates(["folder", "image_id"])
        for measure, column, unit in (
            ("job reconstruction L1", "job_reconstruction_l1", "0-255 at the model's resolution (edits.csv)"),
            ("job identity L1", "job_identity_l1", "0-255 at the model's resolution (edits.csv --check-identity)"),
        ):  # fmt: skip
            if images[column].notna().any():
                add(method, folders, "", "null edit", "identity", measure, images[column], unit)
    return rows


# --- 4. model axioms: composition and reversibility ---------------------------------------------------------


class ModelUnavailable(Exception):
    """The job's model cannot be loaded (or is not the one that made the edits): the reason, for the note."""


@dataclass
class _ModelEditor:
    """A job's model as two operations on ``[0, 1]`` images: the null edit and an edit to given values."""

    null_edit: Callable[[list[np.ndarray], list[dict[str, Any]], list[str]], np.ndarray]
    edit_back: Callable[
        [list[np.ndarray], list[np.ndarray], list[dict[str, Any]], list[str], Intervention], np.ndarray
    ]
    description: str
    resolution: int


def _to_unit(images: Any) -> np.ndarray:
    return ((images[:, 0].float().cpu().numpy() + 1.0) / 2.0).clip(0.0, 1.0)


def _resolve_model_path(model: str, folder: Path) -> str:
    """The job's model as recorded; a relative path that is not there is also tried beside the edit folder."""
    if not model:
        raise ModelUnavailable("job.json records no model")
    path = Path(model).expanduser()
    if not path.is_absolute() and not path.exists() and (folder / path).exists():
        return str(folder / path)
    if model.startswith(("/", ".", "~")) and not path.exists():
        raise ModelUnavailable(f"model {model!r} not found (job.json records it; was it moved?)")
    return model


def diffusion_model_editor(job: Mapping[str, Any], folder: Path, device: str) -> _ModelEditor:
    """The diffusion editor of a ``cfaudit edit`` job, with the job's inversion and editing settings."""
    model = str(job.get("model") or "")
    location = _resolve_model_path(model, folder)
    import torch

    from cfaudit.edit.editor import CounterfactualEditor, Target
    from cfaudit.edit.job import JobSettings, model_fingerprint
    from cfaudit.models.loading import load_components

    try:
        editor = CounterfactualEditor.from_components(load_components(location, device=device))
    except (CfauditError, OSError) as error:
        raise ModelUnavailable(f"model {model!r} cannot be loaded ({error})") from None
    recorded = job.get("model_fingerprint")
    if recorded and model_fingerprint(editor) != recorded:
        raise ModelUnavailable(f"model {model!r} is not the one that made the edits (fingerprint differs)")
    settings = JobSettings.from_dict(job.get("settings", {}))

    def run(images: list[np.ndarray], prompts: list[str], targets: list[str] | None) -> np.ndarray:
        torch.manual_seed(settings.seed)
        x = torch.stack([to_model_tensor(image, editor.resolution) for image in images]).to(editor.device)
        inversions = editor.invert(x, prompts, settings.inversion)
        plans = [[Target(t)] for t in targets] if targets is not None else [[] for _ in prompts]
        results = editor.edit(inversions, prompts, plans, settings.edit)
        if targets is None:
            return _to_unit(torch.stack([r.reconstruction for r in results]))
        return _to_unit(torch.stack([r.counterfactuals[0] for r in results]))

    def null_edit(images: list[np.ndarray], records: list[dict[str, Any]], ids: list[str]) -> np.ndarray:
        return run(images, [record_prompt(r) for r in records], None)

    def edit_back(
        originals: list[np.ndarray],
        counterfactuals: list[np.ndarray],
        records: list[dict[str, Any]],
        ids: list[str],
        intervention: Intervention,
    ) -> np.ndarray:
        changed = [intervention.apply(r) for r in records]
        backs = [_reverse(intervention, r) for r in records]
        targets = [b.target_prompt(c, settings.prompt_mode) for b, c in zip(backs, changed, strict=True)]
        return run(counterfactuals, [record_prompt(c) for c in changed], targets)

    inversion = settings.inversion
    description = f"diffusion editor, model {model}, {inversion.method} inversion, {inversion.steps} steps"
    return _ModelEditor(null_edit, edit_back, description, editor.resolution)


def scm_model_editor(job: Mapping[str, Any], folder: Path, device: str) -> _ModelEditor:
    """The SCM of a ``cfaudit scm edit`` job: abduction, action, prediction with the job's settings."""
    model_id = str(job.get("model") or "")
    location = _resolve_model_path(model_id, folder)
    import torch

    from cfaudit.scm.counterfactual import ScmCounterfactuals, image_seed
    from cfaudit.scm.job import model_fingerprint
    from cfaudit.scm.model import CausalImageModel

    try:
        model = CausalImageModel.load(location, device=device)
    except (CfauditError, OSError) as error:
        raise ModelUnavailable(f"SCM {model_id!r} cannot be loaded ({error})") from None
    recorded = job.get("model_fingerprint")
    if recorded and model_fingerprint(model) != recorded:
        raise ModelUnavailable(f"SCM {model_id!r} is not the one that made the edits (fingerprint differs)")
    settings = job.get("settings", {})
    engine = ScmCounterfactuals(model, str(settings.get("latents", "noise")))
    seed = int(settings.get("seed", 0))

    def prepare(images: list[np.ndarray], records: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
        x = torch.stack([to_model_tensor(image, model.resolution) for image in images])
        values = model.graph.encode(
            pd.DataFrame(records), model.label_policy, origin="the edited images' records"
        )
        return x, values

    def null_edit(images: list[np.ndarray], records: list[dict[str, Any]], ids: list[str]) -> np.ndarray:
        x, values = prepare(images, records)
        return _to_unit(engine(x, values, [], [image_seed(seed, i) for i in ids]).identity)

    def edit_back(
        originals: list[np.ndarray],
        counterfactuals: list[np.ndarray],
        records: list[dict[str, Any]],
        ids: list[str],
        intervention: Intervention,
    ) -> np.ndarray:
        # the forward edit again (its node values, descendants included, are the factual values going back)
        x, values = prepare(originals, records)
        seeds = [image_seed(seed, i) for i in ids]
        forward = engine(x, values, [intervention], seeds)
        back = [_reverse(intervention, r) for r in records]
        out = []
        for b, reverse in enumerate(back):
            row = {k: v[b : b + 1] for k, v in forward.values[0].items()}
            out.append(engine(forward.images[0, b : b + 1], row, [reverse], seeds[b : b + 1]).images[0])
        return _to_unit(torch.cat(out))

    description = f"SCM (HVAE) {model_id}, latents {settings.get('latents')}"
    return _ModelEditor(null_edit, edit_back, description, model.resolution)


def _reverse_or_none(intervention: Intervention, record: Mapping[str, Any]) -> Intervention | None:
    try:
        return _reverse(intervention, record)
    except CfauditError:  # e.g. back to race "Unknown", or a blank finding: nothing to edit back to
        return None


def _reverse(intervention: Intervention, record: Mapping[str, Any]) -> Intervention:
    """The intervention that sets the intervened attributes back to the record's values."""
    values = {}
    for name, _ in intervention.changes:
        value = factual_value(record, name)
        if value is None:
            raise CfauditError(f"{name} is blank in the record; there is no value to edit back to")
        values[name] = value
    return Intervention.from_mapping(values)


def model_editor(edit_folder: EditFolder, device: str) -> _ModelEditor:
    if edit_folder.job is None:
        raise ModelUnavailable("a pairs.csv folder records no model")
    if edit_folder.job.get("method") == SCM_METHOD:
        return scm_model_editor(edit_folder.job, edit_folder.path, device)
    return diffusion_model_editor(edit_folder.job, edit_folder.path, device)


def model_axiom_rows(
    edit_folder: EditFolder,
    scores: pd.DataFrame,
    records: Mapping[tuple[str, int], dict[str, Any] | None],
    *,
    size: int,
    axiom_images: int,
    n_boot: int,
    seed: int,
    device: str,
    required: bool,
    warn: Warn,
) -> list[dict[str, Any]]:
    """Composition and reversibility of one folder's model on its first ``axiom_images`` images.

    The reference image is the original as the model sees it (resized to the model's resolution), so that a
    model working at a lower resolution than the files is not charged for the resolution it drops.
    """
    mine = per_edit(scores[scores["folder"] == str(edit_folder.path)])
    if mine.empty:
        return []
    base = {"method": mine["method"].iloc[0], "edits": edit_folder.path.name}
    rows: list[dict[str, Any]] = []

    def add(column: str, intervention: str, axiom: str, measure: str, values: Any, note: str) -> None:
        s = summarise(values, n_boot, seed)
        rows.append({**base, "column": column, "intervention": intervention, "axiom": axiom, "measure": measure,
                     "mean": s.mean, "ci_low": s.low, "ci_high": s.high, "n": s.n, "unit": unit, "note": note})  # fmt: skip

    unit = f"0-255 at {size} px, against the original at the model's resolution"
    try:
        editor = model_editor(edit_folder, device)
    except ModelUnavailable as error:
        if required:
            raise CfauditError(f"{edit_folder.path}: model axioms requested but {error}") from None
        warn(f"{edit_folder.path}: composition and reversibility not measured: {error}")
        for axiom in ("composition", "reversibility"):
            add("", "", axiom, "", [], f"not measured: {error}")
        return rows

    def known(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        found = [records.get((f, int(n))) for f, n in zip(frame["folder"], frame["line"], strict=True)]
        keep = [r is not None for r in found]
        return frame[keep], [r for r in found if r is not None]

    def as_model_sees(paths: Iterable[str]) -> list[np.ndarray]:
        return [resize_and_crop(load_image(p), editor.resolution) for p in paths]

    # composition: the null edit applied 1 and 10 times to the first images
    firsts, image_records = known(mine.drop_duplicates("image_id"))
    firsts, image_records = firsts.head(axiom_images), image_records[:axiom_images]
    if firsts.empty:
        add(
            "", "null edit", "composition", "", [], "not measured: no image has a known record (give --index)"
        )
    else:
        ids = firsts["image_id"].tolist()

        def null_edit(images: Any) -> np.ndarray:
            return editor.null_edit(metrics.image_list(images), image_records, ids)

        originals = as_model_sees(firsts["original"])
        for k, values in metrics.composition(null_edit, originals, COMPOSITION_TIMES, size=size).items():
            add("", "null edit", "composition", f"L1 after {k} null edit{'s' if k > 1 else ''}", values,
                editor.description)  # fmt: skip
    # reversibility: per intervention, the first edits that changed the record, edited back to its values
    for text in mine["intervention"].unique():
        intervention = Intervention.parse(text)
        group, group_records = known(mine[(mine["intervention"] == text) & mine["changes_record"]])
        reversible = [_reverse_or_none(intervention, r) is not None for r in group_records]
        group = group[reversible].head(axiom_images)
        group_records = [r for r, ok in zip(group_records, reversible, strict=True) if ok][:axiom_images]
        if group.empty:
            add(paper_column(intervention), text, "reversibility", "L1 edited back", [],
                "not measured: no edit with a known record and a value to edit back to")  # fmt: skip
            continue
        originals = as_model_sees(group["original"])
        reverted = editor.edit_back(
            originals, as_model_sees(group["counterfactual"]), group_records, group["image_id"].tolist(),
            intervention,
        )  # fmt: skip
        add(paper_column(intervention), text, "reversibility", "L1 edited back",
            metrics.reversibility(originals, reverted=reverted, size=size), editor.description)  # fmt: skip
    return rows


# --- 5. outputs --------------------------------------------------------------------------------------------


def _cell(entry: pd.Series | None, digits: int) -> str:
    if entry is None or entry["n"] == 0 or pd.isna(entry["mean"]):
        return "-"
    if pd.isna(entry["ci_low"]):
        return f"{entry['mean']:.{digits}f}"
    return f"{entry['mean']:.{digits}f} [{entry['ci_low']:.{digits}f}, {entry['ci_high']:.{digits}f}]"


DIGITS = {"LPIPS": 3, "LPIPS null edit": 3, "L1": 2, "L1 null edit": 2, "CPG": 3, "CPG signed": 3,
          "CPG null edit": 3}  # fmt: skip


def format_markdown(
    table: pd.DataFrame,
    axioms: pd.DataFrame,
    descriptions: Mapping[str, str],
    *,
    size: int,
    n_boot: int,
    classifier_name: str,
    null_edits: int,
) -> str:
    """``table2.md``: per method a block (rows LPIPS, L1, CPG, signed CPG, n; the paper's columns), then axioms."""
    interval = f"95% percentile bootstrap interval, {n_boot} resamples" if n_boot else "no interval"
    lines = [
        "# Table 2: counterfactual quality",
        "",
        f"Original vs counterfactual, both brought to **{size} x {size} px** (shorter side resized, centre crop). "
        "LPIPS: AlexNet with the v0.1 linear heads (grayscale repeated to RGB). L1: mean absolute difference on "
        "the **0-255** scale. CPG: |C(x_cf) - C(x)| of the intervened attribute's classifier head (the paper; "
        "a probability, age in years), signed: the change towards the target; CPG of the null edit: the same gain "
        "between the original and the method's own reconstruction (no intervention), the level a CPG must clear "
        "to say more about the edit than about the reconstruction. LPIPS and L1 of the null edit: the original vs "
        "the reconstruction, the part of the method's LPIPS and L1 made before any intervention. "
        f"Cells: mean [{interval}]; n = edits. Classifier: `{classifier_name}`.",
    ]
    if null_edits:
        lines.append(f"{null_edits} null edit(s) (the intervention left the record as it was) are not in the table; "
                     "see the identity rows of axioms.csv.")  # fmt: skip
    for method in table["method"].unique():
        mine = table[table["method"] == method]
        columns = column_order(mine["column"].unique())
        lines += ["", f"## {method}" + (f" ({descriptions[method]})" if descriptions.get(method) else ""), ""]
        lines.append("| | " + " | ".join(columns) + " |")
        lines.append("|---|" + "---|" * len(columns))
        for metric in [m for m in TABLE_METRICS if m in set(mine["metric"])]:
            cells = []
            for column in columns:
                entries = mine[(mine["column"] == column) & (mine["metric"] == metric)]
                if len(entries) <= 1:
                    cells.append(_cell(entries.iloc[0] if len(entries) else None, DIGITS[metric]))
                else:  # a combined column: one CPG per attribute kind
                    cells.append("; ".join(f"{e['attribute']} {_cell(e, DIGITS[metric])}" for _, e in entries.iterrows()))  # fmt: skip
            label = {
                "L1": "L1 (0-255)",
                "LPIPS null edit": "LPIPS of the null edit",
                "L1 null edit": "L1 of the null edit",
                "CPG signed": "CPG (signed)",
                "CPG null edit": "CPG of the null edit",
            }.get(metric, metric)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        counts = [
            str(int(mine[(mine["column"] == c) & (mine["metric"] == "L1")]["n"].iloc[0])) for c in columns
        ]
        lines.append("| n | " + " | ".join(counts) + " |")
        ages = mine[(mine["metric"] == "CPG") & (mine["attribute"] == "age")]
        if len(ages):
            lines += ["", "CPG of age is in years (the classifier's age regression)."]
    lines += ["", "## Soundness axioms (Monteiro et al., 2023)", ""]
    lines += _axioms_markdown(axioms, size)
    return "\n".join(lines) + "\n"


def _axioms_markdown(axioms: pd.DataFrame, size: int) -> list[str]:
    def pick(frame: pd.DataFrame, measure: str) -> pd.Series | None:
        """The row of a measure (an edit of several attributes: the first attribute's, e.g. "flip rate (sex)")."""
        found = frame[(frame["measure"] == measure) | frame["measure"].str.startswith(f"{measure} (")]
        return found.iloc[0] if len(found) else None

    lines = [
        f"Per intervention: effectiveness (flip rate: share of edits that reach the target among those the "
        f"classifier did not already put there; kept: share of the other heads whose decision stayed), "
        f"minimality (L1 0-255 at {size} px of the counterfactual minus that of the null-edit reconstruction), "
        "reversibility (L1 after editing the counterfactual back).",
        "",
        "| method | intervention | flip rate | kept rate | excess L1 | reversibility L1 |",
        "|---|---|---|---|---|---|",
    ]
    keyed = axioms[axioms["intervention"].astype(str).str.startswith("do(")]
    for (method, intervention), group in keyed.groupby(["method", "intervention"], sort=False):
        cells = [
            _cell(pick(group, "flip rate"), 2),
            _cell(pick(group, "kept rate"), 2),
            _cell(pick(group, "excess L1"), 2),
            _cell(pick(group, "L1 edited back"), 2),
        ]
        lines.append(f"| {method} | {intervention} | " + " | ".join(cells) + " |")
    composition = axioms[axioms["axiom"] == "composition"]
    if composition.empty:
        return [*lines, "", "Composition and reversibility: not measured (--no-model-axioms)."]
    lines += ["", "| method | null edit x1 (L1) | null edit x10 (L1) | note |", "|---|---|---|---|"]
    for method, group in composition.groupby("method", sort=False):
        notes = "; ".join(n for n in group["note"].unique() if str(n).startswith("not measured"))
        lines.append(f"| {method} | {_cell(pick(group, 'L1 after 1 null edit'), 2)} | "
                     f"{_cell(pick(group, 'L1 after 10 null edits'), 2)} | {notes} |")  # fmt: skip
    return lines


def _first_value(table: pd.DataFrame, method: str, column: str, metric: str) -> tuple[float, float, float]:
    """(mean, low, high) of one cell; a combined column's CPG: its first attribute's other than age."""
    entry = table[(table["method"] == method) & (table["column"] == column) & (table["metric"] == metric)]
    if len(entry) > 1:
        entry = entry[entry["attribute"] != "age"]
    if entry.empty:
        return math.nan, math.nan, math.nan
    return float(entry["mean"].iloc[0]), float(entry["ci_low"].iloc[0]), float(entry["ci_high"].iloc[0])


def plot_table2(table: pd.DataFrame, path: Path, size: int) -> None:
    """Bar chart of LPIPS, L1 and CPG per column, methods side by side, with the bootstrap whiskers.

    The CPG panel marks each method's CPG of the null edit (a black bar across its column).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("LPIPS", "LPIPS (AlexNet)"), ("L1", f"L1 (0-255, {size} px)"), ("CPG", "CPG (|change|)")]
    methods = list(table["method"].unique())
    columns = column_order(table["column"].unique())
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    width = 0.8 / max(len(methods), 1)
    for axis, (metric, title) in zip(axes, panels, strict=True):
        for m, method in enumerate(methods):
            cells = [_first_value(table, method, column, metric) for column in columns]
            means = [mean for mean, _, _ in cells]
            errors = [[0.0 if math.isnan(low) else max(mean - low, 0.0) for mean, low, _ in cells],
                      [0.0 if math.isnan(high) else max(high - mean, 0.0) for mean, _, high in cells]]  # fmt: skip
            positions = np.arange(len(columns)) + (m - (len(methods) - 1) / 2) * width
            axis.bar(positions, means, width, yerr=errors, capsize=3, label=method)
            if metric == "CPG":
                null = [_first_value(table, method, column, "CPG null edit")[0] for column in columns]
                axis.hlines(null, positions - width / 2, positions + width / 2, colors="black", linewidth=2,
                            label="null edit" if m == 0 else None)  # fmt: skip
        axis.set_xticks(np.arange(len(columns)), columns, rotation=20)
        axis.set_title(title)
        if metric in ("LPIPS", "CPG"):
            axis.legend(fontsize=7)
    figure.tight_layout()
    with atomic_io.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)


def _sha256(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def classifier_provenance(classifier: Any) -> dict[str, Any]:
    folder = getattr(classifier, "folder", None)
    record = getattr(classifier, "record", None) or {}
    info: dict[str, Any] = {"name": classifier_label(classifier)}
    if folder is not None:
        folder = Path(folder)
        info.update(folder=str(folder.resolve()), record_sha256=_sha256(folder / "classifier.json"),
                    weights_sha256=_sha256(folder / "model.safetensors"))  # fmt: skip
    if record:
        info.update(config=record.get("config"), index=record.get("index"),
                    test_metrics_present=bool((record.get("metrics") or {}).get("test")))  # fmt: skip
    return info


def classifier_label(classifier: Any) -> str:
    folder = getattr(classifier, "folder", None)
    return str(folder) if folder is not None else type(classifier).__name__


def classifier_overlap(classifier: Any, image_ids: Iterable[str]) -> int | None:
    """How many edited image ids are in the train/val split the classifier learned from (None: unknown)."""
    index = (getattr(classifier, "record", None) or {}).get("index") or {}
    path = Path(str(index.get("path") or ""))
    if not path.is_file() or _sha256(path) != index.get("sha256"):
        return None
    table = pd.read_csv(path, usecols=["image_id", "split"], dtype=str)
    seen = set(table.loc[table["split"].isin(["train", "val"]), "image_id"])
    return len(set(image_ids) & seen)


# --- the whole evaluation ------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    out: Path
    paths: dict[str, Path]
    table: pd.DataFrame
    axioms: pd.DataFrame
    scores: pd.DataFrame
    markdown: str
    warnings: list[str] = field(default_factory=list)


def evaluate_edits(
    edit_dirs: Sequence[str | Path],
    classifier: Any,
    out: str | Path,
    *,
    size: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    axiom_images: int = 8,
    model_axioms: bool | None = None,
    include_null_edits: bool = False,
    index: str | Path | None = None,
    device: str | None = None,
    lpips_model: Any = None,
    realism: bool | None = None,
    realism_features: str | Path = "classifier",
    samples: Sequence[str | Path] = (),
    real_images: int = 500,
    command: str | None = None,
    progress: Progress | None = None,
    warn: Warn | None = None,
) -> EvaluationResult:
    """Score edit folders into Table 2 and the axioms; write every output file into ``out``.

    ``classifier``: a classifier folder (``cfaudit classifiers train``) or an object with ``predict(images)``.
    ``model_axioms``: ``None`` measures composition and reversibility where a job's model loads and notes why
    not elsewhere; ``True`` makes a model that cannot be loaded an error; ``False`` skips them.
    ``index``: the index the edited images come from (exact records); without it, records are read back from
    the jobs' source captions.
    ``realism``: FD and KID against up to ``real_images`` real images of the edited images' split (and of each
    folder in ``samples``), in ``realism_features`` (``"classifier"`` or torchxrayvision weights); ``None``: on
    when an index is given (see :func:`cfaudit.evaluate.realism.plan_realism`).
    """
    started = time.perf_counter()
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        if warn is not None:
            warn(message)

    def report(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    if not edit_dirs:
        raise CfauditError("no edits given; add --edits DIR (the --out folder of `cfaudit edit`)")
    if size is not None and size < 16:
        raise CfauditError(f"--size must be at least 16 pixels, got {size}")
    if n_boot < 0 or axiom_images < 1:
        raise CfauditError("--bootstrap must be >= 0 and --axiom-images >= 1")
    device = device or metrics.default_device()
    out = Path(out)

    # 1. Read the folders, label the methods, find the originals' records
    folders = [read_edit_folder(d) for d in edit_dirs]
    label_methods(folders)
    rows = pd.concat([f.rows for f in folders], ignore_index=True)
    if size is None:
        size = common_size(rows, note)
    records = load_records(rows, index)
    unknown = sum(r is None for r in records)
    if unknown:
        note(f"{unknown} edit(s) have no known record (no --index row, caption not in the template): they count "
             "as changing their attribute and are left out of the model axioms")  # fmt: skip

    # 2. Score every edit
    if isinstance(classifier, (str, Path)):
        from cfaudit.evaluate.classifiers import load_classifier

        classifier = load_classifier(classifier, device)
    realism_plan = realism_measures.plan_realism(realism, classifier, index=index, features=realism_features,
                                                 samples=samples, max_real=real_images, device=device, warn=note)  # fmt: skip
    overlap = classifier_overlap(classifier, rows["image_id"])
    if overlap:
        note(f"{overlap} edited image(s) are in the classifier's train/val split: their CPG and effectiveness "
             "are optimistic; edit test images")  # fmt: skip
    parts = []
    for label in rows["label"].unique():
        selected = rows["label"] == label
        mine = rows[selected].reset_index(drop=True)
        done = [0]

        def step(count: int, label: str = label, total: int = len(mine), done: list[int] = done) -> None:
            done[0] += count
            report(f"scoring {label}", done[0], total)

        scored = score_rows(mine, classifier, size, device=device, lpips_model=lpips_model, progress=step)
        mine_records = [r for r, s in zip(records, selected, strict=True) if s]
        parts.append(edit_scores(mine, scored, mine_records))
    scores = pd.concat(parts, ignore_index=True)
    scored_edits = scores if include_null_edits else scores[scores["changes_record"]]
    null_edits = 0 if include_null_edits else len(per_edit(scores[~scores["changes_record"]]))
    if scored_edits.empty:
        raise CfauditError("every edit is a null edit (its intervention leaves the record unchanged); "
                           "nothing to score: use --include-null-edits")  # fmt: skip

    # 3. Table 2 and the axioms from the scores
    name = classifier_label(classifier)
    table = table2_rows(scored_edits, size, name, n_boot, seed)
    axiom_list = axiom_rows(scores if not include_null_edits else scores.assign(changes_record=True), size,
                            n_boot, seed)  # fmt: skip

    # 4. Model axioms
    record_of = {(f, int(line)): r for f, line, r in zip(rows["folder"], rows["line"], records, strict=True)}
    descriptions: dict[str, str] = {}
    for k, edit_folder in enumerate(folders):
        label = edit_folder.rows["label"].iloc[0]
        descriptions.setdefault(label, _describe(edit_folder))
        if model_axioms is False:
            continue
        report("model axioms", k, len(folders))
        axiom_list += model_axiom_rows(edit_folder, scores, record_of, size=size, axiom_images=axiom_images,
                                       n_boot=n_boot, seed=seed, device=device, required=model_axioms is True,
                                       warn=note)  # fmt: skip
        report("model axioms", k + 1, len(folders))
    axioms = pd.DataFrame(axiom_list, columns=list(AXIOM_COLUMNS))

    # 5. Realism
    realism_rows = realism_measures.realism_table(realism_plan, folders, n_boot=n_boot, seed=seed, warn=note,
                                                  progress=report)  # fmt: skip

    # 6. Write
    markdown = format_markdown(table, axioms, descriptions, size=size, n_boot=n_boot, classifier_name=name,
                               null_edits=null_edits)  # fmt: skip
    markdown += realism_measures.realism_markdown(realism_rows, realism_plan, n_boot)
    paths = {key: out / filename for key, filename in (
        ("table2_csv", "table2.csv"), ("table2_md", "table2.md"), ("table2_png", "table2.png"),
        ("axioms_csv", "axioms.csv"), ("scores_csv", "scores.csv"), ("evaluation_json", "evaluation.json"))}  # fmt: skip
    atomic_io.write_csv(paths["table2_csv"], table)
    atomic_io.write_text(paths["table2_md"], markdown)
    atomic_io.write_csv(paths["axioms_csv"], axioms)
    atomic_io.write_csv(paths["scores_csv"], _scores_for_csv(scores))
    plot_table2(table, paths["table2_png"], size)
    if realism_plan.enabled:
        paths["realism_csv"] = out / "realism.csv"
        atomic_io.write_csv(paths["realism_csv"], realism_rows)
    provenance = {
        "cfaudit_version": __version__,
        "command": command if command is not None else " ".join(sys.argv),
        "created_unix": time.time(),
        "seconds": round(time.perf_counter() - started, 2),
        "python": platform.python_version(),
        "edits": [
            {
                "folder": str(f.path.resolve()),
                "kind": f.kind,
                "file": f.source_file.name,
                "rows": len(f.rows),
                "methods": sorted(f.rows["label"].unique()),
                "description": _describe(f),
                "job": f.job,
                "job_sha256": _sha256(f.path / JOB_JSON),
                "edits_sha256": _sha256(f.source_file),
            }
            for f in folders
        ],
        "classifier": {**classifier_provenance(classifier), "edited_images_seen_in_training": overlap},
        "index": None
        if index is None
        else {"path": str(Path(index).resolve()), "sha256": _sha256(Path(index))},
        "size": size,
        "bootstrap": {"resamples": n_boot, "level": 0.95, "seed": seed, "kind": "percentile"},
        "lpips": _lpips_provenance(lpips_model),
        "axiom_images": axiom_images,
        "model_axioms": {None: "auto", True: "required", False: "off"}[model_axioms],
        "include_null_edits": include_null_edits,
        "realism": realism_measures.realism_provenance(realism_plan),
        "null_edits": len(per_edit(scores[~scores["changes_record"]])),
        "records_unknown": unknown,
        "device": device,
        "warnings": warnings,
    }
    atomic_io.write_json(paths["evaluation_json"], provenance)
    return EvaluationResult(out, paths, table, axioms, scores, markdown, warnings)


def _describe(edit_folder: EditFolder) -> str:
    job = edit_folder.job
    if job is None:
        return f"pairs from {edit_folder.source_file.name}"
    if job.get("method") == SCM_METHOD:
        latents = (job.get("settings") or {}).get("latents")
        return f"SCM baseline, model {job.get('model')}, {job.get('resolution')} px, latents {latents}"
    inversion = (job.get("settings") or {}).get("inversion") or {}
    return (f"diffusion editor, model {job.get('model')}, {inversion.get('method')} inversion, "
            f"{inversion.get('steps')} steps")  # fmt: skip


def _lpips_provenance(lpips_model: Any) -> dict[str, Any]:
    if lpips_model is not None:
        return {"model": type(lpips_model).__name__, "weights": "given by the caller"}
    from cfaudit.evaluate.lpips_weights import lpips_status

    status = lpips_status()
    return {"model": "AlexNet v0.1", "weights": status.get("path"), "record": status.get("record")}


def _scores_for_csv(scores: pd.DataFrame) -> pd.DataFrame:
    first = ["method", "column", "intervention", "image_id", "attribute", "target", "factual", "changes_record",
             "lpips", "l1", "cpg", "cpg_signed", "cpg_unit", "head", "before", "after"]  # fmt: skip
    rest = [c for c in scores.columns if c not in first and not c.startswith("kept:")]
    return scores[first + rest + sorted(c for c in scores.columns if c.startswith("kept:"))]
