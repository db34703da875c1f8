"""The end-to-end demo on the embedded default: the README's main job, as a Python function.

phantom -> index (patient-level split) -> Table 1 -> the shipped demo model and classifier (or, with
``train=True``, ones fitted here; with ``model``, another diffusion model beside the shipped classifier and SCM)
-> counterfactual edits of test images (sex, disease, race) by the diffusion editor and by the SCM baseline ->
Table 2 and the axioms -> discovery of hidden relations -> the HTML report.

Every stage is resumable: re-running into the same folder reuses what is already there (each stage's own
resume rules: the phantom and the edit jobs check their recorded settings and refuse to mix).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd

from cfaudit.data.adapters import build_index, write_index
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config
from cfaudit.data.records import DataIndex
from cfaudit.data.stats import table1
from cfaudit.errors import CfauditError
from cfaudit.progress import Progress

#: The stages of the demo, in order; ``until`` stops after one of them.
STAGES: tuple[str, ...] = ("data", "edit", "evaluate", "discover", "report")
#: The discovery edits, per intervention, as many images as finding a change in this share of them needs (80%
#: power at the run's false discovery rate). Half, not ``cfaudit discover``'s 0.3, keeps the demo within minutes
#: on a CPU: with the default's 34 interventions that is about 30 images each where the phantom has them.
DEMO_DETECT_EFFECT = 0.5
#: The demo's discovery: the paper's attributes (sex, race, pleural effusion as its disease), cardiomegaly (its
#: hidden-relation case), support devices and age, each way. ``cfaudit discover``'s default (every finding both
#: ways, every sex, race and age +-20: 34 interventions, ~630 tests) needs ~30 images each at this effect and an
#: hour of CPU; 12 interventions make ~220 tests, so ~28 images each, and a few minutes.
DEMO_INTERVENTIONS: tuple[str, ...] = (
    "Cardiomegaly=0", "Cardiomegaly=1", "Pleural Effusion=0", "Pleural Effusion=1", "Support Devices=0",
    "Support Devices=1", "sex=Female", "sex=Male", "race=White", "race=Black", "age=+20", "age=-20",
)  # fmt: skip


@dataclass
class DemoResult:
    out: Path
    phantom: Path
    index: Path
    contact_sheet: Path
    table1: pd.DataFrame
    edits: list[Path] = field(default_factory=list)
    evaluation: Path | None = None
    table2_markdown: str = ""
    discovery: Path | None = None
    candidates: pd.DataFrame | None = None
    report: Path | None = None
    notes: list[str] = field(default_factory=list)


def run_demo(
    out: str | os.PathLike[str],
    *,
    n: int = 2000,
    size: int | None = 128,
    seed: int = 0,
    workers: int = 2,
    config: str | os.PathLike[str] | None = None,
    train: bool = False,
    recipe: str | None = None,
    model: str | None = None,
    edit_images: int = 16,
    discover_images: int | str = "auto",
    discover_effect: float = DEMO_DETECT_EFFECT,
    discover_do: Sequence[str] | None = None,
    steps: int | None = None,
    until: str = "report",
    progress: Progress | Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Run the demo into ``out``; see the module docstring for the stages (``until`` stops early)."""
    if until not in STAGES:
        raise CfauditError(f"unknown demo stage {until!r}; choose one of {', '.join(STAGES)}")
    _check_discovery_options(discover_images, discover_effect, discover_do)
    _check_recipe(recipe, train)
    _check_model(model, train)
    out = Path(out)
    tell = _stage_progress(progress)
    last = STAGES.index(until)

    # 1. Data: a phantom with planted relations (the default config plants pacemaker <-> cardiomegaly,
    #    age -> effusion), indexed with a seeded patient-level 70/15/15 split, and Table 1.
    settings = load_config(config or default_config_path("default")).with_overrides(n=n, size=size)
    phantom = generate_phantom(
        out / "phantom", settings, seed=seed, workers=workers, progress=lambda d, t: tell("phantom", d, t)
    )
    index_path = out / "index.csv"
    if not index_path.is_file():
        write_index(build_index("phantom", phantom.out, seed=seed), index_path)
    index = DataIndex.read(index_path)
    result = DemoResult(out, phantom.out, index_path, phantom.out / "contact_sheet.png", table1(index))
    if last < STAGES.index("edit"):
        return result

    # 2. Models: the shipped ones, or fitted here on this phantom (slow on a CPU: tens of minutes)
    diffusion, classifier, scm = _models(out, index_path, train, recipe, seed, result.notes, tell)
    diffusion = model or diffusion  # another diffusion model, beside the shipped classifier and SCM

    # 3. Edits of test images: each image's sex swapped, cardiomegaly flipped and race changed, by both methods
    result.edits = _edits(out, index, diffusion, scm, edit_images, steps, seed, tell)
    if last < STAGES.index("evaluate"):
        return result

    # 4. Table 2 and the axioms for both methods
    from cfaudit.evaluate.evaluation import evaluate_edits

    evaluation = evaluate_edits(
        result.edits, classifier, out / "evaluation", seed=seed, axiom_images=4, index=index_path,
        progress=lambda *args: tell("evaluate", *args[-2:]) if len(args) >= 2 else None,
        warn=result.notes.append,
    )  # fmt: skip
    result.evaluation = out / "evaluation"
    result.table2_markdown = getattr(evaluation, "markdown", "")
    if last < STAGES.index("discover"):
        return result

    # 5. Discovery: the demo's interventions (DEMO_INTERVENTIONS), as many images as the error rate needs
    from cfaudit.discover.api import discover

    found = discover(
        diffusion, index_path, classifier, out / "discovery", list(discover_do or DEMO_INTERVENTIONS),
        images=discover_images, detect_effect=discover_effect, steps=steps, seed=seed,
        progress=lambda stage, done, total: tell(f"discover: {stage}", done, total),
    )  # fmt: skip
    assert found is not None  # None only on the helper processes of a multi-process launch
    result.discovery, result.candidates = out / "discovery", found.candidates
    if last < STAGES.index("report"):
        return result

    # 6. The report: one HTML file with everything above
    from cfaudit.report import build_report

    tell("report", 0, 1)
    result.report = build_report(
        [out], out / "report.html", title="cfaudit demo: the phantom audit", max_examples=4
    )
    tell("report", 1, 1)
    return result


def _stage_progress(progress: Progress | Callable[[int, int], None] | None) -> Progress:
    """Accept the old ``progress(done, total)`` (phantom only) and the staged ``progress(stage, done, total)``."""
    import inspect

    if progress is None:
        return lambda stage, done, total: None
    try:
        staged = len(inspect.signature(progress).parameters) >= 3
    except (TypeError, ValueError):
        staged = True
    if staged:
        return cast(Progress, progress)
    phantom_progress = cast(Callable[[int, int], None], progress)
    return lambda stage, done, total: phantom_progress(done, total) if stage == "phantom" else None


def _check_discovery_options(images: int | str, effect: float, do: Sequence[str] | None) -> None:
    """Refuse bad discovery options before minutes of phantom, edits and scoring, not after them."""
    from cfaudit.data.interventions import parse_interventions
    from cfaudit.discover.api import parse_images
    from cfaudit.discover.run import DiscoverySettings

    DiscoverySettings(images=parse_images(images), detect_effect=effect)
    parse_interventions(list(do or DEMO_INTERVENTIONS))


def _check_recipe(recipe: str | None, train: bool) -> None:
    """``recipe`` names what ``--train`` fits (:data:`cfaudit.demo_training.DEMO_RECIPES`)."""
    if recipe is None:
        return
    from cfaudit.demo_training import demo_recipe

    if not train:
        raise CfauditError(f"--recipe {recipe} needs --train (it names how the demo's models are fitted)")
    demo_recipe(recipe)


def _check_model(model: str | None, train: bool) -> None:
    """``model`` (another diffusion model than the shipped one) is a complete pipeline, and not asked with
    ``train`` (which fits one)."""
    if model is None:
        return
    if train:
        raise CfauditError("--model and --train both name the diffusion model: give one of them")
    from cfaudit.models.loading import check_pipeline_folder, resolve_model

    check_pipeline_folder(resolve_model(model), label=model)


def _models(
    out: Path, index_path: Path, train: bool, recipe: str | None, seed: int, notes: list[str], tell: Progress
) -> tuple[str, str, str | None]:
    """(diffusion model, classifier, SCM model) to use: the shipped ones, or ones trained into ``out``."""
    from cfaudit.scm.shipped import DEMO_SCM, demo_scm_dir

    if not train:
        scm = str(demo_scm_dir()) if demo_scm_dir().is_dir() else None
        if scm is None:
            notes.append(f"no shipped SCM model ({DEMO_SCM}); Table 2 shows the diffusion editor only")
        return "demo", "demo", scm
    from cfaudit.demo_training import DEFAULT_DEMO_RECIPE, train_demo_models

    return train_demo_models(out / "models", index_path, seed, tell, recipe=recipe or DEFAULT_DEMO_RECIPE)


def _plan_for_table2(index: DataIndex, limit: int) -> list[Any]:
    """The first ``limit`` test images, each with its own sex swap, cardiomegaly flip and race change."""
    from cfaudit.data.edit_jobs import JobItem, items_from_index
    from cfaudit.data.interventions import Intervention
    from cfaudit.data.labels import label_value
    from cfaudit.data.vocabulary import RACES, normalize_race

    items = []
    for item in items_from_index(index, "test", limit):
        record = item.record or {}
        sex = "Female" if str(record.get("sex")) == "Male" else "Male"
        cardiomegaly = 0 if label_value(record, "Cardiomegaly") == 1 else 1
        try:
            race = normalize_race(record.get("race"))
        except CfauditError:
            race = "Unknown"
        new_race = "Black" if race == "White" else "White"
        plan = [
            Intervention((("sex", sex),)),
            Intervention((("Cardiomegaly", cardiomegaly),)),
            Intervention((("race", new_race),)),
        ]
        if race not in RACES:  # an unknown race cannot be said to change
            plan = plan[:2]
        items.append(JobItem(item.image_id, item.path, item.source_prompt, item.record, tuple(plan)))
    return items


def _edits(
    out: Path,
    index: DataIndex,
    model: str,
    scm: str | None,
    limit: int,
    steps: int | None,
    seed: int,
    tell: Progress,
) -> list[Path]:
    from cfaudit.edit.editor import CounterfactualEditor
    from cfaudit.edit.inversion import InversionSettings
    from cfaudit.edit.job import JobSettings, run_edit_job

    items = _plan_for_table2(index, limit)
    editor = CounterfactualEditor.load(model, device="cpu")
    done = [0]

    def one_done(_: str) -> None:
        done[0] += 1
        tell("edit (diffusion)", done[0], len(items))

    settings = JobSettings(
        inversion=InversionSettings(steps=steps), batch_size=4, seed=seed, identity_check=True
    )
    run_edit_job(
        editor, items, [], out / "edits" / "diffusion", settings, model_id=model, on_image_done=one_done
    )
    folders = [out / "edits" / "diffusion"]
    if scm is None:
        return folders

    from dataclasses import replace

    from cfaudit.scm.job import ScmEditSettings, run_scm_edit_job
    from cfaudit.scm.model import CausalImageModel

    loaded = CausalImageModel.load(scm, device="cpu")
    nodes = set(loaded.graph.names)
    # the same edits of the same images as the diffusion editor's, where the SCM's graph has the attribute
    scm_items = [
        replace(item, interventions=plan)
        for item in items
        if (plan := tuple(i for i in item.interventions or () if {n for n, _ in i.changes} <= nodes))
    ]
    tell("edit (SCM)", 0, 1)
    run_scm_edit_job(loaded, scm_items, [], out / "edits" / "scm", ScmEditSettings(seed=seed), model_id=scm)
    tell("edit (SCM)", 1, 1)
    return [*folders, out / "edits" / "scm"]
