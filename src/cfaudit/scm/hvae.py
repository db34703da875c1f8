"""The image mechanism: a conditional hierarchical VAE (in the style of VDVAE, as Ribeiro et al. 2023 use it).

Architecture (one "level" per resolution, halving from ``resolution`` down to the top)::

    encoder (bottom-up)  x -> stem -> [res blocks] a_0 -> pool -> [res blocks] a_1 -> ... -> a_top
    decoder (top-down)   h_top (learned) -> level top: stochastic blocks, res blocks -> upsample -> ... -> level 0
                         -> per-pixel mean and log-scale of a discretised Gaussian

A **stochastic block** at level ``l`` adds the image's parents to ``h`` (a learned linear map, broadcast over the
grid: the parents enter every block), computes the prior ``p(z | z_<, pa) = N(mu_p, sigma_p)`` and, from
``[h, a_l]``, the posterior ``q(z | x, z_<, pa)``, then folds ``z`` back into ``h``. Deterministic decoder blocks
receive the parents the same way. Training maximises the ELBO: the discretised Gaussian log-likelihood of the
8-bit pixels (256 bins over ``[-1, 1]``) minus the KL of every stochastic block, reported in bits per dimension.

Counterfactuals (:meth:`HierarchicalVAE.abduct`, :meth:`HierarchicalVAE.counterfactual`):

* abduction takes the posterior mean of every latent and the per-pixel noise ``(x - mu) / sigma`` of the
  likelihood;
* prediction runs the decoder top-down under the counterfactual parents. With ``latents="noise"`` (the
  default) each latent keeps its *prior* noise: ``z* = mu_p* + sigma_p* (z - mu_p) / sigma_p``, so the parents
  act through every prior as well as directly; with ``latents="fixed"`` the abducted ``z`` is reused as is.
  The image is ``x* = mu* + sigma* (x - mu) / sigma``.

Both transfers are computed as ``x + (mu* - mu) + (sigma*/sigma - 1)(x - mu)``: with unchanged parents every
difference is exactly zero, so the null intervention returns the input bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from cfaudit.errors import CfauditError

LATENT_MODES: tuple[str, ...] = ("noise", "fixed")
_BINS = 255.0  # 8-bit pixels: 256 values over [-1, 1], half a bin is 1/255
_LOG_SCALE_MIN, _LOG_SCALE_MAX = -7.0, 2.0


class ResBlock(nn.Module):
    """GELU, 1x1 -> 3x3 -> 1x1 convolutions through a bottleneck; residual when the widths agree."""

    def __init__(
        self, width: int, inner: int, out: int | None = None, residual: bool = True, scale: float = 1.0
    ) -> None:
        super().__init__()
        out = out or width
        self.residual = residual and out == width
        self.c1 = nn.Conv2d(width, inner, 1)
        self.c2 = nn.Conv2d(inner, inner, 3, padding=1)
        self.c3 = nn.Conv2d(inner, out, 1)
        with torch.no_grad():
            self.c3.weight.mul_(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.c3(F.gelu(self.c2(F.gelu(self.c1(F.gelu(x))))))
        return x + out if self.residual else out


class _Conditioning(nn.Module):
    """Parents -> one number per channel, added to ``h`` over the whole grid."""

    def __init__(self, parent_dim: int, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(parent_dim, width) if parent_dim else None

    def forward(self, h: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        return h + self.linear(parents)[:, :, None, None] if self.linear is not None else h


class DecoderBlock(nn.Module):
    """A deterministic top-down block that sees the parents."""

    def __init__(self, width: int, inner: int, parent_dim: int, scale: float) -> None:
        super().__init__()
        self.condition = _Conditioning(parent_dim, width)
        self.block = ResBlock(width, inner, scale=scale)

    def forward(self, h: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        return self.block(self.condition(h, parents))


class StochasticBlock(nn.Module):
    """Prior ``p(z | h, pa)``, posterior ``q(z | h, a, pa)`` and the fold of ``z`` back into ``h``."""

    def __init__(self, width: int, latent: int, inner: int, parent_dim: int, scale: float) -> None:
        super().__init__()
        self.latent = latent
        self.condition = _Conditioning(parent_dim, width)
        self.prior = ResBlock(width, inner, out=2 * latent + width, residual=False)
        self.posterior = ResBlock(2 * width, inner, out=2 * latent, residual=False)
        self.z_proj = nn.Conv2d(latent, width, 1)
        self.block = ResBlock(width, inner, scale=scale)
        with torch.no_grad():  # start with prior = N(0, 1) and no extra features
            self.prior.c3.weight.zero_()
            assert self.prior.c3.bias is not None  # a Conv2d made with its bias
            self.prior.c3.bias.zero_()
            self.z_proj.weight.mul_(scale)

    def prior_params(self, h_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.prior(h_in)
        mean, log_scale, features = out.split(
            [self.latent, self.latent, out.shape[1] - 2 * self.latent], dim=1
        )
        return mean, log_scale.clamp(_LOG_SCALE_MIN, _LOG_SCALE_MAX), features

    def posterior_params(
        self, h_in: torch.Tensor, activation: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_scale = self.posterior(torch.cat([h_in, activation], dim=1)).chunk(2, dim=1)
        return mean, log_scale.clamp(_LOG_SCALE_MIN, _LOG_SCALE_MAX)

    def fold(self, h_in: torch.Tensor, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.block(h_in + features + self.z_proj(z))


@dataclass
class ImageAbduction:
    """What abduction keeps of a batch of images: latents, their priors, and the likelihood's mean and scale."""

    latents: list[torch.Tensor]
    prior_means: list[torch.Tensor]
    prior_log_scales: list[torch.Tensor]
    mean: torch.Tensor  # [B, C, H, W]
    log_scale: torch.Tensor  # [B, C, H, W]


# choose(k, block, level, h_in, prior mean, prior log-scale) -> z of the k-th stochastic block (top first)
_Choose = Callable[[int, StochasticBlock, int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def gaussian_kl(
    mean_q: torch.Tensor, log_scale_q: torch.Tensor, mean_p: torch.Tensor, log_scale_p: torch.Tensor
) -> torch.Tensor:
    """Elementwise ``KL(N(mean_q, e^log_scale_q) || N(mean_p, e^log_scale_p))``."""
    return (
        log_scale_p - log_scale_q
        + (torch.exp(2 * log_scale_q) + (mean_q - mean_p) ** 2) / (2 * torch.exp(2 * log_scale_p))
        - 0.5
    )  # fmt: skip


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor
) -> torch.Tensor:
    """Elementwise log-probability of 8-bit pixels ``x`` in ``[-1, 1]`` under a Gaussian discretised into 256 bins.

    The outermost bins take the tails (``x = -1``: everything below, ``x = 1``: everything above). Where a bin's
    mass underflows, its density at the bin centre times the bin width stands in.
    """
    centered = x - mean
    inverse_scale = torch.exp(-log_scale)
    upper = inverse_scale * (centered + 1.0 / _BINS)
    lower = inverse_scale * (centered - 1.0 / _BINS)
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_survival_lower = torch.special.log_ndtr(-lower)
    mass = torch.special.ndtr(upper) - torch.special.ndtr(lower)
    middle = inverse_scale * centered
    log_density = -0.5 * middle**2 - log_scale - 0.5 * math.log(2 * math.pi) + math.log(2.0 / _BINS)
    log_mass = torch.where(mass > 1e-5, torch.log(mass.clamp_min(1e-12)), log_density)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_survival_lower, log_mass))


class HierarchicalVAE(ModelMixin, ConfigMixin):
    """Conditional hierarchical VAE ``p(x | pa) = sum_z p(x | z, pa) p(z | pa)``; see the module docstring.

    Lists have one entry per level, finest first. The defaults are the ``small`` preset's architecture.
    """

    @register_to_config
    def __init__(
        self,
        resolution: int = 64,
        channels: int = 1,
        parent_dim: int = 0,
        widths: tuple[int, ...] | list[int] = (16, 32, 64, 64, 96),
        encoder_blocks: tuple[int, ...] | list[int] = (0, 1, 1, 1, 1),
        stochastic_blocks: tuple[int, ...] | list[int] = (0, 0, 1, 2, 2),
        decoder_blocks: tuple[int, ...] | list[int] = (0, 1, 1, 0, 0),
        latent_channels: tuple[int, ...] | list[int] = (0, 0, 8, 8, 16),
        bottleneck: float = 0.5,
    ) -> None:
        super().__init__()
        check_architecture(resolution, channels, parent_dim, widths, encoder_blocks, stochastic_blocks,
                           decoder_blocks, latent_channels, bottleneck)  # fmt: skip
        levels = len(widths)
        inner = [max(4, round(w * bottleneck)) for w in widths]
        depth = sum(stochastic_blocks) + sum(decoder_blocks)
        scale = 1.0 / math.sqrt(max(1, depth))
        self.top_resolution = resolution // 2 ** (levels - 1)

        # encoder, bottom-up
        self.stem = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.encoder = nn.ModuleList(
            nn.ModuleList(ResBlock(widths[i], inner[i], scale=scale) for _ in range(encoder_blocks[i]))
            for i in range(levels)
        )
        self.down = nn.ModuleList(nn.Conv2d(widths[i], widths[i + 1], 1) for i in range(levels - 1))

        # decoder, top-down (index i is the level; run from the top level down to 0)
        self.top = nn.Parameter(torch.zeros(1, widths[-1], self.top_resolution, self.top_resolution))
        self.stochastic = nn.ModuleList(
            nn.ModuleList(
                StochasticBlock(widths[i], latent_channels[i], inner[i], parent_dim, scale)
                for _ in range(stochastic_blocks[i])
            )
            for i in range(levels)
        )
        self.deterministic = nn.ModuleList(
            nn.ModuleList(
                DecoderBlock(widths[i], inner[i], parent_dim, scale) for _ in range(decoder_blocks[i])
            )
            for i in range(levels)
        )
        self.up = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(levels - 1))
        self.head = nn.Conv2d(widths[0], 2 * channels, 3, padding=1)

    # --- the two passes -------------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Bottom-up activations, one per level (finest first)."""
        h = self.stem(x)
        activations = []
        for level, blocks in enumerate(self.encoder):
            for block in cast(Iterable[ResBlock], blocks):  # ModuleList items are typed as any Module
                h = block(h)
            activations.append(h)
            if level < len(self.down):
                h = self.down[level](F.avg_pool2d(h, 2))
        return activations

    def _top_down(self, parents: torch.Tensor, choose: _Choose) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the decoder, taking each latent from ``choose``; return the pixel mean and log-scale."""
        h = self.top.expand(parents.shape[0], -1, -1, -1)
        k = 0
        for level in reversed(range(len(self.stochastic))):
            for block in cast(Iterable[StochasticBlock], self.stochastic[level]):  # see encode
                h_in = block.condition(h, parents)
                prior_mean, prior_log_scale, features = block.prior_params(h_in)
                z = choose(k, block, level, h_in, prior_mean, prior_log_scale)
                h = block.fold(h_in, features, z)
                k += 1
            for decoder_block in cast(Iterable[DecoderBlock], self.deterministic[level]):  # see encode
                h = decoder_block(h, parents)
            if level > 0:
                h = self.up[level - 1](F.interpolate(h, scale_factor=2, mode="nearest"))
        mean, log_scale = self.head(F.gelu(h)).chunk(2, dim=1)
        return mean, log_scale.clamp(_LOG_SCALE_MIN, _LOG_SCALE_MAX)

    def forward(
        self, x: torch.Tensor, parents: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """ELBO terms of a batch: ``nll`` and ``kl`` per image (nats), ``bits_per_dim`` (scalar) and ``mean``."""
        activations = self.encode(x)
        kls: list[torch.Tensor] = []

        def posterior_sample(k, block, level, h_in, prior_mean, prior_log_scale):
            mean, log_scale = block.posterior_params(h_in, activations[level])
            kls.append(gaussian_kl(mean, log_scale, prior_mean, prior_log_scale).flatten(1).sum(dim=1))
            noise = torch.randn(
                mean.shape, generator=generator, device="cpu" if generator is not None else mean.device
            )
            return mean + torch.exp(log_scale) * noise.to(mean.device)

        mean, log_scale = self._top_down(parents, posterior_sample)
        nll = -discretized_gaussian_log_likelihood(x, mean, log_scale).flatten(1).sum(dim=1)
        kl = torch.stack(kls, dim=1).sum(dim=1) if kls else torch.zeros_like(nll)
        dims = x[0].numel()
        return {
            "nll": nll,
            "kl": kl,
            "bits_per_dim": ((nll + kl).mean() / (dims * math.log(2))),
            "mean": mean,
        }

    # --- counterfactuals ------------------------------------------------------------------------------------

    @torch.no_grad()
    def abduct(self, x: torch.Tensor, parents: torch.Tensor) -> ImageAbduction:
        """Posterior-mean latents, their priors, and the likelihood's mean and scale for images ``x``."""
        activations = self.encode(x)
        latents, prior_means, prior_log_scales = [], [], []

        def posterior_mean(k, block, level, h_in, prior_mean, prior_log_scale):
            mean, _ = block.posterior_params(h_in, activations[level])
            latents.append(mean)
            prior_means.append(prior_mean)
            prior_log_scales.append(prior_log_scale)
            return mean

        mean, log_scale = self._top_down(parents, posterior_mean)
        return ImageAbduction(latents, prior_means, prior_log_scales, mean, log_scale)

    @torch.no_grad()
    def counterfactual(
        self, x: torch.Tensor, abduction: ImageAbduction, parents: torch.Tensor, latents: str = "noise"
    ) -> torch.Tensor:
        """The images ``x`` had their parents been ``parents`` (a batch aligned with ``x`` and ``abduction``)."""
        if latents not in LATENT_MODES:
            raise CfauditError(f"latent mode {latents!r} is not one of {', '.join(LATENT_MODES)}")

        def transferred(k, block, level, h_in, prior_mean, prior_log_scale):
            z = abduction.latents[k]
            if latents == "fixed":
                return z
            old_mean, old_log_scale = abduction.prior_means[k], abduction.prior_log_scales[k]
            ratio = torch.exp(prior_log_scale) / torch.exp(old_log_scale)
            return z + (prior_mean - old_mean) + (ratio - 1.0) * (z - old_mean)

        mean, log_scale = self._top_down(parents, transferred)
        ratio = torch.exp(log_scale) / torch.exp(abduction.log_scale)
        out = x + (mean - abduction.mean) + (ratio - 1.0) * (x - abduction.mean)
        return out.clamp(-1.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean at the posterior-mean latents (the model's own reconstruction, no pixel noise)."""
        return self.abduct(x, parents).mean.clamp(-1.0, 1.0)

    @torch.no_grad()
    def sample(
        self, parents: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """Mean images of latents drawn from the prior (scaled by ``temperature``)."""

        def prior_sample(k, block, level, h_in, prior_mean, prior_log_scale):
            noise = torch.randn(
                prior_mean.shape,
                generator=generator,
                device="cpu" if generator is not None else prior_mean.device,
            )
            return prior_mean + temperature * torch.exp(prior_log_scale) * noise.to(prior_mean.device)

        mean, _ = self._top_down(parents, prior_sample)
        return mean.clamp(-1.0, 1.0)


def check_architecture(
    resolution: int,
    channels: int,
    parent_dim: int,
    widths: tuple[int, ...] | list[int],
    encoder_blocks: tuple[int, ...] | list[int],
    stochastic_blocks: tuple[int, ...] | list[int],
    decoder_blocks: tuple[int, ...] | list[int],
    latent_channels: tuple[int, ...] | list[int],
    bottleneck: float,
    origin: str = "hvae config",
) -> None:
    """Raise a :class:`CfauditError` naming the key when an architecture cannot be built."""
    levels = len(widths)
    if levels < 1:
        raise CfauditError(f"{origin}: widths needs at least one level")
    for name, values in (("encoder_blocks", encoder_blocks), ("stochastic_blocks", stochastic_blocks),
                         ("decoder_blocks", decoder_blocks), ("latent_channels", latent_channels)):  # fmt: skip
        if len(values) != levels:
            raise CfauditError(
                f"{origin}: {name} has {len(values)} entries; give one per level ({levels}, as widths)"
            )
        if any(int(v) < 0 for v in values):
            raise CfauditError(f"{origin}: {name} must not be negative, got {list(values)}")
    if any(int(w) < 1 for w in widths):
        raise CfauditError(f"{origin}: widths must be positive, got {list(widths)}")
    if resolution < 1 or resolution % 2 ** (levels - 1):
        raise CfauditError(
            f"{origin}: resolution {resolution} must be divisible by 2^{levels - 1} for {levels} levels"
        )
    for level in range(levels):
        if stochastic_blocks[level] and not latent_channels[level]:
            raise CfauditError(f"{origin}: level {level} has stochastic blocks but latent_channels 0")
    if sum(stochastic_blocks) < 1:
        raise CfauditError(f"{origin}: the model needs at least one stochastic block")
    if channels < 1 or parent_dim < 0:
        raise CfauditError(f"{origin}: channels must be positive and parent_dim not negative")
    if not 0 < bottleneck <= 4:
        raise CfauditError(f"{origin}: bottleneck {bottleneck} must be in (0, 4]")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
