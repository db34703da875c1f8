"""What the metadata alone predicts for an intervention: the label-statistics control of a discovery.

For ``do(A=a)`` applied to an image whose attribute is ``a0``, conventional analysis of the labels predicts
that head ``H`` moves by ``E[H | A=a] - E[H | A=a0]`` (e.g. P(support devices | cardiomegaly) - P(support
devices | no cardiomegaly)). Averaged over the edited images, that is the change an edit would show if the
model had learned nothing beyond the label associations. Categorical attributes are matched exactly; age is
smoothed with a Gaussian kernel (``bandwidth`` years), so ``do(age=+20)`` compares neighbourhoods of the old
and new ages.

The same conditional means over other values of the same rows give the **data association**: with the
classifier's outputs on the real images (``values=``), what images that have the attribute look like, which
tells a property of the data (the edit agrees with real images) from a quirk of the editor (it does not); with
a local image measurement per change cluster, whether real images show that change where the edit made it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfaudit.data.interventions import Intervention
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy, known_label_value
from cfaudit.data.vocabulary import FINDINGS, RACES, normalize_race, normalize_sex
from cfaudit.discover.heads import HEAD_COLUMNS

#: Fewer matching label rows than this leave the expectation unknown (NaN) rather than noisy.
MIN_ROWS = 10


class LabelStatistics:
    """Expected head values given attribute values, from the labels of an index (usually its train split)."""

    def __init__(
        self,
        table: pd.DataFrame,
        policy: LabelPolicy = DEFAULT_POLICY,
        bandwidth: float = 5.0,
        values: np.ndarray | None = None,
        columns: Sequence[str] = HEAD_COLUMNS,
    ) -> None:
        """Condition on the attributes of ``table``'s rows; average their labels, or ``values`` (one row per
        table row, one column per :data:`HEAD_COLUMNS` entry) when given, e.g. classifier outputs on the
        images: then the expectations say what the *images* with an attribute look like to the classifier."""
        self.bandwidth = bandwidth
        self._cache: dict[tuple[tuple[str, str], ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        values_override = values
        missing = [f for f in FINDINGS if f not in table.columns]
        if missing:  # an index always has them; other tables (tests, custom data) may not
            table = table.assign(**{f: np.nan for f in missing})
        findings = policy.binarize(table)
        # Plain object arrays with None for unknown (a pandas string column would hold NA, which cannot compare)
        sexes = np.array([_sex_or_nan(v) for v in table["sex"]], dtype=object)
        races = np.array([_race_or_none(v) for v in table["race"]], dtype=object)
        known_sex = np.array([v is not None for v in sexes])
        known_race = np.array([v is not None for v in races])
        label_columns: dict[str, Any] = {"sex": np.where(known_sex, (sexes == "Male").astype(float), np.nan)}
        for group in RACES:
            label_columns[f"race:{group}"] = np.where(known_race, (races == group).astype(float), np.nan)
        label_columns["age"] = pd.to_numeric(table["age"], errors="coerce")
        for finding in FINDINGS:
            label_columns[finding] = findings[finding]
        self.values = pd.DataFrame(label_columns, index=table.index)[list(HEAD_COLUMNS)].to_numpy(
            dtype=np.float64
        )
        self.columns = tuple(columns)
        if values_override is not None:
            values_override = np.asarray(values_override, dtype=np.float64).reshape(len(table), -1)
            if values_override.shape[1] != len(self.columns):
                raise ValueError(
                    f"values need one column per name in {self.columns}, got {values_override.shape}"
                )
            self.values = values_override
        elif self.columns != HEAD_COLUMNS:
            raise ValueError("labels give the head columns only; pass values for other columns")
        # The attributes an intervention can condition on: same encoding as the heads
        self.attributes = {"sex": sexes, "race": races}
        self.ages = label_columns["age"].to_numpy(dtype=np.float64)
        self.findings = {finding: findings[finding].to_numpy(dtype=np.float64) for finding in FINDINGS}

    def _weights(self, conditions: Mapping[str, Any]) -> np.ndarray:
        weights = np.ones(len(self.values))
        for name, value in conditions.items():
            if name == "age":
                weights = weights * np.exp(-0.5 * ((self.ages - float(value)) / self.bandwidth) ** 2)
                weights[np.isnan(self.ages)] = 0.0
            elif name in ("sex", "race"):
                weights = weights * (self.attributes[name] == value)
            else:
                weights = weights * (self.findings[name] == float(value))
        return weights

    def expected(self, conditions: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Weighted mean of every head given ``conditions``, and its effective number of rows, per head.

        Cached: the edited records of one intervention mostly share their conditions (and ages repeat)."""
        mean, effective, _ = self._moments(conditions)
        return mean, effective

    def _moments(self, conditions: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        key = tuple(sorted((name, str(value)) for name, value in conditions.items()))
        if key not in self._cache:
            self._cache[key] = self._expected(conditions)
        return self._cache[key]

    def _expected(self, conditions: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weighted mean, effective rows and the squared standard error of the mean, per head."""
        weights = self._weights(conditions)
        known = ~np.isnan(self.values)
        w = weights[:, None] * known
        total = w.sum(axis=0)
        effective = np.where(total > 0, total**2 / np.maximum((w**2).sum(axis=0), 1e-12), 0.0)
        values = np.nan_to_num(self.values)
        mean = np.where(total > 0, (w * values).sum(axis=0) / np.maximum(total, 1e-12), np.nan)
        # Weighted variance of the rows about that mean, over the effective rows (Kish): the mean's variance
        spread = (w * (values - np.nan_to_num(mean)) ** 2).sum(axis=0) / np.maximum(total, 1e-12)
        variance = np.where(effective > 1, spread * effective / np.maximum(effective - 1, 1e-12), np.nan)
        squared_error = variance / np.maximum(effective, 1e-12)
        mean[effective < MIN_ROWS] = np.nan
        squared_error[effective < MIN_ROWS] = np.nan
        return mean, effective, squared_error

    def association(
        self,
        intervention: Intervention,
        records: Sequence[Mapping[str, Any]],
        policy: LabelPolicy = DEFAULT_POLICY,
    ) -> dict[str, float]:
        """Mean predicted change of every head when ``intervention`` is applied to ``records``."""
        return self.association_with_error(intervention, records, policy)[0]

    def association_with_error(
        self,
        intervention: Intervention,
        records: Sequence[Mapping[str, Any]],
        policy: LabelPolicy = DEFAULT_POLICY,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """:meth:`association` and its standard error, per head.

        Each record's predicted change is a difference of two conditional means, whose squared errors add (the
        rows of the two conditions do not overlap for a changed attribute). The records' changes share their
        rows, so their errors are not independent; the error of their average is bounded by the average of
        their errors (perfect correlation), which is what is returned: conservative when records differ (age
        edits, each at its own age), exact when they all share their conditions."""
        changes, errors = [], []
        for record in records:
            resolved = intervention.resolve(record)
            target = dict(resolved.changes)
            source = {name: _source_value(record, name, policy) for name in target}
            if any(value is None for value in source.values()):
                continue
            after, _, after_error = self._moments(target)
            before, _, before_error = self._moments(source)
            changes.append(after - before)
            errors.append(np.sqrt(after_error + before_error))
        width = len(self.columns)
        stacked = np.stack(changes) if changes else np.full((1, width), np.nan)
        stacked_errors = np.stack(errors) if errors else np.full((1, width), np.nan)
        known = np.isfinite(stacked) & np.isfinite(stacked_errors)
        count = np.maximum(known.sum(axis=0), 1)
        mean = np.where(known.any(axis=0), np.where(known, stacked, 0.0).sum(axis=0) / count, np.nan)
        error = np.where(known.any(axis=0), np.where(known, stacked_errors, 0.0).sum(axis=0) / count, np.nan)
        return (
            {column: float(value) for column, value in zip(self.columns, mean, strict=True)},
            {column: float(value) for column, value in zip(self.columns, error, strict=True)},
        )


def classifier_error(
    table: pd.DataFrame, predicted: np.ndarray, policy: LabelPolicy = DEFAULT_POLICY
) -> LabelStatistics:
    """Statistics of the classifier's error on real images: its outputs (one column per :data:`HEAD_COLUMNS`
    entry) minus the recorded truth of each image, in the heads' units (NaN where the truth is unknown).

    Its :meth:`~LabelStatistics.association` is the classifier's bias conditional on the intervened attribute,
    e.g. for ``do(Edema=1)`` on age: ``mean(predicted - true age | Edema=1) - mean(... | Edema=0)``."""
    truth = LabelStatistics(table, policy).values
    predicted = np.asarray(predicted, dtype=np.float64).reshape(truth.shape)
    return LabelStatistics(table, policy, values=predicted - truth)


def _sex_or_nan(value: Any) -> str | None:
    try:
        return normalize_sex(value)
    except Exception:
        return None


def _race_or_none(value: Any) -> str | None:
    try:
        race = normalize_race(value)
    except Exception:
        return None
    return race if race in RACES else None


def _source_value(record: Mapping[str, Any], name: str, policy: LabelPolicy) -> Any:
    if name == "age":
        recorded: Any = record.get("age")  # anything: what float() cannot read is an unknown age
        try:
            age = float(recorded)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(age) else age
    if name == "sex":
        return _sex_or_nan(record.get("sex"))
    if name == "race":
        return _race_or_none(record.get("race"))
    return known_label_value(record, name, policy)
