"""Rank what the edits reveal: candidate relations with their evidence and how they fare against the controls.

Two kinds of candidate, each with a ``status``. A relation is **flagged** (``hidden``) when the edit shows it
beyond the editor's own controls, the label statistics do not explain it, and real images show it too (the
data association): a property of the data the metadata does not hold, not a quirk of the editor.

**head** (a classifier head moved by an intervention that does not target it), in margin units
(probability; 50 years = 1 for age). The edit *shows* a change when its interval beyond the null edit excludes 0
and it exceeds the editor's habit on that head (``offtarget_control``) by ``margin``. Then:

* ``in labels``: the label statistics predict a change of the same sign of at least ``margin``;
* ``hidden`` (flagged): they do not, and the classifier's outputs on real images show it beyond what the labels
  predict (the real-image change minus the label change has the edit's sign and at least ``margin``);
* ``editor quirk``: they do not, and real images do not show it either;
* ``edit only``: neither labels nor real images can be compared (too few rows);
* ``labels only``: the edit shows nothing but the labels predict a change of at least ``margin``.

**region** (a change cluster outside the intervened attribute's expected region). It *recurs* when its share of
the edited images exceeds both the null edit's and the other interventions' share at that place by
``region_margin`` and its interval's lower end lies above both. Then ``hidden`` (flagged) when real images
differ in its footprint between the source and target attribute states in the same direction by at least
``data_margin`` (standardised), ``editor quirk`` when they do not; clusters that do not recur are ``weak``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

CANDIDATE_COLUMNS: tuple[str, ...] = (
    "rank", "intervention", "kind", "target", "status", "flagged", "description", "effect", "ci_low", "ci_high",
    "null_control", "offtarget_control", "label_association", "data_association", "excess", "n_images", "frequency", "x", "y",
    "examples", "evidence",
)  # fmt: skip
_ORDER = {"hidden": 0, "in labels": 1, "editor quirk": 2, "edit only": 3, "labels only": 4, "weak": 5}


@dataclass(frozen=True)
class CandidateSettings:
    #: Head changes must beat the controls by this much (probability units; age: 50 years = 1, so 0.1 is 5 years).
    margin: float = 0.1
    #: Change clusters must be more frequent than in the controls by this share of images.
    region_margin: float = 0.2
    #: Real images must differ in a cluster's footprint by this many standard deviations, beyond the labels.
    data_margin: float = 0.3


def _nan0(value: float) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def head_candidates(cochange: pd.DataFrame, settings: CandidateSettings) -> list[dict[str, Any]]:
    rows = []
    for row in cochange[~cochange["intervened"].astype(bool)].itertuples(index=False):
        scale = float(row.scale)
        delta, low, high = row.delta / scale, row.ci_low / scale, row.ci_high / scale
        offtarget = _nan0(row.offtarget_control) / scale
        label = row.label_association / scale if not math.isnan(row.label_association) else math.nan
        data = row.data_association / scale if not math.isnan(row.data_association) else math.nan
        shows = (low > 0 or high < 0) and abs(delta) >= settings.margin + offtarget
        labelled = not math.isnan(label) and label * delta > 0 and abs(label) >= settings.margin
        # Real images show it beyond what the labels explain, in the edit's direction
        beyond_labels = data - _nan0(label) if not math.isnan(data) else math.nan
        in_data = (
            not math.isnan(beyond_labels)
            and beyond_labels * delta > 0
            and abs(beyond_labels) >= settings.margin
        )
        if shows and labelled:
            status, excess = "in labels", abs(delta) - offtarget
        elif shows and in_data:
            status, excess = "hidden", abs(delta) - max(offtarget, abs(_nan0(label)))
        elif shows and (not math.isnan(data) or not math.isnan(label)):
            status, excess = "editor quirk", abs(delta) - offtarget
        elif shows:
            status, excess = "edit only", abs(delta) - offtarget
        elif not math.isnan(label) and abs(label) >= settings.margin:
            status, excess = "labels only", abs(label)
        else:
            continue
        rows.append(
            {
                "intervention": row.intervention,
                "kind": "head",
                "target": row.head,
                "status": status,
                "flagged": status == "hidden",
                "description": _head_sentence(row, status),
                "effect": row.delta,
                "ci_low": row.ci_low,
                "ci_high": row.ci_high,
                "null_control": row.null_control,
                "offtarget_control": row.offtarget_control,
                "label_association": row.label_association,
                "data_association": row.data_association,
                "excess": excess,  # in margin units (probability; age: years / 50)
                "n_images": row.n_images,
            }
        )
    return rows


def _head_sentence(row: Any, status: str) -> str:
    unit = " years" if row.head == "age" else ""
    quantity = "predicted age" if row.head == "age" else f"P({row.head})"
    label = "n/a" if math.isnan(row.label_association) else f"{row.label_association:+.2f}{unit}"
    data = "n/a" if math.isnan(row.data_association) else f"{row.data_association:+.2f}{unit}"
    verdict = {
        "hidden": "the labels do not predict it but real images show it",
        "in labels": "the labels predict it",
        "editor quirk": "neither the labels nor real images show it",
        "edit only": "labels and images too sparse to compare",
        "labels only": "the labels predict a change the edit does not show",
    }[status]
    return (
        f"{row.intervention} moves {quantity} by {row.delta:+.2f}{unit} [{row.ci_low:+.2f}, {row.ci_high:+.2f}] "
        f"beyond the null edit ({row.n_images} images; other edits move it {_nan0(row.offtarget_control):.2f}{unit}; "
        f"label statistics {label}; real images {data}): {verdict}"
    )


def region_candidates(clusters: pd.DataFrame, settings: CandidateSettings) -> list[dict[str, Any]]:
    rows = []
    for row in clusters.itertuples(index=False):
        control = max(_nan0(row.null_control), _nan0(row.offtarget_control))
        excess = row.frequency - control
        recurs = excess >= settings.region_margin and row.ci_low > control
        backed = not math.isnan(row.data_support) and row.data_support * row.sign >= settings.data_margin
        status = ("hidden" if backed else "editor quirk") if recurs else "weak"
        change = (
            "a dense (bright) structure fades or is removed"
            if row.sign < 0
            else "a dense (bright) structure appears"
        )
        named = (
            f"; with it P({row.head}) moves {row.head_change:+.2f}"
            if isinstance(row.head, str) and row.head
            else ""
        )
        rows.append(
            {
                "intervention": row.intervention,
                "kind": "region",
                "target": f"cluster {row.cluster}",
                "status": status,
                "flagged": status == "hidden",
                "description": (
                    f"{row.intervention}: {change} in the {row.where} (x {row.x:.2f}, y {row.y:.2f}) in "
                    f"{row.frequency:.0%} [{row.ci_low:.0%}, {row.ci_high:.0%}] of {row.n_images} images, outside "
                    f"the attribute's expected region (null edit {_nan0(row.null_control):.0%}, other edits "
                    f"{_nan0(row.offtarget_control):.0%}; real images {row.data_support:+.2f} SD there){named}"
                ),
                "effect": row.frequency,
                "ci_low": row.ci_low,
                "ci_high": row.ci_high,
                "null_control": row.null_control,
                "offtarget_control": row.offtarget_control,
                "label_association": math.nan,
                "data_association": row.data_support,
                "excess": excess,
                "n_images": row.n_images,
                "frequency": row.frequency,
                "x": row.x,
                "y": row.y,
                "examples": row.examples,
                "evidence": getattr(row, "evidence", ""),
            }
        )
    return rows


def rank_candidates(
    cochange: pd.DataFrame, clusters: pd.DataFrame, settings: CandidateSettings
) -> pd.DataFrame:
    rows = head_candidates(cochange, settings) + region_candidates(clusters, settings)
    table = pd.DataFrame(rows, columns=[c for c in CANDIDATE_COLUMNS if c != "rank"])
    if table.empty:
        return pd.DataFrame(columns=list(CANDIDATE_COLUMNS))
    table["order"] = table["status"].map(_ORDER)
    table = table.sort_values(["order", "excess"], ascending=[True, False], kind="stable").drop(
        columns="order"
    )
    table.insert(0, "rank", range(1, len(table) + 1))
    table["flagged"] = table["flagged"].astype(bool)
    return table.reset_index(drop=True)[list(CANDIDATE_COLUMNS)]
