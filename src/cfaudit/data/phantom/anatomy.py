"""The phantom's latent anatomy: per-subject identity, per-study pose, and the attribute cues (sex, age, race, view).

Everything is in normalised image coordinates: ``x`` and ``y`` run from -1 to 1, ``y`` downwards, and the
patient's left is on the image's right (the radiological convention). A subject's identity (thorax size, lung
height, heart offset, rib spacing, texture phase...) is drawn once from the subject's own RNG and stays fixed
across their studies; each study adds pose, inspiration and exposure jitter and the age-dependent cues.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cfaudit.data.phantom.config import CuesConfig


@dataclass(frozen=True)
class SubjectIdentity:
    """What stays fixed across one subject's studies."""

    thorax_half_width: float  # inner rib cage half-width, before sex scaling
    lung_top: float  # y of the lung apices
    costophrenic_y: float  # y of the costophrenic angles
    dome_rise: float  # how far the diaphragm domes rise above the costophrenic angles
    neck_half_width: float
    shoulder_extra: float  # shoulders beyond the rib cage
    heart_offset: float  # additive offset of this subject's cardiothoracic ratio
    heart_shift: float  # fraction of the heart's width right of the midline (patient's right)
    mediastinum_half_width: float
    rib_spacing: float
    rib_phase: float
    breast: float  # 0..1 size of the breast shadows (used for female subjects)
    texture_phase: float
    vessel_seed: int

    @classmethod
    def sample(cls, rng: np.random.Generator) -> SubjectIdentity:
        return cls(
            thorax_half_width=float(rng.normal(0.72, 0.025)),
            lung_top=float(rng.normal(-0.74, 0.02)),
            costophrenic_y=float(rng.normal(0.56, 0.025)),
            dome_rise=float(rng.normal(0.30, 0.025)),
            neck_half_width=float(rng.normal(0.16, 0.012)),
            shoulder_extra=float(rng.normal(0.20, 0.02)),
            heart_offset=float(rng.normal(0.0, 0.012)),
            heart_shift=float(rng.normal(0.36, 0.025)),
            mediastinum_half_width=float(rng.normal(0.125, 0.008)),
            rib_spacing=float(rng.normal(0.128, 0.006)),
            rib_phase=float(rng.uniform(0.0, 1.0)),
            breast=float(rng.uniform(0.5, 1.0)),
            texture_phase=float(rng.uniform(0.0, 2 * math.pi)),
            vessel_seed=int(rng.integers(0, 2**31 - 1)),
        )


@dataclass(frozen=True)
class Anatomy:
    """The rendered anatomy of one image (identity + study + cues), all the renderer needs besides findings.

    Relations with an effect ``anatomy.<name>`` shift one of these numbers (see :data:`ANATOMY_PARAMETERS`).
    """

    thorax_half_width: float
    lung_top: float
    costophrenic_y: float
    dome_right: float  # y of the top of the right hemidiaphragm (image left)
    dome_left: float
    neck_half_width: float
    shoulder_half_width: float
    heart_ctr: float  # rendered cardiothoracic ratio (heart width / inner thoracic width)
    heart_center_y: float
    heart_half_height: float
    heart_shift: float
    mediastinum_half_width: float
    aortic_knob: float  # radius of the aortic knob; grows with age (unfolding)
    bone_density: float  # brightness of ribs, clavicles and spine; falls with age
    breast: float  # 0 for male subjects
    rib_spacing: float
    rib_phase: float
    scapula: float  # 1 for AP (scapulae over the lung fields), 0 for PA
    rotation: float  # degrees
    shift_x: float
    shift_y: float
    exposure: float
    texture_frequency: float  # cycles per image width of the faint race-group grating
    texture_angle: float  # degrees
    texture_amplitude: float
    texture_phase: float
    noise: float
    vessel_seed: int

    def shifted(self, name: str, amount: float) -> Anatomy:
        return dataclasses.replace(self, **{name: getattr(self, name) + amount})

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


#: The values each parameter may take once the relations have shifted it (image coordinates run from -1 to 1;
#: the defaults stay well inside). Beyond them the renderer would draw no chest (a negative heart, a thorax wider
#: than the image), so a relation that pushes a parameter out is an error, not a silent impossible ground truth.
ANATOMY_RANGES: dict[str, tuple[float, float]] = {
    "thorax_half_width": (0.3, 1.0), "lung_top": (-1.0, 0.0), "costophrenic_y": (0.0, 1.0),
    "dome_right": (-0.3, 0.9), "dome_left": (-0.3, 0.9), "neck_half_width": (0.03, 0.5),
    "shoulder_half_width": (0.3, 1.6), "heart_ctr": (0.2, 0.95), "heart_center_y": (-0.5, 0.8),
    "heart_half_height": (0.1, 0.7), "heart_shift": (-0.2, 0.8), "mediastinum_half_width": (0.03, 0.4),
    "aortic_knob": (0.0, 0.25), "bone_density": (0.0, 3.0), "breast": (0.0, 3.0), "rib_spacing": (0.04, 0.4),
    "scapula": (0.0, 1.0), "rotation": (-20.0, 20.0), "shift_x": (-0.3, 0.3), "shift_y": (-0.3, 0.3),
    "exposure": (0.3, 3.0), "texture_frequency": (0.0, 64.0), "texture_angle": (-720.0, 720.0),
    "texture_amplitude": (0.0, 0.2), "noise": (0.0, 0.2),
}  # fmt: skip


#: Names a relation may target as ``anatomy.<name>`` (continuous, rendered parameters).
ANATOMY_PARAMETERS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(Anatomy) if f.name not in ("vessel_seed", "texture_phase", "rib_phase")
)


def study_anatomy(
    identity: SubjectIdentity,
    *,
    sex: str,
    age: float,
    view: str,
    true_race: str,
    ctr: float,
    cues: CuesConfig,
    rng: np.random.Generator,
) -> Anatomy:
    """Combine a subject's identity with one study's age, view and jitter, applying the attribute cues.

    ``ctr`` is the cardiothoracic ratio before the view's magnification (chosen from the Cardiomegaly state).
    """
    decades = (age - 50.0) / 10.0
    male = sex == "M"
    half_width = identity.thorax_half_width * (cues.male_thorax_scale if male else 1.0)
    shoulder = identity.shoulder_extra * (cues.male_shoulder_scale if male else 1.0)
    inspiration = float(rng.normal(0.0, 0.02))
    dome_right = identity.costophrenic_y - identity.dome_rise + inspiration
    ap = view == "AP"
    magnification = cues.ap_heart_magnification if ap else 1.0
    heart_ctr = (ctr + identity.heart_offset + cues.heart_ctr_per_decade * decades) * magnification
    texture = cues.race_texture[true_race]
    return Anatomy(
        thorax_half_width=half_width,
        lung_top=identity.lung_top + 0.5 * inspiration,
        costophrenic_y=identity.costophrenic_y + inspiration,
        dome_right=dome_right,
        dome_left=dome_right + float(rng.normal(0.045, 0.01)),
        neck_half_width=identity.neck_half_width * (1.1 if male else 1.0),
        shoulder_half_width=half_width + shoulder,
        heart_ctr=heart_ctr,
        heart_center_y=float(dome_right - 0.05 + rng.normal(0, 0.01)),
        heart_half_height=float(0.3 + 0.2 * (heart_ctr - 0.45)),
        heart_shift=identity.heart_shift,
        mediastinum_half_width=identity.mediastinum_half_width,
        aortic_knob=max(0.0, 0.05 + cues.aortic_knob_per_decade * decades),
        bone_density=max(0.15, 1.0 + cues.bone_density_per_decade * decades),
        breast=0.0 if male else identity.breast * cues.female_breast_shadow,
        rib_spacing=identity.rib_spacing,
        rib_phase=identity.rib_phase,
        scapula=1.0 if ap else 0.0,
        rotation=float(rng.normal(0.0, 1.2)),
        shift_x=float(rng.normal(0.0, 0.015)),
        shift_y=float(rng.normal(0.0, 0.015)),
        exposure=float(rng.normal(1.0, 0.04)),
        texture_frequency=texture.frequency,
        texture_angle=texture.angle,
        texture_amplitude=cues.race_texture_amplitude,
        texture_phase=identity.texture_phase,
        noise=cues.noise,
        vessel_seed=identity.vessel_seed,
    )
