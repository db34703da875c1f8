"""Captions from metadata, and the partial prompts that name an intervention.

The paper's template is ``Chest X-ray of [age]-years old [race] [sex] subject with [finding(s)]``; a record
without positive findings reads ``... subject with no finding``. Findings appear in CheXpert's canonical order
(:data:`~cfaudit.data.vocabulary.FINDINGS`) so one record always gives one prompt.

For an intervention the paper names only what changes: ``do(age=80)`` gives ``Chest X-ray of 80-years old
subject``; ``do(Cardiomegaly=0)`` gives ``Chest X-ray of subject with no cardiomegaly``
(:func:`partial_prompt`). Templates are data (:class:`PromptTemplate`), so users can change the wording.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.vocabulary import (
    FINDINGS,
    PATHOLOGIES,
    RACES,
    canonical_finding,
    check_age,
    normalize_race,
    normalize_sex,
)
from cfaudit.errors import CfauditError

ATTRIBUTES: tuple[str, ...] = ("age", "race", "sex")


@dataclass(frozen=True)
class PromptTemplate:
    """The pieces of a caption; the defaults give the paper's wording."""

    prefix: str = "Chest X-ray of"
    age: str = "{age}-years old"
    subject: str = "subject"
    findings: str = "with {findings}"
    no_finding: str = "no finding"
    absent: str = "no {finding}"
    separator: str = ", "
    last_separator: str = " and "
    #: Races named in captions; others ("Other", "Unknown") are left out rather than written as a word.
    named_races: tuple[str, ...] = ("Asian", "White", "Black")
    lowercase: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PromptTemplate:
        data = dict(data or {})
        valid = {f.name for f in fields(cls)}
        unknown = set(data) - valid
        if unknown:
            raise CfauditError(
                f"prompt template: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(sorted(valid))}"
            )
        if "named_races" in data:
            data["named_races"] = tuple(normalize_race(r) for r in data["named_races"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["named_races"] = list(self.named_races)
        return data

    def _word(self, text: str) -> str:
        return text.lower() if self.lowercase else text

    def _join(self, items: list[str]) -> str:
        if len(items) <= 1:
            return "".join(items)
        return self.separator.join(items[:-1]) + self.last_separator + items[-1]

    def compose(
        self,
        age: float | None = None,
        race: str | None = None,
        sex: str | None = None,
        present: tuple[str, ...] = (),
        absent: tuple[str, ...] = (),
        no_finding: bool = False,
    ) -> str:
        """Assemble a caption from the parts given; parts left as ``None`` / empty are simply not named."""
        words = [self.prefix]
        if age is not None:
            words.append(self.age.format(age=round(age)))
        if race is not None and race in self.named_races:
            words.append(self._word(race))
        if sex is not None:
            words.append(self._word(sex))
        words.append(self.subject)
        phrases = [self._word(f) for f in present]
        phrases += [self.absent.format(finding=self._word(f)) for f in absent]
        if no_finding and not phrases:
            phrases = [self.no_finding]
        if phrases:
            words.append(self.findings.format(findings=self._join(phrases)))
        return " ".join(w for w in words if w)


DEFAULT_TEMPLATE = PromptTemplate()


def _ordered(findings: list[str]) -> tuple[str, ...]:
    return tuple(f for f in FINDINGS if f in findings)


def record_findings(
    record: Mapping[str, Any], policy: LabelPolicy = DEFAULT_POLICY
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The record's findings (``No Finding`` excluded) the policy makes positive, and those it makes negative."""
    import pandas as pd

    labels = pd.DataFrame([{f: record.get(f, math.nan) for f in FINDINGS}])
    binary = policy.binarize(labels).iloc[0]
    present = [f for f in PATHOLOGIES if binary[f] == 1.0]
    absent = [f for f in PATHOLOGIES if binary[f] == 0.0]
    return _ordered(present), _ordered(absent)


def record_prompt(
    record: Mapping[str, Any],
    template: PromptTemplate = DEFAULT_TEMPLATE,
    policy: LabelPolicy = DEFAULT_POLICY,
) -> str:
    """The full caption of one index row (age, race, sex and every finding the policy makes positive)."""
    present, _ = record_findings(record, policy)
    return template.compose(
        age=check_age(record["age"]),
        race=normalize_race(record.get("race")),
        sex=normalize_sex(record["sex"]),
        present=present,
        no_finding=True,
    )


#: The parts of a caption :func:`varied_prompt` may leave out, in the order of its ``omit`` flags.
CAPTION_PARTS: tuple[str, ...] = ("age", "race", "sex", "findings")


def varied_prompt(
    record: Mapping[str, Any],
    omit: tuple[bool, bool, bool, bool] = (False, False, False, False),
    negative: int | None = None,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    policy: LabelPolicy = DEFAULT_POLICY,
) -> str:
    """A caption of the record with parts left out and one absent finding named as such (training variety).

    The paper's counterfactual prompts are partial (``Chest X-ray of subject with no cardiomegaly``) and name
    absent findings; captions of full records never do either. A text encoder pretrained on language can bridge
    that; one trained from scratch with the UNet only learns what the captions show. ``omit`` leaves out the age,
    race, sex and findings (:data:`CAPTION_PARTS`); ``negative`` adds the record's ``negative``-th absent
    finding (modulo their number) as ``no <finding>``, so a caption may read ``Chest X-ray of 63-years old
    subject with no cardiomegaly``.
    """
    present, absent = record_findings(record, policy)
    drop_age, drop_race, drop_sex, drop_findings = omit
    named_absent = (absent[negative % len(absent)],) if negative is not None and absent else ()
    return template.compose(
        age=None if drop_age else check_age(record["age"]),
        race=None if drop_race else normalize_race(record.get("race")),
        sex=None if drop_sex else normalize_sex(record["sex"]),
        present=() if drop_findings else present,
        absent=named_absent,
        no_finding=not drop_findings,
    )


def parse_attribute_value(name: str, value: Any) -> tuple[str, Any]:
    """Canonical (attribute, value) for an intervention: ``("AGE", "80")`` -> ``("age", 80.0)``,
    ``("pleural_effusion", "absent")`` -> ``("Pleural Effusion", 0)``; unknown names or values raise."""
    key = name.strip().lower()
    if key == "age":
        return "age", check_age(value)
    if key == "sex":
        return "sex", normalize_sex(value)
    if key == "race":
        race = normalize_race(value)
        if race not in RACES:
            raise CfauditError(f"race {value!r} cannot be intervened on; choose one of {', '.join(RACES)}")
        return "race", race
    finding = canonical_finding(name)
    text = str(value).strip().lower()
    states = {
        "1": 1,
        "1.0": 1,
        "present": 1,
        "true": 1,
        "yes": 1,
        "0": 0,
        "0.0": 0,
        "absent": 0,
        "false": 0,
        "no": 0,
    }
    if text not in states:
        raise CfauditError(f"{finding}={value!r}: a finding is set to present (1) or absent (0)")
    return finding, states[text]


def partial_prompt(changes: Mapping[str, Any], template: PromptTemplate = DEFAULT_TEMPLATE) -> str:
    """The paper's intervention prompt: only the changed attributes are named.

    ``changes`` maps attribute names (``age``, ``sex``, ``race`` or a finding in any spelling) to new values.
    """
    if not changes:
        raise CfauditError("an intervention needs at least one attribute to change")
    parsed = dict(parse_attribute_value(k, v) for k, v in changes.items())
    present = [f for f in FINDINGS if parsed.get(f) == 1 and f != "No Finding"]
    absent = [f for f in FINDINGS if parsed.get(f) == 0 and f != "No Finding"]
    return template.compose(
        age=parsed.get("age"),
        race=parsed.get("race"),
        sex=parsed.get("sex"),
        present=tuple(present),
        absent=tuple(absent),
        no_finding=parsed.get("No Finding") == 1,
    )
