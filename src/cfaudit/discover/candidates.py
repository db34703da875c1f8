"""Rank what the edits reveal: candidate relations with their evidence and how they fare against the controls.

Two kinds of candidate, each with a ``status``. A relation is **flagged** (``hidden``) when the edit shows it
beyond the editor's own controls, the label statistics do not explain it, real images show it too (the data
association): a property of the data the metadata does not hold, not a quirk of the editor; and its q-value
(:mod:`cfaudit.discover.error_rates`: the false-discovery-adjusted p-value of the edit against its controls,
over every test of the run) is at most ``alpha``. One that passes every rule but the q-value is
``not significant``: too few images to tell it from chance among this many tests (``detectable`` says what the
run could have found).

**head** (a classifier head moved by an intervention that does not target it), in margin units
(probability; 50 years = 1 for age). The edit *shows* a change when its interval beyond the null edit excludes 0
and it exceeds the editor's habit on that head (``offtarget_control``) by ``margin``. Then:

* ``in labels``: the label statistics predict a change of the same sign of at least ``margin``;
* ``hidden`` (flagged): they do not, and the classifier's outputs on real images show it beyond what the labels
  predict (the real-image change minus the label change has the edit's sign and at least ``margin``);
* ``classifier confound`` (heads whose truth every image records: age, sex, race,
  :data:`~cfaudit.discover.heads.FULLY_OBSERVED`): the labels do not predict it, and the classifier's own error
  on real images, conditional on the intervened attribute (``classifier_bias``), moves this head the edit's way
  by at least ``margin``: the classifier reads the edited attribute as this one. Such a head is never
  ``hidden``: its labels are the truth, so real images beyond the labels can only be the classifier's misreading.
  Any other head is a ``classifier confound`` too when the expected-region control explains its move
  (``region_control``, :mod:`~cfaudit.discover.region_control`): pasting the counterfactual into the null edit
  inside the intervened attribute's own region only moves it the same way by at least half as much, so the head
  reads the intended change (a weak lung-opacity head reading a smaller heart), and real images "show" the same
  misreading; or when real images show it beyond the labels only through that region: with the region blanked
  (``data_outside``) the real-image change beyond the labels is gone (below ``margin`` or the other way);
* ``editor quirk``: none of the above, and labels or real images could be compared;
* ``edit only``: neither labels nor real images can be compared (too few rows);
* ``labels only``: the edit shows nothing but the labels predict a change of at least ``margin``.

**region** (a change cluster outside the intervened attribute's expected region). It *recurs* when its share of
the edited images exceeds both the null edit's and the other interventions' share at that place by
``region_margin`` and its interval's lower end lies above both. Then ``hidden`` (flagged) when real images
differ in its footprint between the source and target attribute states in the same direction by at least
``data_margin`` (standardised), ``editor quirk`` when they do not; clusters that do not recur are ``weak``.

Every candidate says what its status rests on (``rests_on``: ``head``, ``region``, or ``head and region`` when
the other level agrees) and how the other level fares (``cross_check``): a cluster named by a head (the head that
moves most with it) against that head's change under the same intervention, and back.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cfaudit.discover.heads import FULLY_OBSERVED
from cfaudit.discover.region_control import explains
from cfaudit.errors import CfauditError

CANDIDATE_COLUMNS: tuple[str, ...] = (
    "rank", "intervention", "kind", "target", "status", "flagged", "description", "effect", "ci_low", "ci_high",
    "p_value", "data_p", "q_value", "detectable", "null_control", "offtarget_control", "label_association",
    "data_association", "classifier_bias", "region_control", "data_outside", "rests_on", "cross_check", "excess",
    "n_images", "frequency", "x", "y", "examples", "evidence",
)  # fmt: skip
_ORDER = {
    "hidden": 0, "not significant": 1, "in labels": 2, "classifier confound": 3, "editor quirk": 4,
    "edit only": 5, "labels only": 6, "weak": 7,
}  # fmt: skip


@dataclass(frozen=True)
class CandidateSettings:
    #: Head changes must beat the controls by this much (probability units; age: 50 years = 1, so 0.1 is 5 years).
    margin: float = 0.1
    #: Change clusters must be more frequent than in the controls by this share of images.
    region_margin: float = 0.2
    #: Real images must differ in a cluster's footprint by this many standard deviations, beyond the labels.
    data_margin: float = 0.3
    #: A relation is flagged only at a q-value (false discovery rate over the run's tests) at most this.
    alpha: float = 0.1
    #: How q-values are adjusted: ``bh`` (Benjamini-Hochberg) or ``by`` (Benjamini-Yekutieli, any dependence).
    fdr: str = "bh"

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise CfauditError(f"--alpha must be above 0 and below 1, got {self.alpha}")
        # a negative margin would let a change smaller than the controls' count as a relation
        if not 0 <= self.margin < 1:
            raise CfauditError(f"--margin must be at least 0 and below 1 (a probability), got {self.margin}")
        if not 0 <= self.region_margin <= 1:
            raise CfauditError(
                f"--region-margin must lie in 0..1 (a share of images), got {self.region_margin}"
            )
        if not self.data_margin >= 0:
            raise CfauditError(
                f"data_margin must not be negative (standard deviations), got {self.data_margin}"
            )
        if self.fdr not in ("bh", "by"):
            raise CfauditError(f"--fdr must be 'bh' or 'by', got {self.fdr!r}")


def _nan0(value: float) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _scaled(value: float, scale: float) -> float:
    return value / scale if value is not None and not math.isnan(value) else math.nan


def _q(row: Any) -> float:
    return float(getattr(row, "q_value", math.nan))


def _data_p(row: Any) -> float:
    return float(getattr(row, "data_p", math.nan))


def head_shows(row: Any, settings: CandidateSettings) -> bool:
    """The edit moves this head beyond its null edit (interval excludes 0) and beyond the editor's habit on
    it by ``margin`` (margin units)."""
    scale = float(row.scale)
    delta, low, high = row.delta / scale, row.ci_low / scale, row.ci_high / scale
    return (low > 0 or high < 0) and abs(delta) >= settings.margin + _nan0(row.offtarget_control) / scale


def head_status(row: Any, settings: CandidateSettings) -> tuple[str, float] | None:
    """The status of one co-change row and its excess over the controls (margin units); None: no candidate."""
    scale = float(row.scale)
    delta = row.delta / scale
    offtarget = _nan0(row.offtarget_control) / scale
    label = _scaled(row.label_association, scale)
    data = _scaled(row.data_association, scale)
    bias = _scaled(getattr(row, "classifier_bias", math.nan), scale)
    shows = head_shows(row, settings)
    labelled = not math.isnan(label) and label * delta > 0 and abs(label) >= settings.margin
    # Real images show it beyond what the labels explain, in the edit's direction
    beyond_labels = data - _nan0(label) if not math.isnan(data) else math.nan
    in_data = (
        not math.isnan(beyond_labels) and beyond_labels * delta > 0 and abs(beyond_labels) >= settings.margin
    )
    comparable = not math.isnan(data) or not math.isnan(label)
    outside = _scaled(getattr(row, "data_outside", math.nan), scale)
    beyond_outside = outside - _nan0(label)
    only_through_region = (
        in_data
        and not math.isnan(outside)
        and not (beyond_outside * delta > 0 and abs(beyond_outside) >= settings.margin)
    )
    if shows and labelled:
        return "in labels", abs(delta) - offtarget
    if shows and row.head in FULLY_OBSERVED:
        # The truth is recorded: beyond the labels there is only the classifier's reading (or the editor)
        if not math.isnan(bias) and bias * delta > 0 and abs(bias) >= settings.margin:
            return "classifier confound", abs(delta) - offtarget
        return ("editor quirk" if comparable else "edit only"), abs(delta) - offtarget
    if shows and (explains(getattr(row, "region_control", math.nan), row.delta) or only_through_region):
        return "classifier confound", abs(delta) - offtarget
    if shows and in_data:
        excess = abs(delta) - max(offtarget, abs(_nan0(label)))
        return ("hidden" if _q(row) <= settings.alpha else "not significant"), excess
    if shows:
        return ("editor quirk" if comparable else "edit only"), abs(delta) - offtarget
    if not math.isnan(label) and abs(label) >= settings.margin:
        return "labels only", abs(label)
    return None


def _test_columns(row: Any) -> dict[str, Any]:
    """The columns a head and a region candidate share: the effect's interval, its tests and its controls."""
    return {
        "ci_low": row.ci_low,
        "ci_high": row.ci_high,
        "p_value": getattr(row, "p_value", math.nan),
        "data_p": _data_p(row),
        "q_value": _q(row),
        "detectable": getattr(row, "detectable", math.nan),
        "null_control": row.null_control,
        "offtarget_control": row.offtarget_control,
    }


def head_candidates(cochange: pd.DataFrame, settings: CandidateSettings) -> list[dict[str, Any]]:
    rows = []
    for row in cochange[~cochange["intervened"].astype(bool)].itertuples(index=False):
        decided = head_status(row, settings)
        if decided is None:
            continue
        status, excess = decided
        rows.append(
            {
                "intervention": row.intervention,
                "kind": "head",
                "target": row.head,
                "status": status,
                "flagged": status == "hidden",
                "description": _head_sentence(row, status),
                "effect": row.delta,
                **_test_columns(row),
                "label_association": row.label_association,
                "data_association": row.data_association,
                "classifier_bias": getattr(row, "classifier_bias", math.nan),
                "region_control": getattr(row, "region_control", math.nan),
                "data_outside": getattr(row, "data_outside", math.nan),
                "excess": excess,  # in margin units (probability; age: years / 50)
                "n_images": row.n_images,
            }
        )
    return rows


def _number(value: float, unit: str = "", signed: bool = True) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:+.2f}{unit}" if signed else f"{value:.2f}{unit}"


def _error_rates(p: float, q: float, data_p: float = math.nan) -> str:
    """ "; p = edit's (real images'), q = relation's" for a description."""
    if math.isnan(p):
        return ""
    in_data = f" (real images: p = {data_p:.2g})" if not math.isnan(data_p) else ""
    return f"; p = {p:.2g}{in_data}, q = {q:.2g}" if not math.isnan(q) else f"; p = {p:.2g}{in_data}"


def _head_sentence(row: Any, status: str) -> str:
    unit = " years" if row.head == "age" else ""
    quantity = "predicted age" if row.head == "age" else f"P({row.head})"
    bias = getattr(row, "classifier_bias", math.nan)
    verdict = {
        "hidden": "the labels do not predict it but real images show it",
        "not significant": "the labels do not predict it and real images show it, but too few images to tell "
        "it from chance among the run's tests",
        "in labels": "the labels predict it",
        "classifier confound": (
            f"the classifier misreads real images with this change by {_number(bias, unit)} against their "
            f"recorded {row.head}: a classifier confound, not a relation of the data"
            if row.head in FULLY_OBSERVED
            else f"editing only the intervened attribute's own region moves it by "
            f"{_number(getattr(row, 'region_control', math.nan), unit)}, and with that region blanked real images "
            f"show {_number(getattr(row, 'data_outside', math.nan), unit)}: the classifier reads the intended "
            "change as this head (a classifier confound), not a relation of the data"
        ),
        "editor quirk": "neither the labels nor real images show it",
        "edit only": "labels and images too sparse to compare",
        "labels only": "the labels predict a change the edit does not show",
    }[status]
    misread = (
        f"; classifier bias on real images {_number(bias, unit)}"
        if row.head in FULLY_OBSERVED and status != "classifier confound"
        else ""
    )
    return (
        f"{row.intervention} moves {quantity} by {row.delta:+.2f}{unit} [{row.ci_low:+.2f}, {row.ci_high:+.2f}] "
        f"beyond the null edit ({row.n_images} images; other edits move it {_nan0(row.offtarget_control):.2f}{unit}; "
        f"label statistics {_number(row.label_association, unit)}; real images "
        f"{_number(row.data_association, unit)}{misread}{_error_rates(getattr(row, 'p_value', math.nan), _q(row), _data_p(row))}): "
        f"{verdict}"
    )


def region_status(row: Any, settings: CandidateSettings) -> tuple[str, float]:
    control = max(_nan0(row.null_control), _nan0(row.offtarget_control))
    excess = row.frequency - control
    recurs = excess >= settings.region_margin and row.ci_low > control
    backed = not math.isnan(row.data_support) and row.data_support * row.sign >= settings.data_margin
    if not recurs:
        return "weak", excess
    if not backed:
        return "editor quirk", excess
    return ("hidden" if _q(row) <= settings.alpha else "not significant"), excess


def region_candidates(clusters: pd.DataFrame, settings: CandidateSettings) -> list[dict[str, Any]]:
    rows = []
    for row in clusters.itertuples(index=False):
        status, excess = region_status(row, settings)
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
        not_significant = (
            ": too few images to tell it from chance among the run's tests"
            if status == "not significant"
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
                    f"{_nan0(row.offtarget_control):.0%}; real images {row.data_support:+.2f} SD there"
                    f"{_error_rates(getattr(row, 'p_value', math.nan), _q(row), _data_p(row))}){named}"
                    f"{not_significant}"
                ),
                "effect": row.frequency,
                **_test_columns(row),
                "label_association": math.nan,
                "data_association": row.data_support,
                "classifier_bias": math.nan,
                "region_control": math.nan,
                "data_outside": math.nan,
                "excess": excess,
                "n_images": row.n_images,
                "frequency": row.frequency,
                "x": row.x,
                "y": row.y,
                "examples": row.examples,
                "evidence": getattr(row, "evidence", ""),
                "head": row.head if isinstance(row.head, str) else "",
                "head_change": row.head_change,
            }
        )
    return rows


def _cross_checks(
    rows: list[dict[str, Any]],
    cochange: pd.DataFrame,
    clusters: pd.DataFrame,
    settings: CandidateSettings,
    regional: Collection[str],
) -> None:
    """Fill ``rests_on`` and ``cross_check`` of every candidate: does the other level of evidence agree?

    A cluster is tied to the head that moves most with it (its ``head``, by ``head_change``); a head change is
    tied to the recurring clusters of the same intervention named by that head. They agree when the other level
    shows a change (the head's ``shows`` rule; a cluster that recurs) in the same direction."""
    recurring: dict[tuple[str, str], list[Any]] = {}
    for cluster in clusters.itertuples(index=False):
        if isinstance(cluster.head, str) and cluster.head and region_status(cluster, settings)[0] != "weak":
            recurring.setdefault((cluster.intervention, cluster.head), []).append(cluster)
    heads = {(r.intervention, r.head): r for r in cochange.itertuples(index=False) if not r.intervened}
    for row in rows:
        if row["kind"] == "head":
            named = recurring.get((row["intervention"], row["target"]), [])
            agree = [c for c in named if c.head_change * row["effect"] > 0]
            if agree:
                row["rests_on"] = "head and region"
                row["cross_check"] = "agrees: " + ", ".join(f"cluster {c.cluster}" for c in agree)
            elif named:
                row["rests_on"] = "head"
                row["cross_check"] = "disagrees: " + ", ".join(
                    f"cluster {c.cluster} moves it {c.head_change:+.2f}" for c in named
                )
            else:
                row["rests_on"] = "head"
                row["cross_check"] = (
                    "no region change named by this head"
                    if row["intervention"] in regional
                    else "regions not analysed (whole-image attribute)"
                )
        else:
            head = row.pop("head")
            change = row.pop("head_change")
            other = heads.get((row["intervention"], head)) if head else None
            if other is None:
                row["rests_on"] = "region"
                row["cross_check"] = (
                    "no head named" if not head else f"{head} is targeted by the intervention"
                )
            elif head_shows(other, settings) and other.delta * change > 0:
                row["rests_on"] = "head and region"
                row["cross_check"] = f"agrees: {head} moves {other.delta:+.2f}"
            elif head_shows(other, settings):
                row["rests_on"] = "region"
                row["cross_check"] = f"disagrees: {head} moves {other.delta:+.2f} overall"
            else:
                row["rests_on"] = "region"
                row["cross_check"] = f"{head} does not move beyond its controls ({other.delta:+.2g})"


def rank_candidates(
    cochange: pd.DataFrame,
    clusters: pd.DataFrame,
    settings: CandidateSettings,
    regional: Collection[str] | None = None,
) -> pd.DataFrame:
    """Candidates of both kinds, ranked: flagged first, then by status and by excess over the controls.

    ``q_value`` columns come from :func:`~cfaudit.discover.error_rates.apply_error_rates` (a table without
    them flags nothing). ``regional``: the interventions whose change clusters were looked for (default: those
    with a cluster)."""
    regional = set(clusters["intervention"]) if regional is None else set(regional)
    rows = head_candidates(cochange, settings) + region_candidates(clusters, settings)
    _cross_checks(rows, cochange, clusters, settings, regional)
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
