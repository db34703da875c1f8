"""Step 2 of ``cfaudit evaluate``: every edit scored at one stated resolution.

LPIPS (AlexNet, v0.1 heads), L1 on the 0-255 scale, the attribute classifier's outputs on original,
counterfactual and reconstruction, and from them the counterfactual prediction gain (CPG) of each intervened
attribute, absolute (the paper) and signed towards the target, and effectiveness.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cfaudit.data.images import load_image
from cfaudit.data.interventions import AgeShift, Intervention
from cfaudit.data.vocabulary import PATHOLOGIES, RACES
from cfaudit.errors import CfauditError
from cfaudit.evaluate import metrics
from cfaudit.evaluate.reading import attribute_kind, changes_record, factual_value

BATCH = 32  # edits loaded and scored together (bounds memory on large jobs)


# --- 2. scoring --------------------------------------------------------------------------------------------


def _predict(classifier: Any, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    predict = classifier.predict if hasattr(classifier, "predict") else classifier
    outputs = predict(images)
    return {head: np.asarray(values, dtype=np.float64) for head, values in outputs.items()}


def head_kind(head: str, values: np.ndarray) -> metrics.HeadKind:
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
    #: one value, or one per edit (``do(age=+20)``: each image's own age moved)
    target: float | np.ndarray | None
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
        goal = np.asarray(value, dtype=np.float64)
        return AttributeTarget(attribute, "age", kind, float(goal) if goal.ndim == 0 else goal, "years")
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


def _shifted_ages(
    shift: AgeShift, records: Sequence[dict[str, Any] | None], predicted: np.ndarray | None
) -> np.ndarray:
    """The age each edit of ``do(age=+n)`` aims at: its record's age moved by ``n``; where the record has no
    age, the classifier's reading of the original moved by ``n``."""
    bases = np.array([_number((record or {}).get("age")) for record in records])
    if predicted is not None:
        read = np.asarray(predicted, dtype=np.float64).reshape(len(records), -1)[:, 0]
        bases = np.where(np.isnan(bases), read, bases)
    return bases + shift.years


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


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
        for attribute, change in intervention.changes:
            value = (
                _shifted_ages(change, [records[i] for i in idx], before.get("age"))
                if isinstance(change, AgeShift)
                else change
            )
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
                        "target": value[k] if isinstance(value, np.ndarray) else value,
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
