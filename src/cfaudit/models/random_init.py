"""Build a pipeline of a preset architecture with random weights, in memory or written to a folder.

With no hub, this is how tests exercise the real SD v1.5 loading / training / sampling path: the folder written
here has the same files, names and shapes as the published ``stable-diffusion-v1-5`` one, only random values.
It is also the starting point of the tiny CPU preset (whose VAE and UNet are then trained here).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cfaudit.errors import CfauditError
from cfaudit.models.components import PipelineComponents
from cfaudit.models.model_card import write_card_quietly
from cfaudit.models.presets import ARCHITECTURES, Architecture, architecture
from cfaudit.models.tokenizer import copy_tokenizer


def build_random(
    arch: str | Architecture,
    *,
    seed: int = 0,
    tokenizer_dir: Path | None = None,
    text_encoder: str = "clip",
) -> PipelineComponents:
    """A randomly initialised pipeline of ``arch`` (seeded); the tokenizer is SD's (or the one in ``tokenizer_dir``).

    ``text_encoder="minilm"`` puts the frozen pretrained MiniLM (:mod:`cfaudit.models.pretrained_text`) in place
    of the random CLIP text encoder, and gives the UNet the one linear layer that projects MiniLM's 384-wide
    states onto its cross-attention width; everything else is the same random architecture.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from cfaudit.models.pretrained_text import (
        MINILM_WIDTH,
        TEXT_ENCODERS,
        load_minilm,
        unet_text_projection,
    )

    if text_encoder not in TEXT_ENCODERS:
        raise CfauditError(f"unknown text encoder {text_encoder!r}; choose one of {', '.join(TEXT_ENCODERS)}")
    spec = architecture(arch) if isinstance(arch, str) else arch
    configs = spec.configs()
    if text_encoder == "minilm":
        configs["unet"].update(unet_text_projection(MINILM_WIDTH))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**configs["unet"])
    vae = AutoencoderKL(**configs["vae"])
    scheduler_config = {k: v for k, v in configs["scheduler"].items() if not k.startswith("_")}
    noise_scheduler = DDPMScheduler.from_config(scheduler_config)
    if text_encoder == "minilm":
        encoder, tokenizer = load_minilm()
    else:
        text_config = {
            k: v for k, v in configs["text_encoder"].items() if k not in ("architectures", "model_type")
        }
        encoder = CLIPTextModel(CLIPTextConfig(**text_config))
        if tokenizer_dir is None:
            import tempfile

            with tempfile.TemporaryDirectory() as scratch:
                tokenizer = CLIPTokenizer.from_pretrained(str(copy_tokenizer(Path(scratch), spec.pad_token)))
        else:
            tokenizer = CLIPTokenizer.from_pretrained(str(tokenizer_dir))
    meta = {"seed": seed, "text_encoder": text_encoder}
    components = PipelineComponents(
        unet, vae, encoder, tokenizer, noise_scheduler, source=f"random:{spec.name}", meta=meta
    )
    return components.eval()


def write_random_pipeline(
    out: str | os.PathLike[str],
    arch: str = "sd15",
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    text_encoder: str = "clip",
    vae_from: str | None = None,
) -> Path:
    """Write a random pipeline of ``arch`` to ``out`` (diffusers format, safetensors) and return the folder.

    ``vae_from`` (a model: ``demo``, a folder, a hub id; or a preset's name: the autoencoder shipped for it) takes
    that trained VAE instead of a random one, so that a new UNet is trained on fixed latents, as SD's UNet is on
    its pretrained VAE's.
    """
    components = build_random(arch, seed=seed, text_encoder=text_encoder)
    extra: dict[str, object] = {}
    if vae_from is not None:
        import json

        from cfaudit.models.loading import load_components

        if vae_from in ARCHITECTURES:  # the autoencoder shipped for that preset
            from diffusers import AutoencoderKL

            from cfaudit.models.shipped_model import shipped_autoencoder, shipped_autoencoder_provenance

            vae = AutoencoderKL.from_pretrained(shipped_autoencoder(vae_from)).float()
            record = shipped_autoencoder_provenance(vae_from)
        else:
            donor = load_components(vae_from)
            vae = donor.vae
            path = Path(donor.meta["folder"]) / "vae_provenance.json"
            record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        theirs = (int(vae.config.latent_channels), 2 ** (len(vae.config.block_out_channels) - 1))
        ours = (int(components.vae.config.latent_channels), components.vae_scale_factor)
        if theirs != ours:
            raise CfauditError(
                f"{vae_from}: its VAE ({theirs[0]} latent channels, {theirs[1]}x) does not fit the {arch} UNet "
                f"({ours[0]} latent channels, {ours[1]}x)"
            )
        components.vae = vae
        if record:
            extra["vae_provenance.json"] = record
    folder = components.save(out, dtype=dtype, extra_json=extra or None)
    origin = {
        "architecture": architecture(arch).name,
        "seed": seed,
        "text_encoder": text_encoder,
        "vae_from": vae_from,
    }
    write_card_quietly(folder, origin=origin)
    return folder
