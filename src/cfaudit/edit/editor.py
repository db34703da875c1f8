"""The counterfactual editing pipeline: encode the image, invert it once, edit it many times.

:meth:`CounterfactualEditor.__call__` reads top to bottom as the algorithm:

1. check the inputs;
2. encode the images into latents and the source prompts into embeddings;
3. invert every image once (:func:`cfaudit.edit.inversion.invert`), unless inversions are passed in (a cache);
4. encode every target prompt and build its token-level prompt-to-prompt edit;
5. denoise the source branch and all targets of all images together, one batched UNet call per step, with the
   targets' attention controlled from their source (:mod:`cfaudit.edit.attention`);
6. decode the reconstructions and counterfactuals.

What each step of the denoising loop costs depends on the inversion (counted in UNet evaluations, see
:mod:`cfaudit.edit.denoiser`): a target costs two rows (unconditional and conditional) per step at guidance > 1.
The source branch costs

* ``ddim`` / ``nti``: two rows every step (it must walk back to the image under guidance);
* ``npi``: one row (with the source prompt as the negative prompt, guidance cancels on the source);
* ``direct``: its latent is read from the stored trajectory, never computed. With ``correct_target`` (default)
  each target gets the source's per-step correction ``levels[i-1] - step(levels[i], guided source prediction)``,
  so that an edit whose target prompt equals the source reproduces the image exactly, and fine detail the model
  cannot produce is carried into every counterfactual; that needs the source's two rows every step. Without it
  (Ju et al.'s original) the source's conditional row is computed only while attention is injected or blended.

A target with an ``anchor`` prompt (``contrast`` prompt mode) is measured against that prompt instead of the
source prompt: each step it moves by its own step minus the step the anchor prompt would take from the source's
latent, added to the source's next latent, and its attention is injected from the anchor's row. With the anchor
naming the current values of what the target prompt changes, the edit is the difference between the two prompts,
and what neither names is kept. That costs one conditional row per distinct anchor of an image, every step, for
any inversion.

The inversion and the source branch are shared by all the edits of an image.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cfaudit.devices import resolve_device
from cfaudit.edit.attention import (
    P2P_MODES,
    AttentionController,
    AttentionSettings,
    HookedLayers,
    attention_control,
    token_edit,
)
from cfaudit.edit.ddim import DDIMGrid
from cfaudit.edit.denoiser import Denoiser, guide
from cfaudit.edit.inversion import Inversion, InversionSettings, check_guidance, invert
from cfaudit.errors import CfauditError
from cfaudit.models.text_encoding import encode_prompts


@dataclass(frozen=True)
class EditSettings:
    """How the targets are denoised: guidance, prompt-to-prompt mode and attention injection."""

    guidance_scale: float = 7.5
    p2p_mode: str = "auto"
    attention: AttentionSettings = field(default_factory=AttentionSettings)
    correct_target: bool = True

    def __post_init__(self) -> None:
        check_guidance(self.guidance_scale)
        if self.p2p_mode not in P2P_MODES:
            raise CfauditError(
                f"prompt-to-prompt mode {self.p2p_mode!r} is not one of {', '.join(P2P_MODES)}"
            )


@dataclass(frozen=True)
class Target:
    """One edit of an image: the target prompt, optional word reweighting and local-blend words.

    ``anchor``: the prompt the target is measured against at the source's latent (the ``contrast`` prompt mode);
    ``None``: the source prompt. ``guidance_scale``: this edit's guidance (how far it goes), ``None``: the
    settings'; the edits of one image may differ in it at no cost, since guidance only weighs rows computed anyway.
    The source branch keeps the settings' guidance (with ``ddim`` it walks back under it).
    """

    prompt: str
    reweight: Mapping[str, float] | None = None
    blend_words: tuple[str, ...] | None = None
    anchor: str | None = None
    guidance_scale: float | None = None


@dataclass
class ImageEdits:
    """All edits of one image. Images are ``[1, H, W]`` in ``[-1, 1]``; costs are per target."""

    source_prompt: str
    target_prompts: list[str]
    #: the prompt each target was measured against: its anchor, or the source prompt
    reference_prompts: list[str]
    reconstruction: torch.Tensor  # [1, H, W]
    counterfactuals: torch.Tensor  # [k, 1, H, W]
    reconstruction_latent: torch.Tensor  # [C, h, w]
    counterfactual_latents: torch.Tensor  # [k, C, h, w]
    inversion: Inversion
    unet_evals: list[float]
    seconds: list[float]
    hooked: HookedLayers | None = None


class CounterfactualEditor:
    """Counterfactual editing with a latent diffusion model whose every part is passed in.

    ``scheduler`` may be any diffusers scheduler: its noise schedule is read into a DDIM grid.
    """

    def __init__(self, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any) -> None:
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.denoiser = Denoiser(unet)

    @classmethod
    def from_components(cls, components: Any) -> CounterfactualEditor:
        """From a :class:`cfaudit.models.components.PipelineComponents` (or anything with the same fields)."""
        return cls(
            components.unet,
            components.vae,
            components.text_encoder,
            components.tokenizer,
            getattr(components, "noise_scheduler", None) or components.scheduler,
        )

    @classmethod
    def load(
        cls,
        model: str | os.PathLike[str],
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> CounterfactualEditor:
        """Load ``model`` (``demo``, a pipeline folder or a hub id; :func:`cfaudit.models.loading.load_components`)
        onto ``device`` (:func:`cfaudit.devices.resolve_device`: none given, the GPU when there is one)."""
        from cfaudit.models.loading import load_components

        return cls.from_components(load_components(model, device=resolve_device(device), dtype=dtype))

    # -- properties -----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        size = self.unet.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * self.vae_scale_factor

    def grid(self, steps: int) -> DDIMGrid:
        return DDIMGrid.from_scheduler(self.scheduler, steps)

    # -- the named steps ------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text-encoder states ``[n, L, D]`` (float32) for ``prompts`` (padded / cut to the tokenizer's length)."""
        return encode_prompts(self.text_encoder, self.tokenizer, prompts).float()

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, C, h, w]`` (float32) of grayscale images ``[B, 1, H, W]`` in ``[-1, 1]`` (the VAE's mean)."""
        channels = int(self.vae.config.in_channels)
        vae_param = next(self.vae.parameters())
        pixels = images.to(vae_param.device, vae_param.dtype)
        if pixels.shape[1] != channels:
            pixels = pixels.mean(1, keepdim=True).expand(-1, channels, -1, -1)
        latents = self.vae.encode(pixels).latent_dist.mean
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * self.vae.config.scaling_factor).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Grayscale images ``[B, 1, H, W]`` in ``[-1, 1]`` (colour VAEs: the channel mean)."""
        vae_param = next(self.vae.parameters())
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        scaled = latents.to(vae_param.device, vae_param.dtype) / self.vae.config.scaling_factor + shift
        images = self.vae.decode(scaled).sample.float()
        return images.mean(1, keepdim=True).clamp(-1.0, 1.0)

    def invert(
        self, images: torch.Tensor, source_prompts: Sequence[str], settings: InversionSettings
    ) -> list[Inversion]:
        """Invert each image under its source prompt (one :class:`Inversion` per image)."""
        latents = self.encode_images(images)
        cond = self.encode_prompts(source_prompts)
        null = self.encode_prompts([""])
        assert settings.steps is not None  # InversionSettings sets the method's default steps when given none
        return invert(self.denoiser, self.grid(settings.steps), latents, cond, null, settings)

    def __call__(
        self,
        images: torch.Tensor,
        source_prompts: Sequence[str],
        targets: Sequence[Sequence[Target | str]],
        inversion_settings: InversionSettings | None = None,
        edit_settings: EditSettings | None = None,
        inversions: Sequence[Inversion] | None = None,
    ) -> list[ImageEdits]:
        """Edit a batch of images: ``targets[b]`` lists the edits of image ``b`` (may be empty)."""
        inversion_settings = inversion_settings or InversionSettings()
        # 1. Check inputs
        if images.ndim != 4 or images.shape[0] != len(source_prompts) or len(targets) != len(source_prompts):
            raise ValueError(
                f"need images [B, C, H, W] with one source prompt and one target list per image; got images "
                f"{tuple(images.shape)}, {len(source_prompts)} prompts, {len(targets)} target lists"
            )
        # 2.-3. Encode and invert once per image (or take the given inversions, e.g. from a cache)
        if inversions is None:
            inversions = self.invert(images, source_prompts, inversion_settings)
        # 4.-6. Edit every target of every image in one batched denoising loop, then decode
        return self.edit(inversions, source_prompts, targets, edit_settings)

    def edit(
        self,
        inversions: Sequence[Inversion],
        source_prompts: Sequence[str],
        targets: Sequence[Sequence[Target | str]],
        settings: EditSettings | None = None,
    ) -> list[ImageEdits]:
        """Denoise the source branches and all targets from the given inversions; decode everything."""
        settings = settings or EditSettings()
        start = time.perf_counter()
        # 1. Check inputs
        plans = [[t if isinstance(t, Target) else Target(str(t)) for t in image] for image in targets]
        self._check(inversions, source_prompts, plans, settings)
        grid = self.grid(inversions[0].steps)

        # 2. Encode the target prompts and build one token-level prompt-to-prompt edit per target
        owners = [b for b, image in enumerate(plans) for _ in image]
        flat = [target for image in plans for target in image]
        embeddings = self.encode_prompts([t.prompt for t in flat]) if flat else None
        edits = [
            token_edit(
                self.tokenizer, t.anchor or source_prompts[b], t.prompt, mode=settings.p2p_mode,
                reweight=t.reweight, blend_words=t.blend_words,
            )
            for b, t in zip(owners, flat, strict=True)
        ]  # fmt: skip
        latent_size = (int(inversions[0].levels.shape[-2]), int(inversions[0].levels.shape[-1]))
        controller = AttentionController(edits, settings.attention, grid.steps, latent_size)
        # the distinct anchors of each image (one row each per step), and each target's
        anchors: dict[tuple[int, str], int] = {}
        for b, t in zip(owners, flat, strict=True):
            if t.anchor:
                anchors.setdefault((b, t.anchor), len(anchors))
        anchor_of = [anchors[(b, t.anchor)] if t.anchor else None for b, t in zip(owners, flat, strict=True)]
        anchor_embeddings = self.encode_prompts([prompt for _, prompt in anchors]) if anchors else None

        # 3. Prepare latents: every source and its targets start from the image's noisiest level
        guidance = [settings.guidance_scale if t.guidance_scale is None else t.guidance_scale for t in flat]
        branches = _Branches(
            inversions, owners, embeddings, self.device, guidance, [b for b, _ in anchors], anchor_of,
            anchor_embeddings,
        )  # fmt: skip

        # 4. Denoising loop: the source branches and all targets in one UNet call per step
        with attention_control(self.unet, controller) as hooked, torch.no_grad():
            for i in range(grid.steps):
                self._denoise_step(i, grid, branches, controller, settings)
            controller.end()

        # 5. Decode the reconstructions and the counterfactuals together
        reconstructions = branches.reconstructions()
        decoded = self.decode_latents(torch.cat([reconstructions, branches.targets]))
        seconds = time.perf_counter() - start

        # 6. Account the cost of each edit: its own rows plus an equal share of its image's inversion and source
        return branches.results(source_prompts, flat, reconstructions, decoded, seconds, hooked)

    def _denoise_step(
        self,
        i: int,
        grid: DDIMGrid,
        branches: _Branches,
        controller: AttentionController,
        settings: EditSettings,
    ) -> None:
        """One DDIM step of every source and target (see the module docstring for which rows are computed)."""
        rows = self._rows(i, branches, controller, settings)
        index = {row: position for position, row in enumerate(rows)}
        owners = branches.owners
        targets = range(len(owners))
        # each target's attention comes from its anchor's row, or from its source's
        attention_from = [_reference_row(owners[j], branches.anchor_of[j]) for j in targets]
        injecting = controller.needs_source(i) and all(row in index for row in attention_from)
        controller.begin_step(
            i,
            [index[row] for row in attention_from] if injecting else None,
            [index[("target_cond", j)] for j in targets] if injecting else None,
        )
        out = branches.run(self.denoiser, rows, i, grid.timesteps[i]) if rows else None

        def prediction(cond_row: tuple[str, int], uncond_row: tuple[str, int], scale: float) -> torch.Tensor:
            assert out is not None
            cond = out[index[cond_row]]
            return guide(out[index[uncond_row]], cond, scale) if uncond_row in index else cond

        # A pinned (direct) source moves to the stored level; with correct_target its targets move by their own
        # step's difference from the source's step, added to that level (x - x is exactly 0, so an identity edit
        # stays on the trajectory bit for bit instead of drifting by rounding errors that guidance amplifies).
        current, sources = branches.sources, []
        for b, inversion in enumerate(branches.inversions):
            if inversion.pinned:
                sources.append(branches.levels[b][grid.steps - i - 1])
            else:
                step = prediction(("source_cond", b), ("source_uncond", b), settings.guidance_scale)
                sources.append(grid.denoise(i, current[b], step))
        references: dict[tuple[str, int, float], tuple[torch.Tensor, torch.Tensor] | None] = {}

        def reference(j: int) -> tuple[torch.Tensor, torch.Tensor] | None:
            """(base, step) a target's own step is measured against at its guidance: the source's step added to
            the stored level (pinned sources, corrected), or an anchor prompt's step added to the source's next
            latent; None: the target moves on its own."""
            scale, anchored, b = branches.guidance[j], branches.anchor_of[j], owners[j]
            key = ("source", b, scale) if anchored is None else ("anchor", anchored, scale)
            if key not in references:
                if anchored is not None:
                    step = prediction(("anchor_cond", anchored), ("source_uncond", b), scale)
                    references[key] = (sources[b], grid.denoise(i, current[b], step))
                elif (
                    branches.inversions[b].pinned and settings.correct_target and ("source_cond", b) in index
                ):
                    step = prediction(("source_cond", b), ("source_uncond", b), scale)
                    references[key] = (sources[b], grid.denoise(i, current[b], step))
                else:
                    references[key] = None
            return references[key]

        branches.sources = torch.stack(sources)
        if owners:
            stepped = []
            for j in targets:
                step = prediction(("target_cond", j), ("target_uncond", j), branches.guidance[j])
                moved = grid.denoise(i, branches.targets[j], step)
                measured = reference(j)
                stepped.append(moved if measured is None else measured[0] + (moved - measured[1]))
            branches.targets = torch.stack(stepped)
            mask = controller.blend_mask()
            if mask is not None:
                base = branches.sources[owners]
                branches.targets = base + mask.to(base) * (branches.targets - base)

    # -- helpers ----------------------------------------------------------------------------------------------
    def _check(
        self,
        inversions: Sequence[Inversion],
        source_prompts: Sequence[str],
        plans: Sequence[Sequence[Target]],
        settings: EditSettings,
    ) -> None:
        if not inversions or len(inversions) != len(source_prompts) or len(plans) != len(inversions):
            raise ValueError("need one inversion, one source prompt and one target list per image")
        first = inversions[0]
        for inv in inversions:
            if inv.method != first.method or not torch.equal(inv.timesteps, first.timesteps):
                raise CfauditError("images edited together must share the inversion method and steps")
        if not torch.equal(self.grid(first.steps).timesteps, first.timesteps.cpu()):
            raise CfauditError("the inversion's timesteps do not match this model's scheduler; invert again")
        scales = {settings.guidance_scale} | {
            t.guidance_scale for image in plans for t in image if t.guidance_scale is not None
        }
        for scale in scales:
            check_guidance(scale)
        if first.method == "nti" and scales != {first.settings.guidance_scale}:
            raise CfauditError(
                f"null-text embeddings were fitted at guidance {first.settings.guidance_scale}; edit at that "
                f"guidance (got {', '.join(f'{g:g}' for g in sorted(scales))}) or invert again"
            )

    @staticmethod
    def _rows(
        step: int, branches: _Branches, controller: AttentionController, settings: EditSettings
    ) -> list[tuple[str, int]]:
        """The rows of this step's UNet call as ``(kind, member)``, unconditional rows first.

        ``member`` is the image index for source rows and the target index for target rows.
        """
        guided = settings.guidance_scale != 1.0 or any(scale != 1.0 for scale in branches.guidance)
        uncond_rows: list[tuple[str, int]] = []
        cond_rows: list[tuple[str, int]] = []
        for b, inversion in enumerate(branches.inversions):
            # targets measured against the source prompt; anchored ones need its unconditional row only
            plain = b in branches.plain_images
            anchored = b in branches.anchored_images
            if inversion.pinned:
                correcting = settings.correct_target and plain
                needs_cond = correcting or (plain and controller.needs_source(step))
                needs_uncond = guided and (correcting or anchored)
            else:
                needs_cond = True
                needs_uncond = guided and (anchored or not inversion.uncond_is_source)
            if needs_uncond:
                uncond_rows.append(("source_uncond", b))
            if needs_cond:
                cond_rows.append(("source_cond", b))
        cond_rows += [("anchor_cond", a) for a in range(len(branches.anchor_owners))]
        targets = range(len(branches.owners))
        if guided:
            uncond_rows += [("target_uncond", j) for j in targets]
        cond_rows += [("target_cond", j) for j in targets]
        return uncond_rows + cond_rows


def _reference_row(owner: int, anchor: int | None) -> tuple[str, int]:
    """The row a target's attention is injected from: its anchor's, or its source's."""
    return ("source_cond", owner) if anchor is None else ("anchor_cond", anchor)


class _Branches:
    """The latents of the source branches and of all targets during one editing run, and their costs."""

    def __init__(
        self,
        inversions: Sequence[Inversion],
        owners: list[int],
        embeddings: torch.Tensor | None,
        device: torch.device,
        guidance: list[float],
        anchor_owners: list[int] | None = None,
        anchor_of: list[int | None] | None = None,
        anchor_embeddings: torch.Tensor | None = None,
    ) -> None:
        """``guidance``: each target's guidance scale (the editor resolves it from the target and the settings);
        ``anchor_owners``: the image of each anchor; ``anchor_of``: each target's anchor (``None``: none)."""
        self.inversions = list(inversions)
        self.owners = owners
        self.embeddings = embeddings.to(device) if embeddings is not None else None
        self.device = device
        self.levels = [inv.levels.to(device) for inv in inversions]
        self.cond = torch.stack([inv.source_embedding for inv in inversions]).to(device)
        self.sources = torch.stack([levels[-1] for levels in self.levels])
        self.targets = self.sources[owners].clone()
        self.source_evals = [0.0] * len(inversions)
        self.target_evals = [0.0] * len(owners)
        self.anchor_owners = anchor_owners or []
        self.anchor_of = anchor_of or [None] * len(owners)
        self.anchor_embeddings = anchor_embeddings.to(device) if anchor_embeddings is not None else None
        # the images with targets measured against their source prompt, and those with anchored targets
        self.plain_images = {b for b, a in zip(owners, self.anchor_of, strict=True) if a is None}
        self.anchored_images = set(self.anchor_owners)
        self.guidance = guidance

    def run(
        self, denoiser: Denoiser, rows: list[tuple[str, int]], step: int, timestep: torch.Tensor
    ) -> torch.Tensor:
        """One UNet call over ``rows``; counts each row against its image's source or its target (an anchor's
        row against its image's source, shared by that image's edits)."""
        latents, embeddings = [], []
        for kind, member in rows:
            if kind == "anchor_cond":
                assert self.anchor_embeddings is not None
                image = self.anchor_owners[member]
                latents.append(self.sources[image])
                embeddings.append(self.anchor_embeddings[member])
                self.source_evals[image] += 1
                continue
            is_target = kind.startswith("target")
            latents.append(self.targets[member] if is_target else self.sources[member])
            if kind == "target_cond":
                assert self.embeddings is not None
                embeddings.append(self.embeddings[member])
            elif kind == "source_cond":
                embeddings.append(self.cond[member])
            else:
                image = self.owners[member] if is_target else member
                embeddings.append(self.inversions[image].uncond_at(step).to(self.device))
            if is_target:
                self.target_evals[member] += 1
            else:
                self.source_evals[member] += 1
        return denoiser(torch.stack(latents), timestep, torch.stack(embeddings))

    def reconstructions(self) -> torch.Tensor:
        """Direct inversion reconstructs from the stored clean latent; the others from the source branch."""
        return torch.stack(
            [self.levels[b][0] if inv.pinned else self.sources[b] for b, inv in enumerate(self.inversions)]
        )

    def results(
        self,
        source_prompts: Sequence[str],
        flat: Sequence[Target],
        reconstructions: torch.Tensor,
        decoded: torch.Tensor,
        seconds: float,
        hooked: HookedLayers,
    ) -> list[ImageEdits]:
        total = sum(self.source_evals) + sum(self.target_evals) or 1.0
        count = len(self.inversions)
        results = []
        for b, inversion in enumerate(self.inversions):
            mine = [j for j, owner in enumerate(self.owners) if owner == b]
            k = max(len(mine), 1)
            own = self.source_evals[b] + sum(self.target_evals[j] for j in mine)
            shared_evals = (inversion.unet_evals + self.source_evals[b]) / k
            share_seconds = (inversion.seconds + seconds * own / total) / k
            results.append(
                ImageEdits(
                    source_prompt=source_prompts[b],
                    target_prompts=[flat[j].prompt for j in mine],
                    reference_prompts=[flat[j].anchor or source_prompts[b] for j in mine],
                    reconstruction=decoded[b].cpu(),
                    counterfactuals=decoded[[count + j for j in mine]].cpu(),
                    reconstruction_latent=reconstructions[b].cpu(),
                    counterfactual_latents=self.targets[mine].cpu(),
                    inversion=inversion,
                    unet_evals=[shared_evals + self.target_evals[j] for j in mine],
                    seconds=[share_seconds] * len(mine),
                    hooked=hooked,
                )
            )
        return results
