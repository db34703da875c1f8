"""Learned mechanisms of the metadata nodes, each with its exogenous noise: fit, abduct, predict.

Every node ``v`` with parents ``pa`` is a structural assignment ``v = f(pa, u)`` with independent noise ``u``,
learned by maximum likelihood (:func:`fit_mechanisms`; the likelihood factorises over nodes):

``binary`` (:class:`BinaryMechanism`)
    ``v = 1[u > 1 - sigmoid(l(pa))]`` with ``u ~ Uniform(0, 1)``: the two-class Gumbel-max trick (a difference of
    two Gumbels is logistic). Abduction draws ``u`` from its posterior, the uniform on the interval consistent
    with the observed ``v``; so a counterfactual keeps the patient's "rank": with ``p = P(v=1 | pa)`` and
    ``p* = P(v=1 | pa*)``, an observed 1 stays 1 with probability ``min(1, p*/p)``.
``categorical`` (:class:`CategoricalMechanism`)
    ``v = argmax_k(l_k(pa) + g_k)`` with standard Gumbels ``g``. Abduction samples the Gumbels given the observed
    arg-max (the top-down truncated-Gumbel construction of Maddison et al., 2014).
``continuous`` (:class:`ContinuousMechanism`)
    a one-dimensional conditional normalising flow ``u = F(v | pa)``: the CDF of a mixture of logistics whose
    weights, locations and scales come from the parents (the "mixture CDF" flow of Flow++ in one dimension),
    with a uniform base. Its density is the mixture's; abduction is exact (``u = F(v | pa)``) and prediction
    inverts ``F(. | pa*)`` by bisection. Integer-valued data (ages in years) are dequantised while fitting.

Prediction (:meth:`GraphMechanisms.counterfactual`) walks the graph in topological order: an intervened node
takes its value, a node whose parents changed is recomputed from its abducted noise, every other node keeps its
factual value exactly. The abduction of discrete noise is random: pass a seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from cfaudit.data.vocabulary import finding_slug
from cfaudit.errors import CfauditError
from cfaudit.scm.graph import CausalGraph, Node

_EPS = 1e-6


def _head(parent_dim: int, hidden: int, outputs: int) -> nn.Module | None:
    """Parents -> ``outputs`` numbers: a linear map plus a small MLP (zero-initialised), or nothing for roots."""
    if parent_dim == 0:
        return None
    return _LinearPlusMLP(parent_dim, hidden, outputs)


class _LinearPlusMLP(nn.Module):
    def __init__(self, inputs: int, hidden: int, outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(inputs, outputs)
        self.mlp = (
            nn.Sequential(nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, outputs))
            if hidden
            else None
        )
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        if self.mlp is not None:
            output_layer = cast(nn.Linear, self.mlp[2])  # Sequential indexing is typed as any Module
            nn.init.zeros_(output_layer.weight)
            nn.init.zeros_(output_layer.bias)

    def forward(self, parents: torch.Tensor) -> torch.Tensor:
        out = self.linear(parents)
        return out + self.mlp(parents) if self.mlp is not None else out


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return u.to(device=like.device).clamp(_EPS, 1 - _EPS)


class BinaryMechanism(nn.Module):
    """``v = 1[u > 1 - sigmoid(logit(pa))]``, ``u ~ Uniform(0, 1)``."""

    def __init__(self, parent_dim: int, hidden: int = 16) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))
        self.head = _head(parent_dim, hidden, 1)

    def logits(self, parents: torch.Tensor) -> torch.Tensor:
        base = self.bias.expand(parents.shape[0])
        return base + self.head(parents)[:, 0] if self.head is not None else base

    def probability(self, parents: torch.Tensor) -> torch.Tensor:
        """``P(v = 1 | pa)`` ``[N]``."""
        return torch.sigmoid(self.logits(parents))

    def log_prob(self, value: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(self.logits(parents), value.float(), reduction="none")

    def abduct(
        self, value: torch.Tensor, parents: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """``u`` uniform on ``(1 - p, 1)`` for an observed 1, on ``(0, 1 - p)`` for a 0; ``[N, 1]`` float64."""
        threshold = torch.sigmoid(-self.logits(parents).double())  # 1 - p
        r = _uniform((value.shape[0],), generator, threshold)
        u = torch.where(value >= 0.5, threshold + r * (1 - threshold), r * threshold)
        return u.clamp(_EPS, 1 - _EPS)[:, None]

    def predict(self, noise: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        threshold = torch.sigmoid(-self.logits(parents).double())
        return (noise[:, 0] > threshold).float()

    def sample(self, parents: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.predict(_uniform((parents.shape[0], 1), generator, parents), parents)


class CategoricalMechanism(nn.Module):
    """``v = argmax(logits(pa) + g)`` with standard Gumbel noise ``g``."""

    def __init__(self, parent_dim: int, categories: int, hidden: int = 16) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(categories))
        self.head = _head(parent_dim, hidden, categories)

    def logits(self, parents: torch.Tensor) -> torch.Tensor:
        base = self.bias.expand(parents.shape[0], -1)
        return base + self.head(parents) if self.head is not None else base

    def probability(self, parents: torch.Tensor) -> torch.Tensor:
        return self.logits(parents).softmax(dim=1)

    def log_prob(self, value: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        return -F.cross_entropy(self.logits(parents), value.long(), reduction="none")

    def abduct(
        self, value: torch.Tensor, parents: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Gumbels ``g`` ``[N, K]`` (float64) such that ``argmax(logits + g)`` is the observed category."""
        logits = self.logits(parents).double()
        n, k = logits.shape
        # the maximum of the perturbed logits is Gumbel(logsumexp) and belongs to the observed category; every
        # other perturbed logit is a Gumbel at its own logit truncated below that maximum
        top = logits.logsumexp(dim=1) - torch.log(-torch.log(_uniform((n,), generator, logits)))
        free = logits - torch.log(-torch.log(_uniform((n, k), generator, logits)))
        others = -torch.logaddexp(-top[:, None], -free)
        perturbed = torch.where(F.one_hot(value.long(), k).bool(), top[:, None], others)
        return perturbed - logits

    def predict(self, noise: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        return (self.logits(parents).double() + noise).argmax(dim=1)

    def sample(self, parents: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        u = _uniform((parents.shape[0], self.bias.shape[0]), generator, parents)
        return self.predict(-torch.log(-torch.log(u)), parents)


class ContinuousMechanism(nn.Module):
    """A mixture-of-logistics CDF flow on the standardised value: ``u = F((v - center) / scale | pa)``."""

    center: torch.Tensor  # buffers (register_buffer)
    scale: torch.Tensor

    def __init__(self, parent_dim: int, components: int = 4, hidden: int = 16) -> None:
        super().__init__()
        self.components = components
        locations = torch.linspace(-1.5, 1.5, components) if components > 1 else torch.zeros(1)
        self.base = nn.Parameter(
            torch.cat([torch.zeros(components), locations, torch.full((components,), -0.7)])
        )
        self.head = _head(parent_dim, hidden, 3 * components)
        self.register_buffer("center", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def _mixture(self, parents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        params = self.base.expand(parents.shape[0], -1)
        if self.head is not None:
            params = params + self.head(parents)
        weights, locations, log_scales = params.split(self.components, dim=1)
        return weights.log_softmax(dim=1), locations, log_scales.clamp(-7.0, 5.0)

    def log_prob(self, value: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        log_weights, locations, log_scales = self._mixture(parents)
        z = ((value[:, None] - self.center) / self.scale - locations) * torch.exp(-log_scales)
        log_pdf = -z - 2 * F.softplus(-z) - log_scales
        return (log_weights + log_pdf).logsumexp(dim=1) - torch.log(self.scale)

    def cdf(self, value: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        log_weights, locations, log_scales = (t.double() for t in self._mixture(parents))
        standard = (value.double()[:, None] - self.center.double()) / self.scale.double()
        z = (standard - locations) * torch.exp(-log_scales)
        return (log_weights.exp() * torch.sigmoid(z)).sum(dim=1)

    def abduct(
        self, value: torch.Tensor, parents: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Exact: ``u = F(v | pa)`` ``[N, 1]`` (float64); no randomness."""
        return self.cdf(value, parents).clamp(_EPS, 1 - _EPS)[:, None]

    def predict(self, noise: torch.Tensor, parents: torch.Tensor, iterations: int = 60) -> torch.Tensor:
        """``F^-1(u | pa)`` by bisection (the CDF is increasing), in the node's unit."""
        log_weights, locations, log_scales = (t.double() for t in self._mixture(parents))
        spread = 40.0 * log_scales.exp().max(dim=1).values
        low, high = locations.min(dim=1).values - spread, locations.max(dim=1).values + spread
        weights, inverse_scales = log_weights.exp(), torch.exp(-log_scales)
        target = noise[:, 0].double()
        for _ in range(iterations):
            middle = (low + high) / 2
            below = (weights * torch.sigmoid((middle[:, None] - locations) * inverse_scales)).sum(
                dim=1
            ) < target
            low, high = torch.where(below, middle, low), torch.where(below, high, middle)
        standard = (low + high) / 2
        return (standard * self.scale.double() + self.center.double()).float()

    def sample(self, parents: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.predict(_uniform((parents.shape[0], 1), generator, parents), parents)


def _key(name: str) -> str:
    return finding_slug(name)


class GraphMechanisms(nn.Module):
    """One learned mechanism per node of a :class:`~cfaudit.scm.graph.CausalGraph`."""

    def __init__(self, graph: CausalGraph, hidden: int = 16, components: int = 4) -> None:
        super().__init__()
        self.graph = graph
        self.hidden, self.components = hidden, components
        mechanisms: dict[str, nn.Module] = {}
        for node in graph.nodes:
            parent_dim = graph.parent_dim(node.name)
            if node.kind == "binary":
                mechanisms[_key(node.name)] = BinaryMechanism(parent_dim, hidden)
            elif node.kind == "categorical":
                mechanisms[_key(node.name)] = CategoricalMechanism(parent_dim, len(node.categories), hidden)
            else:
                mechanisms[_key(node.name)] = ContinuousMechanism(parent_dim, components, hidden)
        self.mechanisms = nn.ModuleDict(mechanisms)

    def mechanism(self, name: str) -> Any:
        return self.mechanisms[_key(self.graph.node(name).name)]

    def config(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "components": self.components}

    # --- values as features -----------------------------------------------------------------------------------

    def set_scaling(self, values: Mapping[str, torch.Tensor]) -> None:
        """Centre and scale of every continuous node from data (used for its features and its flow)."""
        for node in self.graph.nodes:
            if node.kind == "continuous":
                data = values[node.name].double()
                mechanism = self.mechanism(node.name)
                mechanism.center.fill_(float(data.mean()))
                mechanism.scale.fill_(max(float(data.std()) if len(data) > 1 else 1.0, 1e-3))

    def node_features(self, node: Node, value: torch.Tensor) -> torch.Tensor:
        if node.kind == "categorical":
            return F.one_hot(value.long(), len(node.categories)).float()
        if node.kind == "continuous":
            mechanism = self.mechanism(node.name)
            return ((value.float() - mechanism.center) / mechanism.scale)[:, None]
        return value.float()[:, None]

    def features(self, values: Mapping[str, torch.Tensor], names: tuple[str, ...]) -> torch.Tensor:
        """The concatenated features of ``names`` ``[N, D]`` (one-hot categories, standardised numbers)."""
        n = next(iter(values.values())).shape[0]
        parts = [self.node_features(self.graph.node(name), values[name]) for name in names]
        return torch.cat(parts, dim=1) if parts else torch.zeros((n, 0))

    def parent_features(self, values: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
        return self.features(values, self.graph.parents(name))

    # --- the three steps ------------------------------------------------------------------------------------

    def log_prob(self, values: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per node, the log-likelihood of each row ``[N]``."""
        return {
            node.name: self.mechanism(node.name).log_prob(
                values[node.name], self.parent_features(values, node.name)
            )
            for node in self.graph.nodes
        }

    @torch.no_grad()
    def abduct(
        self, values: Mapping[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """The exogenous noise of every node given the observed values (discrete nodes: a posterior sample)."""
        return {
            node.name: self.mechanism(node.name).abduct(
                values[node.name], self.parent_features(values, node.name), generator
            )
            for node in self.graph.nodes
        }

    @torch.no_grad()
    def counterfactual(
        self,
        values: Mapping[str, torch.Tensor],
        noises: Mapping[str, torch.Tensor],
        do: Mapping[str, Any],
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Action and prediction: ``(counterfactual values, per node a [N] mask of rows whose value changed)``.

        ``do`` maps node names to a number (every row) or a ``[N]`` tensor, in the node's encoding.
        """
        for name in do:
            self.graph.node(name)  # an unknown node is an error naming the graph's nodes
        counterfactual: dict[str, torch.Tensor] = {}
        changed: dict[str, torch.Tensor] = {}
        for node in self.graph.nodes:
            factual = values[node.name]
            if node.name in do:
                target = torch.as_tensor(do[node.name], dtype=factual.dtype).expand_as(factual).clone()
                counterfactual[node.name] = target
            else:
                moved = torch.zeros_like(factual, dtype=torch.bool)
                for parent in self.graph.parents(node.name):
                    moved |= changed[parent]
                value = factual.clone()
                if moved.any():
                    parents = self.parent_features(counterfactual, node.name)
                    predicted = (
                        self.mechanism(node.name).predict(noises[node.name], parents).to(factual.dtype)
                    )
                    value = torch.where(moved, predicted, factual)
                counterfactual[node.name] = value
            changed[node.name] = counterfactual[node.name] != factual
        return counterfactual, changed

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, do: Mapping[str, Any] | None = None
    ) -> dict[str, torch.Tensor]:
        """Ancestral samples of ``n`` rows from the observational (or, with ``do``, interventional) distribution."""
        do = dict(do or {})
        values: dict[str, torch.Tensor] = {}
        for node in self.graph.nodes:
            if node.name in do:
                dtype = torch.long if node.kind == "categorical" else torch.float32
                values[node.name] = torch.full((n,), do[node.name], dtype=dtype)
            else:
                parents = (
                    self.features(values, self.graph.parents(node.name)) if values else torch.zeros((n, 0))
                )
                values[node.name] = self.mechanism(node.name).sample(parents, generator)
        return values


def fit_mechanisms(
    mechanisms: GraphMechanisms,
    values: Mapping[str, torch.Tensor],
    *,
    steps: int = 400,
    lr: float = 0.02,
    batch_size: int = 4096,
    dequantize: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """Maximum likelihood for every node at once (Adam); returns the mean NLL per row after each step.

    ``dequantize``: continuous values get ``Uniform(-d/2, d/2)`` noise while fitting (ages are whole years).
    """
    n = next(iter(values.values())).shape[0]
    if n < 2:
        raise CfauditError(f"fitting the graph's mechanisms needs at least 2 rows, got {n}")
    if steps < 1:
        raise CfauditError(f"mechanism steps must be at least 1, got {steps}")
    mechanisms.set_scaling(values)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(mechanisms.parameters(), lr=lr)
    continuous = [node.name for node in mechanisms.graph.nodes if node.kind == "continuous"]
    losses = []
    mechanisms.train()
    for _ in range(steps):
        rows = torch.randperm(n, generator=generator)[:batch_size] if n > batch_size else torch.arange(n)
        batch = {name: value[rows] for name, value in values.items()}
        for name in continuous:
            if dequantize > 0:
                batch[name] = batch[name] + (torch.rand(len(rows), generator=generator) - 0.5) * dequantize
        # sum() of tensors is a tensor (typed as possibly its int start, 0)
        loss = cast(torch.Tensor, -sum(log_prob.mean() for log_prob in mechanisms.log_prob(batch).values()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    mechanisms.eval()
    if not math.isfinite(losses[-1]):
        raise CfauditError("fitting the graph's mechanisms diverged (NaN loss); lower mechanism_lr")
    return losses
