"""The editor behind the page: one loaded model, a cache of inversions, one edit per click, and its download.

:meth:`EditorSession.edit` reads top to bottom as what a click does:

1. bring the image to the model's resolution and build the target prompt from the intervention
   (:func:`cfaudit.edit.job.edit_targets`, ``partial``, ``full`` or ``contrast`` mode, as ``cfaudit edit``
   does);
2. take the image's inversion from the cache (memory, then the optional cache folder shared with
   ``cfaudit edit --cache``, keyed by :func:`cfaudit.edit.job.inversion_key`: pixels, source prompt, model
   fingerprint and inversion settings) or invert it, reporting progress step by step;
3. edit it with prompt-to-prompt attention control (:class:`~cfaudit.edit.editor.CounterfactualEditor`);
4. take the signed difference (:mod:`cfaudit.data.difference`) and, with a classifier, its scores of the input,
   the reconstruction and the counterfactual;
5. write the outputs and their JSON record into a folder and a zip for the download button.

Nothing here imports gradio: the page (:mod:`cfaudit.ui.app`) only lays out controls and calls this.
"""

from __future__ import annotations

import contextlib
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cfaudit import __version__, atomic_io
from cfaudit.data.difference import colour_map, signed_difference
from cfaudit.data.edit_folder import safe_name
from cfaudit.data.edit_jobs import JobItem
from cfaudit.data.images import save_image, to_model_tensor
from cfaudit.data.interventions import DEFAULT_PROMPT_MODE, Intervention
from cfaudit.data.vocabulary import RACES
from cfaudit.devices import resolve_device
from cfaudit.edit.attention import AttentionSettings
from cfaudit.edit.editor import CounterfactualEditor, EditSettings, Target
from cfaudit.edit.inversion import Inversion, InversionSettings
from cfaudit.edit.job import JobSettings, edit_targets, inversion_key, model_fingerprint
from cfaudit.errors import CfauditError
from cfaudit.ui.sources import SourceImage

#: ``progress(fraction in [0, 1], description)`` of one edit in the page; the page passes gradio's progress bar.
FractionProgress = Callable[[float, str], None]
SCORE_COLUMNS: tuple[str, ...] = ("attribute", "input", "reconstruction", "counterfactual", "change")


def make_settings(
    method: str = "direct",
    steps: int | None = None,
    guidance_scale: float = 7.5,
    prompt_mode: str = DEFAULT_PROMPT_MODE,
    seed: int = 0,
    local_blend: bool = False,
) -> JobSettings:
    """The same settings object a ``cfaudit edit`` job records (invalid values are a :class:`CfauditError`)."""
    steps = None if steps in (None, 0) else int(steps)
    inversion = InversionSettings(method=method, guidance_scale=float(guidance_scale), steps=steps)
    edit = EditSettings(
        guidance_scale=float(guidance_scale), attention=AttentionSettings(local_blend=bool(local_blend))
    )
    return JobSettings(inversion=inversion, edit=edit, prompt_mode=prompt_mode, seed=int(seed))


class InversionCache:
    """Inversions by key: the most recent ``slots`` in memory, and every one in ``folder`` when given."""

    def __init__(self, folder: Path | None = None, slots: int = 8) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.slots = max(1, slots)
        self._memory: OrderedDict[str, Inversion] = OrderedDict()

    def get(self, key: str) -> tuple[Inversion | None, str | None]:
        """The inversion and where it was found (``"memory"`` or ``"disk"``), or ``(None, None)``."""
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key], "memory"
        if self.folder is not None and (self.folder / f"{key}.safetensors").is_file():
            try:
                inversion = Inversion.load(self.folder / f"{key}.safetensors")[0]
            except CfauditError:
                return None, None  # unreadable: recompute and overwrite
            self._remember(key, inversion)
            return inversion, "disk"
        return None, None

    def put(self, key: str, inversion: Inversion, meta: dict[str, Any]) -> None:
        if self.folder is not None:
            inversion.save(self.folder / f"{key}.safetensors", meta=meta)
        self._remember(key, inversion)

    def _remember(self, key: str, inversion: Inversion) -> None:
        self._memory[key] = inversion
        self._memory.move_to_end(key)
        while len(self._memory) > self.slots:
            self._memory.popitem(last=False)

    def __len__(self) -> int:
        return len(self._memory)


@contextlib.contextmanager
def count_unet_calls(unet: Any, on_call: Callable[[int], None]) -> Iterator[None]:
    """Call ``on_call(n)`` before the UNet's ``n``-th forward pass inside the block (for progress bars)."""
    calls = 0

    def hook(_module: Any, _args: Any) -> None:
        nonlocal calls
        calls += 1
        on_call(calls)

    handle = unet.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _unit(image: torch.Tensor) -> np.ndarray:
    """A ``[1, H, W]`` tensor in ``[-1, 1]`` as an ``H x W`` float32 array in ``[0, 1]``."""
    return ((image[0].float().cpu().numpy() + 1.0) / 2.0).clip(0.0, 1.0).astype(np.float32)


@dataclass
class EditOutcome:
    """Everything one click produced; images are ``H x W`` in ``[0, 1]`` at the model's resolution."""

    source: SourceImage
    intervention: Intervention
    settings: JobSettings
    source_prompt: str
    target_prompt: str
    reference_prompt: str  # what the target was measured against: the source prompt, or in contrast mode the
    # partial prompt of the image's current values
    input: np.ndarray
    reconstruction: np.ndarray
    counterfactual: np.ndarray
    difference: np.ndarray  # counterfactual - reconstruction, signed
    difference_rgb: np.ndarray  # blue-white-red picture of it
    diff_scale: float
    inversion_cached: str | None  # "memory", "disk" or None (computed now)
    unet_evals: float
    timings: dict[str, float]
    scores: pd.DataFrame | None
    folder: Path  # the run's outputs
    bundle: Path  # their zip (the download)
    record: dict[str, Any] = field(default_factory=dict)


class EditorSession:
    """One model (and optionally a classifier) serving edits, with an inversion cache and a work folder."""

    def __init__(
        self,
        editor: CounterfactualEditor,
        model_id: str,
        work_dir: Path,
        classifier: Any | None = None,
        cache_dir: Path | None = None,
        memory_slots: int = 8,
    ) -> None:
        self.editor = editor
        self.model_id = model_id
        self.work_dir = Path(work_dir)
        self.classifier = classifier
        self.cache = InversionCache(cache_dir, memory_slots)
        self.fingerprint = model_fingerprint(editor)
        self._lock = threading.Lock()
        self._runs = 0

    @classmethod
    def from_model(
        cls,
        model: str,
        work_dir: Path,
        *,
        classifier: str | Path | None = None,
        cache_dir: Path | None = None,
        device: str | None = None,
    ) -> EditorSession:
        """Load the model (``demo``, a folder or a cached hub id) and the classifier, as ``cfaudit edit`` does."""
        resolved_device = resolve_device(device)
        editor = CounterfactualEditor.load(model, device=resolved_device)
        judge = None
        if classifier is not None:
            from cfaudit.evaluate.classifiers import load_classifier

            judge = load_classifier(classifier, device=resolved_device)
        return cls(editor, model, work_dir, judge, cache_dir)

    @property
    def resolution(self) -> int:
        return self.editor.resolution

    def model_input(self, source: SourceImage) -> np.ndarray:
        """The image as the model sees it: shorter side resized to the resolution, centre-cropped, ``[0, 1]``."""
        return _unit(to_model_tensor(source.pixels, self.resolution))

    def edit(
        self,
        source: SourceImage,
        intervention: Intervention,
        settings: JobSettings,
        source_prompt: str | None = None,
        progress: FractionProgress | None = None,
    ) -> EditOutcome:
        """Invert (or take from the cache) and edit one image with one intervention; write its download."""
        report = progress or (lambda _fraction, _text: None)
        prompt = (source_prompt if source_prompt is not None else source.prompt).strip()
        if not prompt:
            raise CfauditError(
                "the source prompt is empty; describe the image, e.g. 'Chest X-ray of subject'"
            )
        start = time.perf_counter()
        with self._lock:
            self._runs += 1
            name = f"{safe_name(source.image_id)}_{intervention.slug}"
            folder = self.work_dir / f"run-{self._runs:04d}_{name}"
            torch.manual_seed(settings.seed)
            # 1. The image at the model's resolution and the target prompt
            image = to_model_tensor(source.pixels, self.resolution)  # [1, H, W] in [-1, 1]
            record = source.record if source.record is not None and prompt == source.prompt else None
            item = JobItem(source.image_id, source.path, prompt, record)
            edit = edit_targets(item, [intervention], settings.prompt_mode)[0]
            target = edit.prompt
            # 2. The inversion: cached or computed now
            report(0.02, "looking up the inversion")
            key = inversion_key(image, prompt, self.fingerprint, settings.inversion)
            inversion, cached = self.cache.get(key)
            started = time.perf_counter()
            if inversion is None:
                inversion = self._invert(image, prompt, settings.inversion, report)
                self.cache.put(key, inversion, {"image": source.name, "prompt": prompt})
            inverted = time.perf_counter()
            # 3. The edit
            result = self._edit(inversion, prompt, edit, settings, report)
            edited = time.perf_counter()
        # 4. Difference and scores
        report(0.92, "scoring")
        model_input, reconstruction = _unit(image), _unit(result.reconstruction)
        counterfactual = _unit(result.counterfactuals[0])
        difference = signed_difference(counterfactual, reconstruction)
        picture, scale = colour_map(difference)
        scores = None
        if self.classifier is not None:
            scores = score_table(self.classifier, model_input, reconstruction, counterfactual, intervention)
        scored = time.perf_counter()
        timings = {
            "inversion_s": inverted - started,
            "edit_s": edited - inverted,
            "scores_s": scored - edited,
        }
        outcome = EditOutcome(
            source, intervention, settings, prompt, target, edit.anchor or prompt, model_input, reconstruction,
            counterfactual,
            difference, picture, scale, cached, float(result.unet_evals[0]), timings, scores,
            folder, folder / f"cfaudit_{name}.zip",
        )  # fmt: skip
        # 5. The outputs, their record and the zip
        report(0.96, "writing the download")
        timings["total_s"] = time.perf_counter() - start
        self._write(outcome)
        return outcome

    # -- the steps ---------------------------------------------------------------------------------------------
    def _invert(
        self, image: torch.Tensor, prompt: str, settings: InversionSettings, report: FractionProgress
    ) -> Inversion:
        steps = int(settings.steps or 1)
        # DDIM inversion makes one UNet call per step; null-text optimisation adds up to inner_steps + 1 more.
        expected = steps * (settings.inner_steps + 3) if settings.method == "nti" else steps

        def on_call(calls: int) -> None:
            report(0.05 + 0.55 * min(calls / expected, 1.0), f"inverting ({settings.method}, {steps} steps)")

        with count_unet_calls(self.editor.unet, on_call):
            return self.editor.invert(image[None], [prompt], settings)[0]

    def _edit(
        self,
        inversion: Inversion,
        prompt: str,
        target: Target,
        settings: JobSettings,
        report: FractionProgress,
    ) -> Any:
        steps = inversion.steps

        def on_call(calls: int) -> None:
            report(0.6 + 0.3 * min(calls / steps, 1.0), f"editing (step {min(calls, steps)} of {steps})")

        with count_unet_calls(self.editor.unet, on_call):
            return self.editor.edit([inversion], [prompt], [[target]], settings.edit)[0]

    def _write(self, outcome: EditOutcome) -> None:
        """The run's folder (images, difference, scores, record.json) and the zip of it."""
        folder, name = outcome.folder, outcome.bundle.stem.removeprefix("cfaudit_")
        files = {
            "input.png": lambda p: save_image(outcome.input, p, bits=16),
            "reconstruction.png": lambda p: save_image(outcome.reconstruction, p, bits=16),
            "counterfactual.png": lambda p: save_image(outcome.counterfactual, p, bits=16),
            "difference.npy": lambda p: _save_npy(outcome.difference, p),
            "difference.png": lambda p: _save_rgb(outcome.difference_rgb, p),
        }
        if outcome.scores is not None:
            files["scores.csv"] = lambda p: atomic_io.write_csv(p, outcome.scores, index=False)
        for filename, write in files.items():
            write(folder / filename)
        outcome.record = self.record(outcome, sorted([*files, "record.json"]))
        atomic_io.write_json(folder / "record.json", outcome.record)
        with (
            atomic_io.atomic_path(outcome.bundle) as tmp,
            zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive,
        ):
            for filename in outcome.record["files"]:
                archive.write(folder / filename, f"{name}/{filename}")

    def record(self, outcome: EditOutcome, files: list[str]) -> dict[str, Any]:
        """What a download says about itself: source, prompts, intervention, settings, model, timings."""
        source = outcome.source
        origin: dict[str, Any] = {
            "kind": source.kind,
            "name": source.name,
            "sha256": source.sha256,
            "width": int(source.pixels.shape[1]),
            "height": int(source.pixels.shape[0]),
        }
        if source.record is not None:
            origin["image_id"] = source.image_id
            origin["path"] = str(source.path)
            origin["record"] = {k: _plain(v) for k, v in source.record.items()}
        origin.update({k: v for k, v in source.details.items() if k in ("format", "mode")})
        if source.notes:
            origin["notes"] = list(source.notes)
        classifier = None
        if self.classifier is not None:
            folder = getattr(self.classifier, "folder", None)
            classifier = {"folder": str(folder) if folder else None}
        return {
            "tool": "cfaudit ui",
            "cfaudit_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model": self.model_id,
            "model_fingerprint": self.fingerprint,
            "resolution": self.resolution,
            "source": origin,
            "source_prompt": outcome.source_prompt,
            "target_prompt": outcome.target_prompt,
            "reference_prompt": outcome.reference_prompt,
            "intervention": str(outcome.intervention),
            "changes": {k: _plain(v) for k, v in outcome.intervention.changes},
            "prompt_mode": outcome.settings.prompt_mode,
            "method": outcome.settings.inversion.method,
            "steps": outcome.settings.inversion.steps,
            "seed": outcome.settings.seed,
            "settings": outcome.settings.to_dict(),
            "inversion_cached": outcome.inversion_cached,
            "unet_evals": round(outcome.unet_evals, 3),
            "timings": {k: round(v, 4) for k, v in outcome.timings.items()},
            "reconstruction_l1": float(np.abs(outcome.reconstruction - outcome.input).mean()),
            "edit_l1": float(np.abs(outcome.difference).mean()),
            "diff_scale": outcome.diff_scale,
            "classifier": classifier,
            "files": files,
        }


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (NaN -> None, numpy numbers -> Python numbers)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _save_npy(array: np.ndarray, path: Path) -> None:
    with atomic_io.atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array.astype(np.float32), allow_pickle=False)


def _save_rgb(picture: np.ndarray, path: Path) -> None:
    from PIL import Image

    with atomic_io.atomic_path(path) as tmp:
        Image.fromarray(picture, mode="RGB").save(tmp, format="PNG")


def score_table(
    classifier: Any,
    model_input: np.ndarray,
    reconstruction: np.ndarray,
    counterfactual: np.ndarray,
    intervention: Intervention,
) -> pd.DataFrame:
    """The classifier's outputs for the three images, one row per output; ``change`` = counterfactual - reconstruction.

    Rows: P(Male), age in years, P(race) for each race, P(finding) for each finding; the attributes the
    intervention sets are marked ``(do)``.
    """
    outputs = classifier.predict([model_input, reconstruction, counterfactual])
    changed = {name for name, _ in intervention.changes}
    rows: list[tuple[str, np.ndarray]] = []
    for head, values in outputs.items():
        values = np.asarray(values, dtype=np.float64)
        if head == "sex":
            rows.append(("P(Male)" + (" (do)" if "sex" in changed else ""), values))
        elif head == "age":
            rows.append(("age, years" + (" (do)" if "age" in changed else ""), values))
        elif head == "race":
            mark = " (do)" if "race" in changed else ""
            rows += [(f"P({race}){mark}", values[:, k]) for k, race in enumerate(RACES)]
        else:
            rows.append((f"P({head})" + (" (do)" if head in changed else ""), values))
    table = pd.DataFrame(
        [(label, v[0], v[1], v[2], v[2] - v[1]) for label, v in rows], columns=list(SCORE_COLUMNS)
    )
    return table.round(3)
