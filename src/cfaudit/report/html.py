"""Rendering: turn the collected inputs into the sections of the page and fill the jinja2 template.

Each ``*_section`` function takes one input (a data set, an evaluation, a discovery, an edit job) and returns a
plain dict for the template: formatted table cells and figure data URIs, nothing the template has to compute.
:func:`render_report` puts them in reading order (summary, data, evaluation, discovery, expert review, edits) and renders
``templates/report.html.j2``, which is loaded through :mod:`importlib.resources` so that it is found both in a
source checkout and in an installed wheel.
"""

from __future__ import annotations

import html
import importlib.resources
import json
import math
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup
from PIL import Image

from cfaudit import __version__
from cfaudit.data.difference import load_difference
from cfaudit.data.edit_folder import EDITS_CSV
from cfaudit.data.images import load_image, resize_and_crop
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.stats import paper_rows, table1
from cfaudit.errors import CfauditError
from cfaudit.report import figures
from cfaudit.report.collect import (
    DISCOVERY_FILE,
    FDR_METHODS,
    MIN_LABEL_COUNT,
    DatasetInput,
    DiscoveryInput,
    EditJobInput,
    EvaluationInput,
    ReportInputs,
    ReviewInput,
)
from cfaudit.review.agreement import CONFIRMED_MEANING, QUESTIONS, Agreement, summarize
from cfaudit.review.queue import candidates_changed

TEMPLATE = "report.html.j2"
#: Known metrics of Table 2 and whether lower or higher is better (others get no arrow and no "best").
METRIC_DIRECTIONS = {"LPIPS": "lower", "L1": "lower", "CPG": "higher"}
#: Example grids are shown at this fraction of their pixel width (six images fit beside the mean map at 1400 px;
#: screens with more than one pixel per CSS pixel get the extra resolution).
GRID_DISPLAY_SCALE = 0.72
#: How many flagged candidates the summary at the top lists.
SUMMARY_FINDINGS = 5

Progress = Callable[[str], None]


# --- small formatting helpers ------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and math.isfinite(float(value))


def number(value: Any, signed: bool = False) -> str:
    """A figure for a table: 3 decimals below 10, fewer above; ``–`` for missing values."""
    if not is_number(value):
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    value = float(value)
    digits = 3 if abs(value) < 10 else 2 if abs(value) < 100 else 1
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("-", "−")


def interval(mean: Any, low: Any, high: Any, signed: bool = False) -> str:
    text = number(mean, signed)
    if is_number(low) and is_number(high):
        text += f" [{number(low, signed)}, {number(high, signed)}]"
    return text


def two_digits(value: Any) -> str:
    """A p- or q-value to 2 significant digits (``0.0039``; ``1.2×10⁻⁵`` below 0.001); ``–`` when missing."""
    if not is_number(value):
        return "–"
    value = float(value)
    if value == 0 or value >= 1e-3:
        return f"{value:.2g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    superscript = str(int(exponent)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{mantissa}×10{superscript}"


def count(value: Any) -> str:
    return f"{int(value)}" if is_number(value) else "–"


def percent(value: Any) -> str:
    return f"{100 * float(value):.0f}%" if is_number(value) else "–"


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "item"


def intervention_slugs(intervention: str) -> list[str]:
    """File-name slugs an intervention may have been saved under (the editor's, then a plain one)."""
    slugs = []
    try:
        from cfaudit.data.interventions import Intervention

        slugs.append(Intervention.parse(intervention).slug)
    except CfauditError:
        pass
    body = re.fullmatch(r"\s*do\s*\((.*)\)\s*", intervention)
    plain = (body.group(1) if body else intervention).lower()
    slugs += [
        re.sub(r"[^a-z0-9_\-]+", "-", plain.replace("=", "-").replace(" ", "-")).strip("-"),
        slugify(plain),
    ]
    return list(dict.fromkeys(slugs))


def meta_items(meta: dict[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
    """(key, short text) for the given keys of a provenance dict that are present (nested dicts as k=v lists)."""
    items = []
    for key in keys:
        value = meta.get(key)
        if value is None or value == "" or value == {} or value == []:
            continue
        if isinstance(value, dict):
            text = ", ".join(f"{k}={_short(v)}" for k, v in value.items() if not isinstance(v, dict | list))
        elif isinstance(value, list):
            text = ", ".join(_short(v) for v in value)
        else:
            text = _short(value)
        items.append((key.replace("_", " "), text))
    return items


def _short(value: Any, limit: int = 160) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the data set ------------------------------------------------------------------------------------------


def dataset_section(dataset: DatasetInput, number_: int) -> dict[str, Any]:
    index = dataset.index
    meta = index.meta
    # The label policy the index was made under (recorded in index.json), else the default one.
    try:
        recorded = meta.get("label_policy")
        policy = LabelPolicy.from_dict(recorded) if isinstance(recorded, dict) else DEFAULT_POLICY
    except CfauditError:
        policy = DEFAULT_POLICY
    header, rows = paper_rows(table1(index, policy))
    associations, left_out = dataset.label_associations(policy)
    figure = figures.association_heatmap(associations) if len(associations) >= 2 else None
    summary = meta.get("summary") if isinstance(meta.get("summary"), dict) else {}
    return {
        "id": f"data-{number_}",
        "title": "Data set",
        "name": dataset.index_csv.parent.name or str(dataset.index_csv),
        "path": str(dataset.index_csv),
        "note": dataset.note,
        "images": len(index),
        "subjects": int(index.table["subject_id"].nunique()),
        "meta": meta_items(meta, ("source", "root", "split")) + meta_items(summary, ("rows_skipped",)),
        "policy": f"uncertain → {policy.uncertain}, blank → {policy.blank}",
        "table1": {"header": header, "rows": rows},
        "association_uri": figure,
        "association_labels": len(associations),
        "association_left_out": left_out,
        "min_label_count": MIN_LABEL_COUNT,
    }


# --- the evaluation (Table 2) ------------------------------------------------------------------------------


def _in_order(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(values.astype(str)))


def table2_view(table: pd.DataFrame) -> dict[str, Any]:
    """Table 2 in the paper's layout: a row group per metric, a row per method, a column per intervention."""
    methods, columns, metrics = (_in_order(table[c]) for c in ("method", "column", "metric"))
    cells = {(r["metric"], r["method"], r["column"]): r for _, r in table.iterrows()}
    n_per_column: dict[str, str] = {}
    for column in columns:
        values = table.loc[table["column"] == column, "n"] if "n" in table else pd.Series(dtype=float)
        distinct = {int(v) for v in values if is_number(v)}
        n_per_column[column] = f"n = {distinct.pop()}" if len(distinct) == 1 else ""
    groups = []
    for metric in metrics:
        direction = METRIC_DIRECTIONS.get(metric)
        best: dict[str, float] = {}
        if direction and len(methods) > 1:
            for column in columns:
                means = [cells[(metric, m, column)]["mean"] for m in methods if (metric, m, column) in cells]
                means = [float(v) for v in means if is_number(v)]
                if means:
                    best[column] = min(means) if direction == "lower" else max(means)
        rows = []
        for method in methods:
            row_cells = []
            for column in columns:
                record = cells.get((metric, method, column))
                if record is None:
                    row_cells.append({"text": "–", "n": "", "best": False})
                    continue
                signed = "signed" in metric.lower()
                text = interval(record["mean"], record.get("ci_low"), record.get("ci_high"), signed)
                n_text = (
                    "" if n_per_column[column] else (f"n = {count(record['n'])}" if "n" in record else "")
                )
                is_best = (
                    column in best and is_number(record["mean"]) and float(record["mean"]) == best[column]
                )
                row_cells.append({"text": text, "n": n_text, "best": is_best})
            rows.append({"method": method, "cells": row_cells})
        arrow = {"lower": "↓", "higher": "↑"}.get(direction or "", "")
        groups.append({"metric": metric, "arrow": arrow, "rows": rows})
    notes = []
    if "size" in table and table["size"].notna().any():
        sizes = ", ".join(str(int(v)) if is_number(v) else str(v) for v in _in_order(table["size"].dropna()))
        notes.append(f"Images compared at {sizes} px (L1 on the 0–255 scale).")
    if "classifier" in table and table["classifier"].notna().any():
        notes.append(
            "CPG measured with the classifier " + ", ".join(_in_order(table["classifier"].dropna())) + "."
        )
    return {"columns": columns, "n": [n_per_column[c] for c in columns], "groups": groups, "notes": notes}


def generic_table(table: pd.DataFrame) -> dict[str, Any]:
    """Any table, every column as it is (numbers formatted), for inputs whose columns are not fixed."""
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    whole = [
        is_numeric and bool((table[c].dropna().astype(float) % 1 == 0).all())
        for c, is_numeric in zip(table.columns, numeric, strict=True)
    ]
    rows = []
    for record in table.itertuples(index=False):
        cells = []
        for value, is_whole in zip(record, whole, strict=True):
            if is_number(value):
                cells.append(count(value) if is_whole else number(value))
            else:
                cells.append("" if pd.isna(value) else str(value))
        rows.append(cells)
    return {"header": [str(c) for c in table.columns], "rows": rows, "numeric": numeric}


def evaluation_section(evaluation: EvaluationInput, number_: int) -> dict[str, Any]:
    return {
        "id": f"evaluation-{number_}",
        "title": "Counterfactual quality",
        "name": evaluation.folder.name,
        "path": str(evaluation.folder),
        "table2": table2_view(evaluation.table2),
        "axioms": generic_table(evaluation.axioms) if evaluation.axioms is not None else None,
        "markdown": evaluation.markdown,
        "figure_uri": figures.image_file_uri(evaluation.figure, 1100) if evaluation.figure else None,
        "meta": meta_items(
            evaluation.meta, ("model", "models", "index", "classifier", "split", "size", "bootstrap")
        ),
    }


# --- discovery ---------------------------------------------------------------------------------------------


def _pivot(table: pd.DataFrame, value: str) -> pd.DataFrame:
    rows, columns = _in_order(table["intervention"]), _in_order(table["head"])
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
    for intervention in _in_order(clusters["intervention"]):
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
    settings = discovery.meta.get("settings") if isinstance(discovery.meta.get("settings"), dict) else {}
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


# --- edits -------------------------------------------------------------------------------------------------


def _load_float_map(path: Path, edits_csv: Path, line: int) -> np.ndarray:
    if not path.is_file():
        raise CfauditError(f"{edits_csv}, line {line}: difference map {path} is missing; re-run the edit job")
    try:
        array = load_difference(path)
    except (ValueError, OSError) as error:
        raise CfauditError(
            f"{path}: not a readable .npy difference map ({error}); re-run the edit job"
        ) from None
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise CfauditError(f"{path}: difference map has shape {array.shape}; expected a 2-D map")
    return array


def _resize_float(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if array.shape == shape:
        return array
    resized = Image.fromarray(array.astype(np.float32), mode="F").resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def load_example(folder: Path, row: Mapping[str, Any], line: int, notes: list[str]) -> figures.Example:
    """One edit of the job in ``folder`` (``row`` of its ``edits.csv``, at ``line``) as original, counterfactual and
    signed difference at the counterfactual's size. The original is brought to that size as the model saw it; where
    it is gone, the reconstruction stands in (with a note). The review page shows edits through this too."""
    edits_csv = folder / EDITS_CSV
    counterfactual_path = folder / row["counterfactual"]
    if not counterfactual_path.is_file():
        raise CfauditError(
            f"{edits_csv}, line {line}: counterfactual {counterfactual_path} is missing; re-run the edit job"
        )
    counterfactual = load_image(counterfactual_path)
    difference = _resize_float(
        _load_float_map(folder / row["difference"], edits_csv, line), counterfactual.shape
    )
    original_path = Path(str(row.get("original", ""))) if isinstance(row.get("original"), str) else None
    label = "original"
    if original_path is not None and original_path.is_file():
        original = resize_and_crop(load_image(original_path), counterfactual.shape[0])
        original = _resize_float(original, counterfactual.shape)
    else:
        reconstruction = folder / str(row.get("reconstruction", ""))
        if isinstance(row.get("reconstruction"), str) and reconstruction.is_file():
            original, label = load_image(reconstruction), "reconstruction"
            original = _resize_float(original, counterfactual.shape)
        else:
            original, label = np.full(counterfactual.shape, 0.5, dtype=np.float32), "missing"
        notes.append(f"{edits_csv}: original image {original_path} not found; showing the {label} instead")
    return figures.Example(str(row["image_id"]), original, counterfactual, difference, label)


def mean_difference(job: EditJobInput, rows: pd.DataFrame, shape: tuple[int, int]) -> np.ndarray:
    """The mean signed difference map over ``rows`` of a job (every row, not only the examples shown)."""
    total = np.zeros(shape, dtype=np.float64)
    for i, row in rows.iterrows():
        path = job.folder / row["difference"]
        total += _resize_float(_load_float_map(path, job.folder / EDITS_CSV, int(i) + 2), shape)
    return (total / max(1, len(rows))).astype(np.float32)


#: A discovery's edit job shows the examples of its flagged interventions and of this many top-ranked ones.
DISCOVERY_EXAMPLE_INTERVENTIONS = 6


def discovery_interventions_to_show(job: EditJobInput) -> set[str] | None:
    """For the edit job of a discovery: the interventions of its flagged and top-ranked candidates (None: all)."""
    if job.part_of is None or not (job.part_of / "candidates.csv").is_file():
        return None
    try:
        candidates = pd.read_csv(job.part_of / "candidates.csv")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError):
        return None
    if not {"intervention", "flagged"} <= set(candidates.columns):
        return None
    if "rank" in candidates.columns:
        candidates = candidates.sort_values("rank", kind="stable")
    flagged = candidates[candidates["flagged"].astype(str).str.lower() == "true"]["intervention"]
    top = candidates["intervention"].head(DISCOVERY_EXAMPLE_INTERVENTIONS)
    return set(flagged.astype(str)) | set(top.astype(str))


def edit_groups(
    job: EditJobInput, prefix: str, max_examples: int, notes: list[str], progress: Progress | None
) -> list[dict[str, Any]]:
    """One entry per (method, intervention) of a job: the example grid and the mean difference map."""
    edits = job.edits.reset_index(drop=True)
    keep = discovery_interventions_to_show(job)
    if keep is not None:
        left_out = sorted(set(edits["intervention"].astype(str)) - keep)
        edits = edits[edits["intervention"].astype(str).isin(keep)]  # keeps the CSV line numbers
        if left_out:
            notes.append(
                f"{job.folder}: examples shown for the discovery's flagged and top-ranked interventions only; "
                f"{len(left_out)} more are in the folder ({', '.join(left_out[:4])}{', ...' if len(left_out) > 4 else ''})"
            )
    groups = []
    for (method, intervention), rows in edits.groupby(["method", "intervention"], sort=False):
        if progress is not None:
            progress(f"edits: {intervention} ({method})")
        first = rows.drop_duplicates("image_id").head(max_examples)
        examples = [load_example(job.folder, row, int(i) + 2, notes) for i, row in first.iterrows()]
        mean = mean_difference(job, rows, examples[0].counterfactual.shape)
        grid_uri, scale, grid_width = figures.edit_grid(examples)
        prompts = rows["target_prompt"].dropna().astype(str).unique() if "target_prompt" in rows else []
        groups.append(
            {
                "id": f"{prefix}-{slugify(str(method))}-{slugify(str(intervention))}",
                "intervention": str(intervention),
                "method": str(method),
                "images": int(rows["image_id"].nunique()),
                "shown": len(examples),
                "target_prompt": prompts[0] if len(prompts) else "",
                "prompt_varies": len(prompts) > 1,
                "grid_uri": grid_uri,
                # Shown at a fixed fraction of its pixels, so grids of fewer images are not blown up.
                "grid_width": round(grid_width * GRID_DISPLAY_SCALE),
                "scale": number(scale),
                "mean_uri": figures.mean_map(mean, len(rows)),
                "mean_edit_l1": number(rows["edit_l1"].mean()) if "edit_l1" in rows else "–",
            }
        )
    return groups


def edit_job_section(
    job: EditJobInput, number_: int, max_examples: int, notes: list[str], progress: Progress | None
) -> dict[str, Any]:
    settings = job.job.get("settings", {}) if isinstance(job.job.get("settings"), dict) else {}
    details = meta_items(job.job, ("model", "model_fingerprint"))
    inversion = settings.get("inversion", {}) if isinstance(settings.get("inversion"), dict) else {}
    details += meta_items(inversion, ("method", "steps", "guidance_scale"))
    details += meta_items(settings, ("prompt_mode", "seed"))
    label = job.folder.name
    if job.part_of is not None:
        label = f"{job.part_of.name}/{job.folder.name}"
    return {
        "id": f"edits-{number_}",
        "title": "Counterfactual examples",
        "name": label,
        "path": str(job.folder),
        "images": int(job.edits["image_id"].nunique()),
        "edits": len(job.edits),
        "meta": details,
        "groups": edit_groups(job, f"edits-{number_}", max_examples, notes, progress),
    }


# --- expert review ---------------------------------------------------------------------------------------------


def kappa_parts(result: Agreement) -> tuple[str, str]:
    """(``+0.520``, ``Cohen's kappa, 12 items``), or a dash and why it was not computed."""
    if result.kappa is None:
        return "–", result.note
    return number(result.kappa, signed=True), f"{result.statistic}, {result.items} items"


def kappa_text(result: Agreement) -> str:
    """``+0.520 (Cohen's kappa, 12 items)``, or a dash with why it was not computed."""
    return "{} ({})".format(*kappa_parts(result))


def review_section(review: ReviewInput, number_: int, notes: list[str]) -> dict[str, Any]:
    """Per candidate the reviews and the share that confirmed it; agreement per question; the comments."""
    queue = review.queue
    summary = summarize(queue, review.ratings, review.changes.keys)
    local_notes = []
    if review.changes:
        changed = (
            f"the edit folder {queue.edit_folder} changed since this queue was made: {len(review.changes.changed)} "
            f"item(s) differ and {len(review.changes.missing)} are gone; their ratings are left out. Re-make the "
            "queue with `cfaudit review queue` to review them again."
        )
        local_notes.append(changed[0].upper() + changed[1:])
        notes.append(
            f"{queue.path}: {changed}"
        )  # also among the page's notes at the top: the review is partial
    if candidates_changed(queue):
        local_notes.append(
            f"The discovery's {queue.candidates_file[0] if queue.candidates_file else 'candidates'} changed since this "
            "queue was made (was the discovery re-run?): the candidates below are the ones the queue recorded; "
            "re-make the queue to review the new ones."
        )
    if summary.stale:
        local_notes.append(
            f"{summary.stale} rating(s) are of an earlier version of their edit (or of a changed one) and are "
            "left out."
        )
    if summary.outside:
        local_notes.append(
            f"{summary.outside} rating(s) in {queue.ratings_path.name} are of edits not in this queue."
        )
    candidates = []
    for reviewed in summary.candidates:
        candidate = reviewed.candidate
        answers = {
            q: percent(n / reviewed.reviews) if reviewed.reviews else "–" for q, n in reviewed.answers.items()
        }
        candidates.append(
            {
                "rank": count(candidate.rank) if candidate.rank is not None else "",
                "intervention": candidate.intervention,
                "target": candidate.target,
                "kind": candidate.kind,
                "flagged": candidate.flagged,
                "status": candidate.status,
                "n_items": reviewed.items,
                "rated_items": reviewed.rated_items,
                "reviews": reviewed.reviews,
                "reviewers": len(reviewed.reviewers),
                "confirmed": f"{reviewed.confirmed} of {reviewed.reviews}" if reviewed.reviews else "–",
                "share": percent(reviewed.share_confirmed),
                "answers": answers,
                "kappa": kappa_parts(reviewed.agreement),
            }
        )
    kinds = list(dict.fromkeys(c.kind for c in queue.candidates))
    return {
        "id": f"review-{number_}",
        "title": "Expert review",
        "name": f"{queue.folder.parent.name}/{queue.folder.name}",
        "path": str(queue.path),
        "source": f"{'discovery' if queue.source_kind == 'discovery' else 'edit folder'} {queue.source}",
        "n_items": summary.items,
        "ratings": summary.ratings,
        "reviewers": list(summary.reviewers.items()),
        "candidates": candidates,
        "questions": ["plausible", "intended change", "other change"],  # short headers of QUESTIONS
        "agreement": [(QUESTIONS[q], kappa_text(a)) for q, a in summary.agreement.items()],
        "definitions": [(kind, CONFIRMED_MEANING.get(kind, CONFIRMED_MEANING["head"])) for kind in kinds],
        "comments": [
            {
                "reviewer": r.reviewer,
                "image_id": r.image_id,
                "intervention": r.intervention,
                "candidates": ", ".join(titles),
                "comment": r.comment,
            }
            for r, titles in summary.comments
        ],
        "notes": local_notes,
    }


# --- the page ----------------------------------------------------------------------------------------------


def key_findings(discoveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    findings = []
    for section in discoveries:
        for candidate in section["candidates"]:
            if candidate["flagged"]:
                findings.append({**candidate, "section": section["id"]})
    return findings[:SUMMARY_FINDINGS]


def model_name(value: str) -> str:
    """A model as the report names it: one shipped inside the installed package as ``cfaudit/<path>`` (as
    ``cfaudit.scm.shipped.DEMO_SCM`` does), so that the page names no folder of the machine it was made on."""
    package = Path(__file__).resolve().parents[1]
    try:
        inside = Path(value).resolve().relative_to(package)
    except (ValueError, OSError):
        return value
    return f"cfaudit/{inside.as_posix()}"


def provenance(inputs: ReportInputs) -> dict[str, Any]:
    """What the report was made from: folders, what each held, the models and data named in the inputs."""
    models: list[str] = []
    data: list[str] = [str(d.index_csv) for d in inputs.datasets]
    for job in inputs.edit_jobs:
        if job.job.get("model"):
            models.append(str(job.job["model"]))
    for discovery in inputs.discoveries:
        if discovery.meta.get("model"):
            models.append(str(discovery.meta["model"]))
        if isinstance(discovery.meta.get("index"), str):
            data.append(discovery.meta["index"])
    for evaluation in inputs.evaluations:
        for key in ("model", "models"):
            value = evaluation.meta.get(key)
            if isinstance(value, str):
                models.append(value)
            elif isinstance(value, list | dict):
                models += [str(v) for v in value]
    return {
        "sources": [str(s) for s in inputs.sources],
        "datasets": [str(d.index_csv) for d in inputs.datasets],
        "evaluations": [str(e.folder) for e in inputs.evaluations],
        "edit_jobs": [str(j.folder) for j in inputs.edit_jobs],
        "discoveries": [str(d.folder) for d in inputs.discoveries],
        "reviews": [str(r.queue.path) for r in inputs.reviews],
        "models": list(dict.fromkeys(model_name(m) for m in models)),
        "data": list(dict.fromkeys(data)),
        "cfaudit_version": __version__,
    }


def report_command(sources: Sequence[Path], out: Path, title: str | None, max_examples: int) -> str:
    """The command line that makes this report (written in its footer)."""
    words = ["cfaudit", "report"]
    for source in sources:
        words += ["--from", str(source)]
    words += ["--out", str(out)]
    if title:
        words += ["--title", title]
    words += ["--examples", str(max_examples)]
    return shlex.join(words)


def load_template() -> jinja2.Template:
    text = (
        importlib.resources.files("cfaudit.report")
        .joinpath("templates")
        .joinpath(TEMPLATE)
        .read_text(encoding="utf-8")
    )
    environment = jinja2.Environment(
        autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined
    )
    return environment.from_string(text)


def render_report(
    inputs: ReportInputs,
    *,
    title: str | None = None,
    max_examples: int = 6,
    command: str = "",
    generated: datetime | None = None,
    progress: Progress | None = None,
) -> str:
    """The whole page as one HTML string (every picture embedded)."""
    notes = list(inputs.notes)
    generated = generated or datetime.now().astimezone()

    def step(message: str) -> None:
        if progress is not None:
            progress(message)

    step("data set")
    datasets = [dataset_section(d, i + 1) for i, d in enumerate(inputs.datasets)]
    step("evaluation")
    evaluations = [evaluation_section(e, i + 1) for i, e in enumerate(inputs.evaluations)]
    step("discovery")
    discoveries = [discovery_section(d, i + 1, notes) for i, d in enumerate(inputs.discoveries)]
    step("expert review")
    reviews = [review_section(r, i + 1, notes) for i, r in enumerate(inputs.reviews)]
    edit_jobs = [
        edit_job_section(j, i + 1, max_examples, notes, progress) for i, j in enumerate(inputs.edit_jobs)
    ]
    absent = []
    if not datasets:
        absent.append(("Data set", "no index.csv found; add the folder with the index to --from"))
    if not evaluations:
        absent.append(
            ("Counterfactual quality", "no table2.csv found; run `cfaudit evaluate` and add its folder")
        )
    if not discoveries:
        absent.append(
            ("Hidden relations", "no discovery.json found; run `cfaudit discover` and add its folder")
        )
    if not reviews:
        absent.append(
            (
                "Expert review",
                "no review queue found; make one with `cfaudit review queue` and rate it in the browser",
            )
        )
    if not edit_jobs:
        absent.append(
            ("Counterfactual examples", "no edits.csv found; run `cfaudit edit` and add its folder")
        )
    toc = [("summary", "Summary", [])]
    for group_title, sections in (
        ("Data set", datasets), ("Counterfactual quality", evaluations), ("Hidden relations", discoveries),
        ("Expert review", reviews), ("Counterfactual examples", edit_jobs),
    ):  # fmt: skip
        if len(sections) == 1:
            toc.append((sections[0]["id"], group_title, []))
        elif sections:
            toc.append((sections[0]["id"], group_title, [(s["id"], s["name"]) for s in sections]))
    record = provenance(inputs)
    record.update({"command": command, "generated": generated.isoformat(timespec="seconds"), "title": title})
    step("page")
    page = load_template().render(
        title=title or "Counterfactual audit report",
        generated=generated.strftime("%Y-%m-%d %H:%M %Z").strip(),
        version=__version__,
        command=command,
        provenance=record,
        provenance_text=json.dumps(record, indent=1, default=str),
        # In a <script> block nothing is escaped by HTML rules: write "<" as its JSON escape so that no value can
        # end the block.
        provenance_json=Markup(json.dumps(record, default=str).replace("<", "\\u003c")),
        datasets=datasets,
        evaluations=evaluations,
        discoveries=discoveries,
        reviews=reviews,
        edit_jobs=edit_jobs,
        findings=key_findings(discoveries),
        absent=absent,
        notes=list(dict.fromkeys(notes)),
        toc=toc,
        max_examples=max_examples,
    )
    return page
