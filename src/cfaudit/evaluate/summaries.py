"""Step 3 of ``cfaudit evaluate``: the scores summarised into Table 2 and the axioms, as tables, markdown and a plot.

Per method x column (Table 2) and per method x intervention (the axioms of Monteiro et al., 2023: effectiveness,
minimality, identity), each with a percentile bootstrap interval and the count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit import atomic_io
from cfaudit.evaluate import metrics
from cfaudit.evaluate.reading import KIND_ORDER, column_order

#: "CPG null edit": the same gain between the original and the method's own reconstruction (no intervention),
#: the level a CPG must clear before it says more about the edit than about the reconstruction.
#: "LPIPS null edit" and "L1 null edit": the original vs the reconstruction, the part of a method's LPIPS and L1
#: that its reconstruction makes before any intervention.
TABLE_METRICS: tuple[str, ...] = (
    "LPIPS", "LPIPS null edit", "L1", "L1 null edit", "CPG", "CPG signed", "CPG null edit"
)  # fmt: skip


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


#: An age edit counts towards "right way" and "dose" when it means to move the age by at least this many years
#: (the classifier's regression tolerance): a smaller intended change is within the reading's own error.
MIN_INTENDED_YEARS = 5.0


def age_dose(
    edits: pd.DataFrame, age_range: tuple[float, float] | None = None
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Per age edit: whether the classifier's reading moved towards the target, by what share of the intended
    change, and whether the edit aims outside ``age_range`` (the data's ages; such edits are left out of the other
    two, as their prompts name ages the model never saw).

    The intended change is the target minus the record's age (the reading of the original where the record has
    none), so ``do(age=+20)`` means 20 years for every image; the reading's change is after minus before. A judge
    that reads 17 years from the phantom's own 20-year change but 45 from an edit shows an edit that goes too far
    (dose 2.2), which a hit within 5 years of the target only shows as a miss.
    """
    factual = pd.to_numeric(edits["factual"], errors="coerce")
    before = pd.to_numeric(edits["before"], errors="coerce")
    target = pd.to_numeric(edits["target"], errors="coerce")
    intended = target - factual.where(factual.notna(), before)
    moved = pd.to_numeric(edits["after"], errors="coerce") - before
    beyond = pd.Series(False, index=edits.index)
    if age_range is not None:
        beyond = (target < age_range[0]) | (target > age_range[1])
    meant = (intended.abs() >= MIN_INTENDED_YEARS) & ~beyond
    right_way = (np.sign(moved) == np.sign(intended)).astype(float).where(meant)
    return right_way, (moved / intended).where(meant), beyond.astype(float).where(target.notna())


#: An age intervention whose edits the classifier reads as moving the age by less than DOSE_BAND[0] or more than
#: DOSE_BAND[1] times the intended change gets a note (at least DOSE_MIN_EDITS edits).
DOSE_BAND, DOSE_MIN_EDITS = (0.67, 1.5), 5


def dose_notes(axiom_list: list[dict[str, Any]]) -> list[str]:
    """One line per method x age intervention whose dose lies outside :data:`DOSE_BAND`: how far its edits went
    as the classifier reads them, and the option that sets their strength."""
    lines = []
    for row in axiom_list:
        if not str(row["measure"]).startswith("dose") or row["n"] < DOSE_MIN_EDITS or math.isnan(row["mean"]):
            continue
        if DOSE_BAND[0] <= row["mean"] <= DOSE_BAND[1]:
            continue
        lines.append(
            f"{row['method']}, {row['intervention']}: the classifier reads {row['mean']:.2f}x the intended age "
            f"change ([{row['ci_low']:.2f}, {row['ci_high']:.2f}], {row['n']} edits); the edits' strength is their "
            "guidance: `cfaudit edit --attribute-guidance age=SCALE` (lower goes less far)"
        )
    return lines


def axiom_rows(
    scores: pd.DataFrame, size: int, n_boot: int, seed: int, *, age_range: tuple[float, float] | None = None
) -> list[dict[str, Any]]:
    """Effectiveness, minimality and identity per method x intervention, from the scores (``age_range``: the
    data's ages, for the age edits' measures)."""
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
                if attribute == "age":
                    right_way, dose, beyond = age_dose(edits, age_range)
                    if age_range is not None:
                        add(method, folders, column, intervention, "effectiveness", f"beyond the data{suffix}",
                            beyond, f"share of edits aiming outside the index's ages ({age_range[0]:g}-"
                            f"{age_range[1]:g}), left out of right way and dose")  # fmt: skip
                    add(method, folders, column, intervention, "effectiveness", f"right way{suffix}", right_way,
                        f"share of edits whose reading moved towards the target (edits meant to move it "
                        f"{MIN_INTENDED_YEARS:g} years or more)")  # fmt: skip
                    add(method, folders, column, intervention, "effectiveness", f"dose{suffix}", dose,
                        "the reading's change over the intended change (1: as meant; 2: twice as far)")  # fmt: skip
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


# --- markdown and plot ----------------------------------------------------------------------------------------


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
    dosed = keyed[keyed["measure"].str.startswith("dose")]
    if not dosed.empty:
        lines += [
            "",
            "Age edits: the share whose age reading moved towards the target (right way), and how far it moved: "
            "the reading's change over the intended change (dose; 1: as meant, 2: twice as far); edits that aim "
            "outside the index's ages (beyond the data; needs --index) are left out of both.",
            "",
            "| method | intervention | right way | dose | beyond the data |",
            "|---|---|---|---|---|",
        ]
        for (method, intervention), group in keyed.groupby(["method", "intervention"], sort=False):
            if pick(group, "dose") is not None:
                lines.append(f"| {method} | {intervention} | {_cell(pick(group, 'right way'), 2)} | "
                             f"{_cell(pick(group, 'dose'), 2)} | {_cell(pick(group, 'beyond the data'), 2)} |")  # fmt: skip
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
