"""Interventions ``do(A=v)``: what to change about a patient, and the prompts that say it.

An :class:`Intervention` holds one or more changes (``do(age=80, sex=female)`` is one intervention with two).
It is parsed from ``do(...)`` strings or the CLI's ``--do "A=v"`` (:meth:`Intervention.parse`) or built from a
mapping (:meth:`Intervention.from_mapping`). Attributes are ``age``, ``sex``, ``race`` and the 14 CheXpert
findings in any spelling; values are normalised by :func:`cfaudit.data.prompts.parse_attribute_value`.

The source prompt is the record's caption (:func:`cfaudit.data.prompts.record_prompt`). The target prompt has two
documented modes (:data:`PROMPT_MODES`):

``partial`` (the paper's)
    only the changed attributes are named, the model fills in the rest: ``do(Cardiomegaly=0)`` ->
    ``Chest X-ray of subject with no cardiomegaly`` (:func:`cfaudit.data.prompts.partial_prompt`);
``full``
    the record's full caption with the attributes swapped: ``... 63-years old white male subject with
    cardiomegaly`` -> ``... 63-years old white male subject with no finding`` (``record_prompt`` of the changed
    record);
``contrast``
    the partial target prompt, measured against the partial prompt of the record's current values of the same
    attributes (:meth:`Intervention.reference_prompt`: ``Chest X-ray of subject with cardiomegaly`` ->
    ``Chest X-ray of subject with no cardiomegaly``): the edit is the difference between the two, so what
    neither names is kept (see :class:`cfaudit.edit.editor.Target`'s ``anchor``).

For a single image known only by its caption, :func:`caption_record` reads the caption back into a record so
that ``full`` and ``contrast`` modes work there too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy, label_value
from cfaudit.data.prompts import (
    DEFAULT_TEMPLATE,
    PromptTemplate,
    parse_attribute_value,
    partial_prompt,
    record_findings,
    record_prompt,
)
from cfaudit.data.vocabulary import (
    FINDINGS,
    PATHOLOGIES,
    RACES,
    SEXES,
    UnknownValueError,
    canonical_finding,
    check_age,
    normalize_race,
    normalize_sex,
)
from cfaudit.errors import CfauditError

PROMPT_MODES: tuple[str, ...] = ("partial", "full", "contrast")
#: The mode edits take unless told: on two phantoms it flips as often as ``partial`` or more, and keeps the rest
#: of the image as ``full`` does (docs/BENCHMARKS.md, "Contrast prompts").
DEFAULT_PROMPT_MODE = "contrast"
ATTRIBUTES: tuple[str, ...] = ("age", "sex", "race", *FINDINGS)
_ORDER = {name: i for i, name in enumerate(ATTRIBUTES)}


def _valid_attributes() -> str:
    return "age, sex, race, or a finding (" + ", ".join(FINDINGS) + ")"


@dataclass(frozen=True)
class AgeShift:
    """A relative age change, ``do(age=+20)``: each image's own age moved by ``years`` (resolved per record)."""

    years: float

    def __str__(self) -> str:
        return f"{self.years:+g}"

    def resolve(self, age: Any, where: str = "the record") -> float:
        try:
            base = float(age)
        except (TypeError, ValueError):
            base = math.nan
        if math.isnan(base):
            raise CfauditError(f"do(age={self}) needs the image's age, but {where} has none")
        try:
            return check_age(base + self.years)
        except CfauditError:
            raise CfauditError(
                f"do(age={self}) moves age {base:g} of {where} to {base + self.years:g}, outside the valid "
                "range; choose a smaller shift or leave this image out"
            ) from None


_SHIFT = re.compile(r"[+-]\s*\d+(?:\.\d+)?")


def canonical_attribute(name: str) -> str:
    """An attribute named in any case (``Age``, ``pleural_effusion``) as interventions spell it."""
    if name.strip().lower() in ("age", "sex", "race"):
        return name.strip().lower()
    try:
        return canonical_finding(name)
    except UnknownValueError:
        raise CfauditError(f"unknown attribute {name!r}; choose {_valid_attributes()}") from None


def _canonical_change(name: str, value: Any) -> tuple[str, Any]:
    """``parse_attribute_value`` with an error that lists every valid attribute when the name is unknown."""
    if name.strip().lower() == "age" and isinstance(value, str) and _SHIFT.fullmatch(value.strip()):
        years = float(value.replace(" ", ""))
        if years == 0:
            raise CfauditError("do(age=+0) changes nothing; give a non-zero shift such as age=+20")
        return "age", AgeShift(years)
    if isinstance(value, AgeShift):
        return "age", value
    try:
        return parse_attribute_value(name, value)
    except UnknownValueError as error:
        if error.kind == "finding":
            raise CfauditError(f"unknown attribute {name!r}; choose {_valid_attributes()}") from None
        raise


@dataclass(frozen=True)
class Intervention:
    """``do(A1=v1, A2=v2, ...)``: canonical ``(attribute, value)`` pairs in a fixed order."""

    changes: tuple[tuple[str, Any], ...]

    def __post_init__(self) -> None:
        if not self.changes:
            raise CfauditError("an intervention needs at least one attribute to change, e.g. do(age=80)")
        names = [name for name, _ in self.changes]
        if len(set(names)) != len(names):
            raise CfauditError(f"intervention sets an attribute twice: {', '.join(names)}")
        if ("No Finding", 0) in self.changes:
            raise CfauditError(
                "do(No Finding=0) does not say which finding to add; intervene on that finding instead"
            )

    @classmethod
    def from_mapping(cls, changes: Mapping[str, Any]) -> Intervention:
        """From ``{"age": 80, "cardiomegaly": "absent"}`` (any spelling of attributes and values)."""
        parsed = [_canonical_change(str(k), v) for k, v in changes.items()]
        return cls(tuple(sorted(parsed, key=lambda item: _ORDER[item[0]])))

    @classmethod
    def parse(cls, text: str) -> Intervention:
        """From ``"do(sex=female, age=80)"``, ``"sex=female, age=80"`` or ``"Cardiomegaly=0"``."""
        body = text.strip()
        match = re.fullmatch(r"do\s*\((.*)\)", body, flags=re.IGNORECASE | re.DOTALL)
        if match:
            body = match.group(1)
        parts = [p.strip() for p in re.split(r"[,;]", body) if p.strip()]
        if not parts:
            raise CfauditError(f"intervention {text!r} is empty; write it as A=v, e.g. --do 'Cardiomegaly=0'")
        changes: dict[str, str] = {}
        for part in parts:
            if "=" not in part:
                raise CfauditError(
                    f"intervention {text!r}: {part!r} is not A=v; write e.g. 'age=80' or 'do(sex=female, age=80)'"
                )
            name, value = (s.strip() for s in part.split("=", 1))
            if not name or not value:
                raise CfauditError(f"intervention {text!r}: {part!r} needs both an attribute and a value")
            if name in changes:
                raise CfauditError(f"intervention {text!r} sets {name!r} twice")
            changes[name] = value
        try:
            return cls.from_mapping(changes)
        except CfauditError as error:
            raise CfauditError(f"intervention {text!r}: {error}") from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.changes)

    @property
    def is_relative(self) -> bool:
        """True when a change depends on the record (``do(age=+20)``)."""
        return any(isinstance(value, AgeShift) for _, value in self.changes)

    def resolve(self, record: Mapping[str, Any] | None, where: str = "the record") -> Intervention:
        """The same intervention with relative changes made absolute for ``record`` (itself if none)."""
        if not self.is_relative:
            return self
        if record is None:
            raise CfauditError(
                f"{self} is relative to the image's age and needs its record (edit from an index)"
            )
        return Intervention(
            tuple(
                (name, value.resolve(record.get("age"), where) if isinstance(value, AgeShift) else value)
                for name, value in self.changes
            )
        )

    def __str__(self) -> str:
        return "do(" + ", ".join(f"{name}={_format(value)}" for name, value in self.changes) + ")"

    @property
    def slug(self) -> str:
        """A file-name-safe name: ``do(age=80, sex=Female)`` -> ``age-80_sex-female``."""
        parts = [
            f"{name}-{'plus' if value.years > 0 else 'minus'}{_format(abs(value.years))}"
            if isinstance(value, AgeShift)
            else f"{name}-{_format(value)}"
            for name, value in self.changes
        ]
        return re.sub(r"[^a-z0-9_\-]+", "-", "_".join(parts).lower().replace(" ", "-")).strip("-")

    def apply(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``record`` with the changes made (finding columns take 1.0 / 0.0)."""
        changed = dict(record)
        for name, value in self.resolve(record).changes:
            if name in ("age", "sex", "race"):
                changed[name] = value
            elif name == "No Finding":  # value is 1: every finding absent
                for finding in PATHOLOGIES:
                    changed[finding] = 0.0
                changed["No Finding"] = 1.0
            else:
                changed[name] = float(value)
                if value == 1:
                    changed["No Finding"] = 0.0
        return changed

    def target_prompt(
        self,
        record: Mapping[str, Any] | None = None,
        mode: str = "partial",
        template: PromptTemplate = DEFAULT_TEMPLATE,
        policy: LabelPolicy = DEFAULT_POLICY,
    ) -> str:
        """The prompt naming the counterfactual in ``mode`` (``full`` needs the record; ``contrast`` targets the
        partial prompt)."""
        if mode not in PROMPT_MODES:
            raise CfauditError(f"unknown prompt mode {mode!r}; choose one of {', '.join(PROMPT_MODES)}")
        if mode in ("partial", "contrast"):
            return partial_prompt(self.resolve(record).as_dict(), template)
        if record is None:
            raise CfauditError("full prompt mode needs the image's record (or a caption to read it from)")
        return record_prompt(self.apply(record), template, policy)

    def reference_prompt(
        self,
        record: Mapping[str, Any],
        template: PromptTemplate = DEFAULT_TEMPLATE,
        policy: LabelPolicy = DEFAULT_POLICY,
    ) -> str:
        """The partial prompt naming the record's current values of the attributes this intervention changes.

        A finding the record has is named; one it lacks is left unnamed, as full captions leave it
        (``do(Cardiomegaly=1)``: ``Chest X-ray of subject`` -> ``Chest X-ray of subject with cardiomegaly``):
        a reference saying ``no cardiomegaly`` would lend the target its attention maps of a negated word for
        the injected steps, and on the demo model that kept 93% of such edits from adding the finding (flip
        rate 0.07 against 0.97). What the record does not know (a blank finding under a ``blank`` policy, an
        unnamed race, a missing age) is left unnamed too (``Chest X-ray of subject`` at the least).
        ``do(No Finding=1)`` is measured against the findings the record has.
        """
        names = [name for name, _ in self.changes]
        age = race = sex = None
        present: list[str] = []
        no_finding = False
        for name in names:
            if name == "age":
                try:
                    age = check_age(record.get("age"))
                except CfauditError:
                    age = None
            elif name == "sex":
                try:
                    sex = normalize_sex(record.get("sex"))
                except CfauditError:
                    sex = None
            elif name == "race":
                race = normalize_race(record.get("race"))
            elif name == "No Finding":
                has, _ = record_findings(record, policy)
                present += [f for f in has if f not in present]
                no_finding = not has
            elif label_value(record, name, policy) == 1.0:
                present.append(name)
        order = list(FINDINGS)
        return template.compose(
            age=age,
            race=race,
            sex=sex,
            present=tuple(sorted(present, key=order.index)),
            no_finding=no_finding,
        )

    def words(self, template: PromptTemplate = DEFAULT_TEMPLATE) -> tuple[str, ...]:
        """The words that name the changed attributes in captions (for local blending and reweighting)."""
        words: list[str] = []
        for name, value in self.changes:
            if name == "age" and isinstance(value, AgeShift):
                continue  # the new age is only known per record
            if name == "age":
                words.append(str(round(value)))
            elif name in ("sex", "race"):
                words.append(str(value).lower() if template.lowercase else str(value))
            elif name == "No Finding":
                words.append(template.no_finding)
            else:
                words.append(name.lower() if template.lowercase else name)
        return tuple(words)


def _format(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_interventions(texts: list[str] | tuple[str, ...]) -> list[Intervention]:
    """One intervention per ``--do`` option; at least one is needed."""
    if not texts:
        raise CfauditError("no intervention given; add one or more --do 'A=v' (e.g. --do 'Cardiomegaly=0')")
    return [Intervention.parse(text) for text in texts]


def source_prompt(
    record: Mapping[str, Any],
    template: PromptTemplate = DEFAULT_TEMPLATE,
    policy: LabelPolicy = DEFAULT_POLICY,
) -> str:
    """The caption that describes the image as it is (the prompt it is inverted under)."""
    return record_prompt(record, template, policy)


def caption_record(
    caption: str, template: PromptTemplate = DEFAULT_TEMPLATE, *, complete: bool = True
) -> dict[str, Any]:
    """Read a caption written with ``template`` back into a record (age, race, sex and findings).

    Raises a :class:`CfauditError` when the caption does not follow the template, or (``complete``, what full
    prompts need) names no age or sex; otherwise a missing age is NaN and a missing sex ``None``.
    """
    text = re.sub(r"\s+", " ", caption.strip()).rstrip(".")
    fold = str.lower if template.lowercase else str
    prefix = re.escape(fold(template.prefix))
    age = re.escape(fold(template.age)).replace(re.escape("{age}"), r"(?P<age>\d+(?:\.\d+)?)")
    races = "|".join(re.escape(fold(r)) for r in template.named_races)
    sexes = "|".join(re.escape(fold(s)) for s in SEXES)
    subject = re.escape(fold(template.subject))
    findings = re.escape(fold(template.findings)).replace(re.escape("{findings}"), r"(?P<findings>.+)")
    pattern = rf"{prefix}(?: {age})?(?: (?P<race>{races}))?(?: (?P<sex>{sexes}))? {subject}(?: {findings})?"
    match = re.fullmatch(pattern, fold(text))
    hint = f"write it as the template does, e.g. {DEFAULT_TEMPLATE.compose(63, 'White', 'Male', ('Cardiomegaly',))!r}"
    if not match:
        raise CfauditError(
            f"caption {caption!r} does not follow the prompt template; {hint}, or use --prompt-mode partial"
        )
    if complete and (match.group("age") is None or match.group("sex") is None):
        raise CfauditError(f"caption {caption!r} names no age or no sex, which full prompts need; {hint}")
    record: dict[str, Any] = {finding: math.nan for finding in FINDINGS}
    record["age"] = float(match.group("age")) if match.group("age") is not None else math.nan
    sex = match.group("sex")
    record["sex"] = next(s for s in SEXES if fold(s) == sex) if sex is not None else None
    race = match.group("race")
    record["race"] = next((r for r in RACES if fold(r) == race), "Unknown") if race else "Unknown"
    phrases = match.group("findings")
    if phrases:
        for phrase in re.split(
            rf"{re.escape(template.separator)}|{re.escape(template.last_separator)}", phrases
        ):
            phrase = phrase.strip()
            if phrase == fold(template.no_finding):
                record["No Finding"] = 1.0
                continue
            absent = re.fullmatch(
                re.escape(fold(template.absent)).replace(re.escape("{finding}"), "(.+)"), phrase
            )
            name = absent.group(1) if absent else phrase
            try:
                finding = canonical_finding(name)
            except UnknownValueError:
                raise CfauditError(
                    f"caption {caption!r}: {name!r} is not a finding; valid: {', '.join(FINDINGS)}"
                ) from None
            record[finding] = 0.0 if absent else 1.0
    return record
