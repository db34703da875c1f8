"""The intervention controls: their choices (from the attribute vocabulary) and the intervention they make.

Each control starts at ``unchanged``; every control moved away from it becomes one change of a single
:class:`~cfaudit.data.interventions.Intervention` (``do(sex=Female, Cardiomegaly=0)``), the same object that
``cfaudit edit --do`` builds, so prompts are worded exactly as in a batch job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cfaudit.data.interventions import Intervention
from cfaudit.data.prompts import DEFAULT_TEMPLATE
from cfaudit.data.vocabulary import AGE_MAX, AGE_MIN, FINDINGS, PATHOLOGIES, SEXES
from cfaudit.errors import CfauditError

UNCHANGED = "unchanged"
PRESENT, ABSENT = "present", "absent"
SEX_CHOICES: tuple[str, ...] = (UNCHANGED, *SEXES)
#: Only races the caption template names: do(race=Other) would give a prompt that names no race at all.
RACE_CHOICES: tuple[str, ...] = (UNCHANGED, *DEFAULT_TEMPLATE.named_races)
FINDING_CHOICES: tuple[str, ...] = (UNCHANGED, PRESENT, ABSENT)
#: "No Finding: present" clears every finding; "absent" would not say which finding to add.
NO_FINDING_CHOICES: tuple[str, ...] = (UNCHANGED, PRESENT)
AGE_RANGE: tuple[float, float] = (AGE_MIN, AGE_MAX)


def finding_choices(finding: str) -> tuple[str, ...]:
    return NO_FINDING_CHOICES if finding == "No Finding" else FINDING_CHOICES


def intervention_from_choices(
    sex: str | None = UNCHANGED,
    race: str | None = UNCHANGED,
    age: float | None = None,
    findings: Mapping[str, str | None] | None = None,
) -> Intervention:
    """One intervention from the controls (``age=None``: unchanged); at least one control must be moved."""
    changes: dict[str, Any] = {}
    if sex not in (None, "", UNCHANGED):
        changes["sex"] = sex
    if race not in (None, "", UNCHANGED):
        if race not in RACE_CHOICES:
            raise CfauditError(f"race: choose one of {', '.join(RACE_CHOICES)}, not {race!r}")
        changes["race"] = race
    if age is not None:
        changes["age"] = age
    for finding, state in (findings or {}).items():
        if state in (None, "", UNCHANGED):
            continue
        if finding not in FINDINGS:
            raise CfauditError(f"unknown finding {finding!r}; valid: {', '.join(FINDINGS)}")
        if state not in finding_choices(finding):
            raise CfauditError(
                f"{finding}: choose one of {', '.join(finding_choices(finding))}, not {state!r}"
            )
        changes[finding] = state
    if not changes:
        raise CfauditError(
            "no intervention chosen: set sex, race or age, or a finding to present or absent "
            "(e.g. Cardiomegaly: absent)"
        )
    if changes.get("No Finding") == PRESENT and any(changes.get(f) == PRESENT for f in PATHOLOGIES):
        raise CfauditError("'No Finding: present' contradicts a finding set to present; change one of them")
    return Intervention.from_mapping(changes)
