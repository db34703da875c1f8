import pandas as pd
import pytest
import torch

from cfaudit.data.interventions import Intervention
from cfaudit.errors import CfauditError
from cfaudit.scm.counterfactual import ScmCounterfactuals, image_seed, intervention_values
from tests.scm.scm_tiny import tiny_model


def _batch(n: int = 6):
    model = tiny_model()
    table = pd.DataFrame({
        "image_id": [f"i{k}" for k in range(n)],
        "age": [30.0 + 10 * k for k in range(n)],
        "sex": ["Male", "Female"] * (n // 2),
        "race": ["White", "Black", "Asian"] * (n // 3),
        "Pleural Effusion": [0.0] * n,
    })  # fmt: skip
    values = model.graph.encode(table)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((n, 1, 16, 16), generator=generator) * 2 - 1
    return model, values, images


def test_null_interventions_return_the_input_exactly():
    model, values, images = _batch()
    engine = ScmCounterfactuals(model)
    result = engine(
        images, values, [Intervention.parse("sex=Male"), Intervention.parse("race=White")], seeds=range(6)
    )
    assert torch.equal(result.identity, images)
    males = values["sex"] == 1
    assert torch.equal(result.images[0][males], images[males])  # do(sex=Male) on men: nothing to change
    assert (result.images[0][~males] - images[~males]).abs().mean() > 1e-3  # women change
    whites = values["race"] == 1
    assert torch.equal(result.images[1][whites], images[whites])
    assert not result.changed[0]["sex"][males].any() and result.changed[0]["sex"][~males].all()


def test_do_age_reaches_the_image_and_the_descendant_effusion():
    model, values, images = _batch()
    result = ScmCounterfactuals(model)(images, values, [Intervention.parse("age=90")], seeds=range(6))
    assert torch.all(result.values[0]["age"] == 90.0)
    assert torch.equal(result.values[0]["sex"], values["sex"])
    # the tiny model's effusion mechanism rises steeply with age: some of the young patients get one
    assert result.values[0]["Pleural Effusion"].sum() > 0
    assert torch.equal(result.changed[0]["Pleural Effusion"], result.values[0]["Pleural Effusion"] != 0)
    assert result.images.shape == (1, 6, 1, 16, 16)
    assert (result.images[0] - images).abs().flatten(1).mean(1).min() > 0


def test_results_do_not_depend_on_batching():
    model, values, images = _batch()
    engine = ScmCounterfactuals(model)
    seeds = [image_seed(0, f"i{k}") for k in range(6)]
    whole = engine(images, values, [Intervention.parse("age=85")], seeds)
    first = engine(
        images[:3], {k: v[:3] for k, v in values.items()}, [Intervention.parse("age=85")], seeds[:3]
    )
    assert torch.equal(whole.values[0]["Pleural Effusion"][:3], first.values[0]["Pleural Effusion"])
    assert torch.allclose(whole.images[0, :3], first.images[0], atol=1e-5)
    assert image_seed(0, "a") != image_seed(1, "a") and image_seed(0, "a") == image_seed(0, "a")


def test_interventions_outside_the_graph_are_errors():
    model, values, images = _batch()
    with pytest.raises(CfauditError, match="'Cardiomegaly' is not a node of the model's causal graph"):
        intervention_values(model, Intervention.parse("Cardiomegaly=0"))
    with pytest.raises(CfauditError, match="intervenes on graph nodes"):
        ScmCounterfactuals(model)(images, values, [Intervention.parse("No Finding=1")])
    with pytest.raises(CfauditError, match="the model works at 16 px"):
        ScmCounterfactuals(model)(torch.zeros(1, 1, 8, 8), values, [Intervention.parse("age=50")])
    with pytest.raises(CfauditError, match="latent mode"):
        ScmCounterfactuals(model, latents="both")
    assert intervention_values(model, Intervention.parse("do(sex=female, race=asian, age=70)")) == {
        "age": 70.0, "sex": 0.0, "race": 0}  # fmt: skip
