"""Inverting an image's latent into the diffusion model: four methods behind one interface, chosen by name.

All four start with DDIM inversion under the source prompt without guidance (:func:`ddim_trajectory`), which
stores the latent at every noise level of the sampler's own grid (:class:`~cfaudit.edit.ddim.DDIMGrid`). They
differ in what the editor must do to walk back to the image under classifier-free guidance:

``ddim``
    nothing: plain guided sampling from the noisiest latent (drifts from the image at guidance > 1).
``nti``
    null-text inversion (Mokady et al. 2023): one optimised unconditional embedding per step, fitted with Adam so
    that the guided step lands on the stored trajectory; ``inner_steps`` per step with the paper's early stop
    (loss below ``epsilon + 2e-5 i`` at step ``i`` of 50; scaled to other step counts). Runs in float32.
``npi``
    negative-prompt inversion (Miyake et al. 2023): the source prompt's embedding stands in for the unconditional
    one, so the source branch needs no guidance at all. No optimisation.
``direct``
    direct inversion (Ju et al. 2024): the source branch is pinned to the stored trajectory at every step, so the
    reconstruction is exact; the editor adds the same per-step correction to every target (see
    :mod:`cfaudit.edit.editor`). No optimisation.

An :class:`Inversion` holds one image's result and round-trips through a safetensors file (the editing job's
cache).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from cfaudit.atomic_io import atomic_path
from cfaudit.edit.ddim import DDIMGrid
from cfaudit.edit.denoiser import Denoiser, guide
from cfaudit.errors import CfauditError

INVERSION_METHODS: tuple[str, ...] = ("direct", "nti", "npi", "ddim")
#: Steps when none are given: the paper's 50 for the reference methods; 12 for direct inversion, which
#: reconstructs exactly at any step count and at 12 steps edits as strongly as null-text inversion + P2P at 50
#: on two image sets, with at least 10x fewer UNet evaluations (docs/BENCHMARKS.md, "Edit effect per UNet
#: evaluation"). Raise it for quality at a real model's full resolution if your checks say so.
DEFAULT_STEPS: dict[str, int] = {"direct": 12, "nti": 50, "npi": 50, "ddim": 50}


def check_guidance(scale: float, what: str = "guidance scale") -> float:
    """``scale`` as a float, after refusing what is not a finite number >= 1 (NaN and infinity would pass a plain
    ``>= 1`` check the wrong way or blow up: NaN counterfactuals). ``what``: the message's name for it."""
    value = float(scale)
    if not (math.isfinite(value) and value >= 1.0):
        raise CfauditError(f"{what} must be a finite number >= 1, got {value:g}")
    return value


@dataclass(frozen=True)
class InversionSettings:
    """The method and its knobs; :meth:`key` holds only what changes the result (for caching)."""

    method: str = "direct"
    steps: int | None = None  # None: DEFAULT_STEPS[method]
    guidance_scale: float = 7.5
    inner_steps: int = 10
    learning_rate: float = 1e-2
    epsilon: float = 1e-5

    def __post_init__(self) -> None:
        if self.method not in INVERSION_METHODS:
            raise CfauditError(
                f"unknown inversion method {self.method!r}; choose one of {', '.join(INVERSION_METHODS)}"
            )
        steps = DEFAULT_STEPS[self.method] if self.steps is None else self.steps
        object.__setattr__(self, "steps", steps)
        if steps < 1:
            raise CfauditError(f"inversion steps must be at least 1, got {steps}")
        check_guidance(self.guidance_scale)
        if self.inner_steps < 1:
            raise CfauditError(f"null-text inner steps must be at least 1, got {self.inner_steps}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise CfauditError(
                f"null-text learning rate must be a finite number > 0, got {self.learning_rate:g}"
            )
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise CfauditError(
                f"null-text early-stop epsilon must be a finite number >= 0, got {self.epsilon:g}"
            )

    def key(self) -> dict[str, Any]:
        data: dict[str, Any] = {"method": self.method, "steps": self.steps}
        if self.method == "nti":
            data.update(
                guidance_scale=self.guidance_scale,
                inner_steps=self.inner_steps,
                learning_rate=self.learning_rate,
                epsilon=self.epsilon,
            )
        return data

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InversionSettings:
        valid = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in valid})


@dataclass
class Inversion:
    """One image inverted: its trajectory by noise level and the embeddings the editor guides with.

    ``levels[0]`` is the image's clean latent and ``levels[N]`` the noisiest (sampling step ``i`` goes from level
    ``N - i`` to ``N - i - 1``). ``uncond`` holds one unconditional embedding per sampling step (``[N, L, D]``) or
    one for all steps (``[1, L, D]``).
    """

    settings: InversionSettings
    timesteps: torch.Tensor  # [N]
    levels: torch.Tensor  # [N + 1, C, h, w]
    source_embedding: torch.Tensor  # [L, D]
    uncond: torch.Tensor  # [N or 1, L, D]
    unet_evals: float = 0.0
    seconds: float = 0.0

    @property
    def method(self) -> str:
        return self.settings.method

    @property
    def steps(self) -> int:
        return int(self.timesteps.numel())

    @property
    def pinned(self) -> bool:
        """Direct inversion: the source branch follows the stored trajectory exactly."""
        return self.method == "direct"

    @property
    def uncond_is_source(self) -> bool:
        """Negative-prompt inversion: the unconditional embedding *is* the source prompt's."""
        return self.method == "npi"

    def uncond_at(self, step: int) -> torch.Tensor:
        return self.uncond[step if self.uncond.shape[0] > 1 else 0]

    def save(self, path: str | os.PathLike[str], meta: dict[str, Any] | None = None) -> None:
        """Write a safetensors file (atomically) with the settings and ``meta`` in its header."""
        from safetensors.torch import save_file

        tensors = {
            "timesteps": self.timesteps.cpu().contiguous(),
            "levels": self.levels.float().cpu().contiguous(),
            "source_embedding": self.source_embedding.float().cpu().contiguous(),
            "uncond": self.uncond.float().cpu().contiguous(),
        }
        header = {
            "settings": json.dumps(self.settings.to_dict(), sort_keys=True),
            "unet_evals": repr(float(self.unet_evals)),
            "seconds": repr(float(self.seconds)),
            "meta": json.dumps(meta or {}, sort_keys=True, default=str),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[Inversion, dict[str, Any]]:
        """Read a file written by :meth:`save`; returns the inversion and its ``meta``."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        try:
            with safe_open(str(path), framework="pt") as handle:
                header = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            settings = InversionSettings.from_dict(json.loads(header["settings"]))
            inversion = cls(
                settings,
                tensors["timesteps"],
                tensors["levels"],
                tensors["source_embedding"],
                tensors["uncond"],
                float(header["unet_evals"]),
                float(header["seconds"]),
            )
            return inversion, json.loads(header.get("meta", "{}"))
        except (OSError, KeyError, ValueError, SafetensorError) as error:
            raise CfauditError(
                f"{path}: not a readable inversion file ({error}); delete it to recompute"
            ) from None


@torch.no_grad()
def ddim_trajectory(
    denoiser: Denoiser, grid: DDIMGrid, latents: torch.Tensor, cond: torch.Tensor
) -> torch.Tensor:
    """DDIM inversion without guidance; returns the latents at every level ``[N + 1, B, C, h, w]``."""
    levels = [latents.float()]
    current = latents.float()
    for i in reversed(range(grid.steps)):
        output = denoiser(current, grid.timesteps[i], cond)
        current = grid.invert(i, current, output)
        levels.append(current)
    return torch.stack(levels)


def null_text_optimisation(
    denoiser: Denoiser,
    grid: DDIMGrid,
    levels: torch.Tensor,
    cond: torch.Tensor,
    null: torch.Tensor,
    settings: InversionSettings,
) -> torch.Tensor:
    """Mokady et al.'s null-text optimisation for one image (``levels`` ``[N + 1, 1, C, h, w]``).

    Returns the optimised unconditional embedding of every sampling step ``[N, L, D]``. Each step: the
    conditional prediction once, then up to ``inner_steps`` Adam steps (learning rate decaying as in the paper)
    on the squared error between the guided DDIM step and the stored trajectory, stopping early once the error is
    below ``epsilon + 2e-5 * 50 * i / N``; then the guided step with the fitted embedding.
    """
    steps, scale = grid.steps, settings.guidance_scale
    uncond = null.detach().float().clone()
    current = levels[steps]
    fitted = []
    for i in range(steps):
        t = grid.timesteps[i]
        target = levels[steps - i - 1]
        with torch.no_grad():
            cond_out = denoiser(current, t, cond)
        uncond = uncond.detach().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([uncond], lr=settings.learning_rate * (1.0 - i / (2.0 * steps)))
        threshold = settings.epsilon + 2e-5 * 50.0 * i / steps
        for _ in range(settings.inner_steps):
            with torch.enable_grad():
                uncond_out = denoiser(current, t, uncond)
                stepped = grid.denoise(i, current, guide(uncond_out, cond_out, scale))
                loss = torch.nn.functional.mse_loss(stepped, target)
                (gradient,) = torch.autograd.grad(loss, [uncond])
            denoiser.count_backward(current.shape[0])
            uncond.grad = gradient
            optimiser.step()
            if loss.item() < threshold:
                break
        uncond = uncond.detach()
        fitted.append(uncond[0].clone())
        with torch.no_grad():
            current = grid.denoise(i, current, guide(denoiser(current, t, uncond), cond_out, scale))
    return torch.stack(fitted)


def invert(
    denoiser: Denoiser,
    grid: DDIMGrid,
    latents: torch.Tensor,
    cond: torch.Tensor,
    null: torch.Tensor,
    settings: InversionSettings,
) -> list[Inversion]:
    """Invert a batch of latents ``[B, C, h, w]`` under their source embeddings ``cond`` ``[B, L, D]``.

    ``null`` is the empty prompt's embedding ``[1, L, D]``. DDIM inversion runs batched; null-text optimisation
    runs image by image (each has its own early stop). Cost and time are shared equally by a batch's images.
    """
    if grid.steps != settings.steps:
        raise ValueError(f"grid has {grid.steps} steps, settings ask for {settings.steps}")
    start, evals_before = time.perf_counter(), denoiser.evals
    batch = latents.shape[0]
    levels = ddim_trajectory(denoiser, grid, latents, cond)  # [N + 1, B, C, h, w]
    shared_evals = (denoiser.evals - evals_before) / batch
    shared_seconds = (time.perf_counter() - start) / batch
    results = []
    for b in range(batch):
        own_start, own_evals = time.perf_counter(), denoiser.evals
        if settings.method == "nti":
            uncond = null_text_optimisation(
                denoiser, grid, levels[:, b : b + 1], cond[b : b + 1], null, settings
            )
        elif settings.method == "npi":
            uncond = cond[b : b + 1].float()
        else:
            uncond = null.float()
        results.append(
            Inversion(
                settings,
                grid.timesteps.clone(),
                levels[:, b].clone(),
                cond[b].float().clone(),
                uncond.detach().clone(),
                unet_evals=shared_evals + denoiser.evals - own_evals,
                seconds=shared_seconds + time.perf_counter() - own_start,
            )
        )
    return results
