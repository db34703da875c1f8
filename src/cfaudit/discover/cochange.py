"""The co-change table: how every classifier head moves under every intervention, with its controls.

One row per (intervention, head):

``effect``
    mean of ``C(counterfactual) - C(original)`` over the edited images;
``null_control``
    mean of ``C(null edit) - C(original)`` over the same images (the editor asked to change nothing);
``delta``, ``ci_low``, ``ci_high``
    the edit's change beyond its own null edit, ``C(counterfactual) - C(null edit)`` paired per image, with a
    percentile bootstrap interval;
``offtarget_control``
    the median ``|delta|`` of this head under the *other* interventions that do not target it: how much the
    editor moves this head whatever it is asked to do;
``label_association``
    the change the label statistics predict (:class:`~cfaudit.discover.label_statistics.LabelStatistics`);
``data_association``
    the same contrast in the classifier's outputs on real images of a held-out split: what images with the
    target attribute look like to the classifier, compared with images with the source attribute;
``classifier_bias``
    for a head whose truth every image records (:data:`~cfaudit.discover.heads.FULLY_OBSERVED`: age, sex,
    race), the same contrast in the classifier's *error* on those real images (output minus recorded truth),
    e.g. ``mean(predicted age - age | Edema=1) - mean(predicted age - age | Edema=0)``: how much of the data
    association is the classifier reading the intervened attribute as this one. NaN for the findings, whose
    labels are not the whole truth (an image can show what its report does not name);
``region_control``
    for an intervention whose expected region is a small part of the image, the mean of ``C(composite) -
    C(null edit)``, the composite being the null edit with the counterfactual pasted inside that region only
    (:mod:`~cfaudit.discover.region_control`): the move the head makes from the intended change alone. NaN
    elsewhere;
``data_outside``
    for the same interventions, ``data_association`` with the classifier reading the real images with that region
    blanked: what real images show outside the intervened attribute's own region. NaN elsewhere;
``spread``, ``p_value``
    the standard deviation of the per-image changes beyond the null edit, and the sign-flip test's p-value of
    ``H0: |delta| <= offtarget_control`` (:func:`~cfaudit.discover.significance.sign_flip_p`);
``data_p``
    the one-sided p-value that real images show the change beyond the labels in the edit's direction
    (``data_association - label_association``, a normal test with the standard errors of both conditional-mean
    contrasts, :meth:`~cfaudit.discover.label_statistics.LabelStatistics.association_with_error`; the real
    images are a held-out split, so the direction the edit chose is independent of them). NaN without real
    images;
``q_value``, ``detectable``
    filled in once the whole run's family is known (:func:`~cfaudit.discover.error_rates.apply_error_rates`):
    the false-discovery-adjusted p-value of the relation (the edit shows it *and* real images do, the larger
    of ``p_value`` and ``data_p``) and the smallest change the run could have detected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfaudit.data.interventions import Intervention
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.discover.heads import FULLY_OBSERVED, HEAD_COLUMNS, HEAD_SCALE, intervened_heads
from cfaudit.discover.label_statistics import LabelStatistics
from cfaudit.discover.significance import directed_p, sign_flip_p
from cfaudit.evaluate.metrics import bootstrap_ci

COCHANGE_COLUMNS: tuple[str, ...] = (
    "intervention", "head", "intervened", "n_images", "effect", "null_control", "delta", "ci_low", "ci_high",
    "offtarget_control", "label_association", "data_association", "classifier_bias", "region_control",
    "data_outside", "scale", "spread", "p_value",
    "data_p", "q_value", "detectable",
)  # fmt: skip


def cochange_table(
    scores: Mapping[str, Any],
    edits: pd.DataFrame,
    interventions: Sequence[Intervention],
    labels: LabelStatistics,
    data: LabelStatistics | None,
    records: Mapping[str, Mapping[str, Any]],
    policy: LabelPolicy = DEFAULT_POLICY,
    resamples: int = 1000,
    seed: int = 0,
    bias: LabelStatistics | None = None,
    draws: int = 9999,
    outside: Mapping[str, LabelStatistics] | None = None,
) -> pd.DataFrame:
    """One row per (intervention, head); ``bias`` holds the classifier's error on real images (output minus
    recorded truth, :func:`~cfaudit.discover.label_statistics.classifier_error`), ``draws`` the Monte Carlo
    sign vectors of the p-values when an intervention has more than
    :data:`~cfaudit.discover.significance.EXACT_MAX` images."""
    position = {image_id: k for k, image_id in enumerate(scores["images"])}
    rows: list[dict[str, Any]] = []
    changes: dict[str, np.ndarray] = {}  # per intervention: images x heads, beyond the null edit
    for intervention in interventions:
        name = str(intervention)
        selected = np.flatnonzero(edits["intervention"].to_numpy() == name)
        if selected.size == 0:
            continue
        image_rows = [position[str(i)] for i in edits["image_id"].to_numpy()[selected]]
        targeted = intervened_heads(tuple(n for n, _ in intervention.changes))
        edited = [records[str(i)] for i in edits["image_id"].to_numpy()[selected]]
        association, label_error = labels.association_with_error(intervention, edited, policy)
        in_data, data_error = (
            data.association_with_error(intervention, edited, policy) if data is not None else ({}, {})
        )
        misread = bias.association(intervention, edited, policy) if bias is not None else {}
        blanked = (outside or {}).get(name)
        in_outside = blanked.association(intervention, edited, policy) if blanked is not None else {}
        changes[name] = np.stack(
            [scores["counterfactual"][h][selected] - scores["null"][h][image_rows] for h in HEAD_COLUMNS],
            axis=1,
        )
        for head in HEAD_COLUMNS:
            before = scores["original"][head][image_rows]
            null = scores["null"][head][image_rows]
            after = scores["counterfactual"][head][selected]
            interval = bootstrap_ci(after - null, resamples=resamples, seed=seed)
            region_only = (
                scores["region_only"][head][selected] if "region_only" in scores else np.array([np.nan])
            )
            beyond = in_data.get(head, math.nan) - _nan0(association[head])
            beyond_error = math.hypot(data_error.get(head, math.nan), _nan0(label_error[head]))
            rows.append(
                {
                    "intervention": name,
                    "head": head,
                    "intervened": head in targeted,
                    "n_images": int(selected.size),
                    "effect": float(np.mean(after - before)),
                    "null_control": float(np.mean(null - before)),
                    "delta": interval.estimate,
                    "ci_low": interval.low,
                    "ci_high": interval.high,
                    "label_association": association[head],
                    "data_association": in_data.get(head, math.nan),
                    "classifier_bias": misread.get(head, math.nan) if head in FULLY_OBSERVED else math.nan,
                    "region_control": (
                        float(np.mean(region_only - null)) if np.isfinite(region_only).all() else math.nan
                    ),
                    "data_outside": in_outside.get(head, math.nan),
                    "scale": HEAD_SCALE[head],
                    "spread": float(np.std(after - null, ddof=1)) if selected.size > 1 else math.nan,
                    "data_p": directed_p(beyond, beyond_error, interval.estimate),
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=list(COCHANGE_COLUMNS))
    table["offtarget_control"] = [
        _offtarget(table, row.intervention, row.head) for row in table.itertuples(index=False)
    ]
    # The test of each change against its controls: paired with the null edit, beyond the off-target habit
    table["p_value"] = math.nan
    for k, (name, change) in enumerate(changes.items()):
        rows_of = np.flatnonzero(table["intervention"].to_numpy() == name)
        shift = table["offtarget_control"].to_numpy()[rows_of]
        table.loc[table.index[rows_of], "p_value"] = sign_flip_p(change, shift, draws=draws, seed=(seed, k))
    table["q_value"] = math.nan
    table["detectable"] = math.nan
    return table[list(COCHANGE_COLUMNS)]


def _nan0(value: float) -> float:
    return 0.0 if value is None or not math.isfinite(value) else float(value)


def _offtarget(table: pd.DataFrame, intervention: str, head: str) -> float:
    others = table[(table["head"] == head) & (table["intervention"] != intervention) & ~table["intervened"]]
    if others.empty:
        return math.nan
    return float(np.median(np.abs(others["delta"].to_numpy())))
