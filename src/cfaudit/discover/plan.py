"""Which edits a discovery makes: the interventions, and the images each one is applied to.

The default set follows the issue that defines discovery: every binary finding added and removed, sex swapped,
race set to each group, age moved by +-20 years. An intervention is applied only to images it would change
(``do(Cardiomegaly=0)`` to images with cardiomegaly; ``do(age=+20)`` to images whose new age stays valid), the
first ``per_intervention`` of them in one seeded order of the split, so that interventions share images and
each image is inverted once for all of its edits.

``per_intervention`` is one number for all, or one per intervention: ``--images auto`` asks
:func:`allot_images` for as many images as detecting a stated effect needs
(:func:`~cfaudit.discover.significance.images_for_share`), within the eligible images and a budget of edits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cfaudit.data.edit_jobs import JobItem
from cfaudit.data.interventions import AgeShift, Intervention
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy, label_value
from cfaudit.data.vocabulary import PATHOLOGIES, RACES, SEXES, normalize_race, normalize_sex
from cfaudit.discover.atlas import RegionAtlas
from cfaudit.discover.heads import HEAD_COLUMNS, intervened_heads
from cfaudit.discover.significance import images_for_share
from cfaudit.errors import CfauditError

#: The age shift of the default plan, in years (both directions).
DEFAULT_AGE_SHIFT = 20.0


def default_interventions(age_shift: float = DEFAULT_AGE_SHIFT) -> list[Intervention]:
    """Every finding added and removed, each sex, each race group, age moved up and down."""
    interventions = []
    for finding in PATHOLOGIES:
        interventions += [Intervention(((finding, 1),)), Intervention(((finding, 0),))]
    interventions += [Intervention((("sex", sex),)) for sex in SEXES]
    interventions += [Intervention((("race", race),)) for race in RACES]
    interventions += [
        Intervention((("age", AgeShift(age_shift)),)),
        Intervention((("age", AgeShift(-age_shift)),)),
    ]
    return interventions


def is_eligible(
    intervention: Intervention, record: Mapping[str, Any], policy: LabelPolicy = DEFAULT_POLICY
) -> bool:
    """Would ``intervention`` change this record (every named attribute), and is the result valid?"""
    for name, value in intervention.changes:
        if isinstance(value, AgeShift):
            try:
                value.resolve(record.get("age"))
            except CfauditError:
                return False
        elif name == "age":
            recorded: Any = record.get("age")  # anything: what float() cannot read is no age recorded
            try:
                if abs(float(recorded) - float(value)) < 1.0:
                    return False
            except (TypeError, ValueError):
                continue  # no age recorded: an absolute age still makes a valid prompt
        elif name == "sex":
            try:
                if normalize_sex(record.get("sex")) == value:
                    return False
            except CfauditError:
                return False
        elif name == "race":
            try:
                race = normalize_race(record.get("race"))
            except CfauditError:
                return False
            if race not in RACES or race == value:  # Unknown race: the source is not known to differ
                return False
        else:
            state = label_value(record, name, policy)
            if math.isnan(state) or state == float(value):  # unknown or already at the target
                return False
    return True


@dataclass(frozen=True)
class DiscoveryPlan:
    """The images to edit, each with the interventions it receives, and which images each intervention has."""

    items: list[JobItem]
    images_by_intervention: dict[str, list[str]]

    @property
    def n_edits(self) -> int:
        return sum(len(images) for images in self.images_by_intervention.values())


def eligible_counts(
    items: Sequence[JobItem], interventions: Sequence[Intervention], policy: LabelPolicy = DEFAULT_POLICY
) -> dict[str, int]:
    """How many of ``items`` each intervention could edit (images without a record count as none)."""
    return {
        str(i): sum(item.record is not None and is_eligible(i, item.record, policy) for item in items)
        for i in interventions
    }


def allot_images(needed: int, eligible: Mapping[str, int], budget: int | None = None) -> dict[str, int]:
    """Images per intervention: ``needed`` each, no more than it has eligible, and at most ``budget`` edits in
    all. Over budget, every intervention is capped at the same largest number that fits (one with fewer
    eligible images keeps them all), so none is starved for another."""
    wanted = {name: min(needed, count) for name, count in eligible.items()}
    if budget is None or sum(wanted.values()) <= budget:
        return wanted
    cap = 0
    while cap < needed and sum(min(n, cap + 1) for n in wanted.values()) <= budget:
        cap += 1
    if cap == 0:
        active = sum(n > 0 for n in wanted.values())
        raise CfauditError(
            f"--edit-budget {budget} cannot give even one image to each of the {active} interventions"
        )
    return {name: min(n, cap) for name, n in wanted.items()}


def regional_interventions(interventions: Sequence[Intervention], atlas: RegionAtlas) -> set[str]:
    """The interventions whose change clusters are looked for (their expected region is not the whole image)."""
    return {str(i) for i in interventions if not atlas.is_global(tuple(n for n, _ in i.changes))}


def family_size(interventions: Sequence[Intervention], atlas: RegionAtlas) -> int:
    """Tests a run will make, known before it edits: every head an intervention does not target, and (an
    estimate) one change cluster per intervention whose regions are analysed."""
    heads = sum(
        sum(h not in intervened_heads(tuple(n for n, _ in i.changes)) for h in HEAD_COLUMNS)
        for i in interventions
    )
    return heads + len(regional_interventions(interventions, atlas))


def images_per_intervention(
    items: Sequence[JobItem],
    interventions: Sequence[Intervention],
    images: int | str,
    detect_effect: float,
    level: float,
    budget: int | None = None,
    policy: LabelPolicy = DEFAULT_POLICY,
) -> tuple[int | dict[str, int], dict[str, int] | None]:
    """``images``, or for ``"auto"``: per intervention, the images that detecting a change in ``detect_effect``
    of them needs with 80% power at ``level`` (a discovery passes alpha / tests: the strictest level of its BH
    procedure, as if nothing else were found), capped by its eligible images and ``budget`` edits in all.
    Also the eligible counts (None for a fixed number)."""
    if images != "auto":
        return int(images), None
    needed = images_for_share(detect_effect, level)
    eligible = eligible_counts(items, interventions, policy)
    return allot_images(needed, eligible, budget), eligible


def build_plan(
    items: Sequence[JobItem],
    interventions: Sequence[Intervention],
    per_intervention: int | Mapping[str, int],
    seed: int = 0,
    policy: LabelPolicy = DEFAULT_POLICY,
    min_images: int = 1,
) -> DiscoveryPlan:
    """Give each intervention the first ``per_intervention`` eligible images of one seeded order of ``items``
    (one number for all, or one per intervention's name: 0 leaves it out).

    Interventions with fewer than ``min_images`` eligible images are left out of the plan (listed with zero
    images), never an error: a small split simply has no image with a rare finding to remove.
    """
    if isinstance(per_intervention, Mapping):
        counts = {str(i): int(per_intervention.get(str(i), 0)) for i in interventions}
        if any(n < 0 for n in counts.values()):
            raise CfauditError(f"images per intervention must not be negative: {counts}")
    elif per_intervention < 1:
        raise CfauditError(f"--images must be at least 1, got {per_intervention}")
    else:
        counts = {str(i): int(per_intervention) for i in interventions}
    if not interventions:
        raise CfauditError(
            "no intervention to discover with; give --do 'A=v' or leave it out for the defaults"
        )
    slugs = [i.slug for i in interventions]
    if len(set(slugs)) != len(slugs):
        raise CfauditError(f"the same intervention is given twice ({', '.join(slugs)})")
    order = np.random.default_rng(seed).permutation(len(items))
    chosen: dict[str, list[int]] = {}
    for intervention in interventions:
        picks: list[int] = []
        if counts.get(str(intervention), 0) == 0:
            chosen[str(intervention)] = picks
            continue
        for position in order:
            record = items[position].record
            if record is None:
                raise CfauditError(
                    f"image {items[position].image_id!r} has no record; discovery needs an index"
                )
            if is_eligible(intervention, record, policy):
                picks.append(int(position))
                if len(picks) == counts[str(intervention)]:
                    break
        chosen[str(intervention)] = picks if len(picks) >= min_images else []
    per_image: dict[int, list[Intervention]] = {}
    for intervention in interventions:
        for position in chosen[str(intervention)]:
            per_image.setdefault(position, []).append(intervention)
    planned = [
        JobItem(
            items[p].image_id, items[p].path, items[p].source_prompt, items[p].record, tuple(per_image[p])
        )
        for p in sorted(per_image)
    ]
    by_intervention = {name: [items[p].image_id for p in picks] for name, picks in chosen.items()}
    return DiscoveryPlan(planned, by_intervention)
