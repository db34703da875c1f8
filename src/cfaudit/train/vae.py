"""Train a pipeline's VAE (the tiny preset's autoencoder) on a data index: one loop, top to bottom.

SD's VAE is pretrained and never changes; the tiny CPU preset has none, so it is trained here first, once, on the
data set's images, and then shipped like SD's. The loss is SD's autoencoder loss without the adversarial part:
reconstruction (L1, optionally + ``mse_weight`` x squared error) + ``lpips_weight`` x LPIPS (the AlexNet network of :mod:`cfaudit.models.lpips`, which keeps
edges and thin structures that L1 alone lets blur) + a small KL term that keeps the latent space smooth. The
loop trains on random crops (the VAE is convolutional) and checkpoints as the UNet trainer does (weights,
optimizer, schedule and generator, no pickle), so a long run resumes where it was killed; every checkpoint also
measures the held-out reconstruction error, the learning curve that says how long is long enough. Afterwards the
latent scale is set as SD sets it (1 / standard deviation of the data's latents), so the diffusion model sees
unit-variance latents, and the whole pipeline is written with the trained VAE.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cfaudit import __version__, atomic_io
from cfaudit.data.records import DataIndex
from cfaudit.digests import file_sha256
from cfaudit.errors import CfauditError
from cfaudit.models.loading import load_components
from cfaudit.models.lpips import LPIPS
from cfaudit.models.model_card import write_card_quietly
from cfaudit.train import checkpoint as ckpt
from cfaudit.train.config import VaeTrainConfig, require_filled
from cfaudit.train.latent_cache import load_pixels

log = logging.getLogger("cfaudit")


@dataclass
class VaeResult:
    step: int
    losses: list[float] = field(default_factory=list)  # one per step taken in this call
    held_out_l1: dict[int, float] = field(default_factory=dict)  # step -> L1 (0-255) on the eval split
    scaling_factor: float = 1.0
    model_dir: Path | None = None
    seconds: float = 0.0


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One random ``size`` x ``size`` crop of each image (positions on the 8-pixel latent grid)."""
    steps = (images.shape[-1] - size) // 8 + 1
    corners = torch.randint(0, steps, (len(images), 2), generator=generator) * 8
    return torch.stack(
        [img[:, y : y + size, x : x + size] for img, (y, x) in zip(images, corners.tolist(), strict=True)]
    )


def learning_rate(config: VaeTrainConfig, step: int) -> float:
    """Linear warm-up, then constant or cosine decay to 0 at ``max_steps``."""
    if step <= config.lr_warmup_steps:
        return config.learning_rate * step / max(config.lr_warmup_steps, 1)
    if config.lr_schedule == "constant":
        return config.learning_rate
    done = (step - config.lr_warmup_steps) / max(config.max_steps - config.lr_warmup_steps, 1)
    return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * min(done, 1.0)))


@torch.no_grad()
def autoencode(vae: Any, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """The VAE's reconstruction (from its latent mean) of images ``[N, 1, H, W]`` in ``[-1, 1]``."""
    param = next(vae.parameters())
    channels = int(vae.config.in_channels)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(param.device, param.dtype)
        if batch.shape[1] != channels:
            batch = batch.mean(1, keepdim=True).expand(-1, channels, -1, -1)
        decoded = vae.decode(vae.encode(batch).latent_dist.mean).sample.float()
        out.append(decoded.mean(1, keepdim=True).clamp(-1.0, 1.0).cpu())
    return torch.cat(out) if out else images[:0]


def held_out_l1(vae: Any, pixels: torch.Tensor, batch_size: int = 16) -> float:
    """Mean |reconstruction - image| on the 0-255 scale (from the latent mean; whole images)."""
    was_training = vae.training
    vae.eval()
    decoded = autoencode(vae, pixels, batch_size)
    vae.train(was_training)
    return float((decoded - pixels.cpu().mean(1, keepdim=True)).abs().mean()) * 127.5 if len(pixels) else 0.0


def _pixels(config: VaeTrainConfig, split: str, channels: int, limit: int | None = None) -> torch.Tensor:
    index = DataIndex.read(config.index).split(split)
    paths = index.image_paths()[:limit] if limit else index.image_paths()
    return load_pixels(paths, config.resolution, channels) if paths else torch.zeros(0)


def train_vae(
    config: VaeTrainConfig, *, resume: str | None = None, stop_after: int | None = None, progress: bool = True
) -> VaeResult:
    """Train ``config.model``'s VAE and write the pipeline with it to ``output_dir/model``.

    ``resume``: ``latest`` (the newest checkpoint in ``output_dir``, or a fresh start when there is none) or a
    checkpoint folder. ``stop_after``: leave after that many steps in this call, with a checkpoint and without
    the final model (as if killed right after a checkpoint; for time-sliced jobs and the resume test).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # 1. Model and data (all pixels in memory: the tiny preset's data sets are small)
    require_filled(config, "vae config", ["model", "index", "output_dir"])
    atomic_io.check_output_folder(config.output_dir, "output_dir")
    components = load_components(config.model)
    vae = components.vae
    out = Path(config.output_dir)
    if config.resolution % components.vae_scale_factor:
        raise CfauditError(
            f"vae config: resolution {config.resolution} must be a multiple of {components.vae_scale_factor}"
        )
    if config.crop and config.crop % components.vae_scale_factor:
        raise CfauditError(
            f"vae config: crop {config.crop} must be a multiple of the VAE's {components.vae_scale_factor}x "
            "downsampling"
        )
    channels = int(vae.config.in_channels)
    pixels = _pixels(config, config.split, channels)
    if len(pixels) == 0:
        raise CfauditError(f"{config.index}: split {config.split!r} has no rows; nothing to train on")
    held_out = (
        _pixels(config, config.eval_split, channels, config.eval_images) if config.eval_images else None
    )
    perceptual = LPIPS.from_pretrained() if config.lpips_weight > 0 else None
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    vae.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, weight_decay=0.0)
    result = VaeResult(step=0)

    # 2. A fresh start or the state of a checkpoint
    start_checkpoint = ckpt.resolve_resume(out, resume) if resume else None
    if start_checkpoint is not None:
        saved = ckpt.read_state(start_checkpoint)
        ckpt.load_weights_into(vae, start_checkpoint, "vae")
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        result.step = int(saved["step"])
        result.held_out_l1 = {int(k): float(v) for k, v in saved.get("held_out_l1", {}).items()}
        log.info("resumed the VAE from %s at step %d", start_checkpoint, result.step)

    def save_checkpoint() -> None:
        state = {"step": result.step, "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                 "held_out_l1": {str(k): v for k, v in result.held_out_l1.items()}}  # fmt: skip
        ckpt.write_checkpoint(ckpt.checkpoint_dir(out, result.step), models={"vae": vae}, lora_state=None,
                              state=state, provenance={"config": config.to_dict(), "step": result.step})  # fmt: skip
        ckpt.prune_checkpoints(out, config.keep_checkpoints)

    # 3. The loop: reconstruct a random batch of crops; L1 + LPIPS + KL
    started = time.perf_counter()
    columns = (TextColumn("[bold]vae"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("vae", total=config.max_steps, completed=result.step, loss=float("nan"))
        while result.step < config.max_steps:
            step = result.step + 1
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            rows = torch.randint(0, len(pixels), (config.batch_size,), generator=generator)
            batch = random_crops(pixels[rows], config.crop, generator) if config.crop else pixels[rows]
            posterior = vae.encode(batch).latent_dist
            latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
            reconstruction = vae.decode(latents).sample
            loss = F.l1_loss(reconstruction, batch) + config.kl_weight * posterior.kl().mean()
            if config.mse_weight:
                loss = loss + config.mse_weight * F.mse_loss(reconstruction, batch)
            if perceptual is not None:
                loss = loss + config.lpips_weight * perceptual.distance(reconstruction, batch).mean()
            loss.backward()
            if config.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(vae.parameters(), config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            result.step = step
            result.losses.append(loss.item())
            bar.update(task, completed=step, loss=loss.item())
            if step % config.log_every == 0:
                rate = len(result.losses) * config.batch_size / (time.perf_counter() - started)
                log.info(
                    "vae step %d/%d loss %.4f (%.1f images/s)", step, config.max_steps, loss.item(), rate
                )
            stopping = stop_after is not None and len(result.losses) >= stop_after
            if step % config.checkpoint_every == 0 or step == config.max_steps or stopping:
                if held_out is not None and len(held_out):
                    result.held_out_l1[step] = held_out_l1(vae, held_out)
                    log.info("vae step %d: held-out L1 %.2f (0-255)", step, result.held_out_l1[step])
                save_checkpoint()
            if stopping:
                result.seconds = time.perf_counter() - started
                return result

    # 4. Latent scale (SD's convention: 1 / std of the data's latents), the pipeline with this VAE, its card
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        means = torch.cat(
            [vae.encode(pixels[i : i + 64]).latent_dist.mean for i in range(0, len(pixels), 64)]
        )
    result.scaling_factor = float(1.0 / means.std().clamp_min(1e-6))
    vae.register_to_config(scaling_factor=result.scaling_factor)
    result.seconds = time.perf_counter() - started
    record = {"config": config.to_dict(), "steps": result.step, "final_loss": result.losses[-1] if result.losses else None,
              "held_out_l1": {str(k): round(v, 3) for k, v in result.held_out_l1.items()},
              "scaling_factor": result.scaling_factor, "base_model": config.model,
              "seconds_this_call": round(result.seconds, 1),
              "data": {"index": config.index, "index_sha256": file_sha256(config.index), "split": config.split},
              "command": " ".join(sys.argv), "cfaudit_version": __version__, "torch_version": torch.__version__}  # fmt: skip
    result.model_dir = components.save(out / "model", extra_json={"vae_provenance.json": record})
    write_card_quietly(result.model_dir)
    return result
