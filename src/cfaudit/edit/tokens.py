"""Words to token positions, and the token alignment between a source and a target prompt.

Prompt-to-prompt edits attention per *token*, but users name *words*. CLIP's tokenizer splits numbers into single
digits (``63`` -> ``6``, ``3``), punctuation into its own tokens (``80-years`` -> ``8``, ``0``, ``-``, ``years``)
and long words into pieces, so a word is found by its characters: the tokens whose character spans overlap the
word's occurrence in the prompt (as a whole word: ``male`` never matches inside ``female``).

:func:`token_mapping` aligns two token sequences by their longest common subsequence. Tokens in the alignment keep
the source's attention ("refine"); in ``replace`` mode the unaligned stretches between aligned tokens are mapped
onto each other too (``male`` -> ``female``, ``6 3`` -> ``8 0``), each target token receiving an equal share of
the source stretch's attention, so that a token's attention mass is carried over, not lost.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import torch

from cfaudit.errors import CfauditError
from cfaudit.models.text_encoding import max_length


def token_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The ids the text encoder sees for ``prompt``: start token, text, end token, padding to :func:`max_length`."""
    length = max_length(tokenizer)
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids
    return list(ids)


def token_spans(tokenizer: Any, prompt: str) -> list[tuple[int, int] | None]:
    """Character span in ``prompt`` of every token position (``None`` for start, end and padding tokens)."""
    length = max_length(tokenizer)
    try:
        encoded = tokenizer(prompt, truncation=True, max_length=length, return_offsets_mapping=True)
        offsets = [tuple(o) for o in encoded["offset_mapping"]]
        ids = list(encoded.input_ids)
    except (NotImplementedError, KeyError, TypeError, ValueError):
        ids = list(tokenizer(prompt, truncation=True, max_length=length).input_ids)
        offsets = _search_offsets(tokenizer, prompt, ids)
    special = set(getattr(tokenizer, "all_special_ids", []))
    spans: list[tuple[int, int] | None] = [
        None if token in special or start == end else (int(start), int(end))
        for token, (start, end) in zip(ids, offsets, strict=True)
    ]
    return spans + [None] * (length - len(spans))


def _search_offsets(tokenizer: Any, prompt: str, ids: list[int]) -> list[tuple[int, int]]:
    """Offsets for tokenizers without an offset mapping: find each decoded token in turn (case-insensitive)."""
    text = prompt.lower()
    cursor, offsets = 0, []
    special = set(getattr(tokenizer, "all_special_ids", []))
    for token in ids:
        piece = "" if token in special else tokenizer.decode([token]).strip().lower()
        start = text.find(piece, cursor) if piece else -1
        if start < 0:
            offsets.append((0, 0))
            continue
        offsets.append((start, start + len(piece)))
        cursor = start + len(piece)
    return offsets


def word_positions(tokenizer: Any, prompt: str, word: str) -> list[int]:
    """Token positions of every whole-word occurrence of ``word`` (any case; may span several tokens).

    Raises a :class:`CfauditError` listing the prompt's words when ``word`` does not occur.
    """
    needle = re.sub(r"\s+", " ", word.strip().lower())
    if not needle:
        raise CfauditError("an empty word cannot be matched to tokens; name a word of the prompt")
    pattern = re.compile(rf"(?<![a-z0-9]){re.escape(needle)}(?![a-z0-9])")
    text = prompt.lower()
    spans = token_spans(tokenizer, prompt)
    positions: list[int] = []
    for match in pattern.finditer(text):
        start, end = match.span()
        positions += [i for i, s in enumerate(spans) if s is not None and s[0] < end and s[1] > start]
    if not positions:
        words = sorted(set(re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", text)))
        raise CfauditError(
            f"word {word!r} is not in the prompt {prompt!r} (or lies past its {max_length(tokenizer)}-token limit); "
            f"its words are: {', '.join(words)}"
        )
    return sorted(set(positions))


def _lcs_pairs(source: list[int], target: list[int]) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence of two id lists (ties broken towards earlier positions)."""
    n, m = len(source), len(target)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            if source[i] == target[j]:
                table[i][j] = table[i + 1][j + 1] + 1
            else:
                table[i][j] = max(table[i + 1][j], table[i][j + 1])
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if source[i] == target[j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def token_mapping(
    source_ids: list[int], target_ids: list[int], mode: str = "refine"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mapper, alpha)`` carrying source cross-attention onto target tokens.

    ``mapper[s, t]`` is the share of source token ``s``'s attention given to target token ``t``; ``alpha[t]`` is 1
    where target token ``t`` takes the mapped source attention and 0 where it keeps its own (a new word).
    ``mode`` is ``refine`` (aligned tokens only) or ``replace`` (unaligned stretches mapped onto each other too).
    """
    if mode not in ("refine", "replace"):
        raise CfauditError(f"token mapping mode {mode!r} is not one of refine, replace")
    n, m = len(source_ids), len(target_ids)
    mapper = torch.zeros(n, m)
    alpha = torch.zeros(m)
    pairs = _lcs_pairs(source_ids, target_ids)
    for s, t in pairs:
        mapper[s, t] = 1.0
        alpha[t] = 1.0
    if mode == "replace":
        bounds = [(-1, -1), *pairs, (n, m)]
        for (s0, t0), (s1, t1) in itertools.pairwise(bounds):
            gap_source, gap_target = range(s0 + 1, s1), range(t0 + 1, t1)
            if len(gap_source) and len(gap_target):
                for t in gap_target:
                    mapper[list(gap_source), t] = 1.0 / len(gap_target)
                    alpha[t] = 1.0
    return mapper, alpha


def changed_words(tokenizer: Any, source: str, target: str) -> tuple[list[int], list[int]]:
    """Token positions that the alignment leaves unmatched: (in the source, in the target). Padding excluded."""
    source_ids, target_ids = token_ids(tokenizer, source), token_ids(tokenizer, target)
    pairs = _lcs_pairs(source_ids, target_ids)
    source_spans, target_spans = token_spans(tokenizer, source), token_spans(tokenizer, target)
    matched_s, matched_t = {s for s, _ in pairs}, {t for _, t in pairs}
    return (
        [i for i, span in enumerate(source_spans) if span is not None and i not in matched_s],
        [i for i, span in enumerate(target_spans) if span is not None and i not in matched_t],
    )
