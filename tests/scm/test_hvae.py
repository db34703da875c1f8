import math

import pytest
import torch

from cfaudit.errors import CfauditError
from cfaudit.scm.hvae import (
    HierarchicalVAE,
    check_architecture,
    discretized_gaussian_log_likelihood,
    gaussian_kl,
)
from tests.scm.scm_tiny import TINY_MODEL


def _model(seed: int = 0, parent_dim: int = 3) -> HierarchicalVAE:
    torch.manual_seed(seed)
    model = HierarchicalVAE(**TINY_MODEL, parent_dim=parent_dim)
    with torch.no_grad():  # give every weight a value (some start at zero) so that parents and latents matter
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return model.eval()


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 16, 16), generator=generator).float() / 127.5 - 1.0


def test_discretized_gaussian_sums_to_one_over_the_256_values():
    bins = torch.arange(256).float() / 127.5 - 1.0
    for mean, log_scale in ((0.1, -2.0), (-0.95, -4.0), (0.999, -6.5), (0.3, 1.0)):
        log_p = discretized_gaussian_log_likelihood(
            bins, torch.full_like(bins, mean), torch.full_like(bins, log_scale)
        )
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=2e-3)
    # a sharp Gaussian on a bin centre puts almost all its mass there
    sharp = discretized_gaussian_log_likelihood(bins[100:101], bins[100:101], torch.tensor([-7.0]))
    assert sharp.exp().item() > 0.99


def test_gaussian_kl_is_zero_for_equal_and_matches_the_formula():
    mean, log_scale = torch.tensor([0.3]), torch.tensor([-0.5])
    assert gaussian_kl(mean, log_scale, mean, log_scale).item() == pytest.approx(0.0, abs=1e-7)
    kl = gaussian_kl(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    assert kl.item() == pytest.approx(0.5)


def test_forward_gives_per_image_elbo_terms():
    model = _model()
    x, parents = _images(), torch.randn(4, 3)
    terms = model(x, parents, generator=torch.Generator().manual_seed(0))
    assert terms["nll"].shape == (4,) and terms["kl"].shape == (4,)
    assert torch.all(terms["kl"] >= 0)
    expected = (terms["nll"] + terms["kl"]).mean().item() / (256 * math.log(2))
    assert terms["bits_per_dim"].item() == pytest.approx(expected, rel=1e-5)
    assert terms["mean"].shape == x.shape
    # the same generator gives the same sample
    again = model(x, parents, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again["nll"], terms["nll"])


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    model = HierarchicalVAE(**TINY_MODEL, parent_dim=2)
    ramp = torch.linspace(-1, 1, 16)
    x = torch.round((ramp[None, None, :, None] * ramp[None, None, None, :] + 1) * 127.5) / 127.5 - 1  # smooth
    x, parents = x.expand(16, 1, 16, 16), torch.randn(16, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        loss = model(x, parents, generator=torch.Generator().manual_seed(step))["bits_per_dim"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0  # bits per dimension


@pytest.mark.parametrize("latents", ["noise", "fixed"])
def test_the_null_intervention_returns_the_input_exactly(latents):
    model = _model()
    x, parents = _images(6), torch.randn(6, 3)
    abduction = model.abduct(x, parents)
    assert torch.equal(model.counterfactual(x, abduction, parents, latents), x)
    # in a batch where only some rows change their parents, the others still come back bit for bit
    changed = parents.clone()
    changed[::2, 0] += 2.0
    out = model.counterfactual(x, abduction, changed, latents)
    assert torch.equal(out[1::2], x[1::2])
    assert (out[::2] - x[::2]).abs().mean().item() > 1e-3


def test_noise_mode_transfers_prior_noise_and_differs_from_fixed():
    model = _model()
    x, parents = _images(4), torch.randn(4, 3)
    abduction = model.abduct(x, parents)
    assert len(abduction.latents) == sum(TINY_MODEL["stochastic_blocks"])
    changed = parents + 1.0
    noise = model.counterfactual(x, abduction, changed, "noise")
    fixed = model.counterfactual(x, abduction, changed, "fixed")
    assert not torch.allclose(noise, fixed)
    assert noise.min() >= -1 and noise.max() <= 1
    with pytest.raises(CfauditError, match="latent mode 'other'"):
        model.counterfactual(x, abduction, changed, "other")


def test_reconstruct_and_sample_shapes():
    model = _model()
    parents = torch.randn(3, 3)
    assert model.reconstruct(_images(3), parents).shape == (3, 1, 16, 16)
    a = model.sample(parents, torch.Generator().manual_seed(0))
    b = model.sample(parents, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (3, 1, 16, 16)


def test_save_pretrained_round_trip(tmp_path):
    model = _model()
    model.save_pretrained(str(tmp_path / "hvae"), safe_serialization=True)
    assert (tmp_path / "hvae" / "config.json").is_file()
    loaded = HierarchicalVAE.from_pretrained(str(tmp_path / "hvae")).eval()
    assert loaded.config.widths == TINY_MODEL["widths"]
    x, parents = _images(2), torch.randn(2, 3)
    assert torch.equal(loaded.reconstruct(x, parents), model.reconstruct(x, parents))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"widths": [8, 8]}, "encoder_blocks has 3 entries"),
        ({"resolution": 18}, "must be divisible by 2^2"),
        ({"latent_channels": [0, 0, 2]}, "level 1 has stochastic blocks but latent_channels 0"),
        ({"stochastic_blocks": [0, 0, 0]}, "at least one stochastic block"),
        ({"bottleneck": 0}, "bottleneck 0"),
        ({"decoder_blocks": [1, -1, 0]}, "must not be negative"),
    ],
)
def test_bad_architectures_are_named(change, message):
    arch = {**TINY_MODEL, **change, "parent_dim": 2}
    with pytest.raises(CfauditError, match="hvae config") as error:
        check_architecture(**arch)
    assert message in str(error.value)
    with pytest.raises(CfauditError):
        HierarchicalVAE(**arch)
