"""One image's plan: every hidden variable (anatomy, finding geometry, devices), sampled before any drawing.

A plan is drawn from the image's own RNG (from the run's seed and the image's index) plus its subject's identity,
so it is the same whatever the number of workers; :mod:`cfaudit.data.phantom.render` turns it into pixels
without further randomness except the noise seeded here. The ground truth JSON is the plan plus what the
renderer measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cfaudit.data.phantom.anatomy import ANATOMY_RANGES, Anatomy, SubjectIdentity, study_anatomy
from cfaudit.data.phantom.config import DEVICE_KINDS, PhantomConfig, Relation
from cfaudit.data.phantom.devices import Device, sample_device
from cfaudit.data.phantom.relations import cause_value
from cfaudit.data.vocabulary import PATHOLOGIES
from cfaudit.errors import CfauditError


@dataclass(frozen=True)
class ImagePlan:
    index: int
    image_id: str
    true_race: str
    anatomy: Anatomy
    strengths: dict[str, float]  # rendered strength per pathology: 0 absent, 1 present, between: uncertain
    lesions: dict[str, Any]  # geometry of each rendered finding
    devices: tuple[Device, ...] = field(default_factory=tuple)
    device_probability: dict[str, float] = field(default_factory=dict)  # P(kind | record) actually used
    noise_seed: int = 0

    def device_kinds(self) -> set[str]:
        return {device.kind for device in self.devices}


def strength_of(state: float, uncertain_strength: float) -> float:
    """Label state -> rendered strength: 1 -> 1, -1 -> ``uncertain_strength``, 0 and blank -> 0."""
    if state == 1.0:
        return 1.0
    if state == -1.0:
        return uncertain_strength
    return 0.0


def plan_image(
    index: int,
    record: dict[str, Any],
    identity: SubjectIdentity,
    config: PhantomConfig,
    rng: np.random.Generator,
) -> ImagePlan:
    """Sample everything hidden about one image whose metadata is ``record`` (one row of metadata.csv)."""
    findings = config.findings
    strengths = {name: strength_of(record[name], findings.uncertain_strength) for name in PATHOLOGIES}
    strengths["Support Devices"] = 1.0 if record["Support Devices"] == 1.0 else 0.0

    normal_ctr = rng.uniform(*findings.ctr_normal)
    large_ctr = rng.uniform(*findings.ctr_cardiomegaly)
    ctr = normal_ctr + strengths["Cardiomegaly"] * (large_ctr - normal_ctr)
    anatomy = study_anatomy(
        identity,
        sex=record["sex"],
        age=float(record["age"]),
        view=record["ViewPosition"],
        true_race=record["true_race"],
        ctr=ctr,
        cues=config.cues,
        rng=rng,
    )
    for number, relation in enumerate(config.relations):
        if relation.effect_kind == "anatomy":
            anatomy = anatomy.shifted(relation.effect_name, _shift(relation, record))
            _check_range(anatomy, relation, number, record)

    lesions = _sample_lesions(strengths, anatomy, rng)
    devices, probability = _sample_devices(record, anatomy, config, rng)
    return ImagePlan(
        index=index,
        image_id=record["image_id"],
        true_race=record["true_race"],
        anatomy=anatomy,
        strengths=strengths,
        lesions=lesions,
        devices=devices,
        device_probability=probability,
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def _check_range(anatomy: Anatomy, relation: Relation, number: int, record: dict[str, Any]) -> None:
    """Refuse a relation that shifts an anatomy parameter outside :data:`ANATOMY_RANGES` for this image."""
    name = relation.effect_name
    low, high = ANATOMY_RANGES[name]
    value = float(getattr(anatomy, name))
    if not low <= value <= high:
        raise CfauditError(
            f"phantom config: relations[{number}] ({relation.cause} -> {relation.effect}) makes {name} "
            f"{value:.3g} for image {record['image_id']}, outside {low:g}..{high:g} where a chest can be drawn; "
            "plant a smaller shift"
        )


def _shift(relation: Relation, record: dict[str, Any]) -> float:
    value = cause_value(relation, record)
    if relation.cause == "age":
        assert relation.shift_per_decade is not None  # the config loader requires it for an age cause
        return float(relation.shift_per_decade) * value
    assert relation.shift_if_present is not None  # the config loader requires it for a binary cause
    return float(relation.shift_if_present) * value


def device_probabilities(record: dict[str, Any], config: PhantomConfig) -> dict[str, float]:
    """P(kind is drawn | Support Devices = 1, this record) for every kind but the fallback, relations applied."""
    probability = {
        kind: config.devices.probability[kind] for kind in DEVICE_KINDS if kind != config.devices.fallback
    }
    for relation in config.relations:
        if relation.effect_kind != "device":
            continue
        kind = relation.effect_name
        value = cause_value(relation, record)
        if relation.cause == "age":
            p = min(max(probability[kind], 1e-9), 1 - 1e-9)
            assert relation.log_odds_per_decade is not None  # the config loader requires it for an age cause
            logit = np.log(p / (1 - p)) + float(relation.log_odds_per_decade) * value
            probability[kind] = float(1.0 / (1.0 + np.exp(-logit)))
        else:
            # the config loader requires both for a binary cause
            assert relation.p_if_present is not None and relation.p_if_absent is not None
            probability[kind] = float(relation.p_if_present if value else relation.p_if_absent)
    return probability


def _sample_devices(
    record: dict[str, Any], anatomy: Anatomy, config: PhantomConfig, rng: np.random.Generator
) -> tuple[tuple[Device, ...], dict[str, float]]:
    """Devices only when Support Devices = 1: each kind independently with its probability; the fallback kind
    always when no other kind was drawn, else with its own probability (so SD = 1 exactly when a device is drawn
    and the other kinds keep exactly their configured probabilities)."""
    probability = device_probabilities(record, config)
    draws = {kind: rng.random() for kind in DEVICE_KINDS}  # always consumed, so kinds do not shift each other
    if record["Support Devices"] != 1.0:
        return (), probability
    fallback = config.devices.fallback
    kinds = [kind for kind, p in probability.items() if draws[kind] < p]
    if not kinds or draws[fallback] < config.devices.probability[fallback]:
        kinds.append(fallback)
    kinds = [kind for kind in DEVICE_KINDS if kind in kinds]
    devices = tuple(
        sample_device(kind, anatomy, rng, pacemaker_left=config.devices.pacemaker_left) for kind in kinds
    )
    return devices, probability


def _sample_lesions(strengths: dict[str, float], a: Anatomy, rng: np.random.Generator) -> dict[str, Any]:
    """Geometry of each finding with a visual signature (only for findings rendered with strength > 0)."""
    w, top, cp = a.thorax_half_width, a.lung_top, a.costophrenic_y
    side = lambda: "left" if rng.random() < 0.5 else "right"  # noqa: E731
    sign = lambda s: 1.0 if s == "left" else -1.0  # noqa: E731
    lesions: dict[str, Any] = {}
    if strengths["Pleural Effusion"] > 0:
        r = rng.random()
        sides = ["right", "left"] if r < 0.45 else (["right"] if r < 0.75 else ["left"])
        lesions["Pleural Effusion"] = {
            "sides": sides,
            "height": {s: float(rng.uniform(0.22, 0.45)) for s in sides},  # fraction of lung height
        }
    if strengths["Pneumothorax"] > 0:
        s = side()
        lesions["Pneumothorax"] = {"side": s, "depth": float(rng.uniform(0.07, 0.14))}
    if strengths["Lung Lesion"] > 0:
        s = side()
        lesions["Lung Lesion"] = {
            "side": s,
            "center": [
                sign(s) * float(rng.uniform(0.3, 0.65)) * w,
                float(rng.uniform(top + 0.25, cp - 0.35)),
            ],
            "radius": float(rng.uniform(0.035, 0.06)),
        }
    patchy = {"Lung Opacity": (0.25, 0.55), "Consolidation": (0.45, 0.2), "Pneumonia": (0.35, 0.4)}
    for finding, (density, patchiness) in patchy.items():
        if strengths[finding] > 0:
            s = side()
            low_zone = finding == "Pneumonia" or rng.random() < 0.5
            lesions[finding] = {
                "side": s,
                "center": [
                    sign(s) * float(rng.uniform(0.35, 0.6)) * w,
                    float(
                        rng.uniform(cp - 0.45, cp - 0.25) if low_zone else rng.uniform(top + 0.25, top + 0.55)
                    ),
                ],
                "radius": float(rng.uniform(0.18, 0.28)),
                "density": density,
                "patchiness": patchiness,
                "seed": int(rng.integers(0, 2**31 - 1)),
            }
    if strengths["Edema"] > 0:
        lesions["Edema"] = {"spread": float(rng.uniform(0.3, 0.4)), "seed": int(rng.integers(0, 2**31 - 1))}
    if strengths["Atelectasis"] > 0:
        s = side()
        lesions["Atelectasis"] = {
            "side": s,
            "center": [sign(s) * float(rng.uniform(0.35, 0.55)) * w, float(rng.uniform(cp - 0.32, cp - 0.2))],
            "length": float(rng.uniform(0.22, 0.32)),
            "angle": float(rng.uniform(-18, 18)),
        }
    if strengths["Fracture"] > 0:
        s = side()
        lesions["Fracture"] = {
            "side": s,
            "x": sign(s) * float(rng.uniform(0.55, 0.85)) * w,
            "rib": int(rng.integers(3, 7)),
        }
    if strengths["Pleural Other"] > 0:
        lesions["Pleural Other"] = {"side": side(), "thickness": float(rng.uniform(0.025, 0.04))}
    if strengths["Enlarged Cardiomediastinum"] > 0:
        lesions["Enlarged Cardiomediastinum"] = {
            "widening": 1.0 + 0.7 * strengths["Enlarged Cardiomediastinum"]
        }
    return lesions
