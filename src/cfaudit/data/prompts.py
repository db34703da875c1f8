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
from collections.abc import Mapping, Sequence
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


#: A record's findings (``No Finding`` excluded) that the label policy makes positive, and those it makes negative.
Findings = tuple[tuple[str, ...], tuple[str, ...]]


def record_findings(record: Mapping[str, Any], policy: LabelPolicy = DEFAULT_POLICY) -> Findings:
    """The record's findings (``No Finding`` excluded) the policy makes positive, and those it makes negative."""
    return records_findings([record], policy)[0]


def records_findings(
    records: Sequence[Mapping[str, Any]], policy: LabelPolicy = DEFAULT_POLICY
) -> list[Findings]:
    """:func:`record_findings` of every record, the policy applied to them as one table: a training run works
    them out once, not per caption it draws (one table per record cost ~10 ms, a tenth of a training step)."""
    import pandas as pd

    labels = pd.DataFrame(
        [{f: record.get(f, math.nan) for f in FINDINGS} for record in records], columns=FINDINGS
    )
    binary = policy.binarize(labels)
    found = []
    for row in binary[list(PATHOLOGIES)].itertuples(index=False):
        present = [f for f, value in zip(PATHOLOGIES, row, strict=True) if value == 1.0]
        absent = [f for f, value in zip(PATHOLOGIES, row, strict=True) if value == 0.0]
        found.append((_ordered(present), _ordered(absent)))
    return found


def record_prompt(
    record: Mapping[str, Any],
    template: PromptTemplate = DEFAULT_TEMPLATE,
    policy: LabelPolicy = DEFAULT_POLICY,
    findings: Findings | None = None,
) -> str:
    """The full caption of one index row (age, race, sex and every finding the policy makes positive);
    ``findings``: the record's :func:`record_findings` under ``policy``, where the caller has them already."""
    present, _ = findings if findings is not None else record_findings(record, policy)
    return template.compose(
        age=check_age(record["age"]),
        race=normalize_race(record.get("race")),
        sex=normalize_sex(record["sex"]),
        present=present,
        no_finding=True,
    )


#: The statements :func:`subset_caption` draws from, in the order of its ``keep`` draws: the demographics, then
#: one per finding (a present finding, or ``no finding`` for a record without any).
CAPTION_STATEMENTS: tuple[str, ...] = ("age", "race", "sex", *FINDINGS)


def subset_caption(
    record: Mapping[str, Any],
    keep: Sequence[bool],
    name_absent: Sequence[bool] = (),
    template: PromptTemplate = DEFAULT_TEMPLATE,
    policy: LabelPolicy = DEFAULT_POLICY,
    findings: Findings | None = None,
) -> str:
    """A caption that names a subset of what is true of the record (training captions for partial prompts).

    The paper's counterfactual prompts name only what changes (``Chest X-ray of subject with no cardiomegaly``):
    the model must read a prompt as *some* true statements about the image, the rest left open. A model trained
    only on full captions never sees that; one trained on random subsets of each record's true statements learns
    p(image | any subset), which is what a partial prompt asks for. ``keep`` holds one flag per entry of
    :data:`CAPTION_STATEMENTS` (age, race, sex, then each finding in CheXpert's order: a present finding is named
    when its flag is set; ``No Finding``'s flag names ``no finding`` for a record without positive findings).
    ``name_absent`` holds one flag per finding: an absent finding whose flag is set is named as ``no <finding>``.
    All flags set and none absent named gives :func:`record_prompt`'s caption. ``findings``: the record's
    :func:`record_findings` under ``policy``, where the caller has them already.
    """
    if len(keep) != len(CAPTION_STATEMENTS):
        raise ValueError(f"keep needs {len(CAPTION_STATEMENTS)} flags (one per CAPTION_STATEMENTS entry)")
    if name_absent and len(name_absent) != len(FINDINGS):
        raise ValueError(f"name_absent needs {len(FINDINGS)} flags (one per finding) or none")
    flags = dict(zip(CAPTION_STATEMENTS, keep, strict=True))
    absent_flags = dict(zip(FINDINGS, name_absent, strict=True)) if name_absent else {}
    present, absent = findings if findings is not None else record_findings(record, policy)
    return template.compose(
        age=check_age(record["age"]) if flags["age"] else None,
        race=normalize_race(record.get("race")) if flags["race"] else None,
        sex=normalize_sex(record["sex"]) if flags["sex"] else None,
        present=tuple(f for f in present if flags[f]),
        absent=tuple(f for f in absent if absent_flags.get(f, False)),
        no_finding=not present and flags["No Finding"],
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
