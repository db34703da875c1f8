"""The field's vocabulary: the 14 CheXpert findings (spelled as CheXpert does), label states, sexes, races, views.

Label states follow CheXpert / MIMIC-CXR-JPG: 1 positive, 0 negative, -1 uncertain, blank (NaN) not mentioned.
Records keep all four states distinct; :mod:`cfaudit.data.labels` turns them into binary labels by a policy.
"""

from __future__ import annotations

import math
import re
from typing import Any

from cfaudit.errors import CfauditError

#: The 14 CheXpert observations in CheXpert's own order and spelling (the order of findings in prompts).
FINDINGS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
#: The 13 findings proper (everything but "No Finding", which is their absence).
PATHOLOGIES: tuple[str, ...] = FINDINGS[1:]

POSITIVE = 1.0
NEGATIVE = 0.0
UNCERTAIN = -1.0
LABEL_STATES = (POSITIVE, NEGATIVE, UNCERTAIN)  # and NaN for blank

SEXES: tuple[str, ...] = ("Male", "Female")
#: Races after collapsing registry spellings (paper, Table 1: Asian / White / Black, the rest "Other").
RACES: tuple[str, ...] = ("Asian", "White", "Black", "Other")
UNKNOWN = "Unknown"
VIEWS: tuple[str, ...] = ("AP", "PA")
AGE_MIN, AGE_MAX = 0.0, 120.0


class UnknownValueError(CfauditError):
    """A value outside the vocabulary; adapters re-raise it with the file and row it came from."""

    def __init__(self, kind: str, value: Any, valid: tuple[str, ...] | list[str]) -> None:
        self.kind, self.value, self.valid = kind, value, tuple(valid)
        super().__init__(f"unknown {kind} {value!r}; valid values: {', '.join(map(str, valid))}")


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


_SEX_SPELLINGS = {
    "m": "Male",
    "male": "Male",
    "man": "Male",
    "f": "Female",
    "female": "Female",
    "woman": "Female",
}


def normalize_sex(value: Any) -> str:
    """Map M/F/male/female (any case) to ``Male``/``Female``; raise :class:`UnknownValueError` otherwise."""
    if _is_blank(value):
        raise UnknownValueError("sex", value, SEXES)
    key = str(value).strip().lower()
    if key not in _SEX_SPELLINGS:
        raise UnknownValueError("sex", value, ["M", "F", "Male", "Female"])
    return _SEX_SPELLINGS[key]


# Registry spellings that say nothing about race: they become "Unknown", not "Other".
_RACE_UNKNOWN = {
    "unknown", "unknown/not specified", "unable to obtain", "patient declined to answer", "declined to answer",
    "not specified",
    "race and ethnicity unknown",
    "patient refused",
    "declines to state",
    "declined", "na", "n/a", "",
}  # fmt: skip
_RACE_OTHER = {
    "other", "hispanic/latino", "hispanic or latino", "multiple race/ethnicity", "american indian/alaska native",
    "native hawaiian or other pacific islander", "portuguese", "south american", "hispanic", "latino",
    "american indian", "pacific islander",
}  # fmt: skip


def normalize_race(value: Any) -> str:
    """Collapse a race or ethnicity spelling to Asian/White/Black/Other, or ``Unknown`` when none is given.

    Handles MIMIC-IV v1 ``ethnicity`` (``WHITE``, ``BLACK/AFRICAN AMERICAN``, ``ASIAN``, ``HISPANIC/LATINO``,
    ``UNABLE TO OBTAIN``...) and v2+ ``race`` spellings (``WHITE - RUSSIAN``, ``ASIAN - CHINESE``,
    ``BLACK/CAPE VERDEAN``, ``HISPANIC/LATINO - PUERTO RICAN``...), CheXpert demographics' ``primary_race``
    (``White, non-Hispanic``, ``Asian - Historical Conv``...) and the canonical names themselves.
    """
    if _is_blank(value):
        return UNKNOWN
    key = re.sub(r"\s+", " ", str(value).strip().lower())
    if key in _RACE_UNKNOWN or key.startswith("unknown"):
        return UNKNOWN
    for race in ("Asian", "White", "Black"):
        if key.startswith(race.lower()):
            return race
    if key.startswith("african american"):
        return "Black"
    if key in _RACE_OTHER or key.startswith(("hispanic", "other", "native", "american indian", "pacific")):
        return "Other"
    raise UnknownValueError("race", value, [*RACES, UNKNOWN])


def normalize_view(value: Any) -> str:
    """Map a view position to ``AP``/``PA`` (frontal); lateral and other views raise :class:`UnknownValueError`."""
    if _is_blank(value):
        raise UnknownValueError("view", value, VIEWS)
    key = str(value).strip().upper()
    if key in VIEWS:
        return key
    raise UnknownValueError("view", value, VIEWS)


def check_age(value: Any) -> float:
    """Return an age in years as float; raise :class:`CfauditError` when missing or outside 0..120."""
    try:
        age = float(value)
    except (TypeError, ValueError):
        raise CfauditError(f"age {value!r} is not a number of years") from None
    if math.isnan(age) or not AGE_MIN <= age <= AGE_MAX:
        raise CfauditError(f"age {value!r} is outside {AGE_MIN:g}..{AGE_MAX:g} years")
    return age


def finding_slug(finding: str) -> str:
    """``Pleural Effusion`` -> ``pleural_effusion`` (file names, CLI choices)."""
    return finding.lower().replace(" ", "_")


def canonical_finding(name: str) -> str:
    """Resolve a finding written in any case, with spaces, underscores or hyphens, to its CheXpert spelling."""
    key = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    for finding in FINDINGS:
        if finding.lower() == key:
            return finding
    raise UnknownValueError("finding", name, FINDINGS)
