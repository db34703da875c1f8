"""``cfaudit demo --train``: fit the demo's models on its own phantom instead of using the shipped ones.

As the paper reuses SD's pretrained autoencoder, the demo reuses the shipped one (trained once, for as long as it
needed, by ``configs/train/tiny_vae.yaml``) and refits what the paper trains: the UNet (here with its small text
encoder, which has no pretrained weights to start from), the attribute classifier and the SCM baseline. The
recipes are written here so that an installed package needs no repository checkout; ``configs/train/demo.yaml``
holds the same UNet recipe for ``cfaudit train`` (a test keeps the two equal). Every step resumes where it
stopped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from cfaudit.progress import Progress

#: The demo UNet's training recipe (paths aside): the shipped model was made with it (``configs/train/demo.yaml``,
#: full captions), and ``--train`` refits it.
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
#: Steps that scale with ``scale`` (the tests run every recipe at a tiny scale).
_SCALED = ("max_steps", "lr_warmup_steps", "checkpoint_every")


def _scaled(count: int, scale: float) -> int:
    return max(1, round(count * scale))


def train_demo_models(
    folder: Path, index_path: Path, seed: int, tell: Progress, scale: float = 1.0
) -> tuple[str, str, str]:
    """Train the demo's UNet and text encoder (on the shipped autoencoder), the classifier and the SCM into
    ``folder``. ``scale`` multiplies every step and epoch count. Returns (diffusion model folder, classifier
    folder, SCM model folder); the seconds each took are in ``folder/timing.json``."""
    from cfaudit.atomic_io import write_json
    from cfaudit.scm.config import load_config as load_scm_config
    from cfaudit.scm.train import train_scm

    def steps(count: int) -> int:
        return _scaled(count, scale)

    timing: dict[str, float] = {}
    unet_model, classifier = train_demo_editor(folder, index_path, seed, tell, scale, timing)
    # 3. SCM baseline, the small preset
    tell("train: SCM", 2, 3)
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
    tell("train: SCM", 3, 3)
    write_json(folder / "timing.json", {"seconds_this_call": {k: round(v, 1) for k, v in timing.items()}})
    return unet_model, classifier, str(scm / "model")


def train_demo_editor(
    folder: Path,
    index_path: Path,
    seed: int,
    tell: Progress,
    scale: float = 1.0,
    timing: dict[str, float] | None = None,
) -> tuple[str, str]:
    """The first two steps of :func:`train_demo_models`, which discovery needs (no SCM): the UNet and text
    encoder on the shipped autoencoder, and the attribute classifier, into ``folder``; each resumes. Returns
    (diffusion model folder, classifier folder); the seconds each took are added to ``timing``."""
    from cfaudit.models.random_init import write_random_pipeline
    from cfaudit.train.classifier import ClassifierConfig, train_classifier
    from cfaudit.train.config import TrainConfig
    from cfaudit.train.trainer import train

    def steps(count: int) -> int:
        return _scaled(count, scale)

    timing = timing if timing is not None else {}
    folder.mkdir(parents=True, exist_ok=True)
    # 1. Diffusion model: a random UNet and text encoder on the shipped autoencoder, then trained
    tell("train: UNet", 0, 3)
    started = time.perf_counter()
    init = folder / "init"
    if not (init / "model_index.json").is_file():
        write_random_pipeline(init, "tiny", seed=seed, vae_from="demo")
    unet_model = folder / "unet" / "model"
    if not (unet_model / "model_index.json").is_file():
        recipe = {**DEMO_UNET_RECIPE, **{key: steps(DEMO_UNET_RECIPE[key]) for key in _SCALED}}
        config = TrainConfig(model=str(init), index=str(index_path), split="train", output_dir=str(folder / "unet"),
                             seed=seed, sample_every=0, **recipe)  # fmt: skip
        has_checkpoint = (folder / "unet" / "checkpoints").is_dir()
        train(config, resume="latest" if has_checkpoint else None, progress=False)
    timing["unet"] = time.perf_counter() - started
    # 2. Attribute classifier (resumes from its last epoch)
    tell("train: classifier", 1, 3)
    started = time.perf_counter()
    classifier = folder / "classifier"
    if not (classifier / "classifier.json").is_file():
        train_classifier(index_path, classifier, ClassifierConfig(epochs=steps(15), seed=seed), device="cpu")
    timing["classifier"] = time.perf_counter() - started
    return str(unet_model), str(classifier)
