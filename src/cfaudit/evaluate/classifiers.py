"""Attribute classifiers as judges of counterfactuals: loading a trained classifier, predicting its heads.

:class:`AttributeClassifier` loads a classifier saved by :func:`cfaudit.train.classifier.train_classifier` and
predicts calibrated outputs for ``[0, 1]`` images (it is a metrics ``Predictor``). :func:`report_classifier`
scores the saved classifier once on the test split (AUC per binary head, macro AUC and accuracy for race, MAE for
age) and adds the figures to ``classifier.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cfaudit import atomic_io
from cfaudit.config_files import read_json
from cfaudit.data.images import to_model_tensor
from cfaudit.data.labels import LabelPolicy
from cfaudit.data.records import DataIndex
from cfaudit.data.vocabulary import RACES
from cfaudit.devices import resolve_device
from cfaudit.digests import file_sha256
from cfaudit.errors import CfauditError
from cfaudit.models.classifier import HEADS, AttributeNet, head_outputs
from cfaudit.train.classifier import (
    CONFIG_ORIGIN,
    FORMAT,
    MODEL_FILE,
    RECORD_FILE,
    ClassifierConfig,
    Log,
    attribute_targets,
    load_split_images,
    score_predictions,
    to_input,
)

TRAIN_COMMAND = "cfaudit classifiers train"
#: ``--classifier demo``: the classifier shipped with the package, trained on the demo phantom.
DEMO_NAME = "demo"


def demo_classifier_dir() -> Path:
    """The shipped demo classifier's folder (``cfaudit/evaluate/demo_classifier``; README.txt says how it was made)."""
    return Path(__file__).resolve().parent / "demo_classifier"


class AttributeClassifier:
    """A saved classifier, ready to predict calibrated attribute outputs for images in ``[0, 1]``."""

    def __init__(self, model: AttributeNet, record: dict[str, Any], folder: Path | None = None) -> None:
        self.model = model.eval()
        self.record = record
        self.config = ClassifierConfig.from_dict(record["config"], origin=CONFIG_ORIGIN)
        self.folder = folder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def head_kinds(self) -> dict[str, str]:
        return {head.name: head.kind for head in HEADS}

    @classmethod
    def load(
        cls, folder: str | os.PathLike[str], device: str | torch.device | None = None
    ) -> AttributeClassifier:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = demo_classifier_dir() if str(folder) == DEMO_NAME else Path(folder)
        record_path, model_path = folder / RECORD_FILE, folder / MODEL_FILE
        for path in (record_path, model_path):
            if not path.is_file():
                raise CfauditError(
                    f"{path}: not found; train a classifier into {folder} with `{TRAIN_COMMAND}`"
                )
        record = read_json(record_path, f"re-run `{TRAIN_COMMAND}`")
        if record.get("format") != FORMAT:
            raise CfauditError(
                f"{record_path}: not a cfaudit attribute classifier (format {record.get('format')!r})"
            )
        config = ClassifierConfig.from_dict(record["config"], origin=CONFIG_ORIGIN)
        model = AttributeNet(config.arch)
        try:
            model.load_state_dict(load_file(str(model_path)))
        except (SafetensorError, RuntimeError) as error:
            raise CfauditError(
                f"{model_path}: weights do not fit a {config.arch} classifier ({error})"
            ) from None
        device = resolve_device(device)
        return cls(model.to(device), record, folder)

    @torch.no_grad()
    def predict_tensor(self, images: torch.Tensor, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Calibrated outputs for model inputs ``(N, 1, S, S)`` in ``[-1, 1]``."""
        self.model.eval()
        chunks = [
            self.model(images[i : i + batch_size].to(self.device).float()).cpu()
            for i in range(0, len(images), batch_size)
        ]
        logits = torch.cat(chunks) if chunks else torch.zeros((0, HEADS[-1].stop))
        return {
            k: v.numpy().astype(np.float64)
            for k, v in head_outputs(logits, self.model.temperature.cpu()).items()
        }

    def predict(self, images: Any, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Calibrated outputs for ``[0, 1]`` images (``H x W``, ``N x H x W`` or a list of any sizes)."""
        from cfaudit.evaluate.metrics import image_list

        arrays = image_list(images)
        if not arrays:
            return self.predict_tensor(torch.zeros((0, 1, self.config.size, self.config.size)))
        return self.predict_tensor(
            torch.stack([to_model_tensor(a, self.config.size) for a in arrays]), batch_size
        )

    __call__ = predict


def load_classifier(
    folder: str | os.PathLike[str], device: str | torch.device | None = None
) -> AttributeClassifier:
    return AttributeClassifier.load(folder, device)


def report_classifier(
    folder: str | Path,
    index_path: str | Path | None = None,
    split: str = "test",
    *,
    device: str | torch.device | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Score a saved classifier on one split of the index it was trained with; record it in ``classifier.json``.

    Writes ``<split>_predictions.csv`` (image_id and every head's output) beside the model.
    """
    log = log or (lambda message: None)
    classifier = AttributeClassifier.load(folder, device)
    folder = Path(folder)
    recorded = classifier.record["index"]
    index_path = Path(index_path) if index_path is not None else Path(recorded["path"])
    index = DataIndex.read(index_path)
    sha = file_sha256(index_path)
    if sha != recorded["sha256"]:
        raise CfauditError(
            f"{index_path}: not the index this classifier was trained with (sha256 {sha[:12]}..., recorded "
            f"{recorded['sha256'][:12]}...); its splits may overlap the training data. Retrain with `{TRAIN_COMMAND}`"
        )
    rows = index.split(split)
    if len(rows) == 0:
        raise CfauditError(f"{index_path}: the {split} split is empty; nothing to report")
    log(f"scoring {len(rows)} {split} images")
    images = load_split_images(rows, classifier.config.size, log)
    outputs = classifier.predict_tensor(to_input(images, torch.device("cpu")))
    targets = attribute_targets(rows.table, LabelPolicy.from_dict(classifier.config.label_policy))
    report = score_predictions(outputs, targets)
    predictions = pd.DataFrame({"image_id": rows.table["image_id"].astype(str)})
    for name, values in outputs.items():
        if values.ndim == 2:
            for k, race in enumerate(RACES):
                predictions[f"{name}_{race}"] = values[:, k]
        else:
            predictions[name] = values
    atomic_io.write_csv(folder / f"{split}_predictions.csv", predictions)
    record = classifier.record
    record.setdefault("metrics", {})[split] = report
    atomic_io.write_json(folder / RECORD_FILE, record)
    return report
