"""The report's data set (Table 1) and evaluation (Table 2) sections."""

from __future__ import annotations

from typing import Any

import pandas as pd

from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.stats import paper_rows, table1
from cfaudit.errors import CfauditError
from cfaudit.report import figures
from cfaudit.report.collect import (
    MIN_LABEL_COUNT,
    DatasetInput,
    EvaluationInput,
)
from cfaudit.report.formatting import count, in_order, interval, is_number, meta_items, number

#: Known metrics of Table 2 and whether lower or higher is better (others get no arrow and no "best").
METRIC_DIRECTIONS = {"LPIPS": "lower", "L1": "lower", "CPG": "higher"}


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
    recorded_summary = meta.get("summary")
    summary = recorded_summary if isinstance(recorded_summary, dict) else {}
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


def table2_view(table: pd.DataFrame) -> dict[str, Any]:
    """Table 2 in the paper's layout: a row group per metric, a row per method, a column per intervention."""
    methods, columns, metrics = (in_order(table[c]) for c in ("method", "column", "metric"))
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
        sizes = ", ".join(str(int(v)) if is_number(v) else str(v) for v in in_order(table["size"].dropna()))
        notes.append(f"Images compared at {sizes} px (L1 on the 0–255 scale).")
    if "classifier" in table and table["classifier"].notna().any():
        notes.append(
            "CPG measured with the classifier " + ", ".join(in_order(table["classifier"].dropna())) + "."
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
