"""torchxrayvision DenseNet-121 classifiers, loaded from a local weight file without torchxrayvision.

torchxrayvision's models are the field's common "external judge" of chest X-ray findings. Their weights cannot
be downloaded here and its release files are pickled model objects, which cfaudit never unpickles. Convert one
once where torchxrayvision is installed::

    python -c "import torchxrayvision as xrv, safetensors.torch as st; \\
        st.save_file(xrv.models.DenseNet(weights='densenet121-res224-all').state_dict(), 'xrv-all.safetensors')"

and load that file here (a plain ``state_dict`` saved with ``torch.save`` also works: it is read with
``weights_only=True``). The network is :class:`~cfaudit.models.classifier.DenseNet121` (same module
names) plus torchxrayvision's ``classifier`` layer.

Input scaling, done as torchxrayvision does it: a ``[0, 1]`` image is centre-cropped to a square, resized to
224 px and mapped to ``[-1024, 1024]`` (``(2x - 1) * 1024``, torchxrayvision's ``normalize(img, maxval)``).
Outputs are sigmoid probabilities, optionally passed through its operating-point normalisation (``op_norm``:
each pathology's operating threshold is mapped to 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cfaudit.data.images import resize_and_crop
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError
from cfaudit.models.classifier import DenseNet121

#: torchxrayvision's ``default_pathologies``: the 18 outputs of its DenseNet weights, in order ("" = untrained).
XRV_PATHOLOGIES: tuple[str, ...] = (
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
    "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia", "Lung Lesion",
    "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum",
)  # fmt: skip
#: torchxrayvision names that differ from CheXpert's spelling.
XRV_TO_CHEXPERT: dict[str, str] = {"Effusion": "Pleural Effusion"}
XRV_SIZE = 224
XRV_RANGE = 1024.0


def chexpert_name(xrv_name: str) -> str:
    """A torchxrayvision output name in CheXpert spelling where CheXpert has the finding, else unchanged."""
    name = XRV_TO_CHEXPERT.get(xrv_name, xrv_name)
    return name if name in FINDINGS else xrv_name


def xrv_input(images: Any, size: int = XRV_SIZE) -> torch.Tensor:
    """``[0, 1]`` images (batch or list of any sizes) -> ``(N, 1, size, size)`` in ``[-1024, 1024]``."""
    from cfaudit.evaluate.metrics import image_list

    arrays = [resize_and_crop(image, size) for image in image_list(images)]
    if not arrays:
        return torch.zeros((0, 1, size, size))
    batch = torch.from_numpy(np.stack(arrays)).unsqueeze(1).float()
    return (batch * 2.0 - 1.0) * XRV_RANGE


def op_norm(probabilities: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Map each output's operating threshold ``t`` to 0.5, linearly on each side; NaN thresholds leave it as is."""
    below = probabilities / (thresholds * 2.0)
    above = 1.0 - (1.0 - probabilities) / ((1.0 - thresholds) * 2.0)
    normed = torch.where(probabilities < thresholds, below, above)
    return torch.where(torch.isnan(thresholds), probabilities, normed)


class XRVDenseNet(DenseNet121):
    """DenseNet-121 with one input channel and torchxrayvision's ``classifier`` (logits, one per output)."""

    def __init__(self, outputs: int = len(XRV_PATHOLOGIES)) -> None:
        super().__init__(in_channels=1)
        self.classifier = nn.Linear(self.out_features, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(super().forward(x))


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CfauditError(
            f"{path}: no such weight file; convert torchxrayvision weights as described in the docs"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise CfauditError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError... for what it refuses
        raise CfauditError(
            f"{path}: not a plain state dict ({type(error).__name__}); torchxrayvision's release files hold "
            "pickled model objects, which cfaudit does not unpickle. Convert it once with torchxrayvision "
            "installed: st.save_file(model.state_dict(), 'weights.safetensors') (see cfaudit.evaluate.xrv_classifier)"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CfauditError(f"{path}: expected a dict of tensors (a model's state_dict)")
    return state


class XRVClassifier:
    """A torchxrayvision DenseNet as a metrics ``Predictor``: ``[0, 1]`` images -> {finding: probability}."""

    def __init__(
        self,
        model: XRVDenseNet,
        pathologies: Sequence[str] = XRV_PATHOLOGIES,
        op_threshs: Sequence[float] | None = None,
    ) -> None:
        outputs = model.classifier.out_features
        if len(pathologies) != outputs:
            raise CfauditError(f"{len(pathologies)} pathology names for a model with {outputs} outputs")
        if op_threshs is not None and len(op_threshs) != outputs:
            raise CfauditError(f"{len(op_threshs)} operating thresholds for a model with {outputs} outputs")
        self.model = model.eval()
        self.pathologies = tuple(pathologies)
        self.op_threshs = None if op_threshs is None else torch.tensor(list(op_threshs), dtype=torch.float32)

    @classmethod
    def load(
        cls,
        path: str | Path,
        pathologies: Sequence[str] | None = None,
        op_threshs: Sequence[float] | None = None,
        device: str | torch.device | None = None,
    ) -> XRVClassifier:
        """Load converted torchxrayvision DenseNet weights (``.safetensors`` or a plain state-dict ``.pt``).

        A ``op_threshs`` tensor inside the file is used unless ``op_threshs`` is given.
        """
        path = Path(path)
        state = dict(_read_state(path))
        stored_thresholds = state.pop("op_threshs", None)
        if "classifier.weight" not in state:
            raise CfauditError(
                f"{path}: no classifier.weight; is this a torchxrayvision DenseNet state dict?"
            )
        model = XRVDenseNet(outputs=state["classifier.weight"].shape[0])
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            raise CfauditError(
                f"{path}: weights do not fit DenseNet-121 ({str(error).splitlines()[0]})"
            ) from None
        if op_threshs is None and stored_thresholds is not None:
            op_threshs = stored_thresholds.tolist()
        if device is not None:
            model = model.to(device)
        names = pathologies if pathologies is not None else XRV_PATHOLOGIES[: model.classifier.out_features]
        return cls(model, names, op_threshs)

    @torch.no_grad()
    def predict(self, images: Any, batch_size: int = 16) -> dict[str, np.ndarray]:
        """Probabilities per named output (CheXpert spelling where it exists; unnamed "" outputs left out)."""
        device = next(self.model.parameters()).device
        inputs = xrv_input(images)
        chunks = [
            torch.sigmoid(self.model(inputs[i : i + batch_size].to(device))).cpu()
            for i in range(0, len(inputs), batch_size)
        ]
        probabilities = torch.cat(chunks) if chunks else torch.zeros((0, len(self.pathologies)))
        if self.op_threshs is not None:
            probabilities = op_norm(probabilities, self.op_threshs)
        return {
            chexpert_name(name): probabilities[:, i].numpy().astype(np.float64)
            for i, name in enumerate(self.pathologies)
            if name
        }

    __call__ = predict
