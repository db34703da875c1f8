"""The parts of a Stable Diffusion pipeline, held together, and written back in diffusers' folder format.

Every later stage (training, sampling, inversion, editing) takes a :class:`PipelineComponents`: no hidden
globals, so a test passes tiny parts and a user real ones. :meth:`PipelineComponents.save` writes the layout
``StableDiffusionPipeline.from_pretrained`` reads (``model_index.json`` plus one subfolder per part, weights as
safetensors), so a model trained here loads in diffusers and vice versa.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cfaudit import atomic_io

#: Subfolder -> (library, class) as diffusers records it in ``model_index.json``.
MODEL_INDEX_CLASSES: dict[str, tuple[str, str]] = {
    "unet": ("diffusers", "UNet2DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "scheduler": ("diffusers", "PNDMScheduler"),
}


@dataclass
class PipelineComponents:
    """UNet, VAE, text encoder, tokenizer and the training noise scheduler (a ``DDPMScheduler``) of one model.

    ``source`` says where the parts came from (a folder, a hub id, ``demo``); ``meta`` carries provenance.
    """

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    noise_scheduler: Any
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def prediction_type(self) -> str:
        """``epsilon`` (SD 1.x) or ``v_prediction`` (SD 2.x 768): what the UNet is trained to output."""
        return str(self.noise_scheduler.config.prediction_type)

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_scale(self) -> float:
        """The factor that brings VAE latents to roughly unit variance (0.18215 for SD's VAE)."""
        return float(self.vae.config.scaling_factor)

    @property
    def resolution(self) -> int:
        """The image size the UNet was built for (``sample_size`` x VAE factor)."""
        size = self.unet.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * self.vae_scale_factor

    @property
    def image_channels(self) -> int:
        """Channels the VAE reads: 3 for SD (grayscale X-rays are repeated), 1 for the tiny preset."""
        return int(self.vae.config.in_channels)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> PipelineComponents:
        for model in (self.unet, self.vae, self.text_encoder):
            model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
        return self

    def eval(self) -> PipelineComponents:
        for model in (self.unet, self.vae, self.text_encoder):
            model.eval()
        return self

    def save(
        self,
        folder: str | os.PathLike[str],
        *,
        dtype: torch.dtype | None = None,
        extra_json: dict[str, Any] | None = None,
    ) -> Path:
        """Write a diffusers-format pipeline folder; it appears complete or not at all.

        ``dtype`` (e.g. ``torch.float16``) stores weights in that precision without changing the models in memory.
        The text encoder's ``config.json`` keeps the precision it computes in: transformers loads a model in the
        precision its config names (diffusers upcasts on its own), and a float16 text encoder next to a float32
        UNet breaks stock ``StableDiffusionPipeline.from_pretrained(folder)`` on a CPU ("mat1 and mat2 must have
        the same dtype"). ``extra_json`` maps file names to data written beside them (provenance records).
        """
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
        try:
            self._write(staging, dtype)
            for name, data in (extra_json or {}).items():
                atomic_io.write_json(staging / name, data)
            atomic_io.normal_permissions(staging)
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(folder, old)
                os.replace(staging, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return folder

    def _write(self, folder: Path, dtype: torch.dtype | None) -> None:
        for name in ("unet", "vae", "text_encoder"):
            save_model(getattr(self, name), folder / name, dtype)
        _keep_compute_dtype(self.text_encoder, folder / "text_encoder")
        save_tokenizer(self.tokenizer, folder / "tokenizer")
        # Written as DDIM (what we sample with); the betas and prediction type are the training schedule's.
        from diffusers import DDIMScheduler

        DDIMScheduler.from_config(self.noise_scheduler.config).save_pretrained(str(folder / "scheduler"))
        classes = {
            "text_encoder": type(self.text_encoder).__name__,
            "tokenizer": type(self.tokenizer).__name__,
        }
        write_model_index(folder, scheduler_class="DDIMScheduler", classes=classes)


def save_model(model: Any, folder: Path, dtype: torch.dtype | None = None) -> None:
    """``save_pretrained`` as safetensors, optionally in another precision (the model in memory is unchanged)."""
    if dtype is None or next(model.parameters()).dtype == dtype:
        model.save_pretrained(str(folder), safe_serialization=True)
        return
    original = next(model.parameters()).dtype
    model.to(dtype)
    try:
        model.save_pretrained(str(folder), safe_serialization=True)
    finally:
        model.to(original)


def _keep_compute_dtype(model: Any, folder: Path) -> None:
    """Write the in-memory precision into a transformers model's saved ``config.json`` (weights may be stored
    in a smaller one): transformers loads a model in the precision its config names."""
    import json

    config = folder / "config.json"
    if not config.is_file():
        return
    data = json.loads(config.read_text(encoding="utf-8"))
    computed = str(next(model.parameters()).dtype).replace("torch.", "")
    if data.get("dtype", computed) != computed:
        data["dtype"] = computed
        atomic_io.write_json(config, data)


def save_tokenizer(tokenizer: Any, folder: Path) -> None:
    """Save a CLIP tokenizer as SD ships it: ``vocab.json`` + ``merges.txt`` (which every transformers version
    reads), not the 3.6 MB ``tokenizer.json`` that transformers 5 writes instead."""
    import json

    tokenizer.save_pretrained(str(folder))
    fast = folder / "tokenizer.json"
    if not fast.is_file() or (folder / "vocab.json").is_file():
        return
    model = json.loads(fast.read_text(encoding="utf-8")).get("model", {})
    if model.get("type") != "BPE":
        return
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    atomic_io.write_text(folder / "vocab.json", json.dumps(model["vocab"], ensure_ascii=False))
    atomic_io.write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    fast.unlink()


def write_model_index(
    folder: Path, scheduler_class: str = "DDIMScheduler", classes: dict[str, str] | None = None
) -> None:
    """``model_index.json``: what makes the folder a ``StableDiffusionPipeline`` for diffusers.

    ``classes`` overrides the class recorded for a part (a BERT text encoder instead of CLIP's).
    """
    import diffusers

    index: dict[str, Any] = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
    }
    for name, (library, cls) in MODEL_INDEX_CLASSES.items():
        index[name] = [library, scheduler_class if name == "scheduler" else (classes or {}).get(name, cls)]
    atomic_io.write_json(folder / "model_index.json", index)
