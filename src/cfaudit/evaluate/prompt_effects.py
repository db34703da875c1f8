"""Do a model's prompts edit what they name? Four interventions on phantom images, scored against its truth.

For each image of a phantom (one the model never saw), the editor makes the edits that apply to it, all from one
inversion, and each is scored by what it should have changed:

``do(Cardiomegaly=0)`` on images with cardiomegaly (and no effusion, beside which the heart measure fails)
    *shrunk*: the phantom's heart width ratio, read from the pixels, is smaller in the counterfactual than in
    the reconstruction;
``do(Cardiomegaly=1)`` on images without it
    *flipped*: the attribute classifier calls the counterfactual cardiomegaly, among images it did not already;
``do(sex=<the other>)``
    *flipped*: the classifier's sex decision changes;
``do(age=+20)`` on patients up to 70
    *right way*: the counterfactual's change, projected onto what the phantom itself draws for 20 more years
    (a larger aortic knob, fainter bones: :meth:`~cfaudit.data.phantom.ground_truth.PhantomReplay.cue_change`),
    is positive; ``effect`` is that projection (1.0: as much as the phantom would draw).
``do(race=<another group>)`` (:data:`RACE_TARGETS`) on patients of a group the phantom draws a grating for
    *half a swap*: the phantom marks race by a faint grating whose frequency and angle are the group's, so the
    edit should add the new group's grating and remove the patient's own. The edit's shift is the log-ratio
    (counterfactual against reconstruction) of the image's power at the new group's grating frequencies minus
    the same at the old group's (:func:`~cfaudit.data.phantom.ground_truth.grating_energy`, blind to the
    phase); ``effect`` is that shift as a share of the shift the phantom itself makes when it draws the same
    patient of the named group (:func:`race_swap_shift`: 1.0, as far as a real patient of that group), and the
    edit counts when it goes at least half that way. A sharpening or blurring edit moves both gratings alike
    and scores about zero.

The age effect is judged against chance (50%), so read its mean effect beside the share.

:func:`race_sample_share` asks the same of generation rather than editing: do samples prompted with one group and
with another (the same patients otherwise, the same seeds) differ in their gratings as real patients of the two
groups do?

Prompts are ``partial`` (the paper's: only the change is named), ``full`` or ``contrast``
(:data:`cfaudit.data.interventions.PROMPT_MODES`). Each rate comes with a 95% Wilson
interval over images.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cfaudit.data.images import load_model_tensor
from cfaudit.data.interventions import DEFAULT_PROMPT_MODE, Intervention, source_prompt
from cfaudit.data.phantom.ground_truth import PhantomReplay, grating_energy, projected_change
from cfaudit.data.phantom.measure import heart_width_ratio
from cfaudit.data.records import DataIndex
from cfaudit.edit.editor import CounterfactualEditor, EditSettings
from cfaudit.edit.inversion import InversionSettings
from cfaudit.edit.job import edit_target

#: The effects, in report order, with the test that makes an edit count and the share the issue asks for.
EFFECTS: dict[str, str] = {
    "cardiomegaly_removed": "heart shrunk",
    "cardiomegaly_added": "classifier flipped",
    "sex_swapped": "classifier flipped",
    "age_plus_20": "age cues moved the right way",
    "race_changed": "at least half a real swap of the gratings",
}
AGE_YEARS = 20.0
#: The group each race edit names, by the patient's recorded group (the two largest swap; the others go to
#: the largest). Patients of other recorded values (Unknown) are not edited.
RACE_TARGETS: dict[str, str] = {"White": "Black", "Black": "White", "Asian": "White", "Other": "White"}


@dataclass(frozen=True)
class EffectSummary:
    effect: str
    n: int
    rate: float
    low: float
    high: float
    mean_effect: float
    meaning: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class PromptEffects:
    rows: pd.DataFrame  # one row per edit
    summaries: list[EffectSummary] = field(default_factory=list)
    seconds_per_edit: float = 0.0
    #: with ``keep_images``: every counterfactual and each image's reconstruction (``[0, 1]`` arrays)
    counterfactuals: list[np.ndarray] = field(default_factory=list)
    reconstructions: list[np.ndarray] = field(default_factory=list)

    def table(self) -> str:
        lines = ["| effect | n | share [95% CI] | mean effect | counted when |", "|---|---|---|---|---|"]
        for s in self.summaries:
            lines.append(
                f"| {s.effect} | {s.n} | {s.rate:.0%} [{s.low:.0%}, {s.high:.0%}] | {s.mean_effect:+.3f} | "
                f"{s.meaning} |"
            )
        return "\n".join(lines)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (``(nan, nan)`` for ``n = 0``)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def plan_cases(table: pd.DataFrame, images: int) -> dict[str, list[int]]:
    """Row positions of ``table`` that each effect uses: the first ``images`` eligible rows per effect."""
    cardiomegaly = table["Cardiomegaly"].fillna(0) == 1
    effusion = table["Pleural Effusion"].fillna(0) == 1
    eligible = {
        "cardiomegaly_removed": cardiomegaly & ~effusion,
        "cardiomegaly_added": ~cardiomegaly,
        "sex_swapped": table["sex"].isin(["Male", "Female"]),
        "age_plus_20": table["age"] <= 90 - AGE_YEARS,
        "race_changed": table["race"].isin(list(RACE_TARGETS)),
    }
    return {name: list(np.flatnonzero(mask.to_numpy())[:images]) for name, mask in eligible.items()}


def intervention_for(effect: str, record: dict[str, Any]) -> Intervention:
    if effect == "cardiomegaly_removed":
        return Intervention.parse("Cardiomegaly=0")
    if effect == "cardiomegaly_added":
        return Intervention.parse("Cardiomegaly=1")
    if effect == "sex_swapped":
        return Intervention.parse("sex=" + ("female" if record["sex"] == "Male" else "male"))
    if effect == "race_changed":
        return Intervention.parse(f"race={RACE_TARGETS[record['race']]}")
    return Intervention.parse(f"age=+{AGE_YEARS:g}")


def _unit(image: torch.Tensor) -> np.ndarray:
    return ((image.float().cpu().numpy() + 1.0) / 2.0).clip(0.0, 1.0)


def _resized(change: np.ndarray, size: int) -> np.ndarray:
    if change.shape[0] == size:
        return change
    return np.asarray(
        Image.fromarray(change.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
    )


def measure_prompt_effects(
    editor: CounterfactualEditor,
    phantom: str | Path,
    index: DataIndex,
    classifier: Any,
    *,
    images: int = 24,
    mode: str = DEFAULT_PROMPT_MODE,
    inversion: InversionSettings | None = None,
    edit: EditSettings | None = None,
    batch: int = 8,
    effects: Sequence[str] = tuple(EFFECTS),
    keep_images: bool = False,
) -> PromptEffects:
    """Edit and score the first ``images`` eligible images of ``index`` (a phantom's index) for each effect."""
    inversion = inversion or InversionSettings()
    edit = edit or EditSettings()
    replay = PhantomReplay(phantom)
    table = index.table.reset_index(drop=True)
    cases = {name: rows for name, rows in plan_cases(table, images).items() if name in effects}
    by_row: dict[int, list[str]] = {}
    for name, rows in cases.items():
        for row in rows:
            by_row.setdefault(int(row), []).append(name)
    order = sorted(by_row)
    out: list[dict[str, Any]] = []
    kept_counterfactuals: list[np.ndarray] = []
    kept_reconstructions: list[np.ndarray] = []
    edits_done, started = 0, time.perf_counter()
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        records = [table.iloc[r].to_dict() for r in rows]
        pixels = torch.stack(
            [load_model_tensor(index.image_path(table.iloc[r]), editor.resolution) for r in rows]
        )
        prompts = [source_prompt(record) for record in records]
        plans = [
            [intervention_for(name, rec) for name in by_row[r]] for r, rec in zip(rows, records, strict=True)
        ]
        targets = [
            [edit_target(i, rec, mode) for i in plan] for plan, rec in zip(plans, records, strict=True)
        ]
        inversions = editor.invert(pixels.to(editor.device), prompts, inversion)
        results = editor.edit(inversions, prompts, targets, edit)
        for r, record, result in zip(rows, records, results, strict=True):
            reconstruction = _unit(result.reconstruction[0])
            counterfactuals = [_unit(c[0]) for c in result.counterfactuals]
            scores = classifier.predict([reconstruction, *counterfactuals])
            if keep_images:
                kept_reconstructions.append(reconstruction)
                kept_counterfactuals.extend(counterfactuals)
            for k, name in enumerate(by_row[r]):
                out.append(_score(name, record, reconstruction, counterfactuals[k], scores, k + 1, replay))
                out[-1]["unet_evals"] = float(result.unet_evals[k])
                edits_done += 1
    frame = pd.DataFrame(out)
    effects_result = PromptEffects(
        frame,
        seconds_per_edit=(time.perf_counter() - started) / max(edits_done, 1),
        counterfactuals=kept_counterfactuals,
        reconstructions=kept_reconstructions,
    )
    for name in cases:
        counted = frame[(frame["effect"] == name) & frame["eligible"]] if not frame.empty else frame
        n = len(counted)
        hits = int(counted["hit"].sum()) if n else 0
        low, high = wilson_interval(hits, n)
        mean = float(counted["effect_size"].mean()) if n else math.nan
        effects_result.summaries.append(
            EffectSummary(name, n, hits / n if n else math.nan, low, high, mean, EFFECTS[name])
        )
    return effects_result


def _score(
    name: str,
    record: dict[str, Any],
    reconstruction: np.ndarray,
    counterfactual: np.ndarray,
    scores: dict[str, np.ndarray],
    k: int,
    replay: PhantomReplay,
) -> dict[str, Any]:
    """One edit's row: whether it counts (``eligible``), whether it did what it names (``hit``), by how much."""
    row: dict[str, Any] = {"effect": name, "image_id": record["image_id"], "eligible": True}
    if name == "cardiomegaly_removed":
        before, after = heart_width_ratio(reconstruction), heart_width_ratio(counterfactual)
        row.update(eligible=bool(np.isfinite(before) and np.isfinite(after)), effect_size=after - before)
        row["hit"] = bool(after < before)
    elif name == "cardiomegaly_added":
        before, after = float(scores["Cardiomegaly"][0]), float(scores["Cardiomegaly"][k])
        row.update(eligible=before < 0.5, hit=after >= 0.5, effect_size=after - before)
    elif name == "sex_swapped":
        before, after = float(scores["sex"][0]), float(scores["sex"][k])
        row.update(hit=(before >= 0.5) != (after >= 0.5), effect_size=abs(after - before))
    elif name == "race_changed":
        shift, share = race_edit_share(replay, record, reconstruction, counterfactual)
        row.update(eligible=bool(np.isfinite(share)), hit=bool(share >= 0.5), effect_size=share, shift=shift)
    else:
        direction = _resized(replay.cue_change(str(record["image_id"]), AGE_YEARS), reconstruction.shape[-1])
        size = projected_change(counterfactual - reconstruction, direction)
        row.update(hit=size > 0, effect_size=size)
    return row


def race_grating_shift(
    replay: PhantomReplay, record: dict[str, Any], reconstruction: np.ndarray, counterfactual: np.ndarray
) -> float:
    """How far a race edit moved the image's grating power from the patient's group to the named one (log
    ratios, counterfactual against reconstruction; ``nan`` where either group draws no grating or both draw the
    same one)."""
    gratings = _race_gratings(replay, record, reconstruction.shape[-1])
    return math.nan if gratings is None else _grating_shift(gratings, reconstruction, counterfactual)


def race_swap_shift(replay: PhantomReplay, record: dict[str, Any], size: int) -> float:
    """The :func:`race_grating_shift` of a perfect race edit: the patient as the phantom draws them against the
    same patient drawn with the named group's grating (grain and phase as drawn), at ``size`` pixels.

    It sets the scale of a race edit's shift: the gratings are faint and the body and the grain have power at
    their frequencies too, so a raw log-ratio of 0.2 may be a twentieth of a real difference between groups
    (``nan`` where :func:`race_grating_shift` is)."""
    gratings = _race_gratings(replay, record, size)
    return math.nan if gratings is None else _grating_shift(gratings, *_race_swap(replay, record, size))


def race_edit_share(
    replay: PhantomReplay, record: dict[str, Any], reconstruction: np.ndarray, counterfactual: np.ndarray
) -> tuple[float, float]:
    """A race edit's :func:`race_grating_shift` and that shift over :func:`race_swap_shift` (1.0: as far as the
    phantom's own swap), with the gratings drawn once; ``(nan, nan)`` where no grating tells the groups apart, and
    a share of ``nan`` where the phantom's own swap moves nothing (no scale to measure the edit on)."""
    size = reconstruction.shape[-1]
    gratings = _race_gratings(replay, record, size)
    if gratings is None:
        return math.nan, math.nan
    shift = _grating_shift(gratings, reconstruction, counterfactual)
    swap = _grating_shift(gratings, *_race_swap(replay, record, size))
    return shift, shift / swap if math.isfinite(swap) and swap != 0.0 else math.nan


def _race_gratings(
    replay: PhantomReplay, record: dict[str, Any], size: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """The patient's own grating and the named group's (:data:`RACE_TARGETS`) at ``size`` pixels; ``None`` where
    the phantom draws none for the named group or both are the same."""
    image_id, target_race = str(record["image_id"]), RACE_TARGETS[str(record["race"])]
    if target_race not in replay.config.cues.race_texture:
        return None
    own = replay.race_grating(image_id, size=size)
    target = replay.race_grating(image_id, target_race, size=size)
    return None if np.allclose(own, target) else (own, target)


def _grating_shift(gratings: tuple[np.ndarray, np.ndarray], before: np.ndarray, after: np.ndarray) -> float:
    own, target = gratings
    return grating_preference(after, target, own) - grating_preference(before, target, own)


def _race_swap(replay: PhantomReplay, record: dict[str, Any], size: int) -> tuple[np.ndarray, np.ndarray]:
    """The patient as drawn and drawn with the named group's grating (0-1 scale, grain and phase as drawn)."""
    image_id = str(record["image_id"])
    texture = replay.config.cues.race_texture[RACE_TARGETS[str(record["race"])]]
    drawn = replay.render(image_id, size).astype(np.float64) / 255.0
    swapped = replay.render(image_id, size, texture_frequency=texture.frequency, texture_angle=texture.angle)
    return drawn, swapped.astype(np.float64) / 255.0


def grating_preference(image: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """The log-ratio of ``image``'s power at ``first``'s grating frequencies to its power at ``second``'s
    (:func:`~cfaudit.data.phantom.ground_truth.grating_energy`: phase-blind); ``nan`` where either is zero."""
    a, b = grating_energy(image, first), grating_energy(image, second)
    return math.log(a / b) if a > 0 and b > 0 else math.nan


def race_sample_share(
    replay: PhantomReplay,
    real: dict[str, Sequence[np.ndarray]],
    generated: dict[str, Sequence[np.ndarray]],
    groups: tuple[str, str] = ("White", "Black"),
) -> float:
    """How far images generated for the two ``groups`` differ in their gratings, as a share of how far real
    images of those groups differ: the difference of the mean :func:`grating_preference` (first group's grating
    over the second's) between the ``generated`` images of the two groups, over the same difference between the
    ``real`` ones. 1: the words select the grating as the data does; 0: they select nothing; ``nan`` where the
    phantom draws no grating for the groups or the real groups do not differ.

    Every image must be of one size; the grating templates are drawn over the body of the phantom's first image
    at that size (the measure is blind to the phase, and nearly so to the body's outline)."""
    sizes = {np.asarray(image).shape for images in (*real.values(), *generated.values()) for image in images}
    if len(sizes) != 1:
        raise ValueError(f"every image must be of one size, got {sorted(sizes)}")
    size = next(iter(sizes))[-1]
    image_id = str(replay.population.metadata["image_id"].iloc[0])
    textures = replay.config.cues.race_texture
    if replay.config.cues.race_texture_amplitude <= 0 or any(g not in textures for g in groups):
        return math.nan
    first, second = (replay.race_grating(image_id, group, size=size) for group in groups)

    def gap(images: dict[str, Sequence[np.ndarray]]) -> float:
        means = [np.nanmean([grating_preference(np.asarray(i, dtype=np.float64), first, second) for i in images[g]])
                 for g in groups]  # fmt: skip
        return float(means[0] - means[1])

    real_gap = gap(real)
    return gap(generated) / real_gap if abs(real_gap) > 1e-9 else math.nan


#: The caption of :func:`heart_probe_ratios`, with ``cardiomegaly`` or ``no finding`` in its place.
HEART_PROBE_PROMPT = "chest x-ray of 65-years old white male subject with {}"


def heart_probe_ratios(components: Any, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The heart probe: does the model draw a larger heart for "with cardiomegaly" than for "with no finding"?
    Per seed, one sample of each caption from the same starting noise (25 DDIM steps, guidance 5, the model's own
    resolution); returns the phantom's cardiothoracic ratio (:func:`heart_width_ratio`, NaN where no lungs are
    found) of the cardiomegaly samples and of the no-finding samples, seed by seed."""
    from cfaudit.models.sampling import sample_images

    seeds = list(seeds)
    prompts = [HEART_PROBE_PROMPT.format("cardiomegaly")] * len(seeds)
    prompts += [HEART_PROBE_PROMPT.format("no finding")] * len(seeds)
    images = sample_images(components, prompts, seeds + seeds, steps=25, guidance=5.0, batch_size=16)
    ratios = np.array([heart_width_ratio(image[0].numpy()) for image in images])
    return ratios[: len(seeds)], ratios[len(seeds) :]
