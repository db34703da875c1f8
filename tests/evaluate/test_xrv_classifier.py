"""torchxrayvision DenseNet weights from a local file: names, input scaling to [-1024, 1024], op_norm, safety."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cfaudit.errors import CfauditError
from cfaudit.evaluate import xrv_classifier
from cfaudit.evaluate.xrv_classifier import XRV_PATHOLOGIES, XRVClassifier, XRVDenseNet, op_norm, xrv_input


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, XRVDenseNet]:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = XRVDenseNet().eval()
    path = tmp_path_factory.mktemp("xrv") / "xrv.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def test_inputs_are_scaled_like_torchxrayvision() -> None:
    black, white = np.zeros((300, 200), np.float32), np.ones((100, 100), np.float32)
    batch = xrv_input([black, white])
    assert batch.shape == (2, 1, 224, 224)
    assert batch[0].min().item() == -1024.0 and batch[0].max().item() == -1024.0
    assert batch[1].min().item() == 1024.0
    mid = xrv_input(np.full((1, 64, 64), 0.25, np.float32))
    np.testing.assert_allclose(mid.numpy(), -512.0, atol=1e-3)


def test_loaded_weights_predict_like_the_network_itself(weights: tuple[Path, XRVDenseNet]) -> None:
    path, model = weights
    classifier = XRVClassifier.load(path, device="cpu")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 224, 224)).astype(np.float32)
    outputs = classifier(images)
    assert "Pleural Effusion" in outputs and "Effusion" not in outputs  # CheXpert spelling
    assert "Infiltration" in outputs and len(outputs) == 18
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(images).unsqueeze(1) * 2048 - 1024))
    column = XRV_PATHOLOGIES.index("Cardiomegaly")
    np.testing.assert_allclose(outputs["Cardiomegaly"], expected[:, column].numpy(), rtol=1e-5, atol=1e-6)


def test_op_norm_maps_the_operating_threshold_to_one_half() -> None:
    thresholds = torch.tensor([0.1, 0.1, 0.1, 0.1, math.nan])
    probabilities = torch.tensor([[0.1, 0.05, 0.0, 1.0, 0.3]])
    normed = op_norm(probabilities, thresholds)
    torch.testing.assert_close(normed, torch.tensor([[0.5, 0.25, 0.0, 1.0, 0.3]]))
    above = op_norm(torch.tensor([[0.55]]), torch.tensor([0.1]))
    assert above.item() == pytest.approx(1 - 0.45 / 1.8)


def test_unnamed_outputs_and_thresholds_from_arguments(weights: tuple[Path, XRVDenseNet]) -> None:
    path, _ = weights
    names = ["", *XRV_PATHOLOGIES[1:]]
    plain = XRVClassifier.load(path, pathologies=names, device="cpu")
    normed = XRVClassifier.load(path, pathologies=names, op_threshs=[0.5] * 18, device="cpu")
    image = np.full((64, 64), 0.4, np.float32)
    a, b = plain(image), normed(image)
    assert "Atelectasis" not in a
    np.testing.assert_allclose(a["Edema"], b["Edema"], rtol=1e-6)  # threshold 0.5 changes nothing
    with pytest.raises(CfauditError, match="17 operating thresholds"):
        XRVClassifier.load(path, op_threshs=[0.5] * 17)


def test_pickled_model_objects_are_refused_but_state_dicts_load(tmp_path: Path) -> None:
    model = XRVDenseNet(outputs=3)
    pickled_model = tmp_path / "release.pt"
    torch.save(model, pickled_model)
    with pytest.raises(CfauditError, match="does not unpickle"):
        XRVClassifier.load(pickled_model)
    state_file = tmp_path / "state.pt"
    torch.save({"state_dict": model.state_dict()}, state_file)
    loaded = XRVClassifier.load(state_file, pathologies=["Cardiomegaly", "Edema", "Mass"])
    assert set(loaded(np.zeros((1, 32, 32), np.float32))) == {"Cardiomegaly", "Edema", "Mass"}
    with pytest.raises(CfauditError, match="no such weight file"):
        XRVClassifier.load(tmp_path / "missing.safetensors")
    assert xrv_classifier.chexpert_name("Pleural_Thickening") == "Pleural_Thickening"
