"""Features for realism (FD, KID): the trunk of the attribute classifier, or a torchxrayvision DenseNet-121."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cfaudit.errors import CfauditError

FEATURES_CLASSIFIER = "classifier"
LOAD_BATCH = 32  # images decoded and passed through the network together
XRV_HINT = (
    "give --realism-features classifier, or torchxrayvision DenseNet-121 weights converted to .safetensors "
    "(see cfaudit.evaluate.xrv_classifier)"
)

Warn = Callable[[str], None]


class FeatureExtractor(Protocol):
    """``[0, 1]`` grayscale images (a list of ``H x W`` arrays of any sizes) -> features ``(N, d)`` float64."""

    name: str

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray: ...

    def provenance(self) -> dict[str, Any]: ...


def has_trunk(classifier: Any) -> bool:
    """Is ``classifier`` an :class:`~cfaudit.evaluate.classifiers.AttributeClassifier` (a network with a trunk)?"""
    model = getattr(classifier, "model", None)
    return model is not None and hasattr(model, "backbone") and hasattr(classifier, "config")


class ClassifierFeatures:
    """The attribute classifier's trunk: ``classifier.model.backbone`` (globally pooled features).

    Images are prepared exactly as the classifier prepares them (:func:`cfaudit.data.images.to_model_tensor` at
    ``classifier.config.size``), so the features are the ones its heads read.
    """

    def __init__(self, classifier: Any, batch_size: int = 64) -> None:
        if not has_trunk(classifier):
            raise CfauditError(
                f"realism features 'classifier' need an attribute classifier folder (`cfaudit classifiers train`); "
                f"{type(classifier).__name__} has no network trunk: {XRV_HINT}, or --no-realism"
            )
        self.classifier = classifier
        self.size = int(classifier.config.size)
        self.batch_size = batch_size
        backbone = classifier.model.backbone
        self.dim = int(getattr(backbone, "out_features", 0))
        arch = getattr(classifier.model, "arch", type(backbone).__name__)
        self.name = f"classifier trunk ({arch}, {self.size} px, {self.dim}-d)"

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        from cfaudit.data.images import to_model_tensor

        if not len(images):
            return np.zeros((0, self.dim))
        model = self.classifier.model.eval()
        device = next(model.parameters()).device
        batch = torch.stack([to_model_tensor(image, self.size) for image in images])
        with torch.no_grad():
            chunks = [
                model.backbone(batch[i : i + self.batch_size].to(device).float()).cpu()
                for i in range(0, len(batch), self.batch_size)
            ]
        return torch.cat(chunks).flatten(1).double().numpy()

    def provenance(self) -> dict[str, Any]:
        folder = getattr(self.classifier, "folder", None)
        return {"kind": FEATURES_CLASSIFIER, "name": self.name, "dim": self.dim, "size": self.size,
                "classifier": None if folder is None else str(Path(folder).resolve())}  # fmt: skip


class XRVFeatures:
    """A torchxrayvision DenseNet-121's penultimate features: the 1024 globally pooled channels before its
    ``classifier`` layer, on its own input scaling (224 px, ``[-1024, 1024]``; :func:`xrv_input`)."""

    def __init__(self, model: Any, path: Path | None = None, batch_size: int = 16) -> None:
        self.model = model.eval()
        self.path = path
        self.batch_size = batch_size
        self.dim = int(model.out_features)
        self.name = f"xrv DenseNet-121 ({path.name if path else 'in memory'}, {self.dim}-d)"

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> XRVFeatures:
        """Load converted weights with :meth:`XRVClassifier.load` (its checks), keeping the network only."""
        from cfaudit.evaluate.xrv_classifier import XRVClassifier

        path = Path(path)
        if not path.is_file():
            raise CfauditError(f"--realism-features {path}: no such file; {XRV_HINT}")
        try:
            classifier = XRVClassifier.load(path, device=device)
        except CfauditError as error:
            raise CfauditError(f"--realism-features: {error}; {XRV_HINT}") from None
        return cls(classifier.model, path)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        from cfaudit.evaluate.xrv_classifier import xrv_input
        from cfaudit.models.classifier import DenseNet121

        if not len(images):
            return np.zeros((0, self.dim))
        device = next(self.model.parameters()).device
        inputs = xrv_input(list(images))
        # DenseNet121.forward: features, ReLU, global average pool; XRVDenseNet's classifier layer is not run
        with torch.no_grad():
            chunks = [
                DenseNet121.forward(self.model, inputs[i : i + self.batch_size].to(device)).cpu()
                for i in range(0, len(inputs), self.batch_size)
            ]
        return torch.cat(chunks).double().numpy()

    def provenance(self) -> dict[str, Any]:
        from cfaudit.digests import file_sha256

        path = None if self.path is None else self.path.resolve()
        return {"kind": "xrv-densenet121", "name": self.name, "dim": self.dim, "path": str(path),
                "sha256": None if path is None else file_sha256(path)}  # fmt: skip


def feature_extractor(
    spec: str | Path, classifier: Any = None, device: str | None = None
) -> FeatureExtractor:
    """``"classifier"``: the attribute classifier's trunk; else the path of torchxrayvision DenseNet weights."""
    if str(spec) == FEATURES_CLASSIFIER:
        return ClassifierFeatures(classifier)
    return XRVFeatures.load(spec, device)


def _bad_image(error: CfauditError) -> str:
    """``load_image``'s message without its hint for index jobs (``--on-bad-row``), which does not apply here."""
    from cfaudit.data.images import _BAD_IMAGE_HINT

    return str(error).replace(f"; {_BAD_IMAGE_HINT}", "")


def image_features(
    paths: Sequence[str | Path],
    extractor: FeatureExtractor,
    *,
    what: str,
    fix: str,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Features ``(N, d)`` of image files, decoded ``LOAD_BATCH`` at a time.

    A file that cannot be read is one :class:`CfauditError` naming it, the set it belongs to (``what``) and what
    to do (``fix``).
    """
    from cfaudit.data.images import load_image

    parts = []
    for start in range(0, len(paths), LOAD_BATCH):
        images = []
        for path in paths[start : start + LOAD_BATCH]:
            try:
                images.append(load_image(path))
            except CfauditError as error:
                raise CfauditError(f"{what}: {_bad_image(error)}; {fix}") from None
        parts.append(np.asarray(extractor(images), dtype=np.float64))
        if progress is not None:
            progress(len(images))
    return np.concatenate(parts) if parts else np.zeros((0, 0))
