"""What each training step draws: the epoch's rows (rare findings' images drawn more often), their captions
(partial ones naming a random subset of what is true, now and then an absent finding) and the timesteps.

Every draw comes from a generator the trainer passes in (:mod:`cfaudit.train.trainer`), so that a resumed run
draws the same rows, captions and timesteps as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from cfaudit.models.text_encoding import tokenize
from cfaudit.train.config import TrainConfig

if TYPE_CHECKING:
    from cfaudit.data.prompts import Findings


def negative_rates(
    config: TrainConfig, records: Sequence[Mapping[str, Any]], repeats: torch.Tensor | None = None
) -> torch.Tensor:
    """Per finding, the chance that a partial caption names it as absent when it is (``caption_negative``).

    With ``caption_negative_ratio``, a finding's absence is named at most that many times per naming of its
    presence, counted over the draws (``repeats``): a rare finding's word would otherwise stand as often after
    "no" as without it (cardiomegaly in 12% of the demo's images: 367 "no cardiomegaly" to 478 "cardiomegaly"
    in four epochs of captions), and a small text encoder then learns the word late or never."""
    from cfaudit.data.labels import LabelPolicy, label_value
    from cfaudit.data.vocabulary import FINDINGS

    rates = torch.full((len(FINDINGS),), config.caption_negative)
    if config.caption_negative_ratio is None or config.caption_partial <= 0:
        return rates
    policy = LabelPolicy.from_dict(config.label_policy)
    weight = torch.ones(len(records)) if repeats is None else repeats.float()
    positive = torch.tensor([[label_value(r, f, policy) == 1.0 for f in FINDINGS] for r in records])
    share = (positive.float() * weight[:, None]).sum(dim=0) / weight.sum()
    # a present finding is named in every full caption and in half of the partial ones (keep rates are uniform),
    # or in all of them when ``caption_always`` keeps it
    kept = torch.tensor([1.0 if finding in config.caption_always else 0.5 for finding in FINDINGS])
    named = share * ((1.0 - config.caption_partial) + kept * config.caption_partial)
    negated_per_rate = (1.0 - share) * config.caption_partial
    cap = config.caption_negative_ratio * named / negated_per_rate.clamp(min=1e-9)
    return torch.minimum(rates, cap)


def sampled_caption_ids(
    config: TrainConfig,
    records: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    rows: torch.Tensor,
    generator: torch.Generator,
    negative: torch.Tensor | None = None,
    without_always: torch.Tensor | None = None,
    findings: Sequence[Findings] | None = None,
) -> torch.Tensor:
    """Token ids of this batch's captions, a ``caption_partial`` share of them naming a random subset of what is
    true of the image (:func:`cfaudit.data.prompts.subset_caption`) that always holds ``caption_always``, drawn
    from ``generator`` so that a resumed run draws the same captions; ``negative``: per finding, the chance an
    absent one is named as such (default: ``caption_negative`` for each); ``without_always``: per row, whether its
    caption leaves the ``caption_always`` statements out instead (the rows that keep the starting model's
    predictions, ``preserve_weight``), the others naming those statements alone with ``caption_always_alone`` (a
    ``caption_always_alone_share`` of them; the rest keep their own caption with the statements in it). It
    draws the same numbers either way. ``findings``: each record's :func:`cfaudit.data.prompts.record_findings`
    under the config's policy, worked out once (:func:`cfaudit.data.prompts.records_findings`); without them each
    caption works its record's out again."""
    from cfaudit.data.labels import LabelPolicy
    from cfaudit.data.prompts import CAPTION_STATEMENTS, PromptTemplate, subset_caption
    from cfaudit.data.vocabulary import FINDINGS

    n = len(rows)
    partial = torch.rand(n, generator=generator) < config.caption_partial
    rate = torch.rand(n, 1, generator=generator)  # each partial caption keeps its statements at its own rate
    keep = (torch.rand(n, len(CAPTION_STATEMENTS), generator=generator) < rate) | ~partial[:, None]
    always = torch.tensor([name in config.caption_always for name in CAPTION_STATEMENTS])
    keep |= always[None, :]
    rates = torch.full((len(FINDINGS),), config.caption_negative) if negative is None else negative
    absent_draw = torch.rand(n, len(FINDINGS), generator=generator)
    # drawn last, and only below a share of 1, so that every other draw is as it was before the share existed
    alone_draw = torch.rand(n, generator=generator) if config.caption_always_alone_share < 1.0 else None
    if without_always is not None:
        keep &= ~(always[None, :] & without_always[:, None])
        if config.caption_always_alone:
            learning = ~without_always
            if alone_draw is not None:
                learning &= alone_draw < config.caption_always_alone_share
            keep[learning] = always
            partial = partial & ~learning  # a caption naming them alone names nothing absent
    absent = (absent_draw < rates) & partial[:, None]
    template = PromptTemplate.from_dict(config.prompt_template)
    policy = LabelPolicy.from_dict(config.label_policy)
    captions = []
    for k, row in enumerate(int(r) for r in rows):
        found = findings[row] if findings is not None else None
        captions.append(
            subset_caption(records[row], keep[k].tolist(), absent[k].tolist(), template, policy, found)
        )
    return tokenize(tokenizer, captions, warn=False)


def timestep_sampling_weights(config: TrainConfig, num_timesteps: int) -> torch.Tensor | None:
    """Relative chance of drawing each training timestep; ``None`` when uniform (``config.timestep_bias``)."""
    if config.timestep_bias == "none" or config.timestep_bias_multiplier == 1.0:
        return None
    weights = torch.ones(num_timesteps)
    span = max(1, round(config.timestep_bias_portion * num_timesteps))
    if config.timestep_bias == "later":
        weights[num_timesteps - span :] *= config.timestep_bias_multiplier
    else:
        weights[:span] *= config.timestep_bias_multiplier
    return weights


def finding_repeats(config: TrainConfig, records: Sequence[Mapping[str, Any]]) -> torch.Tensor | None:
    """How many times each row stands in an epoch so that every finding's positives make up about
    ``config.finding_min_share`` of the draws, or more (``None``: once each, the plain epoch).

    Raking: the rows of each finding under the share are weighted up until it is reached, a few rounds over all
    findings (a row with several findings serves them all), each row at most ``finding_max_repeat`` times.
    Drawing by the labels keeps what comes with each finding (the images with cardiomegaly are drawn more often,
    as they are): it changes how often the model sees a word, not what the word goes with."""
    if config.finding_min_share <= 0:
        return None
    from cfaudit.data.labels import LabelPolicy, label_value
    from cfaudit.data.vocabulary import PATHOLOGIES

    policy = LabelPolicy.from_dict(config.label_policy)
    positive = torch.tensor(
        [[label_value(r, f, policy) == 1.0 for f in PATHOLOGIES] for r in records], dtype=torch.bool
    )
    weight = torch.ones(len(records), dtype=torch.float64)
    for _ in range(20):
        for column in positive.T:
            share = weight[column].sum() / weight.sum()
            if 0 < share < config.finding_min_share:
                weight[column] *= config.finding_min_share / share
                weight.clamp_(max=config.finding_max_repeat)
    return weight.round().clamp(1, config.finding_max_repeat).long()


def next_rows(
    state: dict[str, Any], n: int, data_gen: torch.Generator, repeats: torch.Tensor | None = None
) -> torch.Tensor:
    """The next ``n`` rows of the epoch's shuffled order (a new permutation when an epoch ends; with
    ``repeats``, of the rows each repeated as :func:`finding_repeats` says)."""
    rows: list[int] = []
    while len(rows) < n:
        if state["order"] is None or state["position"] >= len(state["order"]):
            if repeats is None:
                state["order"] = torch.randperm(state["n_rows"], generator=data_gen)
            else:
                expanded = torch.repeat_interleave(torch.arange(state["n_rows"]), repeats)
                state["order"] = expanded[torch.randperm(len(expanded), generator=data_gen)]
            state["position"] = 0
            state["epoch"] += 1
        take = min(n - len(rows), len(state["order"]) - state["position"])
        rows.extend(state["order"][state["position"] : state["position"] + take].tolist())
        state["position"] += take
    return torch.tensor(rows, dtype=torch.long)
