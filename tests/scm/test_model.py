import json

import pytest
import torch

from cfaudit.errors import CfauditError
from cfaudit.scm.graph import default_graph
from cfaudit.scm.hvae import HierarchicalVAE
from cfaudit.scm.mechanisms import GraphMechanisms
from cfaudit.scm.model import CausalImageModel
from tests.scm.scm_tiny import TINY_MODEL, tiny_model


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model()
    folder = model.save(tmp_path / "run" / "model")
    assert {p.name for p in folder.iterdir()} == {"scm.json", "mechanisms.safetensors", "hvae"}
    record = json.loads((folder / "scm.json").read_text())
    assert record["format"] == "cfaudit-scm" and record["graph"] == default_graph().to_dict()
    for path in (folder, tmp_path / "run"):  # the model folder or the run folder around it
        loaded = CausalImageModel.load(path)
        assert loaded.graph == model.graph and loaded.resolution == 16
        for name, tensor in model.mechanisms.state_dict().items():
            assert torch.equal(loaded.mechanisms.state_dict()[name], tensor)
        x = torch.zeros(1, 1, 16, 16)
        values = {"sex": torch.tensor([1.0]), "race": torch.tensor([1]), "age": torch.tensor([70.0]),
                  "Pleural Effusion": torch.tensor([0.0])}  # fmt: skip
        assert torch.equal(loaded.hvae.reconstruct(x, loaded.image_parents(values)),
                           model.hvae.reconstruct(x, model.image_parents(values)))  # fmt: skip


def test_load_errors(tmp_path):
    with pytest.raises(CfauditError, match=r"no scm\.json"):
        CausalImageModel.load(tmp_path)
    folder = tiny_model().save(tmp_path / "m")
    (folder / "scm.json").write_text('{"format": "other"}')
    with pytest.raises(CfauditError, match="not a cfaudit SCM"):
        CausalImageModel.load(folder)


def test_image_model_must_fit_the_graph():
    graph = default_graph()
    with pytest.raises(CfauditError, match="takes 3 parent features but the graph gives 8"):
        CausalImageModel(graph, GraphMechanisms(graph), HierarchicalVAE(**TINY_MODEL, parent_dim=3))
