"""``cfaudit.discover(...)``: the ``cfaudit discover`` command as one Python call (models loaded by name)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from cfaudit.data.records import DataIndex
from cfaudit.discover.candidates import CandidateSettings
from cfaudit.discover.regions import RegionAtlas, RegionSettings
from cfaudit.discover.run import DiscoveryResult, DiscoverySettings, Progress
from cfaudit.discover.run import discover as run_discovery
from cfaudit.errors import CfauditError

#: Steps of a discovery's edits when none are given: more than the editor's default for direct inversion. A
#: discovery looks for what else the model draws with an attribute, and the added structures come out where the
#: model learnt them at 20 steps: in the demo at 12 steps the pacemaker that do(Cardiomegaly=1) adds was drawn off
#: its place and no longer flagged (docs/BENCHMARKS.md, "The main job"); the other methods keep their 50.
DISCOVERY_STEPS: dict[str, int] = {"direct": 20}


def discover(
    model: str = "demo",
    index: str | os.PathLike[str] | DataIndex = "index.csv",
    classifier: str | os.PathLike[str] = "demo",
    out: str | os.PathLike[str] = "discovery",
    do: Sequence[str] | None = None,
    *,
    split: str = "test",
    label_split: str = "train",
    data_split: str = "val",
    images: int | str = 16,
    method: str = "direct",
    steps: int | None = None,
    guidance: float = 7.5,
    prompt_mode: str = "full",
    batch_size: int = 4,
    margin: float = CandidateSettings.margin,
    region_margin: float = CandidateSettings.region_margin,
    alpha: float = CandidateSettings.alpha,
    fdr: str = CandidateSettings.fdr,
    detect_effect: float = DiscoverySettings.detect_effect,
    edit_budget: int | None = None,
    regions: str | os.PathLike[str] | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: Progress | None = None,
) -> DiscoveryResult:
    """Run a discovery as ``cfaudit discover`` does and return its ranked candidates.

    ``model`` is ``demo`` (the shipped tiny model), a diffusers folder or a hub id; ``classifier`` is a folder
    written by ``cfaudit classifiers train`` or ``demo`` (the shipped phantom classifier); ``do`` lists
    interventions as ``"A=v"`` strings (default: :func:`~cfaudit.discover.plan.default_interventions`).
    A relation is flagged only at a q-value of at most ``alpha`` (``fdr``: ``bh`` or ``by``); ``images="auto"``
    edits as many images per intervention as detecting a change in ``detect_effect`` of them needs (80% power),
    at most ``edit_budget`` edits in all.
    """
    from cfaudit.edit.editor import CounterfactualEditor, EditSettings
    from cfaudit.edit.interventions import parse_interventions
    from cfaudit.edit.inversion import InversionSettings
    from cfaudit.edit.job import JobSettings
    from cfaudit.evaluate.classifiers import load_classifier
    from cfaudit.models.loading import load_components

    # Check what the user typed before loading any model
    interventions = parse_interventions(list(do)) if do else None
    settings = DiscoverySettings(
        split=split,
        label_split=label_split,
        data_split=data_split,
        images=_images(images),
        detect_effect=detect_effect,
        edit_budget=edit_budget,
        prompt_mode=prompt_mode,
        seed=seed,
        candidates=CandidateSettings(margin=margin, region_margin=region_margin, alpha=alpha, fdr=fdr),
        regions=RegionSettings(),
    )
    if not isinstance(index, DataIndex):
        DataIndex.read(index)  # a missing or broken index fails here, in a second
    atlas = RegionAtlas.load(regions)
    if device is None:
        from accelerate import PartialState

        device = str(PartialState().device)
    editor = CounterfactualEditor.from_components(load_components(model, device=device))
    steps = steps if steps is not None else DISCOVERY_STEPS.get(method)
    job = JobSettings(
        inversion=InversionSettings(
            method=method, guidance_scale=guidance, **({"steps": steps} if steps is not None else {})
        ),
        edit=EditSettings(guidance_scale=guidance),
        batch_size=batch_size,
    )
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


def _images(images: int | str) -> int | str:
    """``--images``: a number, or ``auto``."""
    if isinstance(images, str) and images.strip().lower() == "auto":
        return "auto"
    try:
        return int(images)
    except (TypeError, ValueError):
        raise CfauditError(f"--images must be a number or 'auto', got {images!r}") from None
