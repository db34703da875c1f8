"""Do real images show what an edit's change cluster shows? The held-out real-image test of a cluster.

:func:`data_support` regresses a summary of real images' local detail in a cluster's footprint on every label
(:func:`label_design`) and tests the contrast that the intervention makes (:func:`_footprint_p`,
:func:`_contrast_p`), so a change the labels already explain does not count as support.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cfaudit.discover.significance import directed_p
from cfaudit.errors import CfauditError

if TYPE_CHECKING:  # clusters.py calls data_support: a run-time import would be a cycle
    from cfaudit.discover.clusters import Cluster


def data_support(
    cluster: Cluster,
    intervention: Any,
    data: tuple[Any, ...],
    edited: Sequence[Mapping[str, Any]],
    grid: int,
    policy: Any = None,
) -> tuple[float, float]:
    """How real images differ in the cluster's footprint with the intervened attribute, beyond the labels, and
    the one-sided p-value that they differ in the cluster's direction.

    ``data`` is ``(table, details)`` or ``(table, details, grids)``: the records of real images of a held-out
    split, their :func:`~cfaudit.discover.clusters.local_detail` at the grid and, optionally, the grid images themselves. The footprint is
    the union of the members' pixels (dilated by one grid cell). Each real image's local detail there, averaged
    with each cell weighted by how many of the cluster's members changed it (the cluster's own shape), is
    standardised over the split and regressed (least squares) on the intervened attributes *and every other
    label* (findings, sex, race, age in decades): the intervened attributes' coefficients, applied to the change
    the intervention makes (averaged over the edited records), say how much brighter (+) or darker (-) real
    images are there in standard deviations when only that attribute differs. Adjusting for the other labels
    keeps a change that the labels already explain (a device that comes with the "support devices" label,
    which itself comes with cardiomegaly) from counting as support.

    The p-value tests that contrast of the coefficients with its least-squares standard error (residual
    variance, pseudo-inverse of the design's Gram matrix), for the footprint's mean, maximum and minimum
    (:func:`_footprint_p`). The footprint and the direction come from the edits,
    the real images from a held-out split, so the test does not select on its own data. With ``grids``, the
    same test of the plain grid intensity must pass too (the larger p-value is returned), as an edit's change
    must stand out both in the map and from its surroundings (:func:`~cfaudit.discover.clusters.components`): next to a structure that
    grows with the attribute (the heart with cardiomegaly), the local detail darkens only because the
    surroundings' median brightens, and the plain intensity shows that nothing there changed. (NaN, NaN) when
    the split is too small (under 20 images) or the footprint does not vary.
    """
    from scipy import ndimage

    from cfaudit.data.labels import DEFAULT_POLICY

    policy = policy or DEFAULT_POLICY
    table, details = data[0], data[1]
    grids = data[2] if len(data) > 2 else None
    coverage = np.zeros(grid * grid)  # how many of the cluster's members changed each cell
    for member in cluster.members:
        coverage[member.pixels] += 1.0
    footprint = ndimage.binary_dilation(coverage.reshape(grid, grid) > 0)
    weights = coverage.reshape(grid, grid)[footprint]
    weights /= weights.sum()
    values = details[:, footprint] @ weights
    spread = float(np.std(values))
    if not np.isfinite(spread) or spread == 0 or len(values) < 20:
        return math.nan, math.nan
    names, design = label_design(table, policy)
    standardised = (values - values.mean()) / spread
    coefficients, *_ = np.linalg.lstsq(design, standardised, rcond=None)
    coefficient = dict(zip(names, coefficients, strict=True))
    column = {name: k for k, name in enumerate(names)}
    contrast = np.zeros(len(names))  # the same average change as a weighting of the coefficients
    changes = []
    for record in edited:
        total = 0.0
        for name, target in intervention.resolve(record).changes:
            source = _design_value(record, name, policy)
            if name == "race":
                total += coefficient.get(f"race:{target}", 0.0) - (
                    coefficient.get(f"race:{source}", 0.0) if source else 0.0
                )
                if f"race:{target}" in column:
                    contrast[column[f"race:{target}"]] += 1.0
                if source and f"race:{source}" in column:
                    contrast[column[f"race:{source}"]] -= 1.0
            elif name in coefficient and source is not None:
                total += coefficient[name] * (_encode(name, target) - source)
                contrast[column[name]] += _encode(name, target) - source
        changes.append(total)
    if not changes:
        return math.nan, math.nan
    contrast /= len(changes)
    p = _footprint_p(design, details[:, footprint], weights, contrast, cluster.sign)
    if grids is not None and len(grids) == len(values):
        p = max(p, _footprint_p(design, grids[:, footprint], weights, contrast, cluster.sign))
    return float(np.mean(changes)), p


def _footprint_p(
    design: np.ndarray, pixels: np.ndarray, weights: np.ndarray, contrast: np.ndarray, sign: float
) -> float:
    """One-sided p-value that real images differ in the footprint (``pixels``: images x footprint pixels) in
    direction ``sign``, from three summaries of the footprint tested alike and combined by Bonferroni: the
    mean weighted by how often the edits changed each cell (``weights``: the cluster's own shape, so that a thin
    line the edits draw along one path is not drowned by the brighter structures around it), the maximum (a
    bright structure somewhere in it: a device that sits at a different place in every patient fills a small
    part of a footprint drawn around all of them) and the minimum (a dark one). Each is valid on its own, so the
    combination is, whatever their dependence."""
    p = min(
        _contrast_p(design, summary - summary.mean(), contrast, sign)
        for summary in (pixels @ weights, pixels.max(axis=1), pixels.min(axis=1))
    )
    return min(1.0, 3.0 * p) if math.isfinite(p) else math.nan


def _contrast_p(design: np.ndarray, values: np.ndarray, contrast: np.ndarray, sign: float) -> float:
    """One-sided p-value that ``contrast @ beta`` of the least-squares fit of ``values`` on ``design`` has
    ``sign``; NaN when the design leaves no residual degrees of freedom."""
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = values - design @ coefficients
    freedom = len(values) - np.linalg.matrix_rank(design)
    if freedom <= 0:
        return math.nan
    covariance = float(residual @ residual) / freedom * np.linalg.pinv(design.T @ design)
    error = math.sqrt(max(float(contrast @ covariance @ contrast), 0.0))
    return directed_p(float(contrast @ coefficients), error, float(sign))


def _encode(name: str, value: Any) -> float:
    if name == "age":
        return float(value) / 10.0
    if name == "sex":
        return 1.0 if value == "Male" else 0.0
    return float(value)


def _design_value(record: Mapping[str, Any], name: str, policy: Any) -> Any:
    from cfaudit.data.labels import known_label_value
    from cfaudit.data.vocabulary import RACES, normalize_race, normalize_sex

    try:
        if name == "age":
            recorded: Any = record.get("age")  # anything: what float() cannot read is caught below
            age = float(recorded)
            return None if math.isnan(age) else age / 10.0
        if name == "sex":
            return 1.0 if normalize_sex(record.get("sex")) == "Male" else 0.0
        if name == "race":
            race = normalize_race(record.get("race"))
            return race if race in RACES else None
    except (CfauditError, TypeError, ValueError):
        return None
    return known_label_value(record, name, policy)


def label_design(table: Any, policy: Any) -> tuple[list[str], np.ndarray]:
    """The design matrix of every label of ``table``: intercept, findings (binarised, unknown as 0), sex,
    race groups (one left out), age in decades (missing as the mean)."""
    from cfaudit.data.vocabulary import FINDINGS, RACES, normalize_race, normalize_sex

    n = len(table)
    columns: dict[str, np.ndarray] = {"intercept": np.ones(n)}
    missing = [f for f in FINDINGS if f not in table.columns]
    findings = policy.binarize(table.assign(**dict.fromkeys(missing, np.nan)) if missing else table)
    for finding in FINDINGS:
        column = findings[finding].to_numpy(dtype=float)
        if np.nanstd(np.nan_to_num(column)) > 0:
            columns[finding] = np.nan_to_num(column)

    def sex(value: Any) -> float:
        try:
            return 1.0 if normalize_sex(value) == "Male" else 0.0
        except CfauditError:
            return 0.5

    def race(value: Any) -> str:
        try:
            return normalize_race(value)
        except CfauditError:
            return "Unknown"

    columns["sex"] = np.array([sex(v) for v in table["sex"]]) if "sex" in table else np.zeros(n)
    races = np.array([race(v) for v in table["race"]]) if "race" in table else np.array(["Unknown"] * n)
    for group in RACES[1:]:
        columns[f"race:{group}"] = (races == group).astype(float)
    ages = pd_to_float(table["age"]) if "age" in table else np.full(n, np.nan)
    columns["age"] = (
        np.where(np.isnan(ages), np.nanmean(ages) if np.isfinite(ages).any() else 0.0, ages) / 10.0
    )
    kept = {k: v for k, v in columns.items() if k == "intercept" or np.std(v) > 0}
    return list(kept), np.stack(list(kept.values()), axis=1)


def pd_to_float(values: Any) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
