"""What one training step minimises: the denoising loss of a batch (MSE to the noise or the velocity, min-SNR
weighting, a coarse term) and the anchor that trains a share of each batch towards a frozen copy of the starting
model instead of the data (``preserve_weight``: a phase that teaches new words keeps what the other words drew).

:func:`cfaudit.train.trainer.train` calls these once per micro-batch; they hold no state of the loop.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cfaudit.models.components import PipelineComponents
from cfaudit.models.text_encoding import encode_ids
from cfaudit.train.config import TrainConfig


@dataclass
class Anchor:
    """The first ``rows`` rows of a batch are trained towards a frozen model's prediction (``predict``: noisy
    latents and timesteps of those rows in, prediction out) instead of the data's target, weighted by ``weight``."""

    rows: int
    predict: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    weight: float


def diffusion_loss(
    unet: Any,
    noise_scheduler: Any,
    latents: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    prediction_type: str,
    snr_gamma: float | None = None,
    coarse: tuple[float, int] | None = None,
    anchor: Anchor | None = None,
) -> torch.Tensor:
    """The denoising loss of one batch: MSE to the noise (epsilon) or the velocity (v), optionally min-SNR
    weighted, optionally with a coarse term (``coarse``: weight and pool, :func:`coarse_error`); with ``anchor``,
    its rows' target is a frozen model's prediction (:class:`Anchor`)."""
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    target = (
        noise if prediction_type == "epsilon" else noise_scheduler.get_velocity(latents, noise, timesteps)
    )
    if anchor is not None:
        with torch.no_grad():
            target = target.clone()
            target[: anchor.rows] = anchor.predict(noisy[: anchor.rows], timesteps[: anchor.rows]).to(
                target.dtype
            )
    prediction = unet(noisy, timesteps, encoder_hidden_states=encoder_hidden_states).sample
    if snr_gamma is None and coarse is None and anchor is None:
        return F.mse_loss(prediction.float(), target.float())
    error = prediction.float() - target.float()
    per_sample = error.pow(2).mean(dim=(1, 2, 3))
    if coarse is not None:
        per_sample = per_sample + coarse[0] * coarse_error(error, coarse[1])
    if anchor is not None:
        per_sample = torch.cat([per_sample[: anchor.rows] * anchor.weight, per_sample[anchor.rows :]])
    if snr_gamma is None:
        return per_sample.mean()
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, timesteps)
    weight = torch.clamp(snr, max=snr_gamma)
    weight = weight / snr if prediction_type == "epsilon" else weight / (snr + 1)
    return (per_sample * weight).mean()


def snr_shifted_schedule(noise_scheduler: Any, shift: float) -> Any:
    """A copy of ``noise_scheduler`` whose signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` is ``shift`` times
    the original's at every timestep (``shift`` 1: the scheduler itself).

    Training draws its noise through ``add_noise`` and ``get_velocity`` and weighs it through ``compute_snr``, which
    all read ``alphas_cumprod``; the copy's betas are rederived from it so that the schedule stays one schedule."""
    if shift == 1.0:
        return noise_scheduler
    shifted = copy.deepcopy(noise_scheduler)
    alpha_bar = noise_scheduler.alphas_cumprod.double()
    alpha_bar = shift * alpha_bar / (1.0 + (shift - 1.0) * alpha_bar)
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    shifted.alphas_cumprod = alpha_bar.to(noise_scheduler.alphas_cumprod.dtype)
    shifted.alphas = alphas.to(noise_scheduler.alphas.dtype)
    shifted.betas = (1.0 - alphas).to(noise_scheduler.betas.dtype)
    return shifted


def coarse_error(error: torch.Tensor, pool: int) -> torch.Tensor:
    """Per sample, the squared error of the prediction averaged over ``pool`` x ``pool`` latent cells, scaled by
    the cell's size so that white (pixel-to-pixel independent) errors score as in the plain MSE.

    The plain loss counts every latent number alike, so the few coarse components that set the layout (how wide
    the heart is) weigh little beside the many fine ones (grain, lines); an error spread over a region (a heart
    border drawn in the wrong place) survives the averaging and weighs up to ``pool**2`` times more here."""
    pooled = F.avg_pool2d(error, pool)
    return pooled.pow(2).mean(dim=(1, 2, 3)) * pool * pool


def frozen_copy(
    config: TrainConfig, components: PipelineComponents, device: torch.device, dtype: torch.dtype
) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """A frozen copy of the starting UNet and, when it trains, of the text encoder (``None``: the frozen encoder
    is shared), in the compute dtype (a float32 one is only moved: diffusers warns on any dtype cast)."""
    cast = {} if dtype == torch.float32 else {"dtype": dtype}
    unet = copy.deepcopy(components.unet).requires_grad_(False).eval().to(device, **cast)
    text_encoder = None
    if config.train_text_encoder:
        text_encoder = copy.deepcopy(components.text_encoder).requires_grad_(False).eval().to(device, **cast)
    return unet, text_encoder


def anchored_rows(config: TrainConfig, n: int) -> int:
    """How many of a micro-batch's ``n`` rows (at least 2: the config's check) keep the starting model's
    predictions: at least one, and at least one left to learn from the data."""
    return min(n - 1, max(1, round(config.preserve_share * n)))


def teacher_prediction(
    teacher: tuple[torch.nn.Module, torch.nn.Module | None], ids: torch.Tensor, hidden: torch.Tensor
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The frozen model's prediction for noisy latents under the captions ``ids``; ``hidden``: their states from
    the training text encoder, used as they are when that encoder is frozen (no second encode)."""
    unet, text_encoder = teacher

    def predict(noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            states = hidden.detach() if text_encoder is None else encode_ids(text_encoder, ids)
            return unet(noisy, timesteps, encoder_hidden_states=states).sample

    return predict
