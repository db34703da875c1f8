"""The report's discovery sections: candidates with their evidence, error rates, change clusters, power."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup
from PIL import Image

from cfaudit.report import figures
from cfaudit.report.collect import (
    DISCOVERY_FILE,
    FDR_METHODS,
    DiscoveryInput,
)
from cfaudit.report.formatting import (
    count,
    in_order,
    interval,
    intervention_slugs,
    is_number,
    meta_items,
    number,
    percent,
    two_digits,
)


def _pivot(table: pd.DataFrame, value: str) -> pd.DataFrame:
    rows, columns = in_order(table["intervention"]), in_order(table["head"])
    if value not in table:
        return pd.DataFrame(np.nan, index=rows, columns=columns)
    frame = table.pivot_table(
        index="intervention", columns="head", values=value, aggfunc="mean", dropna=False
    )
    return frame.reindex(index=rows, columns=columns).astype(float)


#: What a candidate's ``status`` means (``{alpha}``: the run's false discovery rate; ``{q_rule}``: that a flag
#: needs q <= alpha, empty for a discovery made before error rates), in ranking order.
STATUS_MEANINGS: dict[str, str] = {
    "hidden": "(status hidden) the edit shows it beyond the editor's own controls, the labels do not predict "
    "it, real images show it{q_rule}",
    "not significant": "passes every rule of a flagged relation but q > {alpha}: too few images to tell it from "
    "chance among the run's tests (not flagged)",
    "in labels": "the label statistics predict it: a known association of the data",
    "classifier confound": "age, sex or race, whose truth every image records: the classifier misreads real "
    "images this way (classifier bias), so it is the classifier's error, not a relation of the data (never "
    "flagged)",
    "editor quirk": "the edit shows it but neither the labels nor real images do: a habit of the editor",
    "edit only": "the edit shows it; labels and real images are too sparse to compare",
    "labels only": "the labels predict a change the edit does not show",
    "weak": "a change cluster that does not recur beyond its controls",
}
#: Row and badge classes of the statuses the table sets apart (flagged rows are marked by ``flagged``).
STATUS_CLASSES = {"not significant": "nsig", "classifier confound": "confound"}
#: Note of a discovery folder written before cfaudit discover computed error rates.
PREDATES_ERROR_RATES = (
    "This discovery predates error rates: it has no p-values, q-values or detectable effects (shown as –), and "
    "its flags rest on the margins alone. Re-run `cfaudit discover` to get them."
)


def fully_observed(head: str) -> bool:
    """Heads whose truth every image records (age, sex, race): the ones with a classifier bias."""
    return head in ("age", "sex", "race") or head.startswith("race:")


def alpha_text(alpha: float | None) -> str:
    return f"{alpha:g}" if alpha is not None else "alpha"


def fdr_name(error_rates: Mapping[str, Any], short: bool = False) -> str:
    method = str(error_rates.get("fdr", "bh"))
    return method.upper() if short else FDR_METHODS[method]


def error_rates_line(discovery: DiscoveryInput, flagged: int) -> str:
    """``2 flagged at q ≤ 0.1 among 58 tests (Benjamini-Hochberg)``; empty for a discovery without error rates."""
    rates = discovery.error_rates
    if rates is None:
        return ""
    return (
        f"{flagged} flagged at q ≤ {alpha_text(discovery.alpha)} among {rates['tests']} tests "
        f"({fdr_name(rates)})"
    )


def error_rates_detail(discovery: DiscoveryInput) -> str:
    """What else the run's multiple testing says: how many tests reach q ≤ alpha, the level one more needs."""
    rates = discovery.error_rates
    if rates is None:
        return ""
    alpha = alpha_text(discovery.alpha)
    text = (
        f"q-values adjust every test of the run (each head an intervention does not target, each change "
        f"cluster) for the false discovery rate by the {fdr_name(rates)} procedure. {rates['rejections']} of the "
        f"{rates['tests']} changes the edits show reach q ≤ {alpha}"
    )
    if _is_whole(rates.get("confirmed")):
        text += (
            f"; the real images' p-values of those are then adjusted among themselves, and {rates['confirmed']} "
            "are confirmed (a change real images show is a relation only if it passes both)"
        )
    text += "; a relation is flagged only when, besides, the labels do not predict it."
    if is_number(rates.get("level")):
        text += f" One more relation would need p ≤ {two_digits(rates['level'])} to join them."
    return text


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def detectable_text(row: Mapping[str, Any], kind: str, recorded: bool) -> str:
    """A candidate's smallest detectable effect in its own unit: a head's (probability, years for age) or, for a
    change cluster, a share of images; ``none at this n`` when no effect could be detected; ``–`` if not recorded."""
    if not recorded:
        return "–"
    value = row.get("detectable")
    if not is_number(value):
        return "none at this n"
    if kind == "region":
        return f"{percent(value)} of images"
    return f"{two_digits(value)} years" if str(row.get("target")) == "age" else two_digits(value)


def cochange_significance(discovery: DiscoveryInput) -> tuple[pd.DataFrame | None, str]:
    """Which cells of the co-change matrix are significant and by what: ``q`` (q ≤ alpha over the run's tests)
    where the discovery has q-values, else ``interval`` (the 95% interval excludes 0, as older runs did)."""
    cochange = discovery.cochange
    if cochange is None or cochange.empty:
        return None, ""
    alpha = discovery.alpha
    if "q_value" in cochange and alpha is not None:
        return _pivot(cochange, "q_value") <= alpha, "q"
    if "ci_low" in cochange and "ci_high" in cochange:
        low, high = _pivot(cochange, "ci_low"), _pivot(cochange, "ci_high")
        return (low > 0) | (high < 0), "interval"
    return None, ""


def cochange_figure(discovery: DiscoveryInput) -> str | None:
    cochange = discovery.cochange
    if cochange is None or cochange.empty:
        return None
    effect = _pivot(cochange, "effect")
    label = _pivot(cochange, "label_association")
    significant, _ = cochange_significance(discovery)
    flagged: list[tuple[str, str]] = []
    if discovery.candidates is not None:
        marked = discovery.candidates[discovery.candidates["flagged"]]
        if "kind" in marked:
            marked = marked[marked["kind"].astype(str) == "head"]
        flagged = list(zip(marked["intervention"], marked["target"], strict=True))
    return figures.cochange_heatmaps(effect, label, significant, flagged)


def _forest_limits(candidates: pd.DataFrame) -> dict[int, float]:
    """Axis half-width per row: shared by the rows of one kind whose numbers are within [-1, 1], own otherwise."""
    fields = [
        c
        for c in ("effect", "ci_low", "ci_high", "null_control", "offtarget_control", "label_association")
        if c in candidates
    ]
    kinds = (
        candidates["kind"].astype(str) if "kind" in candidates else pd.Series("head", index=candidates.index)
    )
    own = candidates[fields].abs().max(axis=1).fillna(0.0)
    limits: dict[int, float] = {}
    for kind in kinds.unique():
        in_unit = (kinds == kind) & (own <= 1.0)
        shared = float(own[in_unit].max()) if in_unit.any() else 0.0
        for i in candidates.index[kinds == kind]:
            limit = shared if in_unit[i] else float(own[i])
            limits[i] = _nice(limit * 1.1) if limit > 0 else 1.0
    return limits


def _nice(value: float) -> float:
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * 10**exponent >= value:
            return step * 10**exponent
    return 10 ** (exponent + 1)


def forest_svg(row: pd.Series, limit: float, flagged: bool) -> Markup:
    """A one-line forest plot: the effect with its interval against the null, off-target and label controls."""
    width, height, pad = 190, 30, 8
    middle = height / 2

    def x(value: float) -> float:
        return pad + (max(-limit, min(limit, value)) + limit) / (2 * limit) * (width - 2 * pad)

    def get(name: str) -> float | None:
        value = row.get(name)
        return float(value) if is_number(value) else None

    parts = [
        f'<line x1="{x(0):.1f}" y1="3" x2="{x(0):.1f}" y2="{height - 3}" class="f-zero"/>',
    ]
    label = get("label_association")
    if label is not None:
        cx = x(label)
        parts.append(f'<path d="M{cx:.1f},{middle - 6} l5,6 l-5,6 l-5,-6 z" class="f-label"/>')
    null = get("null_control")
    if null is not None:
        parts.append(f'<rect x="{x(null) - 4:.1f}" y="{middle - 4}" width="8" height="8" class="f-null"/>')
    offtarget = get("offtarget_control")
    if offtarget is not None:
        cx = x(offtarget)
        parts.append(f'<path d="M{cx:.1f},{middle - 5} l5,9 l-10,0 z" class="f-off"/>')
    low, high, effect = get("ci_low"), get("ci_high"), get("effect")
    if low is not None and high is not None:
        parts.append(f'<line x1="{x(low):.1f}" y1="{middle}" x2="{x(high):.1f}" y2="{middle}" class="f-ci"/>')
        for end in (low, high):
            parts.append(
                f'<line x1="{x(end):.1f}" y1="{middle - 4}" x2="{x(end):.1f}" y2="{middle + 4}" class="f-ci"/>'
            )
    if effect is not None:
        parts.append(
            f'<circle cx="{x(effect):.1f}" cy="{middle}" r="4.5" class="{"f-effect flagged" if flagged else "f-effect"}"/>'
        )
    tooltip = (
        f"effect {interval(effect, low, high, True)}; null {number(null, True)}; "
        f"off-target {number(offtarget, True)}; labels {number(label, True)}; axis ±{limit:g}"
    )
    svg = (
        f'<svg class="forest" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(tooltip)}"><title>{html.escape(tooltip)}</title>{"".join(parts)}</svg>'
    )
    return Markup(svg)


def candidates_view(discovery: DiscoveryInput, notes: list[str]) -> list[dict[str, Any]]:
    candidates = discovery.candidates
    if candidates is None or candidates.empty:
        return []
    limits = _forest_limits(candidates)
    alpha = discovery.alpha
    recorded = {c: c in candidates for c in ("p_value", "q_value", "detectable", "classifier_bias")}
    rows = []
    for i, row in candidates.iterrows():
        evidence_uri = None
        evidence = row.get("evidence")
        if isinstance(evidence, str) and evidence.strip():
            path = discovery.folder / evidence.strip()
            if path.is_file():
                evidence_uri = figures.image_file_uri(path, 360)
            else:
                notes.append(
                    f"{discovery.folder / 'candidates.csv'}: evidence {evidence} of rank {count(row['rank'])} is missing"
                )
        kind = str(row.get("kind", "head"))
        where = ""
        if kind == "region" and is_number(row.get("x")) and is_number(row.get("y")):
            where = (
                f"at x = {float(row['x']):.2f}, y = {float(row['y']):.2f} (0–1, from the image's top left)"
            )
        examples = str(row.get("examples", "")) if isinstance(row.get("examples"), str) else ""
        flagged = bool(row["flagged"])
        status = str(row.get("status", "") or "")
        q = row.get("q_value")
        bias = row.get("classifier_bias")
        head_bias = kind == "head" and recorded["classifier_bias"] and fully_observed(str(row["target"]))
        unit = " years" if str(row["target"]) == "age" else ""
        rows.append(
            {
                "rank": count(row["rank"]),
                "intervention": row["intervention"],
                "target": row["target"],
                "kind": kind,
                "status": status,
                "status_class": STATUS_CLASSES.get(status, ""),
                # Flagged rows say the level they were flagged at, when their q-value bears it out.
                "q_mark": f"q ≤ {alpha_text(alpha)}"
                if flagged and alpha is not None and is_number(q) and float(q) <= alpha
                else "",
                "p": two_digits(row.get("p_value")),
                "q": two_digits(q),
                "data_p": two_digits(row.get("data_p")) if is_number(row.get("data_p")) else "",
                "detectable": detectable_text(row, kind, recorded["detectable"]),
                "bias": (number(bias, True) + unit if is_number(bias) else "–") if head_bias else "",
                "rests_on": str(row.get("rests_on", "") or ""),
                "cross_check": str(row.get("cross_check", "") or ""),
                "description": row.get("description") if isinstance(row.get("description"), str) else "",
                "effect": interval(row["effect"], row.get("ci_low"), row.get("ci_high"), True),
                "null": number(row.get("null_control"), True),
                "offtarget": number(row.get("offtarget_control"), True),
                "label": number(row.get("label_association"), True),
                "excess": number(row.get("excess"), True),
                "frequency": percent(row.get("frequency")),
                "n_images": count(row.get("n_images")),
                "where": where,
                "examples": [figures.short_id(e, 14) for e in examples.split(";") if e.strip()][:4],
                "flagged": flagged,
                "forest": forest_svg(row, limits[i], flagged),
                "axis": f"±{limits[i]:g}",
                "evidence_uri": evidence_uri,
            }
        )
    return rows


def _map_picture(discovery: DiscoveryInput, intervention: str) -> np.ndarray | None:
    for slug in intervention_slugs(intervention):
        path = discovery.maps.get(slug)
        if path is not None:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
    return None


def cluster_views(discovery: DiscoveryInput, notes: list[str]) -> list[dict[str, Any]]:
    clusters = discovery.clusters
    if clusters is None or clusters.empty:
        return []
    views = []
    for intervention in in_order(clusters["intervention"]):
        boxes = clusters[clusters["intervention"] == intervention]
        picture = _map_picture(discovery, intervention)
        if picture is None:
            notes.append(
                f"{discovery.folder / 'maps'}: no mean map for {intervention}; its clusters are listed only"
            )
        lines = []
        for _, box in boxes.iterrows():
            parts = [f"cluster {box['cluster']}"]
            if is_number(box.get("frequency")):
                parts.append(f"in {percent(box['frequency'])} of images")
            if isinstance(box.get("sign"), str) and box["sign"]:
                parts.append(box["sign"])
            if isinstance(box.get("head"), str) and box["head"]:
                parts.append(f"with {box['head']}")
            if is_number(box.get("q_value")):
                parts.append(f"q = {two_digits(box['q_value'])}")
            lines.append(", ".join(parts))
        views.append(
            {
                "intervention": intervention,
                "uri": figures.cluster_overlay(picture, boxes, intervention) if picture is not None else None,
                "lines": lines,
            }
        )
    return views


def _share_text(value: Any, from_json: bool) -> str:
    """A detectable share of images: blank for a whole-image attribute (NaN), ``too few images`` (inf); read from
    discovery.json, where both are null, ``–``."""
    if is_number(value):
        return percent(value)
    if from_json:
        return "–"
    return "too few images" if isinstance(value, float) and math.isinf(value) else ""


def _head_text(value: Any, from_json: bool) -> str:
    if is_number(value):
        return two_digits(value)
    if not from_json and isinstance(value, float) and math.isinf(value):
        return "too few images"
    return "–"


def power_view(discovery: DiscoveryInput) -> dict[str, Any] | None:
    """The "What the run could detect" table (power.csv, else discovery.json's power), or None without one."""
    power = discovery.power
    if power is None or power.empty:
        return None
    from_json = discovery.power_source == DISCOVERY_FILE
    recorded_settings = discovery.meta.get("settings")
    settings = recorded_settings if isinstance(recorded_settings, dict) else {}
    auto = str(settings.get("images", "")).strip().lower() == "auto" or any(
        power[c].notna().any() for c in ("requested", "eligible") if c in power
    )
    rows = []
    for _, row in power.iterrows():
        tested = row.get("heads_tested")
        undetectable = count(row.get("heads_undetectable"))
        if is_number(tested) and undetectable != "–":
            undetectable = f"{undetectable} of {count(tested)}"
        rows.append(
            {
                "intervention": str(row["intervention"]),
                "n_images": count(row.get("n_images")),
                "requested": count(row.get("requested")),
                "eligible": count(row.get("eligible")),
                "share": _share_text(row.get("detectable_share"), from_json),
                "head": _head_text(row.get("detectable_head"), from_json),  # margin units
                "undetectable": undetectable,
            }
        )
    levels = power["level"].dropna().unique() if "level" in power else []
    level = float(levels[0]) if len(levels) == 1 else None
    if level is None and discovery.error_rates is not None and is_number(discovery.error_rates.get("level")):
        level = float(discovery.error_rates["level"])
    return {
        "auto": auto,
        "rows": rows,
        "level": two_digits(level) if level is not None else "",
        "source": discovery.power_source,
        "from_json": from_json,
    }


def status_legend(candidates: list[dict[str, Any]], alpha: float | None) -> list[tuple[str, str, str]]:
    """(status, its row class, what it means) for every status in the table, in ranking order."""
    present = {c["status"] for c in candidates if c["status"]}
    known = [s for s in STATUS_MEANINGS if s in present]
    q_rule = f", and q ≤ {alpha_text(alpha)}" if alpha is not None else ""
    legend = [
        (s, STATUS_CLASSES.get(s, ""), STATUS_MEANINGS[s].format(alpha=alpha_text(alpha), q_rule=q_rule))
        for s in known
    ]
    return legend + [(s, "", "") for s in sorted(present - set(STATUS_MEANINGS))]


def discovery_section(discovery: DiscoveryInput, number_: int, notes: list[str]) -> dict[str, Any]:
    meta = discovery.meta
    local_notes: list[str] = []
    if not discovery.has_error_rates:
        local_notes.append(PREDATES_ERROR_RATES)
    if discovery.candidates is None:
        local_notes.append("candidates.csv not found: no ranked list.")
    if discovery.cochange is None:
        local_notes.append("cochange.csv not found: no co-change matrix.")
    candidates = candidates_view(discovery, notes)
    flagged = [c for c in candidates if c["flagged"]]
    flagged_count = len(flagged)
    if discovery.candidates is None and isinstance(meta.get("flagged"), int):
        flagged_count = int(meta["flagged"])
    _, bold = cochange_significance(discovery)
    return {
        "id": f"discovery-{number_}",
        "title": "Hidden relations",
        "name": discovery.folder.name,
        "path": str(discovery.folder),
        "meta": meta_items(
            meta, ("model", "index", "classifier", "split", "interventions", "margin", "settings")
        ),
        "margin": number(meta.get("margin")) if is_number(meta.get("margin")) else None,
        "cochange_uri": cochange_figure(discovery),
        "cochange_bold": bold,
        "candidates": candidates,
        "flagged": flagged_count,
        "alpha": alpha_text(discovery.alpha) if discovery.alpha is not None else "",
        "error_rates": error_rates_line(discovery, flagged_count),
        "error_rates_detail": error_rates_detail(discovery),
        "fdr_short": fdr_name(discovery.error_rates, short=True) if discovery.error_rates else "",
        "has_error_rates": discovery.has_error_rates,
        "status_legend": status_legend(candidates, discovery.alpha),
        "power": power_view(discovery),
        "clusters": cluster_views(discovery, notes),
        "notes": local_notes,
    }
