"""Text-to-image sampling: DDIM with classifier-free guidance, one seed per image.

:func:`sample_latents` reads as SD's pipeline does: encode prompts, prepare timesteps, prepare latents, denoise,
decode. Each image's starting noise comes from its own seed, so image ``i`` is the same whatever the batch size.
Images come back as grayscale ``[N, 1, H, W]`` in ``[0, 1]`` (the mean of the VAE's channels for SD's RGB VAE).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cfaudit.errors import CfauditError
from cfaudit.models.components import PipelineComponents
from cfaudit.models.text_encoding import encode_prompts


def ddim_scheduler(components: PipelineComponents, steps: int) -> Any:
    """A DDIM scheduler with the model's training betas and prediction type, set to ``steps`` steps."""
    from diffusers import DDIMScheduler

    if steps < 1:
        raise CfauditError(f"sampling steps must be at least 1, got {steps}")
    scheduler = DDIMScheduler.from_config(components.noise_scheduler.config)
    scheduler.set_timesteps(steps)
    return scheduler


def initial_latents(components: PipelineComponents, seeds: Sequence[int]) -> torch.Tensor:
    """Unit Gaussian latents ``[N, C, h, w]``, image ``i`` drawn from ``seeds[i]`` (on CPU, then moved)."""
    size = components.resolution // components.vae_scale_factor
    channels = int(components.unet.config.in_channels)
    noise = [
        torch.randn((channels, size, size), generator=torch.Generator().manual_seed(int(s))) for s in seeds
    ]
    return torch.stack(noise).to(components.device, dtype=next(components.unet.parameters()).dtype)


def guided_noise_prediction(
    unet: Any,
    latents: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
) -> torch.Tensor:
    """The UNet's output with classifier-free guidance (``uncond=None``: no guidance)."""
    if uncond is None:
        return unet(latents, t, encoder_hidden_states=cond).sample
    both = unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    out_uncond, out_cond = both.chunk(2)
    return out_uncond + guidance * (out_cond - out_uncond)


def decode_latents(components: PipelineComponents, latents: torch.Tensor) -> torch.Tensor:
    """Latents -> grayscale images ``[N, 1, H, W]`` in ``[0, 1]``."""
    images = components.vae.decode(latents / components.latent_scale).sample
    images = (images.float().clamp(-1, 1) + 1) / 2
    return images.mean(dim=1, keepdim=True)


def _check_one_seed_each(prompts: Sequence[str], seeds: Sequence[int]) -> None:
    if len(prompts) != len(seeds):
        raise CfauditError(f"{len(prompts)} prompt(s) but {len(seeds)} seed(s); give one seed per image")


@dataclass(frozen=True)
class Sampling:
    """How images are drawn: DDIM steps, classifier-free guidance, DDIM's eta and the negative prompt."""

    steps: int = 50
    guidance: float = 7.5
    eta: float = 0.0  #: 0: deterministic DDIM; > 0 draws its noise from the first seed
    negative_prompt: str = ""


@torch.no_grad()
def sample_latents(
    components: PipelineComponents,
    prompts: Sequence[str],
    seeds: Sequence[int],
    sampling: Sampling = Sampling(),
) -> torch.Tensor:
    """Denoise one batch: DDIM from seeded noise to clean latents ``[N, C, h, w]`` (not yet decoded)."""
    # 1. Check inputs
    _check_one_seed_each(prompts, seeds)
    guidance, eta = sampling.guidance, sampling.eta
    # 2. Encode the prompts (and the negative prompt, for classifier-free guidance)
    cond = encode_prompts(components.text_encoder, components.tokenizer, prompts)
    uncond = None
    if guidance > 1.0:
        uncond = encode_prompts(
            components.text_encoder, components.tokenizer, [sampling.negative_prompt] * len(prompts)
        )
    # 3. Prepare timesteps and 4. latents
    scheduler = ddim_scheduler(components, sampling.steps)
    latents = initial_latents(components, seeds) * scheduler.init_noise_sigma
    # 5. Denoising loop (eta=0: deterministic DDIM; eta>0 draws its noise from the first seed)
    generator = torch.Generator().manual_seed(int(seeds[0]))
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        noise_pred = guided_noise_prediction(components.unet, model_input, t, cond, uncond, guidance)
        latents = scheduler.step(noise_pred, t, latents, eta=eta, generator=generator).prev_sample
    return latents


@torch.no_grad()
def sample_images(
    components: PipelineComponents,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    steps: int = 50,
    guidance: float = 7.5,
    eta: float = 0.0,
    batch_size: int = 8,
    negative_prompt: str = "",
) -> torch.Tensor:
    """Sample one image per (prompt, seed) pair in batches; returns ``[N, 1, H, W]`` in ``[0, 1]`` on CPU."""
    _check_one_seed_each(prompts, seeds)
    if batch_size < 1:
        raise CfauditError(f"batch size must be at least 1, got {batch_size}")
    sampling = Sampling(steps, guidance, eta, negative_prompt)
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = slice(start, start + batch_size)
        latents = sample_latents(components, list(prompts[chunk]), list(seeds[chunk]), sampling)
        out.append(decode_latents(components, latents).cpu())
    return torch.cat(out)


def write_samples(
    model: str,
    prompts: Sequence[str],
    out: str | os.PathLike[str],
    *,
    n: int = 1,
    seed: int = 0,
    steps: int = 50,
    guidance: float = 7.5,
    batch_size: int = 8,
    device: str | None = None,
) -> dict[str, Any]:
    """Load ``model``, sample ``n`` images per prompt (seeds ``seed..seed+n-1``), write PNGs and ``samples.json``.

    ``device``: as :func:`cfaudit.devices.resolve_device` (``None``: the GPU when there is one). The starting noise
    is drawn on the CPU from each image's seed, so a seed gives the same image on any device up to rounding."""
    from cfaudit import atomic_io
    from cfaudit.data.images import save_image
    from cfaudit.devices import resolve_device
    from cfaudit.models.loading import load_components

    if n < 1:
        raise CfauditError(f"--n must be at least 1, got {n}")
    if not prompts:
        raise CfauditError("give at least one --prompt")
    components = load_components(model, device=resolve_device(device))
    jobs = [(p, seed + i) for p in prompts for i in range(n)]
    images = sample_images(components, [p for p, _ in jobs], [s for _, s in jobs], steps=steps, guidance=guidance,
                           batch_size=batch_size)  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, ((prompt, image_seed), image) in enumerate(zip(jobs, images, strict=True)):
        name = f"sample-{k:04d}-seed{image_seed}.png"
        save_image(image[0].numpy(), out / name)
        entries.append({"file": name, "prompt": prompt, "seed": image_seed})
    record = {"model": model, "model_folder": components.meta.get("folder"), "steps": steps, "guidance": guidance,
              "scheduler": "DDIM", "eta": 0.0, "resolution": components.resolution, "images": entries}  # fmt: skip
    atomic_io.write_json(out / "samples.json", record)
    return record
