import math

import numpy as np
import pytest
import torch

from cfaudit.data.phantom import default_config_path, load_config, load_label_table
from cfaudit.data.phantom.population import sample_population
from cfaudit.data.vocabulary import normalize_sex
from cfaudit.errors import CfauditError
from cfaudit.scm.graph import CausalGraph, default_graph
from cfaudit.scm.mechanisms import (
    BinaryMechanism,
    CategoricalMechanism,
    ContinuousMechanism,
    GraphMechanisms,
    fit_mechanisms,
)

PLANTED_LOG_ODDS_PER_DECADE = 0.5  # relation 2 of the phantom's default.yaml


def phantom_metadata(config: str, n: int = 3000, seed: int = 0):
    """Metadata only (no image is drawn): the phantom's population with its planted relations."""
    settings = load_config(default_config_path(config)).with_overrides(n=n, size=32)
    metadata = sample_population(settings, load_label_table(settings.label_table), seed=seed).metadata.copy()
    metadata["sex"] = metadata["sex"].map(normalize_sex)
    return metadata


@pytest.fixture(scope="module")
def fitted():
    """Mechanisms of the default graph fitted on the default phantom and on the null phantom (same population)."""
    out = {}
    for config in ("default", "null"):
        metadata = phantom_metadata(config)
        graph = default_graph()
        values = graph.encode(metadata)
        mechanisms = GraphMechanisms(graph)
        losses = fit_mechanisms(mechanisms, values, steps=300, seed=0)
        out[config] = (mechanisms, values, metadata, losses)
    return out


def test_fitting_lowers_the_likelihood(fitted):
    _, _, _, losses = fitted["default"]
    assert losses[-1] < losses[0] - 0.5
    assert all(math.isfinite(loss) for loss in losses)


def test_learned_age_to_effusion_recovers_the_planted_strength(fitted):
    """The phantom adds +0.5 log-odds per decade to the label table's own age pattern (kept in the null config,
    drawn from the same population): the difference of the two learned mechanisms' logits has that slope."""
    logits = {}
    ages = torch.tensor(fitted["default"][2]["age"].to_numpy(), dtype=torch.float32)
    for config, (mechanisms, _, _, _) in fitted.items():
        features = mechanisms.features({"age": ages}, ("age",))
        logits[config] = mechanisms.mechanism("Pleural Effusion").logits(features).detach().numpy()
    slope = np.polyfit(ages.numpy() / 10.0, logits["default"] - logits["null"], 1)[0]
    assert slope == pytest.approx(PLANTED_LOG_ODDS_PER_DECADE, abs=0.1)
    # and effusion is more likely with age under the planted relation than without it
    assert np.polyfit(ages.numpy() / 10.0, logits["default"], 1)[0] > 0.4


def test_do_age_moves_effusion_in_the_planted_direction(fitted):
    mechanisms, values, _, _ = fitted["default"]
    generator = torch.Generator().manual_seed(0)
    noises = mechanisms.abduct(values, generator)
    rates = {}
    for age in (30.0, 85.0):
        counterfactual, changed = mechanisms.counterfactual(values, noises, {"age": age})
        rates[age] = counterfactual["Pleural Effusion"].mean().item()
        assert torch.equal(counterfactual["sex"], values["sex"])  # not a descendant of age: untouched
        assert torch.equal(counterfactual["race"], values["race"])
        assert not changed["sex"].any()
        assert torch.all(counterfactual["age"] == age)
    assert rates[85.0] > rates[30.0] + 0.2
    # interventional distribution: P(effusion | do(age)) rises with age by about the planted log-odds
    probability = mechanisms.mechanism("Pleural Effusion").probability
    p_low, p_high = (
        probability(mechanisms.features({"age": torch.tensor([a])}, ("age",))).item() for a in (40.0, 80.0)
    )
    assert p_high > p_low
    # counterfactuals keep each patient's rank: an effusion seen at the real age stays when the patient is older
    older, _ = mechanisms.counterfactual(values, noises, {"age": values["age"] + 20})
    had = values["Pleural Effusion"] == 1
    assert torch.all(older["Pleural Effusion"][had] == 1)


def test_unchanged_intervention_changes_nothing(fitted):
    mechanisms, values, _, _ = fitted["default"]
    noises = mechanisms.abduct(values, torch.Generator().manual_seed(1))
    counterfactual, changed = mechanisms.counterfactual(values, noises, {"age": values["age"]})
    for name in values:
        assert torch.equal(counterfactual[name], values[name])
        assert not changed[name].any()
    with pytest.raises(CfauditError, match="'Edema' is not a node"):
        mechanisms.counterfactual(values, noises, {"Edema": 1.0})


def test_binary_abduction_is_consistent_and_keeps_the_rank():
    torch.manual_seed(0)
    mechanism = BinaryMechanism(parent_dim=1, hidden=0)
    with torch.no_grad():
        mechanism.head.linear.weight.fill_(1.5)
    parents = torch.randn(20000, 1)
    value = mechanism.sample(parents, torch.Generator().manual_seed(0))
    noise = mechanism.abduct(value, parents, torch.Generator().manual_seed(1))
    assert torch.equal(mechanism.predict(noise, parents), value)
    # shifting the parents up: P(stays 1 | was 1) = min(1, p*/p) = 1; P(becomes 1 | was 0) = (p* - p) / (1 - p)
    p, p_star = mechanism.probability(parents), mechanism.probability(parents + 1.0)
    moved = mechanism.predict(noise, parents + 1.0)
    assert torch.all(moved[value == 1] == 1)
    zeros = value == 0
    expected = ((p_star - p) / (1 - p))[zeros].mean().item()
    assert moved[zeros].mean().item() == pytest.approx(expected, abs=0.02)


def test_categorical_gumbel_abduction_matches_the_observation_and_is_standard_gumbel():
    mechanism = CategoricalMechanism(parent_dim=0, categories=4)
    with torch.no_grad():
        mechanism.bias.copy_(torch.tensor([2.0, 0.0, -1.0, 0.5]))
    parents = torch.zeros((40000, 0))
    value = mechanism.sample(parents, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(value, minlength=4).double() / len(value)
    assert torch.allclose(frequencies, mechanism.probability(parents[:1])[0].double(), atol=0.01)
    noise = mechanism.abduct(value, parents, torch.Generator().manual_seed(1))
    assert torch.equal(mechanism.predict(noise, parents), value)
    # over the observations, the posterior noise is the prior's: i.i.d. standard Gumbel (mean: Euler's gamma)
    assert noise.mean().item() == pytest.approx(0.5772, abs=0.02)
    assert noise.var().item() == pytest.approx(math.pi**2 / 6, rel=0.05)


def test_continuous_flow_fits_a_distribution_and_inverts_exactly():
    generator = torch.Generator().manual_seed(0)
    ages = torch.cat(
        [torch.randn(3000, generator=generator) * 5 + 30, torch.randn(3000, generator=generator) * 8 + 70]
    )
    graph = CausalGraph.from_dict({"nodes": {"age": "continuous"}})
    mechanisms = GraphMechanisms(graph, components=4)
    fit_mechanisms(mechanisms, {"age": ages}, steps=400, lr=0.05, dequantize=0.0)
    flow = mechanisms.mechanism("age")
    empty = torch.zeros((len(ages), 0))
    samples = flow.sample(empty, torch.Generator().manual_seed(1))
    assert samples.mean().item() == pytest.approx(ages.mean().item(), abs=1.5)
    assert (samples < 50).float().mean().item() == pytest.approx(0.5, abs=0.04)  # both modes
    # the density integrates to one and abduction -> prediction gives the value back
    grid = torch.linspace(-50, 170, 4001)
    density = flow.log_prob(grid, torch.zeros((len(grid), 0))).exp()
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-3)
    noise = flow.abduct(ages, empty, None)
    assert torch.allclose(flow.predict(noise, empty), ages, atol=1e-3)


def test_conditional_flow_moves_with_its_parent():
    mechanism = ContinuousMechanism(parent_dim=1, components=2, hidden=0)
    with torch.no_grad():
        mechanism.head.linear.weight[2:4].fill_(1.0)  # parent shifts both locations by +1 standard unit
    value = torch.tensor([0.3, -0.2])
    noise = mechanism.abduct(value, torch.zeros((2, 1)), None)
    moved = mechanism.predict(noise, torch.ones((2, 1)))
    assert torch.allclose(moved, value + 1.0, atol=1e-4)


def test_sampling_from_the_graph_and_fit_errors(fitted):
    mechanisms, values, _, _ = fitted["default"]
    sample = mechanisms.sample(2000, torch.Generator().manual_seed(0))
    assert set(sample) == set(values)
    assert sample["sex"].mean().item() == pytest.approx(values["sex"].mean().item(), abs=0.05)
    forced = mechanisms.sample(500, torch.Generator().manual_seed(0), do={"age": 85.0})
    assert torch.all(forced["age"] == 85.0)
    with pytest.raises(CfauditError, match="at least 2 rows"):
        fit_mechanisms(GraphMechanisms(default_graph()), {k: v[:1] for k, v in values.items()})
