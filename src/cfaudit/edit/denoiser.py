"""The UNet behind one call, with classifier-free guidance and a count of what it cost.

Cost is counted in *UNet evaluations*: forward-equivalents per latent. A forward pass over a batch of ``k``
latents counts ``k``; a backward pass through the UNet (null-text optimisation) counts ``2k``. Every inversion
and edit reports this count, so methods are compared by work done rather than by wall time alone.
"""

from __future__ import annotations

from typing import Any

import torch


class Denoiser:
    """Wraps a ``UNet2DConditionModel``: ``denoiser(latents, t, embeddings)`` -> the UNet's output, counted."""

    def __init__(self, unet: Any) -> None:
        self.unet = unet
        self.evals = 0.0

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def __call__(
        self, latents: torch.Tensor, timestep: torch.Tensor | int, embeddings: torch.Tensor
    ) -> torch.Tensor:
        self.evals += latents.shape[0]
        output = self.unet(
            latents.to(self.dtype),
            timestep,
            encoder_hidden_states=embeddings.to(self.dtype),
            return_dict=False,
        )[0]
        return output.float()

    def count_backward(self, batch: int) -> None:
        """Record one backward pass through the UNet for ``batch`` latents (two forward-equivalents each)."""
        self.evals += 2 * batch

    def guided(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor | int,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """Classifier-free guidance ``u + scale (c - u)`` in one batched call; ``scale == 1`` skips ``u``."""
        if scale == 1.0:
            return self(latents, timestep, cond)
        both = self(torch.cat([latents, latents]), timestep, torch.cat([uncond, cond]))
        u, c = both.chunk(2)
        return guide(u, c, scale)


def guide(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale * (cond - uncond)``."""
    return uncond + scale * (cond - uncond)
