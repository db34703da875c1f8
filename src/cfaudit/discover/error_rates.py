"""The run's family of tests: q-values across it, the level one more relation would need, detectable effects.

:func:`apply_error_rates` fills ``q_value`` and ``detectable`` of the co-change table (every head an
intervention does not target) and of the cluster table, from their ``p_value`` columns
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


def relation_p(table: pd.DataFrame) -> np.ndarray:
    """Per row, the p-value of the relation a flag claims: the edit shows the change beyond its controls
    (``p_value``) *and* real images show it beyond the labels (``data_p``).

    An intersection-union test: the larger of the two p-values is a valid p-value for "both hold", whatever
    their dependence, so a flag never rests on the edit alone or on the real images alone. A row without real
    images (``data_p`` NaN) keeps the edit's p-value: it stays in the family but cannot be flagged."""
    edit = table["p_value"].to_numpy(dtype=float)
    if "data_p" not in table:
        return edit
    data = table["data_p"].to_numpy(dtype=float)
    return np.where(np.isnan(data), edit, np.fmax(edit, data))


def apply_error_rates(
    cochange: pd.DataFrame, clusters: pd.DataFrame, alpha: float, method: str = "bh"
) -> tuple[pd.DataFrame, pd.DataFrame, Family]:
    """Copies of both tables with ``q_value`` (over the whole family, of :func:`relation_p`) and ``detectable``
    (at the run's level).

    Heads the intervention targets are not tested (their change is the edit itself): their q and detectable
    stay NaN. ``detectable`` is in each row's own unit: the head's (probability; years for age), beyond the
    null edit; for a cluster, the share of images."""
    cochange, clusters = cochange.copy(), clusters.copy()
    tested = _tested_heads(cochange)
    head_p = relation_p(cochange)[tested] if len(cochange) else np.zeros(0)
    cluster_p = relation_p(clusters) if len(clusters) else np.zeros(0)
    q = q_values(np.concatenate([head_p, cluster_p]), method)
    level = detection_level(q, alpha, method)
    family = Family(alpha, method, int(np.isfinite(q).sum()), int(np.sum(q <= alpha)), level)
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
