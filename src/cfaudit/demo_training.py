"""``cfaudit demo --train``: fit the demo's models on its own phantom instead of using the shipped ones.

As the paper reuses SD's pretrained autoencoder, the demo reuses the shipped one (trained once, for as long as it
needed: ``configs/train/tiny_f4_vae.yaml`` for the demo model's tiny-f4 preset, ``configs/train/tiny_vae.yaml`` for
``--recipe tiny``) and refits what the paper trains: the UNet (here with its small text encoder, which has no
pretrained weights to start from), the attribute classifier and the SCM baseline. The recipes
(:data:`DEMO_RECIPES`: by default a quick one that fits in an hour on two slow cores; the shipped model's, about
2.5x as long; the tiny preset's) are written here so that an installed package needs no repository checkout; each names
the ``configs/train`` files that hold the same phases for ``cfaudit train`` (a test keeps them equal). Every step
resumes where it stopped; a phase found finished or half done must have been trained by this recipe.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfaudit.progress import Progress

#: The tiny preset's UNet recipe (paths aside; ``configs/train/demo.yaml``, full captions): the demo model's until
#: issue #13, refitted by ``demo --train --recipe tiny``.
DEMO_UNET_RECIPE: dict[str, Any] = {
    "resolution": 128,
    "train_text_encoder": True,
    "text_encoder_lr": 1e-3,
    "snr_gamma": 5.0,
    "caption_dropout": 0.1,
    "max_steps": 2500,
    "batch_size": 16,
    "learning_rate": 1e-3,
    "lr_schedule": "cosine",
    "lr_warmup_steps": 100,
    "adam_weight_decay": 0.0,
    "use_ema": True,
    "ema_decay": 0.995,
    "mixed_precision": "no",
    "checkpoint_every": 250,
    "keep_checkpoints": 2,
    "save_dtype": "float16",
}
#: The tiny-f4 preset's recipe (the shipped demo model's; issue #13): the tiny recipe on the finer shipped autoencoder
#: (4x, 8 latent channels), with the paper's partial captions, the noisy half of the schedule drawn 4 times as
#: often (where the heart's size is decided) and rare findings' images drawn until each finding makes up a fifth
#: of the draws (docs/BENCHMARKS.md, "Which words the model has learnt").
DEMO_F4_RECIPE: dict[str, Any] = {
    **DEMO_UNET_RECIPE,
    "caption_partial": 0.5,
    "caption_negative": 0.15,
    "timestep_bias": "later",
    "timestep_bias_multiplier": 4.0,
    "timestep_bias_portion": 0.5,
    "finding_min_share": 0.2,
    "finding_max_repeat": 8,
    "max_steps": 5000,
}
#: The tiny-f4 preset's second phase, from the recipe's model (``configs/train/demo_f4_race_alone.yaml``). The recipe
#: never learns the race words: the phantom draws race as a faint grating of random phase, which its partial captions
#: and noisy-biased draws leave untaught. Teaching them with the whole UNet, or with its cross-attention alone,
#: loosens what the recipe learnt (the cardiomegaly edit's hold on the pacemaker). So only the cross-attention layers
#: train, where the words enter, with the text encoder and every timestep drawn and weighted alike. Half of each
#: batch learns from the data with captions that name race alone (the prompts of a contrast race edit); the other
#: half, captioned without race, is trained towards a frozen copy of the recipe's model at weight 3, so the other
#: words keep drawing what they drew (docs/BENCHMARKS.md, "Race with the rest of the model anchored").
DEMO_F4_RACE_PHASE: dict[str, Any] = {
    **DEMO_F4_RECIPE,
    "unet_trainable": ["*.attn2.*"],
    "snr_gamma": None,
    "timestep_bias": "none",
    "timestep_bias_multiplier": 1.0,
    "caption_always": ["race"],
    "caption_always_alone": True,
    "preserve_weight": 3.0,
    "preserve_share": 0.5,
    "learning_rate": 3e-3,
    "lr_warmup_steps": 50,
    "max_steps": 1500,
    "checkpoint_every": 500,
}

#: The tiny-f4 preset's third phase, from the second's model (``configs/train/demo_f4_race_whole.yaml``). The second
#: teaches the race words only in captions that name race alone, so a whole caption's race word stays the first
#: phase's, which draws no race: the paper's partial prompts, inverted under the whole caption, moved the grating
#: 0.21 of a swap (contrast prompts 0.49), and samples prompted with whole captions naming white or black differed
#: 0.06 of the real groups' gap. This phase is the second again for 3,000 steps, anchored to its model, with half of
#: the learning rows keeping their own caption (whole or partial) with race in it (``caption_always_alone_share``):
#: 0.52 of a swap with partial prompts, as with contrast ones, and samples 0.59 of the gap. The second again with
#: every learning row alone teaches neither (docs/BENCHMARKS.md, "Race in whole captions").
DEMO_F4_RACE_WHOLE_PHASE: dict[str, Any] = {
    **DEMO_F4_RACE_PHASE,
    "caption_always_alone_share": 0.5,
    "max_steps": 3000,
}

#: The quick tiny-f4 recipe's phases (``demo --train``'s default; the shipped model's recipe takes about 2.5x as
#: long). First 4,500 steps at 64 px, about half the time of a 128 px step here, where the layout (the heart's size) is
#: learnt, with the schedule's signal-to-noise ratio raised 4x (``snr_shift``): a 64 px image at a given timestep
#: keeps its layout at a quarter of the ratio of the 128 px image the model is used at, so without it the 64 px
#: steps teach the layout at other timesteps than the 128 px ones use (docs/BENCHMARKS.md, "The quick recipe").
#: 3,000 kept the heart word on the demo's phantom and lost most of it on another (seed 1, central line-effusion);
#: 4,500 keep it there and on a third (seed 2, central line), in the time that a race phase of 750 steps took
#: (they taught race nothing measurable, so the quick recipe has none: race is the shipped recipe's).
DEMO_F4_COARSE_PHASE: dict[str, Any] = {
    **DEMO_F4_RECIPE,
    "resolution": 64,
    "snr_shift": 4.0,
    "max_steps": 4500,
}
#: ... then 1,250 steps at 128 px, at half the rate with a short warm-up, for the detail.
DEMO_F4_FINE_PHASE: dict[str, Any] = {
    **DEMO_F4_RECIPE,
    "learning_rate": 5e-4,
    "text_encoder_lr": 5e-4,
    "lr_warmup_steps": 50,
    "max_steps": 1250,
}


@dataclass(frozen=True)
class DemoRecipe:
    """What ``demo --train`` fits: a preset (``arch``, :mod:`cfaudit.models.presets`) on its shipped autoencoder,
    and its UNet phases in order, each a run folder under ``models/`` and the recipe that trains it from the phase
    before's model (the first from a random init). ``configs``: the same phases as ``cfaudit train`` configs (a test
    keeps them equal), for a run step by step."""

    arch: str
    phases: tuple[tuple[str, dict[str, Any]], ...]
    configs: tuple[str, ...]

    @property
    def autoencoder(self) -> str:
        """The shipped autoencoder the UNet is trained on (:func:`~cfaudit.models.shipped_model.shipped_autoencoder`):
        its preset's, reused as the paper reuses SD's."""
        return self.arch


#: What ``demo --train --recipe NAME`` fits.
DEMO_RECIPES: dict[str, DemoRecipe] = {
    # the default: about an hour on two slow cores
    "tiny-f4": DemoRecipe(
        "tiny-f4",
        (("coarse", DEMO_F4_COARSE_PHASE), ("unet", DEMO_F4_FINE_PHASE)),
        tuple(f"configs/train/demo_f4_quick_{phase}.yaml" for phase in ("coarse", "fine")),
    ),
    # the shipped demo model's: its heart and race words are stronger, and it takes about 2.5x as long
    "tiny-f4-shipped": DemoRecipe(
        "tiny-f4",
        (("unet", DEMO_F4_RECIPE), ("race", DEMO_F4_RACE_PHASE), ("race-whole", DEMO_F4_RACE_WHOLE_PHASE)),
        (
            "configs/train/demo_f4_scratch.yaml",
            "configs/train/demo_f4_race_alone.yaml",
            "configs/train/demo_f4_race_whole.yaml",
        ),
    ),
    # the tiny preset (8x autoencoder): coarser and about 3x faster
    "tiny": DemoRecipe("tiny", (("unet", DEMO_UNET_RECIPE),), ("configs/train/demo.yaml",)),
}
#: What ``demo --train`` fits without ``--recipe``.
DEFAULT_DEMO_RECIPE = "tiny-f4"


def demo_recipe(name: str) -> DemoRecipe:
    """The recipe ``name`` of :data:`DEMO_RECIPES`; one error for a name it does not hold."""
    if name not in DEMO_RECIPES:
        from cfaudit.errors import CfauditError

        raise CfauditError(f"--recipe {name!r}: demo --train fits one of {', '.join(DEMO_RECIPES)}")
    return DEMO_RECIPES[name]


#: Steps that scale with ``scale`` (the tests run every recipe at a tiny scale).
_SCALED = ("max_steps", "lr_warmup_steps", "checkpoint_every")


def _scaled(count: int, scale: float) -> int:
    return max(1, round(count * scale))


def train_demo_models(
    folder: Path,
    index_path: Path,
    seed: int,
    tell: Progress,
    scale: float = 1.0,
    parallel: bool | None = None,
    recipe: str = DEFAULT_DEMO_RECIPE,
) -> tuple[str, str, str]:
    """Train the demo's UNet and text encoder (on the shipped autoencoder), the classifier and the SCM into
    ``folder``. ``scale`` multiplies every step and epoch count. With ``parallel`` (default: when the machine has
    two or more CPU cores) the classifier and the SCM are fitted in a second process on one core while the UNet
    trains on the others (and gets every core back when they are done): the UNet takes most of the time, and the
    two small models then add none. The step at which the UNet gets its cores back depends on how fast the side
    models fit, and sums on one and two threads round differently, so such a rerun repeats the first only to
    floating-point rounding; with ``parallel=False`` a rerun on the same machine is bit-identical (and slower).
    ``recipe``: a name of :data:`DEMO_RECIPES`. Returns
    (diffusion model folder, classifier folder, SCM model folder); the seconds each took are in
    ``folder/timing.json``."""
    from cfaudit.atomic_io import write_json

    timing: dict[str, float] = {}
    unet_model, classifier, scm = _train(
        folder, index_path, seed, tell, scale, timing, True, parallel, recipe
    )
    assert scm is not None
    write_json(folder / "timing.json", {"seconds_this_call": {k: round(v, 1) for k, v in timing.items()}})
    return unet_model, classifier, scm


def train_demo_editor(
    folder: Path,
    index_path: Path,
    seed: int,
    tell: Progress,
    scale: float = 1.0,
    timing: dict[str, float] | None = None,
    parallel: bool | None = None,
    recipe: str = DEFAULT_DEMO_RECIPE,
) -> tuple[str, str]:
    """What discovery needs of :func:`train_demo_models` (no SCM): the UNet and text encoder on the shipped
    autoencoder, and the attribute classifier, into ``folder``; each resumes. Returns (diffusion model folder,
    classifier folder); the seconds each took are added to ``timing``."""
    unet_model, classifier, _ = _train(
        folder, index_path, seed, tell, scale, timing if timing is not None else {}, False, parallel, recipe
    )
    return unet_model, classifier


def _train(
    folder: Path,
    index_path: Path,
    seed: int,
    tell: Progress,
    scale: float,
    timing: dict[str, float],
    with_scm: bool,
    parallel: bool | None,
    recipe: str,
) -> tuple[str, str, str | None]:
    """The UNet here; the classifier (and the SCM) here after it, or meanwhile in a second process."""
    demo_recipe(recipe)  # an unknown recipe is refused before the second process starts
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    import torch

    folder.mkdir(parents=True, exist_ok=True)
    cores = _usable_cores()
    parallel = cores >= 2 if parallel is None else parallel
    total = 3 if with_scm else 2
    side = ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) if parallel else None
    try:
        pending = (
            side.submit(_fit_side_models, str(folder), str(index_path), seed, scale, with_scm)
            if side
            else None
        )
        tell("train: UNet", 0, total)
        threads = torch.get_num_threads()
        share = _sharing_threads(pending, threads, cores) if pending is not None else None
        try:
            unet_model = _fit_unet(folder, index_path, seed, scale, timing, recipe, share)
        finally:
            torch.set_num_threads(threads)
        tell("train: classifier", 1, total)
        if pending is not None:
            classifier, scm, side_timing = pending.result()
            timing.update(side_timing)
            if with_scm:
                tell("train: SCM", 2, total)
        else:
            classifier, scm, _ = _fit_side_models(str(folder), str(index_path), seed, scale, False, timing)
            if with_scm:
                tell("train: SCM", 2, total)
                scm = _fit_scm(folder, index_path, seed, scale, timing)
    finally:
        if side is not None:
            side.shutdown(wait=True, cancel_futures=True)
    if with_scm:
        tell("train: SCM", 3, total)
    return unet_model, classifier, scm


def _usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. under ``taskset``), not the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _sharing_threads(side: Future[Any], threads: int, cores: int) -> Callable[[], int]:
    """The UNet's thread count while ``side`` runs in a second process: one core less, then all of them back."""
    beside = max(1, min(threads, cores - 1))
    return lambda: threads if side.done() else beside


def _fit_unet(
    folder: Path,
    index_path: Path,
    seed: int,
    scale: float,
    timing: dict[str, float],
    name: str,
    threads: Callable[[], int] | None,
) -> str:
    """A random UNet and text encoder of recipe ``name``'s preset on its shipped autoencoder (``init/``), trained by
    each phase of the recipe in turn, each into its own run folder from the model of the one before; the last
    phase's model."""
    from cfaudit.models.random_init import write_random_pipeline

    recipe = demo_recipe(name)
    # every phase's folder is checked before any training: a later phase left by another recipe (a folder of the
    # shipped recipe's `unet/` under the quick one's) would otherwise be refused only after the earlier ones trained
    for run, phase in recipe.phases:
        _check_phase_folder(folder / run, _scaled_recipe(phase, scale))
    started = time.perf_counter()
    model = folder / "init"
    if not (model / "model_index.json").is_file():
        write_random_pipeline(model, recipe.arch, seed=seed, vae_from=recipe.autoencoder)
    for run, phase in recipe.phases:
        model = _fit_phase(model, folder / run, phase, index_path, seed, scale, threads)
    timing["unet"] = time.perf_counter() - started
    return str(model)


def _fit_phase(
    start: Path,
    run: Path,
    recipe: dict[str, Any],
    index_path: Path,
    seed: int,
    scale: float,
    threads: Callable[[], int] | None,
) -> Path:
    """``start`` trained by ``recipe`` into the run folder ``run`` (resuming its checkpoints); its model folder."""
    from cfaudit.train.checkpoint import latest_checkpoint
    from cfaudit.train.config import TrainConfig
    from cfaudit.train.trainer import train

    model = run / "model"
    scaled = _scaled_recipe(recipe, scale)  # the folder was checked against it (_fit_unet)
    if (model / "model_index.json").is_file():
        return model
    checkpoint = latest_checkpoint(run)
    config = TrainConfig(model=str(start), index=str(index_path), split="train", output_dir=str(run), seed=seed,
                         sample_every=0, **scaled)  # fmt: skip
    train(config, resume="latest" if checkpoint is not None else None, progress=False, threads=threads)
    return model


def _scaled_recipe(recipe: dict[str, Any], scale: float) -> dict[str, Any]:
    return {**recipe, **{key: _scaled(recipe[key], scale) for key in _SCALED}}


def _check_phase_folder(run: Path, recipe: dict[str, Any]) -> None:
    """A phase's run folder holds nothing another recipe trained: its finished model, else its latest checkpoint."""
    from cfaudit.train.checkpoint import latest_checkpoint

    if (run / "model" / "model_index.json").is_file():
        _check_phase_recipe(run / "model", recipe)
    elif (checkpoint := latest_checkpoint(run)) is not None:
        _check_phase_recipe(checkpoint, recipe)


def _check_phase_recipe(folder: Path, recipe: dict[str, Any]) -> None:
    """A phase found finished, or a checkpoint a resumed ``demo --train`` would go on from, was trained by
    ``recipe``: a folder left by another version's recipe (other steps, sizes or rates) would otherwise be taken as
    this one's, or finished under a recipe it did not start with."""
    from cfaudit.config_files import read_json
    from cfaudit.errors import CfauditError

    record = folder / "provenance.json"
    config = (
        read_json(record, "run demo --train with a new --out").get("config", {}) if record.is_file() else {}
    )
    differs = sorted(key for key, value in recipe.items() if key in config and config[key] != value)
    if differs:
        shown = ", ".join(f"{key} {config[key]!r} (the recipe: {recipe[key]!r})" for key in differs)
        raise CfauditError(f"{folder} was trained by another recipe than this version's ({shown}); "
                           "run demo --train with a new --out")  # fmt: skip


def _fit_side_models(
    folder: str, index: str, seed: int, scale: float, with_scm: bool, timing: dict[str, float] | None = None
) -> tuple[str, str | None, dict[str, float]]:
    """The attribute classifier (resumes from its last epoch) and, ``with_scm``, the SCM: run in the second
    process (on one thread) or here. Returns (classifier folder, SCM model folder or None, seconds each took)."""
    from cfaudit.train.classifier import ClassifierConfig, train_classifier

    if timing is None:  # the second process: one core
        import torch

        torch.set_num_threads(1)
        timing = {}
    started = time.perf_counter()
    classifier = Path(folder) / "classifier"
    if not (classifier / "classifier.json").is_file():
        config = ClassifierConfig(epochs=_scaled(ClassifierConfig.epochs, scale), seed=seed)
        train_classifier(Path(index), classifier, config, device="cpu")
    timing["classifier"] = time.perf_counter() - started
    scm = _fit_scm(Path(folder), Path(index), seed, scale, timing) if with_scm else None
    return str(classifier), scm, timing


def _fit_scm(folder: Path, index_path: Path, seed: int, scale: float, timing: dict[str, float]) -> str:
    """The SCM baseline, the small preset, with the demo's graph (its findings and cardiomegaly)."""
    from cfaudit.scm.config import load_config as load_scm_config
    from cfaudit.scm.train import train_scm

    def steps(count: int) -> int:
        return _scaled(count, scale)

    started = time.perf_counter()
    scm = folder / "scm"
    if not (scm / "model").is_dir():
        graph = Path(__file__).resolve().parent / "scm" / "presets" / "graph_demo.yaml"  # + Cardiomegaly
        overrides = {"index": str(index_path), "output_dir": str(scm), "seed": seed, "max_steps": steps(1000),
                     "mechanism_steps": steps(400), "lr_warmup_steps": steps(100), "checkpoint_every": steps(250),
                     "eval_images": steps(256), "graph_file": str(graph)}  # fmt: skip
        settings = load_scm_config("small", None, overrides)
        train_scm(settings, resume="latest" if (scm / "checkpoints").is_dir() else None, progress=False)
    timing["scm"] = time.perf_counter() - started
    return str(scm / "model")
