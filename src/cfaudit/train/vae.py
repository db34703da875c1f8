"""Train a pipeline's VAE (the tiny preset's autoencoder) on a data index: one short loop.

SD's VAE is pretrained and never changes; the tiny CPU preset has no pretrained one, so it is trained here first,
once, on the data set's images: reconstruction (L1) plus a small KL term that keeps the latent space smooth.
Afterwards the latent scale is set as SD sets it (1 / standard deviation of the data's latents), so the
diffusion model sees unit-variance latents, and the whole pipeline is written with the trained VAE.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from cfaudit.errors import CfauditError
from cfaudit.train.config import VaeTrainConfig
from cfaudit.train.latent_cache import load_pixels

log = logging.getLogger("cfaudit")


@dataclass
class VaeResult:
    step: int
    losses: list[float] = field(default_factory=list)
    scaling_factor: float = 1.0
    model_dir: Path | None = None
    seconds: float = 0.0


def _random_crops(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One random ``size`` x ``size`` crop of each image (positions on the 8-pixel latent grid)."""
    steps = (images.shape[-1] - size) // 8 + 1
    corners = torch.randint(0, steps, (len(images), 2), generator=generator) * 8
    return torch.stack(
        [img[:, y : y + size, x : x + size] for img, (y, x) in zip(images, corners.tolist(), strict=True)]
    )


def train_vae(config: VaeTrainConfig, *, progress: bool = True) -> VaeResult:
    """Train ``config.model``'s VAE and write the pipeline with it to ``output_dir/model``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from cfaudit.data.records import DataIndex
    from cfaudit.models.loading import load_components

    # 1. Model and data (all pixels in memory: the tiny preset's data sets are small)
    components = load_components(config.model)
    vae = components.vae
    if config.resolution % components.vae_scale_factor:
        raise CfauditError(
            f"vae config: resolution {config.resolution} must be a multiple of {components.vae_scale_factor}"
        )
    if not config.index:
        raise CfauditError(
            "vae config: `index` is empty; set it to an index.csv made by `cfaudit data index`"
        )
    index = DataIndex.read(config.index).split(config.split)
    if len(index) == 0:
        raise CfauditError(f"{config.index}: split {config.split!r} has no rows; nothing to train on")
    pixels = load_pixels(index.image_paths(), config.resolution, int(vae.config.in_channels))
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    vae.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, weight_decay=0.0)
    result = VaeResult(step=0)
    started = time.perf_counter()

    # 2. The loop: reconstruct a random batch, L1 + KL
    columns = (TextColumn("[bold]vae"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("vae", total=config.max_steps, loss=float("nan"))
        for step in range(1, config.max_steps + 1):
            rows = torch.randint(0, len(pixels), (config.batch_size,), generator=generator)
            batch = _random_crops(pixels[rows], config.crop, generator) if config.crop else pixels[rows]
            posterior = vae.encode(batch).latent_dist
            latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
            reconstruction = vae.decode(latents).sample
            loss = F.l1_loss(reconstruction, batch) + config.kl_weight * posterior.kl().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            result.losses.append(loss.item())
            result.step = step
            bar.update(task, completed=step, loss=loss.item())
            if step % config.log_every == 0:
                rate = step * config.batch_size / (time.perf_counter() - started)
                log.info(
                    "vae step %d/%d loss %.4f (%.1f images/s)", step, config.max_steps, loss.item(), rate
                )

    # 3. Latent scale (SD's convention: 1 / std of the data's latents) and the pipeline written with this VAE
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        means = torch.cat(
            [vae.encode(pixels[i : i + 64]).latent_dist.mean for i in range(0, len(pixels), 64)]
        )
    result.scaling_factor = float(1.0 / means.std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=result.scaling_factor)
    result.seconds = time.perf_counter() - started
    record = {"config": config.to_dict(), "steps": result.step, "final_loss": result.losses[-1],
              "scaling_factor": result.scaling_factor, "base_model": config.model, "seconds": round(result.seconds, 1)}  # fmt: skip
    result.model_dir = components.save(
        Path(config.output_dir) / "model", extra_json={"vae_provenance.json": record}
    )
    return result
