"""Planted relations at the level of the population: re-drawing metadata findings, and the value of a cause.

Device and anatomy effects act per image (see :mod:`cfaudit.data.phantom.plan`); effects on a metadata
finding act here, on the whole sampled table, because "P(finding = 1) within each stratum of the cause" is a
population quantity. See :mod:`cfaudit.data.phantom.config` for the forms and what they mean.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from cfaudit.data.phantom.config import Relation

AGE_STRATUM_YEARS = 5


def cause_value(relation: Relation, record: dict[str, Any] | pd.Series) -> float:
    """Decades from ``reference_age`` for an age cause; 1.0 / 0.0 (present / absent) for a binary cause."""
    if relation.cause == "age":
        return (float(record["age"]) - relation.reference_age) / 10.0
    if relation.cause in ("sex", "race", "view"):
        column = "ViewPosition" if relation.cause == "view" else relation.cause
        return 1.0 if str(record[column]) == relation.value else 0.0
    return 1.0 if record[relation.cause] == 1.0 else 0.0


def _cause_values(relation: Relation, table: pd.DataFrame) -> np.ndarray:
    if relation.cause == "age":
        return (table["age"].to_numpy(float) - relation.reference_age) / 10.0
    if relation.cause in ("sex", "race", "view"):
        column = "ViewPosition" if relation.cause == "view" else relation.cause
        return (table[column].astype(str).to_numpy() == relation.value).astype(float)
    return (table[relation.cause].to_numpy(float) == 1.0).astype(float)


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def apply_finding_relations(
    table: pd.DataFrame, relations: tuple[Relation, ...], rng: np.random.Generator
) -> pd.DataFrame:
    """Re-draw each related finding so that its rate within each stratum of the cause is the stated one.

    Within a stratum whose current rate of state 1 is ``q`` and whose target for a record is ``p``: a record
    with state 1 keeps it with probability ``min(1, p / q)`` (else it becomes blank), and a record without it
    gets state 1 with probability ``max(0, (p - q) / (1 - q))``. The expected rate then is ``p`` record by
    record, the other findings stay as sampled, and ``No Finding`` is cleared on records that gain a finding.
    """
    table = table.copy()
    for relation in relations:
        if relation.effect_kind != "finding":
            continue
        effect = relation.effect
        values = _cause_values(relation, table)
        if relation.cause == "age":
            strata = (table["age"].to_numpy(float) // AGE_STRATUM_YEARS).astype(int)
        else:
            strata = values.astype(int)
        positive = table[effect].to_numpy(float) == 1.0
        current = np.zeros(len(table))
        for stratum in np.unique(strata):
            members = strata == stratum
            current[members] = positive[members].mean()
        if relation.cause == "age":
            q = np.clip(current, 1e-6, 1 - 1e-6)
            assert relation.log_odds_per_decade is not None  # the config loader requires it for an age cause
            target = _logistic(np.log(q / (1 - q)) + float(relation.log_odds_per_decade) * values)
        else:
            # the config loader requires both for a binary cause
            assert relation.p_if_present is not None and relation.p_if_absent is not None
            target = np.where(values == 1.0, float(relation.p_if_present), float(relation.p_if_absent))
        keep = np.where(current > 0, np.minimum(1.0, target / np.maximum(current, 1e-12)), 1.0)
        gain = np.where(
            current < 1, np.maximum(0.0, (target - current) / np.maximum(1 - current, 1e-12)), 0.0
        )
        u = rng.random(len(table))
        lose = positive & (u >= keep)
        win = ~positive & (u < gain)
        states = table[effect].to_numpy(float).copy()
        states[lose] = math.nan
        states[win] = 1.0
        table[effect] = states
        if win.any():
            no_finding = table["No Finding"].to_numpy(float).copy()
            no_finding[win] = math.nan
            table["No Finding"] = no_finding
    return table
