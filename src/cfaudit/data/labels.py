"""Turning CheXpert's four label states into binary labels.

The index keeps 1 (positive), 0 (negative), -1 (uncertain) and blank (not mentioned in the report) apart.
Prompts, classifiers and statistics need a yes/no; :class:`LabelPolicy` says how to get it.

Default (documented in the README): **uncertain -> negative** ("U-Zeros", Irvin et al. 2019) and **blank ->
negative**: a finding is named in a prompt only when the report asserts it, as in the paper's captions built
from MIMIC-CXR's CheXpert labels. ``uncertain="positive"`` gives U-Ones; ``"blank"`` keeps the value missing
(NaN), which classifier training then masks out of the loss and statistics leave out of the denominator.

:meth:`LabelPolicy.binarize` does it for a table, :func:`label_value` for one record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pandas as pd

from cfaudit.data.vocabulary import FINDINGS, PATHOLOGIES
from cfaudit.errors import CfauditError

_CHOICES = {"uncertain": ("negative", "positive", "blank"), "blank": ("negative", "blank")}
#: The binary value of each choice of a policy.
_VALUES = {"negative": 0.0, "positive": 1.0, "blank": math.nan}


@dataclass(frozen=True)
class LabelPolicy:
    """How uncertain (-1) and blank labels become binary: ``"negative"`` -> 0, ``"positive"`` -> 1, ``"blank"`` -> NaN."""

    uncertain: Literal["negative", "positive", "blank"] = "negative"
    blank: Literal["negative", "blank"] = "negative"

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise CfauditError(
                    f"label policy: {name}={getattr(self, name)!r} is not one of {', '.join(allowed)}"
                )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, origin: str = "label policy") -> LabelPolicy:
        """A policy from a mapping such as ``{"uncertain": "positive"}`` (missing keys: the default);
        ``origin`` (a file and key) starts the message of a :class:`CfauditError` for a bad one."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise CfauditError(
                f"{origin}: expected a mapping with the keys uncertain and blank, not {data!r}"
            )
        data = {str(key): value for key, value in data.items()}
        unknown = set(data) - set(_CHOICES)
        if unknown:
            raise CfauditError(
                f"{origin}: unknown key(s) {', '.join(sorted(unknown))}; valid: uncertain, blank"
            )
        for name, allowed in _CHOICES.items():
            if name in data and data[name] not in allowed:
                raise CfauditError(f"{origin}: {name}={data[name]!r} is not one of {', '.join(allowed)}")
        return cls(**data)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    def binarize(self, labels: pd.DataFrame) -> pd.DataFrame:
        """Binary (1.0 / 0.0 / NaN) copy of the finding columns of ``labels``.

        "No Finding" is then made consistent: it is 0 wherever any pathology is positive.
        """
        out = pd.DataFrame(index=labels.index)
        for finding in FINDINGS:
            column = labels[finding].astype(float)
            column = column.where(column != -1.0, _VALUES[self.uncertain])
            column = column.where(~labels[finding].isna(), _VALUES[self.blank])
            out[finding] = column
        any_positive = (out[list(PATHOLOGIES)] == 1.0).any(axis=1)
        out.loc[any_positive, "No Finding"] = 0.0
        return out


DEFAULT_POLICY = LabelPolicy()


def label_value(record: Mapping[str, Any], finding: str, policy: LabelPolicy = DEFAULT_POLICY) -> float:
    """A record's binary state of ``finding`` under the label policy: 1.0, 0.0, or NaN when unknown.

    A missing or unreadable value is blank; any positive value counts as present. "No Finding" is 0 when any
    pathology is present, as :meth:`LabelPolicy.binarize` makes it for a whole table.
    """
    if finding == "No Finding" and any(label_value(record, p, policy) == 1.0 for p in PATHOLOGIES):
        return 0.0
    try:
        value = float(record.get(finding))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if math.isnan(value):
        return _VALUES[policy.blank]
    if value == -1.0:
        return _VALUES[policy.uncertain]
    return 1.0 if value > 0 else 0.0


def known_label_value(
    record: Mapping[str, Any], finding: str, policy: LabelPolicy = DEFAULT_POLICY
) -> float | None:
    """:func:`label_value`, with ``None`` instead of NaN when the state is unknown."""
    state = label_value(record, finding, policy)
    return None if math.isnan(state) else state
