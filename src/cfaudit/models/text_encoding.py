"""Prompts -> token ids -> the text encoder's hidden states that condition the UNet (as SD does it).

SD conditions on the last hidden state of the CLIP text encoder for all 77 positions (prompt padded to 77).
Prompts longer than 77 tokens are cut, as SD cuts them, but with a warning naming how much was lost.

CLIP's text encoder is causal, so its states at real tokens never see the padding and SD passes no attention
mask. A bidirectional encoder (BERT-family, such as the frozen MiniLM option of the tiny preset) would let every
token attend to dozens of padding tokens it never saw in pre-training; it gets the padding mask. Its states at
padded positions are still returned (the UNet attends to all positions, as with CLIP).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

log = logging.getLogger("cfaudit")

#: ``model_type`` of text encoders that are causal (no padding mask, as SD does it).
CAUSAL_TEXT_ENCODERS = frozenset({"clip_text_model", "clip"})


def max_length(tokenizer: Any) -> int:
    """The number of token positions the text encoder sees (77 for CLIP; 77 when the tokenizer sets no limit)."""
    length = int(getattr(tokenizer, "model_max_length", 77))
    return length if length < 100_000 else 77


def tokenize(tokenizer: Any, prompts: Sequence[str], *, warn: bool = True) -> torch.Tensor:
    """Token ids ``[N, L]`` (padded / truncated to :func:`max_length`, 77 for SD)."""
    length = max_length(tokenizer)
    if warn:
        lengths = [len(ids) for ids in tokenizer(list(prompts), truncation=False).input_ids]
        long = [(p, n) for p, n in zip(prompts, lengths, strict=True) if n > length]
        if long:
            prompt, n = long[0]
            log.warning(
                "%d prompt(s) longer than %d tokens were truncated (first: %d tokens, %r)",
                len(long), length, n, prompt[:80],
            )  # fmt: skip
    batch = tokenizer(
        list(prompts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    )
    return batch.input_ids


def is_causal(text_encoder: Any) -> bool:
    """Whether ``text_encoder`` is causal (CLIP): then it is called without a padding mask, as SD does."""
    return str(getattr(text_encoder.config, "model_type", "clip_text_model")) in CAUSAL_TEXT_ENCODERS


def encode_ids(text_encoder: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """The encoder's last hidden state ``[N, L, D]`` for token ids (on the encoder's device)."""
    device = next(text_encoder.parameters()).device
    ids = input_ids.to(device)
    if is_causal(text_encoder):
        return text_encoder(ids)[0]
    pad = getattr(text_encoder.config, "pad_token_id", None)
    mask = ids.ne(pad).long() if pad is not None else torch.ones_like(ids)
    return text_encoder(ids, attention_mask=mask)[0]


@torch.no_grad()
def encode_prompts(text_encoder: Any, tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """Conditioning for ``prompts`` without gradients (sampling, inversion, editing)."""
    return encode_ids(text_encoder, tokenize(tokenizer, prompts))
