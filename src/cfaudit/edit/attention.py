"""Prompt-to-prompt attention control (Hertz et al. 2022) through diffusers' attention processors.

The UNet's attention layers are found by what they *are* (modules carrying an attention processor, cross- or
self-attention by their ``is_cross_attention`` flag), never by class names, and are replaced for the duration of
an edit with :meth:`~diffusers.UNet2DConditionModel.set_attn_processor` (:func:`attention_control`), which reports
how many layers it hooked so that a test can pin the count (16 cross + 16 self in SD v1.5).

In one batched UNet call the editor stacks, for every image, a *source* row (the prompt that describes the
image) and one *target* row per edit. The :class:`AttentionController` then changes the attention probabilities
of the target rows only (conditional rows; unconditional rows are never touched, as in the reference code):

* **replace / refine** (cross-attention, the first ``cross_fraction`` of the steps): the target's attention to
  each token is taken from the source's, carried across the token alignment of :func:`cfaudit.edit.tokens.token_mapping`
  (``replace``: same words with some swapped; ``refine``: prompts of different lengths, new words keep their own);
* **reweight**: after that, the attention to chosen target tokens is scaled;
* **self-attention injection** (the first ``self_fraction`` of the steps, layers of at most ``self_max_tokens``
  queries): the target's self-attention is the source's, which keeps the image's layout;
* **local blend** (optional): cross-attention maps of the changed words give a mask per target, outside which the
  target latent is reset to the source latent after each step (:meth:`AttentionController.blend_mask`).

Layers and steps that need no control run through PyTorch's fused ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from cfaudit.edit import tokens
from cfaudit.errors import CfauditError

P2P_MODES = ("auto", "replace", "refine")


@dataclass(frozen=True)
class AttentionSettings:
    """How strongly the source's attention is injected into the targets (fractions of the denoising steps)."""

    cross_fraction: float = 0.8
    self_fraction: float = 0.4
    #: Self-attention of layers with more queries than this is not injected (the reference code stops at 32x32).
    self_max_tokens: int = 32 * 32
    local_blend: bool = False
    blend_threshold: float = 0.3
    blend_start: float = 0.2

    def __post_init__(self) -> None:
        for name in ("cross_fraction", "self_fraction", "blend_threshold", "blend_start"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise CfauditError(f"attention setting {name}={value} must lie in 0..1")
        if self.self_max_tokens < 0:
            raise CfauditError(f"attention setting self_max_tokens={self.self_max_tokens} must be >= 0")

    def cross_steps(self, steps: int) -> int:
        """Number of leading steps whose cross-attention is injected."""
        return int(self.cross_fraction * steps)

    def self_steps(self, steps: int) -> int:
        return int(self.self_fraction * steps)

    def blend_from(self, steps: int) -> int:
        """First step after which local blending applies (when enabled)."""
        return int(self.blend_start * steps)


@dataclass
class TokenEdit:
    """One target's edit in token space (all vectors have one entry per token position)."""

    mapper: torch.Tensor  # [L, L]: source token -> target token share
    alpha: torch.Tensor  # [L]: 1 where the target takes the mapped source attention
    equalizer: torch.Tensor  # [L]: reweighting factor per target token
    source_blend: torch.Tensor  # [L]: 1 on source tokens whose maps make the local-blend mask
    target_blend: torch.Tensor  # [L]: 1 on target tokens whose maps make the local-blend mask
    mode: str = "refine"
    notes: dict[str, Any] = field(default_factory=dict)


def token_edit(
    tokenizer: Any,
    source: str,
    target: str,
    *,
    mode: str = "auto",
    reweight: Mapping[str, float] | None = None,
    blend_words: Sequence[str] | None = None,
) -> TokenEdit:
    """Build the token-level edit turning ``source`` into ``target``.

    ``mode="auto"`` uses ``replace`` when both prompts have the same number of words and ``refine`` otherwise.
    ``reweight`` maps words of the target to attention factors. ``blend_words`` name the words whose attention
    maps define the local-blend region (each must occur in the source or the target); by default, the tokens
    the alignment leaves unmatched.
    """
    if mode not in P2P_MODES:
        raise CfauditError(f"prompt-to-prompt mode {mode!r} is not one of {', '.join(P2P_MODES)}")
    if mode == "auto":
        mode = "replace" if len(source.split()) == len(target.split()) else "refine"
    source_ids, target_ids = tokens.token_ids(tokenizer, source), tokens.token_ids(tokenizer, target)
    mapper, alpha = tokens.token_mapping(source_ids, target_ids, mode)
    length = len(target_ids)
    equalizer = torch.ones(length)
    for word, factor in (reweight or {}).items():
        equalizer[tokens.word_positions(tokenizer, target, word)] = float(factor)
    source_blend, target_blend = torch.zeros(len(source_ids)), torch.zeros(length)
    if blend_words is None:
        changed_source, changed_target = tokens.changed_words(tokenizer, source, target)
        source_blend[changed_source] = 1.0
        target_blend[changed_target] = 1.0
    else:
        for word in blend_words:
            found = False
            for prompt, mask in ((source, source_blend), (target, target_blend)):
                try:
                    mask[tokens.word_positions(tokenizer, prompt, word)] = 1.0
                    found = True
                except CfauditError:
                    pass
            if not found:
                raise CfauditError(f"local-blend word {word!r} occurs in neither {source!r} nor {target!r}")
    return TokenEdit(mapper, alpha, equalizer, source_blend, target_blend, mode)


class AttentionController:
    """Edits the attention probabilities of target rows from their source rows, step by step.

    The editor calls :meth:`begin_step` before every UNet call with the batch rows of each target and of its
    source (``None`` when the source is not in this call), and :meth:`blend_mask` after it.
    """

    def __init__(
        self,
        edits: Sequence[TokenEdit],
        settings: AttentionSettings,
        steps: int,
        latent_size: tuple[int, int],
    ) -> None:
        self.settings = settings
        self.steps = steps
        self.latent_size = latent_size
        self.count = len(edits)
        self.mapper = torch.stack([e.mapper for e in edits]) if edits else torch.zeros(0, 1, 1)
        self.alpha = torch.stack([e.alpha for e in edits]) if edits else torch.zeros(0, 1)
        self.equalizer = torch.stack([e.equalizer for e in edits]) if edits else torch.zeros(0, 1)
        self.source_blend = torch.stack([e.source_blend for e in edits]) if edits else torch.zeros(0, 1)
        self.target_blend = torch.stack([e.target_blend for e in edits]) if edits else torch.zeros(0, 1)
        self.step = 0
        self._source_rows: torch.Tensor | None = None
        self._target_rows: torch.Tensor | None = None
        self._maps: list[torch.Tensor] = []

    # -- what this step needs -----------------------------------------------------------------------------
    def cross_active(self, step: int | None = None) -> bool:
        return (self.step if step is None else step) < self.settings.cross_steps(self.steps)

    def self_active(self, step: int | None = None) -> bool:
        return (self.step if step is None else step) < self.settings.self_steps(self.steps)

    def blend_active(self, step: int | None = None) -> bool:
        step = self.step if step is None else step
        return self.settings.local_blend and step >= self.settings.blend_from(self.steps)

    def needs_source(self, step: int) -> bool:
        """Whether step ``step`` needs the sources' conditional rows (to inject or to blend from)."""
        return self.count > 0 and (
            self.cross_active(step) or self.self_active(step) or self.blend_active(step)
        )

    def begin_step(
        self, step: int, source_rows: Sequence[int] | None, target_rows: Sequence[int] | None
    ) -> None:
        self.step = step
        self._maps = []
        if source_rows is None or target_rows is None or self.count == 0:
            self._source_rows = self._target_rows = None
            return
        if len(source_rows) != self.count or len(target_rows) != self.count:
            raise ValueError(
                f"expected rows for {self.count} targets, got {len(source_rows)}/{len(target_rows)}"
            )
        self._source_rows = torch.as_tensor(list(source_rows), dtype=torch.long)
        self._target_rows = torch.as_tensor(list(target_rows), dtype=torch.long)

    def end(self) -> None:
        """Stop controlling (rows forgotten): later UNet calls run unchanged."""
        self._source_rows = self._target_rows = None
        self._maps = []

    def wants(self, is_cross: bool, queries: int) -> bool:
        """Whether a layer must compute explicit attention probabilities for this call."""
        if self._source_rows is None:
            return False
        if is_cross:
            return self.cross_active() or self.blend_active()
        return self.self_active() and queries <= self.settings.self_max_tokens

    # -- the edit itself ----------------------------------------------------------------------------------
    def __call__(self, probs: torch.Tensor, is_cross: bool) -> torch.Tensor:
        """Edit ``probs`` ``[batch, heads, queries, keys]`` in the target rows and return it: in place (the layer's
        own probabilities, perhaps in its reused workspace, used nowhere else), or a copy where gradients flow."""
        if self._source_rows is None or self._target_rows is None:
            return probs
        source_rows = self._source_rows.to(probs.device)
        target_rows = self._target_rows.to(probs.device)
        base, own = probs[source_rows], probs[target_rows]
        if is_cross:
            if self.blend_active():
                self._collect(base, own)
            if not self.cross_active():
                return probs
            mapper = self.mapper.to(probs.device, probs.dtype)
            alpha = self.alpha.to(probs.device, probs.dtype)[:, None, None, :]
            mapped = torch.einsum("thqs,tsk->thqk", base, mapper)
            edited = (mapped * alpha + own * (1 - alpha)) * self.equalizer.to(probs.device, probs.dtype)[
                :, None, None, :
            ]
        else:
            edited = base
        if probs.requires_grad:
            probs = probs.clone()  # the softmax's backward needs its output as it was
        probs[target_rows] = edited
        return probs

    def _collect(self, base: torch.Tensor, own: torch.Tensor) -> None:
        """Accumulate the attention of the blend words (head-averaged, resized to the latent grid)."""
        height, width = self.latent_size
        queries = base.shape[2]
        factor = round((height * width / queries) ** 0.5)
        grid = (max(1, height // factor), max(1, width // factor))
        if grid[0] * grid[1] != queries:
            return  # a layer whose queries are not an image grid of this latent: not a map
        source_blend = self.source_blend.to(base.device, base.dtype)
        target_blend = self.target_blend.to(base.device, base.dtype)
        source_map = (base.mean(1) * source_blend[:, None, :]).sum(-1)
        target_map = (own.mean(1) * target_blend[:, None, :]).sum(-1)
        maps = torch.stack([source_map, target_map], 1).reshape(-1, 2, *grid).float()
        self._maps.append(F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False))

    def blend_mask(self) -> torch.Tensor | None:
        """``[targets, 1, h, w]`` mask (1 = may change) from this step's maps, or ``None`` when not blending."""
        if not self.blend_active() or not self._maps:
            return None
        maps = torch.stack(self._maps).mean(0)  # [targets, 2, h, w]
        maps = F.max_pool2d(maps, kernel_size=3, stride=1, padding=1)
        peak = maps.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
        mask = (maps / peak) > self.settings.blend_threshold
        return (mask[:, :1] | mask[:, 1:]).float()


def attention_probabilities(
    scores: torch.Tensor, scale: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``softmax(scores * scale + mask)`` over the keys; on the CPU, without gradients, in ``scores``' own memory.

    A controlled layer's scores are the largest tensors of an edit (``[rows, heads, queries, keys]``). On the CPU a
    fresh one for the scaling and another for the softmax made the kernel map and zero that much memory anew in
    every call: most of the page faults of a discovery's editing. In place, the values are the out-of-place ops'
    to the bit (the same kernels, row by row; ``tests/edit/test_attention.py`` pins it). ``scores`` is consumed.
    """
    if scores.requires_grad or scores.device.type != "cpu":
        scores = scores * scale
        return (scores if mask is None else scores + mask).softmax(dim=-1)
    scores.mul_(scale)
    if mask is not None:
        scores = scores + mask
    return torch.ops.aten._softmax.out(scores, -1, False, out=scores)


class ScoresWorkspace:
    """The memory the controlled layers of one :func:`attention_control` compute their scores in, one tensor per
    shape, reused from call to call: the layers run one after another, and each is done with its probabilities
    before the next begins. Without it every controlled call asked the allocator for a fresh tensor of the edit's
    largest size, which on the CPU the kernel maps and zeroes anew each time (docs/BENCHMARKS.md, "The main job")."""

    def __init__(self) -> None:
        self._tensors: dict[tuple[tuple[int, ...], torch.dtype, torch.device], torch.Tensor] = {}

    def scores(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """``query @ key^T`` (``[..., queries, keys]``): in the workspace on the CPU without gradients, else fresh
        (a GPU's caching allocator already reuses memory; autograd needs each call's own)."""
        keys_t = key.transpose(-1, -2)
        if query.requires_grad or key.requires_grad or query.device.type != "cpu":
            return torch.matmul(query, keys_t)
        shape = (*query.shape[:-1], key.shape[-2])
        slot = (shape, query.dtype, query.device)
        if slot not in self._tensors:
            self._tensors[slot] = torch.empty(shape, dtype=query.dtype, device=query.device)
        return torch.matmul(query, keys_t, out=self._tensors[slot])


class P2PAttnProcessor:
    """An attention processor computing what diffusers' default one does, letting a controller edit the probabilities."""

    def __init__(
        self, controller: AttentionController | None, is_cross: bool, workspace: ScoresWorkspace | None = None
    ) -> None:
        self.controller = controller
        self.is_cross = is_cross
        self.workspace = workspace or ScoresWorkspace()

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch, keys_length, _ = (
            hidden_states if encoder_hidden_states is None else encoder_hidden_states
        ).shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, keys_length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        controller = self.controller
        if controller is not None and controller.wants(self.is_cross, query.shape[2]):
            upcast = attn.upcast_attention or attn.upcast_softmax
            scores = self.workspace.scores(query.float() if upcast else query, key.float() if upcast else key)
            probs = attention_probabilities(scores, attn.scale, attention_mask).to(value.dtype)
            probs = controller(probs, self.is_cross)
            hidden_states = torch.matmul(probs, value)
        else:
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, scale=attn.scale
            )
        hidden_states = (
            hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        )
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@dataclass(frozen=True)
class HookedLayers:
    """What :func:`attention_control` hooked: processor names, split into cross- and self-attention."""

    cross: tuple[str, ...]
    self_: tuple[str, ...]

    @property
    def counts(self) -> tuple[int, int]:
        return len(self.cross), len(self.self_)


def attention_layers(unet: Any) -> dict[str, bool]:
    """Processor name -> is cross-attention, for every attention module of ``unet``."""
    layers: dict[str, bool] = {}
    for name, module in unet.named_modules():
        if hasattr(module, "set_processor") and hasattr(module, "processor"):
            layers[f"{name}.processor"] = bool(getattr(module, "is_cross_attention", False))
    return layers


@contextlib.contextmanager
def attention_control(unet: Any, controller: AttentionController | None) -> Iterator[HookedLayers]:
    """Route every attention layer of ``unet`` through a :class:`P2PAttnProcessor`; restore the originals after."""
    original = unet.attn_processors
    layers = attention_layers(unet)
    if set(layers) != set(original):
        raise CfauditError(
            "the UNet's attention processors do not match its attention modules "
            f"({len(original)} processors, {len(layers)} modules); this diffusers version is not supported"
        )
    hooked = HookedLayers(
        cross=tuple(k for k, is_cross in layers.items() if is_cross),
        self_=tuple(k for k, is_cross in layers.items() if not is_cross),
    )
    if not hooked.cross:
        raise CfauditError(
            "the UNet has no cross-attention layers: prompt-to-prompt editing would do nothing"
        )
    workspace = ScoresWorkspace()
    unet.set_attn_processor(
        {k: P2PAttnProcessor(controller, is_cross, workspace) for k, is_cross in layers.items()}
    )
    try:
        yield hooked
    finally:
        unet.set_attn_processor(original)
