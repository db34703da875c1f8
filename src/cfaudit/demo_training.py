"""``cfaudit demo --train``: fit the demo's models on its own phantom instead of using the shipped ones.

The same recipes that made the shipped models (``configs/train/tiny_vae.yaml``, ``configs/train/demo.yaml``,
``cfaudit/evaluate/demo_classifier/README.txt``, the SCM ``small`` preset), written here so that an installed
package needs no repository checkout. On 2 CPU cores this should take about 45 minutes (the sum of the recipes' measured times, most of it the UNet; not timed as one run);
every step resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

Progress = Callable[[str, int, int], None]


def train_demo_models(
    folder: Path, index_path: Path, seed: int, tell: Progress, scale: float = 1.0
) -> tuple[str, str, str]:
    """Train the tiny diffusion model (VAE, then UNet + text encoder), the classifier and the SCM into ``folder``.

    ``scale`` multiplies every step and epoch count (the tests run the recipes at a tiny scale).
    Returns (diffusion model folder, classifier folder, SCM model folder)."""

    def steps(count: int) -> int:
        return max(1, round(count * scale))

    from cfaudit.evaluate.classifiers import ClassifierConfig, train_classifier
    from cfaudit.models.random_init import write_random_pipeline
    from cfaudit.scm.config import load_config as load_scm_config
    from cfaudit.scm.train import train_scm
    from cfaudit.train.config import TrainConfig, VaeTrainConfig
    from cfaudit.train.trainer import train
    from cfaudit.train.vae import train_vae

    folder.mkdir(parents=True, exist_ok=True)
    # 1. Diffusion model: random tiny pipeline -> its own VAE -> UNet and text encoder
    tell("train: VAE", 0, 3)
    init = folder / "init"
    if not (init / "model_index.json").is_file():
        write_random_pipeline(init, "tiny", seed=seed)
    vae_model = folder / "vae" / "model"
    if not (vae_model / "model_index.json").is_file():
        train_vae(
            VaeTrainConfig(
                model=str(init), index=str(index_path), split="train", output_dir=str(folder / "vae"),
                resolution=128, crop=64, max_steps=steps(400), batch_size=8, learning_rate=0.002, kl_weight=1e-6,
                seed=seed, log_every=50,
            ),
            progress=False,
        )  # fmt: skip
    tell("train: UNet", 1, 3)
    unet_model = folder / "unet" / "model"
    if not (unet_model / "model_index.json").is_file():
        config = TrainConfig(
            model=str(vae_model), index=str(index_path), split="train", output_dir=str(folder / "unet"),
            resolution=128, train_text_encoder=True, text_encoder_lr=1e-3, snr_gamma=5.0, caption_dropout=0.1,
            max_steps=steps(2500), batch_size=16, learning_rate=1e-3, lr_schedule="cosine", lr_warmup_steps=steps(100),
            adam_weight_decay=0.0, use_ema=True, ema_decay=0.995, mixed_precision="no", seed=seed,
            checkpoint_every=steps(250), keep_checkpoints=2, sample_every=0, save_dtype="float16",
        )  # fmt: skip
        has_checkpoint = (folder / "unet" / "checkpoints").is_dir()
        train(config, resume="latest" if has_checkpoint else None, progress=False)
    # 2. Attribute classifier (resumes from its last epoch)
    tell("train: classifier", 2, 3)
    classifier = folder / "classifier"
    if not (classifier / "classifier.json").is_file():
        train_classifier(index_path, classifier, ClassifierConfig(epochs=steps(15), seed=seed), device="cpu")
    # 3. SCM baseline, the small preset
    scm = folder / "scm"
    if not (scm / "model").is_dir():
        graph = Path(__file__).resolve().parent / "scm" / "presets" / "graph_demo.yaml"  # + Cardiomegaly
        overrides = {"index": str(index_path), "output_dir": str(scm), "seed": seed, "max_steps": steps(1000),
                     "mechanism_steps": steps(400), "lr_warmup_steps": steps(100), "checkpoint_every": steps(250),
                     "eval_images": steps(256), "graph_file": str(graph)}  # fmt: skip
        settings = load_scm_config("small", None, overrides)
        train_scm(settings, resume="latest" if (scm / "checkpoints").is_dir() else None, progress=False)
    tell("train: SCM", 3, 3)
    return str(unet_model), str(classifier), str(scm / "model")
