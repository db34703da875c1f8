"""The run's family of tests: q-values across it, the level one more relation would need, detectable effects.

:func:`apply_error_rates` fills ``q_value`` and ``detectable`` of the co-change table (every head an
intervention does not target) and of the cluster table, from their ``p_value`` and ``data_p`` columns
(:mod:`cfaudit.discover.significance` says how each is tested and why the family is every test, not only the
candidates). :func:`power_table` summarises, per intervention, the smallest effect the run could have detected:
what a "no flag" there can and cannot rule out.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd

from cfaudit.discover.significance import (
    Family,
    detectable_change,
    detectable_share,
    detection_level,
    q_values,
)

POWER_COLUMNS: tuple[str, ...] = (
    "intervention", "n_images", "requested", "eligible", "level", "detectable_share", "detectable_head",
    "heads_tested", "heads_undetectable",
)  # fmt: skip


def _tested_heads(cochange: pd.DataFrame) -> np.ndarray:
    """Rows of the co-change table that belong to the family: heads the intervention does not target."""
    if cochange.empty:
        return np.zeros(0, dtype=bool)
    return ~cochange["intervened"].astype(bool).to_numpy()


def relation_q(edit_q: np.ndarray, data_p: np.ndarray, alpha: float, method: str = "bh") -> np.ndarray:
    """The q-value of the relation a flag claims: the edit shows the change beyond its controls *and* real
    images show it beyond the labels. Screen, then confirm on held-out data.

    1. Screen: the edits' q-values over the run's whole family (``edit_q``) select the changes the editor
       really makes (``edit_q <= alpha``).
    2. Confirm: the real images' p-values (``data_p``) of the selected changes only are adjusted among
       themselves. The real images are a held-out split that neither chose the changes nor trained the model,
       so their p-values stay valid after the selection (Wasserman & Roeder's screen and clean), and the family
       of the confirmation is the few changes the editor makes, not every test of the run.

    The relation's q is the larger of the two stages' (both must hold); a row not selected, or without real
    images (``data_p`` NaN), keeps its edit's q and cannot be flagged on real images it does not have."""
    edit_q, data_p = np.asarray(edit_q, dtype=float), np.asarray(data_p, dtype=float)
    selected = (edit_q <= alpha) & np.isfinite(data_p)
    data_q = np.full(edit_q.shape, np.nan)
    if selected.any():
        data_q[selected] = q_values(data_p[selected], method)
    return np.where(selected, np.fmax(edit_q, data_q), edit_q)


def apply_error_rates(
    cochange: pd.DataFrame, clusters: pd.DataFrame, alpha: float, method: str = "bh"
) -> tuple[pd.DataFrame, pd.DataFrame, Family]:
    """Copies of both tables with ``q_value`` (of the relation, :func:`relation_q`: the edits' p-values over the
    whole family, then the real images' among the changes that passed) and ``detectable`` (at the run's
    level).

    Heads the intervention targets are not tested (their change is the edit itself): their q and detectable
    stay NaN. ``detectable`` is in each row's own unit: the head's (probability; years for age), beyond the
    null edit; for a cluster, the share of images."""
    cochange, clusters = cochange.copy(), clusters.copy()
    tested = _tested_heads(cochange)

    def column(table: pd.DataFrame, name: str) -> np.ndarray:
        return table[name].to_numpy(dtype=float) if name in table else np.full(len(table), np.nan)

    head_p = column(cochange, "p_value")[tested] if len(cochange) else np.zeros(0)
    cluster_p = column(clusters, "p_value") if len(clusters) else np.zeros(0)
    q = q_values(np.concatenate([head_p, cluster_p]), method)
    level = detection_level(q, alpha, method)
    family = Family(alpha, method, int(np.isfinite(q).sum()), int(np.sum(q <= alpha)), level)
    data_p = np.concatenate(
        [column(cochange, "data_p")[tested] if len(cochange) else np.zeros(0), column(clusters, "data_p")]
    )
    q = relation_q(q, data_p, alpha, method)
    confirmed = int(np.sum((q <= alpha) & np.isfinite(data_p)))
    family = Family(alpha, method, family.tests, family.rejections, level, confirmed)
    if len(cochange):
        head_q = np.full(len(cochange), np.nan)
        head_q[tested] = q[: head_p.size]
        cochange["q_value"] = head_q
        detectable = detectable_change(
            cochange["spread"].to_numpy(dtype=float),
            cochange["n_images"].to_numpy(dtype=float),
            level,
            shift=np.nan_to_num(np.abs(cochange["offtarget_control"].to_numpy(dtype=float))),
        )
        cochange["detectable"] = np.where(tested, detectable, np.nan)
    if len(clusters):
        clusters["q_value"] = q[head_p.size :]
        clusters["detectable"] = [
            detectable_share(int(n), level, 0.0 if math.isnan(off) else off)
            for n, off in zip(clusters["n_images"], clusters["offtarget_control"].astype(float), strict=True)
        ]
    return cochange, clusters, family


def power_table(
    cochange: pd.DataFrame,
    family: Family,
    n_images: Mapping[str, int],
    regional: Collection[str],
    requested: Mapping[str, int] | None = None,
    eligible: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Per intervention: the smallest effects the run could have detected with 80% power at its n.

    ``detectable_share``: a change at one place in this share of the images, where neither the null edits nor
    the other interventions change anything (NaN: the intervention's expected region is the whole image, so no
    cluster is looked for); ``detectable_head``: the median over the heads it does not target of the smallest
    detectable head change, in margin units (probability; 50 years = 1); ``heads_undetectable``: how many of
    those heads no change could have reached the level at this n."""
    rows = []
    for name, n in n_images.items():
        heads = (
            cochange[(cochange["intervention"] == name) & _tested_heads(cochange)] if len(cochange) else None
        )
        if heads is not None and not heads.empty:
            scaled = heads["detectable"].to_numpy(dtype=float) / heads["scale"].to_numpy(dtype=float)
            known = scaled[
                ~np.isnan(scaled)
            ]  # infinite (undetectable at this n) counts; NaN (n < 2) does not
            head = float(np.median(known)) if known.size else math.nan
            tested, undetectable = len(scaled), int(np.isinf(scaled).sum())
        else:
            head, tested, undetectable = math.nan, 0, 0
        rows.append(
            {
                "intervention": name,
                "n_images": int(n),
                "requested": (requested or {}).get(name, math.nan),
                "eligible": (eligible or {}).get(name, math.nan),
                "level": family.level,
                "detectable_share": detectable_share(int(n), family.level)
                if name in regional and n
                else math.nan,
                "detectable_head": head,
                "heads_tested": tested,
                "heads_undetectable": undetectable,
            }
        )
    return pd.DataFrame(rows, columns=list(POWER_COLUMNS))
