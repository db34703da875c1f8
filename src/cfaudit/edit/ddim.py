"""DDIM steps in both directions on one grid of timesteps, so that inversion lines up exactly with sampling.

Sampling step ``i`` (``i = 0`` is the noisiest) takes a latent from the noise level of ``timesteps[i]`` to that of
``timesteps[i] - T // N`` (``T`` training steps, ``N`` inference steps; below 0 the scheduler's final level), with
the UNet evaluated at ``timesteps[i]`` - exactly what ``diffusers.DDIMScheduler.step`` does. Inversion step ``i``
is its mirror image: from the lower level back up to ``timesteps[i]``, with the UNet evaluated at ``timesteps[i]``
on the less noisy latent - exactly what ``diffusers.DDIMInverseScheduler.step`` does. The two therefore share one
grid of noise levels, and a trajectory stored by inversion is indexed the same way the sampler walks it.

Trajectories are stored by *level*: ``levels[0]`` is the clean latent, ``levels[N]`` the noisiest; sampling step
``i`` goes from level ``N - i`` to level ``N - i - 1``.

``clip_sample`` and thresholding are not applied: a clipped step cannot be inverted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cfaudit.errors import CfauditError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class DDIMGrid:
    """The timesteps of an ``N``-step DDIM run and the noise level (``alpha_cumprod``) at both ends of each step."""

    timesteps: torch.Tensor  # [N] int64, descending (sampling order)
    alpha: torch.Tensor  # [N] float64: level the sampling step starts from (at timesteps[i])
    alpha_prev: torch.Tensor  # [N] float64: level the sampling step ends at
    prediction_type: str = "epsilon"

    @classmethod
    def from_scheduler(cls, scheduler: Any, steps: int) -> DDIMGrid:
        """The grid of ``steps`` DDIM steps for any diffusers scheduler's config (DDPM, PNDM, DDIM...)."""
        from diffusers import DDIMScheduler

        if steps < 1:
            raise CfauditError(f"the number of DDIM steps must be at least 1, got {steps}")
        config = dict(scheduler.config)
        prediction_type = str(config.get("prediction_type", "epsilon"))
        if prediction_type not in PREDICTION_TYPES:
            raise CfauditError(
                f"scheduler prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}"
            )
        ddim = DDIMScheduler.from_config(config, clip_sample=False, thresholding=False)
        if steps > ddim.config.num_train_timesteps:
            raise CfauditError(
                f"{steps} DDIM steps exceed the {ddim.config.num_train_timesteps} training timesteps"
            )
        ddim.set_timesteps(steps)
        timesteps = ddim.timesteps.to(torch.int64).cpu()
        alphas = ddim.alphas_cumprod.to(torch.float64).cpu()
        final = torch.as_tensor(ddim.final_alpha_cumprod, dtype=torch.float64).cpu()
        previous = timesteps - ddim.config.num_train_timesteps // steps
        alpha_prev = torch.where(previous >= 0, alphas[previous.clamp(min=0)], final)
        return cls(timesteps, alphas[timesteps], alpha_prev, prediction_type)

    @property
    def steps(self) -> int:
        return int(self.timesteps.numel())

    def _split(
        self, sample: torch.Tensor, output: torch.Tensor, alpha: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted clean sample, predicted noise) of a sample at level ``alpha`` from the model's output."""
        a, b = alpha**0.5, (1.0 - alpha) ** 0.5
        if self.prediction_type == "epsilon":
            return (sample - b * output) / a, output
        if self.prediction_type == "v_prediction":
            return a * sample - b * output, a * output + b * sample
        return output, (sample - a * output) / b

    def _move(
        self, sample: torch.Tensor, output: torch.Tensor, source: float, destination: float
    ) -> torch.Tensor:
        clean, noise = self._split(sample.float(), output.float(), source)
        moved = destination**0.5 * clean + (1.0 - destination) ** 0.5 * noise
        return moved.to(sample.dtype)

    def denoise(self, i: int, sample: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        """Sampling step ``i``: from the level of ``timesteps[i]`` down one step (``DDIMScheduler.step``, eta 0)."""
        return self._move(sample, model_output, float(self.alpha[i]), float(self.alpha_prev[i]))

    def invert(self, i: int, sample: torch.Tensor, model_output: torch.Tensor) -> torch.Tensor:
        """Inversion step mirroring sampling step ``i``: up to the level of ``timesteps[i]`` (``DDIMInverseScheduler``)."""
        return self._move(sample, model_output, float(self.alpha_prev[i]), float(self.alpha[i]))
