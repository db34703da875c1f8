"""Prompts -> token ids -> the text encoder's hidden states that condition the UNet (as SD does it).

SD conditions on the last hidden state of the CLIP text encoder for all 77 positions (prompt padded to 77).
Prompts longer than 77 tokens are cut, as SD cuts them, but with a warning naming how much was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

log = logging.getLogger("cfaudit")


def tokenize(tokenizer: Any, prompts: Sequence[str], *, warn: bool = True) -> torch.Tensor:
    """Token ids ``[N, 77]`` (padded / truncated to the tokenizer's ``model_max_length``)."""
    max_length = int(tokenizer.model_max_length)
    if warn:
        lengths = [len(ids) for ids in tokenizer(list(prompts), truncation=False).input_ids]
        long = [(p, n) for p, n in zip(prompts, lengths, strict=True) if n > max_length]
        if long:
            prompt, n = long[0]
            log.warning(
                "%d prompt(s) longer than %d tokens were truncated (first: %d tokens, %r)",
                len(long), max_length, n, prompt[:80],
            )  # fmt: skip
    batch = tokenizer(
        list(prompts), padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
    )
    return batch.input_ids


def encode_ids(text_encoder: Any, input_ids: torch.Tensor) -> torch.Tensor:
    """The encoder's last hidden state ``[N, 77, D]`` for token ids (on the encoder's device)."""
    device = next(text_encoder.parameters()).device
    return text_encoder(input_ids.to(device))[0]


@torch.no_grad()
def encode_prompts(text_encoder: Any, tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """Conditioning for ``prompts`` without gradients (sampling, inversion, editing)."""
    return encode_ids(text_encoder, tokenize(tokenizer, prompts))
