"""Reading a phantom's ground truth: the part masks, and each image drawn again, as it was or with hidden
variables changed (the ground truth of an edit).

Every image of a phantom folder is drawn from a plan that the run's config and seed fix (``phantom.json``), so
the plan can be rebuilt exactly, and drawn again with, say, the anatomy of a patient 20 years older. The
difference between the two drawings (grain off in both) is the pixel pattern an ideal counterfactual would
change, and nothing else: benchmarks and tests project an edit onto it to ask whether the edit moved the
phantom's cues the right way and by how much (:meth:`PhantomReplay.cue_change`).

:func:`read_masks` reads the bit-packed label map of an image (``ground_truth/<id>_mask.png``) into one boolean
mask per part (``heart``, ``device.pacemaker``...).

Like the rest of the ground truth, this scores the tool; nothing in training, editing or discovery reads it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cfaudit.data.phantom.config import PhantomConfig
from cfaudit.data.phantom.generate import read_provenance
from cfaudit.data.phantom.label_table import load_label_table
from cfaudit.data.phantom.plan import ImagePlan, plan_image
from cfaudit.data.phantom.population import IMAGE_STREAM, sample_population, stream
from cfaudit.data.phantom.render import MASK_BITS, render
from cfaudit.errors import CfauditError

#: The age cues the phantom draws (``cfaudit.data.phantom.anatomy.study_anatomy``): per decade of age, the
#: aortic knob's radius grows and the bones' density falls. Heart size also creeps up with age, but it is
#: dominated by cardiomegaly, so it is scored by the heart measure, not as an age cue.
AGE_CUES: tuple[str, ...] = ("aortic_knob", "bone_density")


class PhantomReplay:
    """The plans of a phantom folder's images, rebuilt from its ``phantom.json``."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        provenance = read_provenance(self.folder)
        self.seed = int(provenance["seed"])
        self.config = PhantomConfig.from_dict(provenance["config"], source=str(self.folder / "phantom.json"))
        table = load_label_table(self.config.label_table)
        extension = "jpg" if self.config.image.format == "jpeg" else "png"
        self.population = sample_population(self.config, table, self.seed, extension)
        ids = self.population.metadata["image_id"].tolist()
        self._row = {image_id: row for row, image_id in enumerate(ids)}

    @property
    def size(self) -> int:
        return int(self.config.image.size)

    def plan(self, image_id: str) -> ImagePlan:
        """The plan the generator drew for ``image_id``."""
        if image_id not in self._row:
            raise CfauditError(f"{self.folder}: no image {image_id!r} in this phantom")
        index = self._row[image_id]
        record = self.population.metadata.iloc[index].to_dict()
        record["true_race"] = self.population.hidden.at[index, "true_race"]
        identity = self.population.identities[int(self.population.hidden.at[index, "subject_index"])]
        return plan_image(index, record, identity, self.config, stream(self.seed, IMAGE_STREAM, index))

    def render(
        self, image_id: str, size: int | None = None, *, grain: bool = True, **anatomy: float
    ) -> np.ndarray:
        """The image drawn again (uint8), at ``size`` (default: the folder's), optionally without its grain and
        with anatomy parameters replaced (``aortic_knob=0.07``)."""
        plan = self.plan(image_id)
        changes: dict[str, Any] = dict(anatomy)  # field names checked by replace()
        if not grain:
            changes["noise"] = 0.0
        if changes:
            plan = dataclasses.replace(plan, anatomy=dataclasses.replace(plan.anatomy, **changes))
        return render(plan, size or self.size).image

    def aged_anatomy(self, image_id: str, years: float) -> dict[str, float]:
        """The age-cue parameters (:data:`AGE_CUES`) of ``image_id``'s patient ``years`` older."""
        anatomy = self.plan(image_id).anatomy
        cues = self.config.cues
        decades = years / 10.0
        return {
            "aortic_knob": max(0.0, anatomy.aortic_knob + cues.aortic_knob_per_decade * decades),
            "bone_density": max(0.15, anatomy.bone_density + cues.bone_density_per_decade * decades),
        }

    def cue_change(self, image_id: str, years: float, size: int | None = None) -> np.ndarray:
        """What ``years`` of age change in the image's pixels (float, 0-1 scale; grain off in both drawings)."""
        before = self.render(image_id, size, grain=False).astype(np.float64)
        after = self.render(image_id, size, grain=False, **self.aged_anatomy(image_id, years))
        return (after.astype(np.float64) - before) / 255.0

    def race_grating(self, image_id: str, race: str | None = None, size: int | None = None) -> np.ndarray:
        """The faint grating the phantom draws over the body of ``image_id`` for ``race`` (default: the patient's
        own race, as drawn), at the patient's own phase: the picture with that grating minus the picture with
        none (float, 0-1 scale; grain off in both; all zero where the config draws no grating)."""
        changes: dict[str, float] = {}
        if race is not None:
            texture = self.config.cues.race_texture.get(race)
            if texture is None:
                raise CfauditError(f"{self.folder}: the phantom draws no grating for race {race!r}")
            changes = {"texture_frequency": texture.frequency, "texture_angle": texture.angle}
        drawn = self.render(image_id, size, grain=False, **changes).astype(np.float64)
        bare = self.render(image_id, size, grain=False, texture_amplitude=0.0)
        return (drawn - bare) / 255.0


def projected_change(change: np.ndarray, direction: np.ndarray) -> float:
    """How much of ``direction`` a pixel change holds: 1.0 is the whole of it, 0 none, negative the opposite way.

    Least squares: ``<change, direction> / <direction, direction>`` (0 when the direction is empty).
    """
    change = np.asarray(change, dtype=np.float64)
    direction = np.asarray(direction, dtype=np.float64)
    if change.shape != direction.shape:
        raise ValueError(f"change {change.shape} and direction {direction.shape} differ in shape")
    norm = float((direction * direction).sum())
    return float((change * direction).sum() / norm) if norm > 0 else 0.0


def grating_energy(image: np.ndarray, grating: np.ndarray) -> float:
    """The power of ``image`` at the spatial frequencies where ``grating`` has its own, at any phase.

    The image's power spectrum weighted by the grating's (normalised to sum 1): a matched filter that does not
    care where the grating's stripes fall, since an edit may draw a race's grating at another phase than the
    phantom's. ``nan`` for an empty grating.
    """
    image = np.asarray(image, dtype=np.float64)
    grating = np.asarray(grating, dtype=np.float64)
    if image.shape != grating.shape:
        raise ValueError(f"image {image.shape} and grating {grating.shape} differ in shape")
    weight = np.abs(np.fft.fft2(grating)) ** 2
    total = float(weight.sum())
    if total <= 0.0:
        return float("nan")
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    return float((weight * power).sum() / total)


def read_masks(folder: str | os.PathLike[str], image_id: str) -> dict[str, np.ndarray]:
    """Every part's boolean mask of one image (keys as in :data:`~cfaudit.data.phantom.render.MASK_BITS`)."""
    path = Path(folder) / "ground_truth" / f"{image_id}_mask.png"
    if not path.is_file():
        raise CfauditError(f"{path}: not found; is {folder} a folder written by `cfaudit phantom`?")
    packed = np.asarray(Image.open(path)).astype(np.int64)
    return {name: (packed >> bit) & 1 == 1 for name, bit in MASK_BITS.items()}
