"""Build a pipeline of a preset architecture with random weights, in memory or written to a folder.

With no hub, this is how tests exercise the real SD v1.5 loading / training / sampling path: the folder written
here has the same files, names and shapes as the published ``stable-diffusion-v1-5`` one, only random values.
It is also the starting point of the tiny CPU preset (whose VAE and UNet are then trained here).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cfaudit.models.components import PipelineComponents
from cfaudit.models.presets import Architecture, architecture
from cfaudit.models.tokenizer import copy_tokenizer


def build_random(
    arch: str | Architecture, *, seed: int = 0, tokenizer_dir: Path | None = None
) -> PipelineComponents:
    """A randomly initialised pipeline of ``arch`` (seeded); the tokenizer is SD's (or the one in ``tokenizer_dir``)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    spec = architecture(arch) if isinstance(arch, str) else arch
    configs = spec.configs()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**configs["unet"])
    vae = AutoencoderKL(**configs["vae"])
    text_config = {
        k: v for k, v in configs["text_encoder"].items() if k not in ("architectures", "model_type")
    }
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    scheduler_config = {k: v for k, v in configs["scheduler"].items() if not k.startswith("_")}
    noise_scheduler = DDPMScheduler.from_config(scheduler_config)
    if tokenizer_dir is None:
        import tempfile

        with tempfile.TemporaryDirectory() as scratch:
            tokenizer = CLIPTokenizer.from_pretrained(str(copy_tokenizer(Path(scratch), spec.pad_token)))
    else:
        tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    components = PipelineComponents(
        unet, vae, text_encoder, tokenizer, noise_scheduler, source=f"random:{spec.name}", meta={"seed": seed}
    )
    return components.eval()


def write_random_pipeline(
    out: str | os.PathLike[str], arch: str = "sd15", *, seed: int = 0, dtype: torch.dtype | None = None
) -> Path:
    """Write a random pipeline of ``arch`` to ``out`` (diffusers format, safetensors) and return the folder."""
    components = build_random(arch, seed=seed)
    return components.save(out, dtype=dtype)
