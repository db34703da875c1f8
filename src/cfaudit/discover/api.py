"""``cfaudit.discover(...)``: the ``cfaudit discover`` command as one Python call (models loaded by name)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from cfaudit.data.records import DataIndex
from cfaudit.devices import resolve_device
from cfaudit.discover.atlas import RegionAtlas
from cfaudit.discover.candidates import CandidateSettings
from cfaudit.discover.clusters import RegionSettings
from cfaudit.discover.plan import default_interventions
from cfaudit.discover.run import (
    DiscoveryResult,
    DiscoverySettings,
    discovery_job_settings,
    plan_discovery,
)
from cfaudit.discover.run import discover as run_discovery
from cfaudit.edit.editor import EditSettings
from cfaudit.edit.inversion import InversionSettings
from cfaudit.edit.job import JobSettings, launch_state
from cfaudit.errors import CfauditError
from cfaudit.progress import Progress

#: Steps of a discovery's edits when none are given: more than the editor's default for direct inversion. A
#: discovery looks for what else the model draws with an attribute, and the added structures come out where the
#: model learnt them at 20 steps: in the demo at 12 steps the pacemaker that do(Cardiomegaly=1) adds was drawn off
#: its place and no longer flagged (docs/BENCHMARKS.md, "The main job"); the other methods keep their 50.
DISCOVERY_STEPS: dict[str, int] = {"direct": 20}


@dataclass(frozen=True)
class DiscoveryOptions:
    """The keyword options of :func:`discover` and :func:`discovery_cost` (those of ``cfaudit discover``), with
    their defaults. ``images`` is a number per intervention or ``"auto"``; ``steps`` ``None``:
    :data:`DISCOVERY_STEPS` for the method; ``regions`` a YAML of expected regions (``None``: the shipped atlas);
    ``device`` ``None``: the launch's device."""

    split: str = "test"
    label_split: str = "train"
    data_split: str = "val"
    images: int | str = 16
    method: str = "direct"
    steps: int | None = None
    guidance: float = 7.5
    #: the guidance of the edits naming an attribute (``{"age": 4.0}``; :class:`~cfaudit.edit.job.JobSettings`)
    attribute_guidance: Mapping[str, float] | None = None
    prompt_mode: str = "full"
    batch_size: int = 4
    margin: float = CandidateSettings.margin
    region_margin: float = CandidateSettings.region_margin
    alpha: float = CandidateSettings.alpha
    fdr: str = CandidateSettings.fdr
    detect_effect: float = DiscoverySettings.detect_effect
    edit_budget: int | None = None
    regions: str | os.PathLike[str] | None = None
    seed: int = 0
    device: str | None = None

    @classmethod
    def of(cls, options: dict[str, Any]) -> DiscoveryOptions:
        """The options given by keyword; an unknown one is a :class:`CfauditError` naming it."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise CfauditError(
                f"unknown discovery option {', '.join(unknown)}; the options are {', '.join(known)}"
            )
        return cls(**options)

    def settings(self) -> DiscoverySettings:
        """What the discovery edits and how it decides (``images`` checked here, before any model loads)."""
        shared = ("split", "label_split", "data_split", "detect_effect", "edit_budget", "prompt_mode", "seed")
        candidates = CandidateSettings(
            margin=self.margin, region_margin=self.region_margin, alpha=self.alpha, fdr=self.fdr
        )
        return DiscoverySettings(
            images=parse_images(self.images), candidates=candidates, regions=RegionSettings(),
            **{name: getattr(self, name) for name in shared},
        )  # fmt: skip

    def job(self) -> JobSettings:
        """The edit job's inversion and edit settings (steps: :data:`DISCOVERY_STEPS` unless given)."""
        steps = self.steps if self.steps is not None else DISCOVERY_STEPS.get(self.method)
        return JobSettings(
            inversion=InversionSettings(
                method=self.method,
                guidance_scale=self.guidance,
                **({"steps": steps} if steps is not None else {}),
            ),
            edit=EditSettings(guidance_scale=self.guidance),
            batch_size=self.batch_size,
            attribute_guidance=dict(self.attribute_guidance or {}),
        )


def discover(
    model: str = "demo",
    index: str | os.PathLike[str] | DataIndex = "index.csv",
    classifier: str | os.PathLike[str] = "demo",
    out: str | os.PathLike[str] = "discovery",
    do: Sequence[str] | None = None,
    *,
    progress: Progress | None = None,
    **options: Any,
) -> DiscoveryResult | None:
    """Run a discovery as ``cfaudit discover`` does and return its ranked candidates (``None`` on the processes
    other than the main one of a multi-process launch: they make their share of the edits, the main one
    analyses them).

    ``model`` is ``demo`` (the shipped demo model), a diffusers folder or a hub id; ``classifier`` is a folder
    written by ``cfaudit classifiers train`` or ``demo`` (the shipped phantom classifier); ``do`` lists
    interventions as ``"A=v"`` strings (default: :func:`~cfaudit.discover.plan.default_interventions`);
    ``options`` are those of :class:`DiscoveryOptions` (``split="test"``, ``images=16``, ``alpha=0.1``...).
    A relation is flagged only at a q-value of at most ``alpha`` (``fdr``: ``bh`` or ``by``); ``images="auto"``
    edits as many images per intervention as detecting a change in ``detect_effect`` of them needs (80% power),
    at most ``edit_budget`` edits in all.
    """
    from cfaudit.data.interventions import parse_interventions
    from cfaudit.edit.editor import CounterfactualEditor
    from cfaudit.evaluate.classifiers import load_classifier

    # Check what the user typed before loading any model
    chosen = DiscoveryOptions.of(options)
    interventions = parse_interventions(list(do)) if do else None
    settings = chosen.settings()
    job = chosen.job()
    if not isinstance(index, DataIndex):
        DataIndex.read(index)  # a missing or broken index fails here, in a second
    atlas = RegionAtlas.load(chosen.regions)
    device = chosen.device if chosen.device is not None else str(launch_state().device)
    editor = CounterfactualEditor.load(model, device=device)
    return run_discovery(
        editor,
        index,
        load_classifier(classifier, device=device),
        out,
        interventions,
        settings,
        job,
        model_id=model,
        atlas=atlas,
        progress=progress,
    )


#: Seconds per UNet evaluation (one latent, forward) by (preset, device kind), from docs/BENCHMARKS.md, on 2 CPU
#: cores: tiny, the seconds per edit of the trained model at 44 UNet evaluations ("With the trained demo model
#: (equal edit effect)": 0.88 s); tiny-f4, the shipped demo model's discovery in ``cfaudit demo`` (336 edits,
#: 17,266 UNet evaluations in 224 s: "The main job"). No GPU figure is recorded yet: pass ``seconds_per_eval``
#: (``--seconds-per-eval``) measured on the device.
SECONDS_PER_EVAL: dict[tuple[str, str], float] = {
    ("tiny", "cpu"): 0.88 / 44,
    ("tiny-f4", "cpu"): 224.0 / 17266,
}


@dataclass(frozen=True)
class DiscoveryCost:
    """What a discovery will edit and what that costs, known before any model is loaded."""

    images: int
    #: Counterfactual edits (one row of ``edits.csv`` each); every image also gets its null edit.
    edits: int
    unet_evals: float
    preset: str | None
    device: str
    processes: int
    seconds_per_eval: float | None
    #: Where ``seconds_per_eval`` comes from (``""`` when no figure is known).
    source: str = ""

    @property
    def seconds(self) -> float | None:
        """Projected seconds on one device (None when no figure is known for this preset and device)."""
        return None if self.seconds_per_eval is None else self.unet_evals * self.seconds_per_eval

    def lines(self) -> list[str]:
        said = f"model preset {self.preset}" if self.preset else "model preset unknown"
        lines = [
            f"{self.edits} edits of {self.images} images ({self.images} null edits more), {said}",
            f"{self.unet_evals:,.0f} UNet evaluations (inversions, null edits and edits)",
        ]
        seconds = self.seconds
        if seconds is None:
            lines.append(
                f"projected time: unknown for this preset on {self.device}; give --seconds-per-eval "
                "(measured on the device) to project it"
            )
            return lines
        lines.append(
            f"projected time on one {self.device} device: {_duration(seconds)} "
            f"({self.seconds_per_eval:.4g} s per UNet evaluation, {self.source})"
        )
        if self.processes > 1:
            lines.append(f"per device, {self.processes} processes: {_duration(seconds / self.processes)}")
        return lines


def discovery_cost(
    model: str = "demo",
    index: str | os.PathLike[str] | DataIndex = "index.csv",
    do: Sequence[str] | None = None,
    *,
    seconds_per_eval: float | None = None,
    **options: Any,
) -> DiscoveryCost:
    """The plan of ``discover`` with the same arguments, costed: edits, UNet evaluations and, where a figure for
    the model's preset on the device is known (:data:`SECONDS_PER_EVAL`, or ``seconds_per_eval``), the
    projected time. Reads the index and the model's configs (the model folder is checked as a run would);
    loads no weights and writes nothing."""
    from cfaudit.data.interventions import parse_interventions
    from cfaudit.edit.job import planned_unet_evals
    from cfaudit.models.loading import check_pipeline_folder, resolve_model
    from cfaudit.models.shipped_model import preset_name

    if seconds_per_eval is not None and seconds_per_eval <= 0:
        raise CfauditError(f"--seconds-per-eval must be positive, got {seconds_per_eval}")
    chosen = DiscoveryOptions.of(options)
    interventions = parse_interventions(list(do)) if do else default_interventions()
    settings = chosen.settings()
    job = discovery_job_settings(chosen.job(), settings)
    job.check_guidance_used(interventions)
    # the model a real run would load: a missing or incomplete folder is said now, not after the plan is costed
    folder = resolve_model(model)
    check_pipeline_folder(folder, label=str(model))
    data = index if isinstance(index, DataIndex) else DataIndex.read(index)
    plan, _, _ = plan_discovery(data, interventions, settings, RegionAtlas.load(chosen.regions))
    evals = sum(planned_unet_evals(job, len(item.interventions or ()) + 1) for item in plan.items)
    preset = preset_name(_config(folder / "unet"), _config(folder / "vae"))
    device = chosen.device if chosen.device is not None else str(resolve_device())
    kind = device.split(":")[0]
    known = SECONDS_PER_EVAL.get((preset or "", kind))
    per_eval, source = (
        (seconds_per_eval, "--seconds-per-eval")
        if seconds_per_eval is not None
        else (known, "docs/BENCHMARKS.md, 2 CPU cores")
        if known is not None
        else (None, "")
    )
    return DiscoveryCost(
        len(plan.items), plan.n_edits, evals, preset, kind, int(os.environ.get("WORLD_SIZE", "1")), per_eval,
        source,
    )  # fmt: skip


def _config(folder: Path) -> dict[str, Any]:
    """A component's ``config.json`` (empty when the folder has none: the preset is then unknown)."""
    path = folder / "config.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def parse_images(images: int | str) -> int | str:
    """``--images``: a number, or ``auto``."""
    if isinstance(images, str) and images.strip().lower() == "auto":
        return "auto"
    try:
        return int(images)
    except (TypeError, ValueError):
        raise CfauditError(f"--images must be a number or 'auto', got {images!r}") from None
