"""The phantom's declarative YAML config: dataclasses, validation, and the planted relations.

Every key is documented in ``configs/default.yaml``. Loading is strict (:mod:`cfaudit.config_files`): an unknown
key, a value of the wrong type or out of range, or a relation naming an unknown cause or effect raises one
:class:`CfauditError` that names the file and the key path (``relations[0].p_if_present``). ``PhantomConfig.to_dict()`` gives the fully resolved config
(written into ``phantom.json``) and ``PhantomConfig.from_dict`` reads it back, so a config round-trips.

Relations
---------
A relation links a cause to an effect with a stated strength. Causes are metadata: ``age``, ``sex``, ``race``,
``view`` or any of the 14 CheXpert findings. Effects are a metadata finding (``Pleural Effusion``) or a hidden
visual feature: a device kind (``device.pacemaker``) or a rendered anatomy parameter (``anatomy.bone_density``).

* A *binary* cause is a finding (present when its state is 1; 0, -1 and blank count as absent) or
  ``sex``/``race``/``view`` together with ``value`` (present when the attribute equals it).
* ``age`` is a *continuous* cause measured in decades from ``reference_age``.

Forms (exactly one per relation):

=======================  ===========  ========================================================================
keys                     cause        meaning
=======================  ===========  ========================================================================
p_if_present/absent      binary       P(effect) = p_if_present when the cause is present, else p_if_absent
log_odds_per_decade      age          logit P(effect) += slope * (age - reference_age) / 10
shift_if_present         binary       an anatomy parameter += shift when the cause is present
shift_per_decade         age          an anatomy parameter += shift * (age - reference_age) / 10
=======================  ===========  ========================================================================

How they act: device probabilities are *given Support Devices = 1* (devices are drawn only for images whose
metadata says Support Devices = 1, so the metadata stays true); ``p_if_*`` replaces the kind's base probability
and ``log_odds_per_decade`` shifts its current log-odds. For a metadata finding, the sampled label-table states
are re-drawn so that, within each stratum of the cause (present/absent, or 5-year age bin),
P(finding = 1) becomes the stated probability (``p_if_*``) or the stratum's own rate with the log-odds shift
(age), keeping the rest of each record as sampled. Relations apply in list order; later ones act on the result
of earlier ones. Ground truth (``ground_truth/summary.csv``) records every effect so its strength can be
recovered and compared with the config.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfaudit.config_files import check_keys, read_yaml
from cfaudit.data.vocabulary import RACES, UNKNOWN, canonical_finding
from cfaudit.errors import CfauditError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BUILTIN_LABEL_TABLE = "builtin"
DEVICE_KINDS: tuple[str, ...] = (
    "pacemaker",
    "chest_tube",
    "central_line",
    "endotracheal_tube",
    "nasogastric_tube",
    "ecg_leads",
)
METADATA_RACES: tuple[str, ...] = (*RACES, UNKNOWN)
BINARY_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "sex": ("M", "F"),
    "race": METADATA_RACES,
    "view": ("AP", "PA"),
}
IMAGE_FORMATS = ("png", "jpeg")
#: The phantom's default shares of subjects by recorded race: Asian, White and Black as in the paper's training
#: split (Table 1: 2.9 / 54.9 / 14.3%), a tenth recorded as Unknown, and the rest Other.
PAPER_RACE_SHARES: dict[str, float] = {
    "Asian": 0.029,
    "White": 0.549,
    "Black": 0.143,
    "Other": 0.179,
    "Unknown": 0.1,
}


def default_config_path(name: str = "default") -> Path:
    """The path of a shipped config (``default`` or ``null``)."""
    return CONFIG_DIR / f"{name}.yaml"


@dataclass(frozen=True)
class ImageConfig:
    size: int = 256
    format: str = "png"
    jpeg_quality: int = 92
    png_compress_level: int = 1


@dataclass(frozen=True)
class PopulationConfig:
    n: int = 1000
    studies_per_subject: tuple[float, ...] = (0.45, 0.30, 0.15, 0.10)
    years_between_studies: tuple[float, float] = (0.2, 3.0)
    race: dict[str, float] = field(default_factory=lambda: dict(PAPER_RACE_SHARES))


@dataclass(frozen=True)
class FindingsConfig:
    uncertain_strength: float = 0.5
    ctr_normal: tuple[float, float] = (0.40, 0.48)
    ctr_cardiomegaly: tuple[float, float] = (0.55, 0.65)


@dataclass(frozen=True)
class Texture:
    frequency: float
    angle: float


@dataclass(frozen=True)
class CuesConfig:
    ap_heart_magnification: float = 1.06
    heart_ctr_per_decade: float = 0.004
    bone_density_per_decade: float = -0.08
    aortic_knob_per_decade: float = 0.006
    male_thorax_scale: float = 1.07
    male_shoulder_scale: float = 1.3
    female_breast_shadow: float = 1.0
    race_texture_amplitude: float = 0.012
    race_texture: dict[str, Texture] = field(
        default_factory=lambda: {
            "Asian": Texture(9.0, 30.0),
            "White": Texture(12.0, 60.0),
            "Black": Texture(15.0, 120.0),
            "Other": Texture(18.0, 150.0),
        }
    )
    noise: float = 0.02


@dataclass(frozen=True)
class DevicesConfig:
    fallback: str = "ecg_leads"
    probability: dict[str, float] = field(
        default_factory=lambda: {
            "pacemaker": 0.12,
            "chest_tube": 0.2,
            "central_line": 0.45,
            "endotracheal_tube": 0.3,
            "nasogastric_tube": 0.3,
            "ecg_leads": 0.25,
        }
    )
    pacemaker_left: float = 0.85


@dataclass(frozen=True)
class Relation:
    """One planted relation; see the module docstring for the forms."""

    cause: str
    effect: str
    value: str | None = None
    p_if_present: float | None = None
    p_if_absent: float | None = None
    log_odds_per_decade: float | None = None
    shift_if_present: float | None = None
    shift_per_decade: float | None = None
    reference_age: float = 60.0

    @property
    def effect_kind(self) -> str:
        """``finding``, ``device`` or ``anatomy``."""
        if self.effect.startswith("device."):
            return "device"
        if self.effect.startswith("anatomy."):
            return "anatomy"
        return "finding"

    @property
    def effect_name(self) -> str:
        return self.effect.split(".", 1)[1] if self.effect_kind != "finding" else self.effect

    def label(self) -> str:
        cause = f"{self.cause}={self.value}" if self.value is not None else self.cause
        return f"{cause} -> {self.effect}"


@dataclass(frozen=True)
class PhantomConfig:
    image: ImageConfig = field(default_factory=ImageConfig)
    population: PopulationConfig = field(default_factory=PopulationConfig)
    label_table: str = BUILTIN_LABEL_TABLE
    findings: FindingsConfig = field(default_factory=FindingsConfig)
    cues: CuesConfig = field(default_factory=CuesConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    relations: tuple[Relation, ...] = ()
    source: str = "<defaults>"

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what ``phantom.json`` records); ``source`` is left out."""
        data = dataclasses.asdict(self)
        data.pop("source")
        data["relations"] = [
            {
                k: v
                for k, v in relation.items()
                if v is not None and (k != "reference_age" or relation["cause"] == "age")
            }
            for relation in data["relations"]
        ]
        return _plain(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> PhantomConfig:
        return _Parser(source).config(data)

    def with_overrides(self, *, n: int | None = None, size: int | None = None) -> PhantomConfig:
        """The config with the CLI's ``--n`` / ``--size`` applied."""
        config = self
        if n is not None:
            if n < 1:
                raise CfauditError(f"--n must be at least 1 (got {n})")
            config = dataclasses.replace(config, population=dataclasses.replace(config.population, n=n))
        if size is not None:
            if not 16 <= size <= 2048:
                raise CfauditError(f"--size must be between 16 and 2048 pixels (got {size})")
            config = dataclasses.replace(config, image=dataclasses.replace(config.image, size=size))
        return config


def load_config(path: str | os.PathLike[str] | None = None) -> PhantomConfig:
    """Read and validate a phantom YAML config (``None``: the shipped default)."""
    path = Path(path) if path is not None else default_config_path()
    data = read_yaml(path, missing=f"no such phantom config; give a YAML file (see {default_config_path()})")
    config = _Parser(str(path)).config(data if data is not None else {})
    label_table = config.label_table
    if label_table != BUILTIN_LABEL_TABLE and not Path(label_table).is_absolute():
        label_table = str((path.parent / label_table).resolve())
    return dataclasses.replace(config, label_table=label_table, source=str(path))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _Parser:
    """Strict reader of the config tree; every error names the file and the key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> CfauditError:
        return CfauditError(f"phantom config {self.source}: {where}: {message}")

    def mapping(self, data: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where or "top level", f"expected a mapping of keys, got {type(data).__name__}")
        check_keys(data, allowed, f"phantom config {self.source}", where)
        return data

    def number(self, value: Any, where: str, low: float | None = None, high: float | None = None) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(float(value)):
            raise self.fail(where, f"expected a number, got {value!r}")
        value = float(value)
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{'-inf' if low is None else f'{low:g}'}..{'inf' if high is None else f'{high:g}'}"
            raise self.fail(where, f"{value:g} is outside {bounds}")
        return value

    def integer(self, value: Any, where: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"expected a whole number, got {value!r}")
        if not low <= value <= high:
            raise self.fail(where, f"{value} is outside {low}..{high}")
        return value

    def probability(self, value: Any, where: str) -> float:
        return self.number(value, where, 0.0, 1.0)

    def pair(self, value: Any, where: str, low: float, high: float) -> tuple[float, float]:
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise self.fail(where, f"expected [low, high], got {value!r}")
        first, second = (self.number(v, f"{where}[{i}]", low, high) for i, v in enumerate(value))
        if first > second:
            raise self.fail(where, f"low {first:g} is above high {second:g}")
        return first, second

    def config(self, data: Any) -> PhantomConfig:
        keys = ("image", "population", "label_table", "findings", "cues", "devices", "relations")
        data = self.mapping(data, "", keys)
        label_table = data.get("label_table", BUILTIN_LABEL_TABLE)
        if not isinstance(label_table, str) or not label_table.strip():
            raise self.fail(
                "label_table", f"expected '{BUILTIN_LABEL_TABLE}' or a CSV path, got {label_table!r}"
            )
        devices = self.devices(data.get("devices", {}))
        relations = data.get("relations") or []
        if not isinstance(relations, list):
            raise self.fail("relations", "expected a list of relations")
        return PhantomConfig(
            image=self.image(data.get("image", {})),
            population=self.population(data.get("population", {})),
            label_table=label_table,
            findings=self.findings(data.get("findings", {})),
            cues=self.cues(data.get("cues", {})),
            devices=devices,
            relations=tuple(self.relation(r, f"relations[{i}]", devices) for i, r in enumerate(relations)),
            source=self.source,
        )

    def image(self, data: Any) -> ImageConfig:
        data = self.mapping(data, "image", tuple(f.name for f in dataclasses.fields(ImageConfig)))
        base = ImageConfig()
        image_format = data.get("format", base.format)
        if image_format not in IMAGE_FORMATS:
            raise self.fail("image.format", f"{image_format!r} is not one of {', '.join(IMAGE_FORMATS)}")
        return ImageConfig(
            size=self.integer(data.get("size", base.size), "image.size", 16, 2048),
            format=image_format,
            jpeg_quality=self.integer(
                data.get("jpeg_quality", base.jpeg_quality), "image.jpeg_quality", 1, 100
            ),
            png_compress_level=self.integer(
                data.get("png_compress_level", base.png_compress_level), "image.png_compress_level", 0, 9
            ),
        )

    def population(self, data: Any) -> PopulationConfig:
        data = self.mapping(data, "population", tuple(f.name for f in dataclasses.fields(PopulationConfig)))
        base = PopulationConfig()
        studies = data.get("studies_per_subject", list(base.studies_per_subject))
        if not isinstance(studies, list | tuple) or not 1 <= len(studies) <= 10:
            raise self.fail("population.studies_per_subject", "expected a list of 1..10 probabilities")
        studies = tuple(
            self.probability(p, f"population.studies_per_subject[{i}]") for i, p in enumerate(studies)
        )
        if abs(sum(studies) - 1.0) > 1e-6:
            raise self.fail("population.studies_per_subject", f"probabilities sum to {sum(studies):g}, not 1")
        race = data.get("race", base.race)
        race = self.mapping(race, "population.race", METADATA_RACES)
        race = {
            name: self.probability(race.get(name, 0.0), f"population.race.{name}") for name in METADATA_RACES
        }
        if abs(sum(race.values()) - 1.0) > 1e-6:
            raise self.fail("population.race", f"proportions sum to {sum(race.values()):g}, not 1")
        if sum(race[name] for name in RACES) <= 0:
            raise self.fail(
                "population.race", "at least one of Asian/White/Black/Other needs a proportion above 0"
            )
        return PopulationConfig(
            n=self.integer(data.get("n", base.n), "population.n", 1, 10_000_000),
            studies_per_subject=studies,
            years_between_studies=self.pair(
                data.get("years_between_studies", list(base.years_between_studies)),
                "population.years_between_studies",
                0.0,
                20.0,
            ),
            race=race,
        )

    def findings(self, data: Any) -> FindingsConfig:
        data = self.mapping(data, "findings", tuple(f.name for f in dataclasses.fields(FindingsConfig)))
        base = FindingsConfig()
        return FindingsConfig(
            uncertain_strength=self.probability(
                data.get("uncertain_strength", base.uncertain_strength), "findings.uncertain_strength"
            ),
            ctr_normal=self.pair(
                data.get("ctr_normal", list(base.ctr_normal)), "findings.ctr_normal", 0.2, 0.8
            ),
            ctr_cardiomegaly=self.pair(
                data.get("ctr_cardiomegaly", list(base.ctr_cardiomegaly)),
                "findings.ctr_cardiomegaly",
                0.2,
                0.8,
            ),
        )

    def cues(self, data: Any) -> CuesConfig:
        names = tuple(f.name for f in dataclasses.fields(CuesConfig))
        data = self.mapping(data, "cues", names)
        base = CuesConfig()
        ranges = {
            "ap_heart_magnification": (0.8, 1.5),
            "heart_ctr_per_decade": (-0.05, 0.05),
            "bone_density_per_decade": (-0.3, 0.3),
            "aortic_knob_per_decade": (-0.05, 0.05),
            "male_thorax_scale": (0.8, 1.3),
            "male_shoulder_scale": (0.5, 2.0),
            "female_breast_shadow": (0.0, 2.0),
            "race_texture_amplitude": (0.0, 0.2),
            "noise": (0.0, 0.3),
        }
        values: dict[str, Any] = {
            name: self.number(data.get(name, getattr(base, name)), f"cues.{name}", *bounds)
            for name, bounds in ranges.items()
        }
        textures = self.mapping(data.get("race_texture", {}), "cues.race_texture", RACES)
        resolved = dict(base.race_texture)
        for race, spec in textures.items():
            where = f"cues.race_texture.{race}"
            spec = self.mapping(spec, where, ("frequency", "angle"))
            resolved[race] = Texture(
                frequency=self.number(
                    spec.get("frequency", base.race_texture[race].frequency), f"{where}.frequency", 0.0, 64.0
                ),
                angle=self.number(
                    spec.get("angle", base.race_texture[race].angle), f"{where}.angle", -360, 360
                ),
            )
        return CuesConfig(**values, race_texture=resolved)

    def devices(self, data: Any) -> DevicesConfig:
        data = self.mapping(data, "devices", ("fallback", "probability", "pacemaker_left"))
        base = DevicesConfig()
        fallback = data.get("fallback", base.fallback)
        if fallback not in DEVICE_KINDS:
            raise self.fail(
                "devices.fallback", f"unknown device kind {fallback!r}; kinds: {', '.join(DEVICE_KINDS)}"
            )
        given = self.mapping(data.get("probability", {}), "devices.probability", DEVICE_KINDS)
        probability = {
            kind: self.probability(given.get(kind, base.probability[kind]), f"devices.probability.{kind}")
            for kind in DEVICE_KINDS
        }
        return DevicesConfig(
            fallback=fallback,
            probability=probability,
            pacemaker_left=self.probability(
                data.get("pacemaker_left", base.pacemaker_left), "devices.pacemaker_left"
            ),
        )

    def relation(self, data: Any, where: str, devices: DevicesConfig) -> Relation:
        from cfaudit.data.phantom.anatomy import ANATOMY_PARAMETERS

        keys = tuple(f.name for f in dataclasses.fields(Relation))
        data = self.mapping(data, where, keys)
        for required in ("cause", "effect"):
            if not isinstance(data.get(required), str):
                raise self.fail(f"{where}.{required}", "missing; give a name (see the config's comments)")
        cause, effect = data["cause"].strip(), data["effect"].strip()
        continuous = cause == "age"
        if cause not in ("age", *BINARY_ATTRIBUTES):
            try:
                cause = canonical_finding(cause)
            except CfauditError:
                raise self.fail(
                    f"{where}.cause",
                    f"unknown cause {cause!r}; use age, sex, race, view or one of the 14 findings",
                ) from None
        if cause == "No Finding":
            # a record that gains the effect loses No Finding, so the relation would undo its own cause
            raise self.fail(
                f"{where}.cause", "No Finding is the absence of the others; plant from a finding instead"
            )
        value = data.get("value")
        if cause in BINARY_ATTRIBUTES:
            valid = BINARY_ATTRIBUTES[cause]
            if value is None or str(value) not in valid:
                raise self.fail(
                    f"{where}.value", f"cause {cause} needs value: one of {', '.join(valid)} (got {value!r})"
                )
            value = str(value)
        elif value is not None:
            raise self.fail(
                f"{where}.value", f"only sex, race and view causes take a value (cause is {cause})"
            )

        if effect.startswith("device."):
            kind = effect.split(".", 1)[1]
            if kind not in DEVICE_KINDS:
                raise self.fail(
                    f"{where}.effect", f"unknown device kind {kind!r}; kinds: {', '.join(DEVICE_KINDS)}"
                )
            if kind == devices.fallback:
                raise self.fail(
                    f"{where}.effect",
                    f"{kind} is devices.fallback (drawn whenever no other device is), so its rate cannot be planted; "
                    "choose another fallback or another effect",
                )
            if cause == "Support Devices":
                raise self.fail(
                    where,
                    "devices are drawn only for Support Devices = 1, so a relation from Support Devices to a device "
                    "kind could never use its p_if_absent; set the kind's rate in devices.probability instead",
                )
            effect_kind = "binary"
        elif effect.startswith("anatomy."):
            name = effect.split(".", 1)[1]
            if name not in ANATOMY_PARAMETERS:
                raise self.fail(
                    f"{where}.effect",
                    f"unknown anatomy parameter {name!r}; parameters: {', '.join(ANATOMY_PARAMETERS)}",
                )
            effect_kind = "continuous"
        else:
            try:
                effect = canonical_finding(effect)
            except CfauditError:
                raise self.fail(
                    f"{where}.effect",
                    f"unknown effect {effect!r}; use a finding, device.<kind> ({', '.join(DEVICE_KINDS)}) "
                    "or anatomy.<parameter>",
                ) from None
            if effect == "No Finding":
                raise self.fail(
                    f"{where}.effect", "No Finding is the absence of the others; plant a finding instead"
                )
            effect_kind = "binary"
        if effect == cause:
            raise self.fail(where, f"cause and effect are both {cause}")

        forms = {
            ("binary", False): ("p_if_present", "p_if_absent"),
            ("binary", True): ("log_odds_per_decade",),
            ("continuous", False): ("shift_if_present",),
            ("continuous", True): ("shift_per_decade",),
        }
        needed = forms[(effect_kind, continuous)]
        strength_keys = (
            "p_if_present",
            "p_if_absent",
            "log_odds_per_decade",
            "shift_if_present",
            "shift_per_decade",
        )
        given = [k for k in strength_keys if k in data]
        if sorted(given) != sorted(needed):
            kind_text = "age (a continuous cause)" if continuous else f"{cause} (a binary cause)"
            raise self.fail(
                where,
                f"a relation from {kind_text} to {effect} takes {' and '.join(needed)} (got {', '.join(given) or 'none'})",
            )
        numbers: dict[str, float] = {}
        for key in given:
            if key.startswith("p_"):
                numbers[key] = self.probability(data[key], f"{where}.{key}")
            else:
                numbers[key] = self.number(data[key], f"{where}.{key}", -10.0, 10.0)
        reference_age = self.number(data.get("reference_age", 60.0), f"{where}.reference_age", 0.0, 120.0)
        if "reference_age" in data and not continuous:
            raise self.fail(f"{where}.reference_age", "only age causes take a reference_age")
        return Relation(cause=cause, effect=effect, value=value, reference_age=reference_age, **numbers)
