"""Counterfactual images by Pearl's three steps: abduction, action (``do()``), prediction.

:class:`ScmCounterfactuals` answers "what would this X-ray look like had the patient been older / female /
without effusion?" for a batch of images with their records and any number of interventions:

1. **abduction** of the exogenous noise of every metadata node (discrete nodes: a sample from its posterior,
   drawn from a generator seeded per image, so a result never depends on how images were batched) and of the
   image's latents and per-pixel noise (:meth:`~cfaudit.scm.hvae.HierarchicalVAE.abduct`);
2. **action**: the intervened nodes take their values, cutting them from their parents;
3. **prediction** through the graph: a node whose parents changed is recomputed from its noise (``do(age=80)``
   may give a patient an effusion), every other node keeps its value; then the image is decoded under the
   counterfactual parents with the abducted latents and pixel noise.

An intervention that changes no node's value (``do(sex=Male)`` on a man) returns the input exactly.
Interventions use the diffusion editor's syntax (:class:`cfaudit.data.interventions.Intervention`); each
attribute must be a node of the model's graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cfaudit.data.interventions import Intervention
from cfaudit.errors import CfauditError
from cfaudit.scm.hvae import LATENT_MODES
from cfaudit.scm.model import CausalImageModel


@dataclass
class CounterfactualBatch:
    """Counterfactuals of ``B`` images under ``K`` interventions."""

    images: torch.Tensor  # [K, B, C, H, W] in [-1, 1]
    identity: torch.Tensor  # [B, C, H, W]: the null intervention (parents as observed): the input
    values: list[dict[str, torch.Tensor]]  # per intervention: counterfactual node values [B]
    changed: list[dict[str, torch.Tensor]]  # per intervention: per node, which rows changed [B] bool
    factual: dict[str, torch.Tensor]  # the observed node values [B]


def intervention_values(model: CausalImageModel, intervention: Intervention) -> dict[str, Any]:
    """``do(sex=Female, age=80)`` -> ``{"sex": 0.0, "age": 80.0}`` in the graph's encoding."""
    values = {}
    for name, value in intervention.changes:
        if name == "No Finding":
            raise CfauditError(
                f"{intervention}: the SCM intervenes on graph nodes; set the findings of its graph "
                f"({', '.join(n for n in model.graph.names if n not in ('age', 'sex', 'race'))}) instead"
            )
        values[name] = model.graph.encode_value(name, value)
    return values


def image_seed(seed: int, image_id: str) -> int:
    """The seed of one image's abduction: the job seed and the image id, nothing about the batch."""
    digest = hashlib.sha256(f"{seed}|{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class ScmCounterfactuals:
    """Abduction -> action -> prediction with a trained :class:`~cfaudit.scm.model.CausalImageModel`."""

    def __init__(self, model: CausalImageModel, latents: str = "noise") -> None:
        if latents not in LATENT_MODES:
            raise CfauditError(f"latent mode {latents!r} is not one of {', '.join(LATENT_MODES)}")
        self.model = model
        self.latents = latents

    def check(self, interventions: Sequence[Intervention]) -> list[dict[str, Any]]:
        """The encoded interventions; an attribute outside the graph is an error naming the graph's nodes."""
        return [intervention_values(self.model, intervention) for intervention in interventions]

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        values: Mapping[str, torch.Tensor],
        interventions: Sequence[Intervention],
        seeds: Sequence[int] | None = None,
    ) -> CounterfactualBatch:
        """Counterfactuals of ``images`` ``[B, C, R, R]`` (``[-1, 1]``, model resolution) with node ``values``.

        ``seeds``: one per image for the abduction of discrete noise (default: the row number).
        """
        model = self.model
        actions = self.check(interventions)
        if images.shape[-1] != model.resolution or images.shape[-2] != model.resolution:
            raise CfauditError(
                f"images are {tuple(images.shape[-2:])}; the model works at {model.resolution} px"
            )
        n = images.shape[0]
        seeds = list(seeds) if seeds is not None else list(range(n))
        images = images.to(model.device)
        # 1. Abduction: the metadata's noise (row by row, each from its own seed) and the image's latents + noise
        noises = self.abduct_graph(values, seeds)
        factual_parents = model.image_parents(dict(values))
        abduction = model.hvae.abduct(images, factual_parents)
        identity = model.hvae.counterfactual(images, abduction, factual_parents, self.latents).cpu()
        outputs, all_values, all_changed = [], [], []
        for action in actions:
            # 2. Action and 3. prediction through the graph: descendants of the intervened nodes move
            counterfactual, changed = model.mechanisms.counterfactual(values, noises, action)
            # 3. Prediction of the image under the counterfactual parents
            parents = model.image_parents(counterfactual)
            outputs.append(model.hvae.counterfactual(images, abduction, parents, self.latents).cpu())
            all_values.append(counterfactual)
            all_changed.append(changed)
        stacked = torch.stack(outputs) if outputs else torch.zeros((0, *identity.shape))
        return CounterfactualBatch(stacked, identity, all_values, all_changed, dict(values))

    def abduct_graph(
        self, values: Mapping[str, torch.Tensor], seeds: Sequence[int]
    ) -> dict[str, torch.Tensor]:
        """Noise of every node, each row from ``torch.Generator().manual_seed(seeds[row])``."""
        rows = []
        for row, seed in enumerate(seeds):
            generator = torch.Generator().manual_seed(int(seed))
            rows.append(
                self.model.mechanisms.abduct({k: v[row : row + 1] for k, v in values.items()}, generator)
            )
        return {name: torch.cat([r[name] for r in rows]) for name in rows[0]} if rows else {}
