"""The frozen text encoder's states of every distinct caption, computed once instead of at every step.

SD fine-tuning keeps the text encoder frozen, so a caption's conditioning never changes during training; yet the
reference loop (diffusers' ``train_text_to_image.py``) runs the encoder on every batch. Captions built from
metadata repeat (the phantom's 1,403 training rows have far fewer distinct captions), so the states of each distinct
token sequence are encoded once, kept in memory in the encoder's dtype, and gathered by row. When they would not fit
in the configured budget, training encodes per step as before (a log line says so).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from cfaudit.models.text_encoding import encode_ids

log = logging.getLogger("cfaudit")


@dataclass
class TextCache:
    """``states[row_to_state[row]]`` is the conditioning of training row ``row``; ``empty`` that of ``""``."""

    states: torch.Tensor  # [U, L, D]
    row_to_state: torch.Tensor  # [N] long
    empty: torch.Tensor  # [L, D]

    def lookup(self, rows: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        """States ``[B, L, D]`` of ``rows``, the empty prompt's where ``dropped`` (caption dropout)."""
        hidden = self.states[self.row_to_state[rows]]
        if bool(dropped.any()):
            hidden[dropped] = self.empty
        return hidden

    @property
    def megabytes(self) -> float:
        return self.states.numel() * self.states.element_size() / 2**20


@torch.no_grad()
def build_text_cache(
    text_encoder: Any,
    input_ids: torch.Tensor,
    empty_ids: torch.Tensor,
    *,
    budget_mb: float,
    batch_size: int = 64,
) -> TextCache | None:
    """Encode each distinct row of ``input_ids`` ``[N, L]`` once; ``None`` when the states exceed ``budget_mb``."""
    distinct, row_to_state = torch.unique(input_ids, dim=0, return_inverse=True)
    parameter = next(text_encoder.parameters())
    width = int(text_encoder.config.hidden_size)
    needed = distinct.shape[0] * distinct.shape[1] * width * parameter.element_size() / 2**20
    if needed > budget_mb:
        log.info(
            "text cache: %d distinct captions need %.0f MB > text_cache_mb %.0f; encoding per step",
            distinct.shape[0], needed, budget_mb,
        )  # fmt: skip
        return None
    # Kept on the CPU: a batch's rows are gathered there and moved with the latents (a few MB per step at SD's size).
    states = torch.cat(
        [
            encode_ids(text_encoder, distinct[i : i + batch_size]).cpu()
            for i in range(0, len(distinct), batch_size)
        ]
    )
    empty = encode_ids(text_encoder, empty_ids.unsqueeze(0))[0].cpu()
    log.info("text cache: %d distinct captions of %d rows, %.0f MB", len(distinct), len(input_ids), needed)
    return TextCache(states, row_to_state, empty)
