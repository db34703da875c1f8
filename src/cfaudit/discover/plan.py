"""Which edits a discovery makes: the interventions, and the images each one is applied to.

The default set follows the issue that defines discovery: every binary finding added and removed, sex swapped,
race set to each group, age moved by +-20 years. An intervention is applied only to images it would change
(``do(Cardiomegaly=0)`` to images with cardiomegaly; ``do(age=+20)`` to images whose new age stays valid), the
first ``per_intervention`` of them in one seeded order of the split, so that interventions share images and
each image is inverted once for all of its edits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.vocabulary import PATHOLOGIES, RACES, SEXES, normalize_race, normalize_sex
from cfaudit.edit.interventions import AgeShift, Intervention
from cfaudit.edit.job import JobItem
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


def label_state(record: Mapping[str, Any], finding: str, policy: LabelPolicy = DEFAULT_POLICY) -> float:
    """A record's binary state of ``finding`` under the label policy (1.0, 0.0, or NaN when unknown)."""
    try:
        value = float(record.get(finding))
    except (TypeError, ValueError):
        value = math.nan
    if math.isnan(value):
        return {"negative": 0.0, "blank": math.nan}[policy.blank]
    if value == -1.0:
        return {"negative": 0.0, "positive": 1.0, "blank": math.nan}[policy.uncertain]
    return 1.0 if value > 0 else 0.0


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
            try:
                if abs(float(record.get("age")) - float(value)) < 1.0:
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
            state = label_state(record, name, policy)
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


def build_plan(
    items: Sequence[JobItem],
    interventions: Sequence[Intervention],
    per_intervention: int,
    seed: int = 0,
    policy: LabelPolicy = DEFAULT_POLICY,
    min_images: int = 1,
) -> DiscoveryPlan:
    """Give each intervention the first ``per_intervention`` eligible images of one seeded order of ``items``.

    Interventions with fewer than ``min_images`` eligible images are left out of the plan (listed with zero
    images), never an error: a small split simply has no image with a rare finding to remove.
    """
    if per_intervention < 1:
        raise CfauditError(f"--images must be at least 1, got {per_intervention}")
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
        for position in order:
            record = items[position].record
            if record is None:
                raise CfauditError(
                    f"image {items[position].image_id!r} has no record; discovery needs an index"
                )
            if is_eligible(intervention, record, policy):
                picks.append(int(position))
                if len(picks) == per_intervention:
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
