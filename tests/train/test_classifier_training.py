"""Training attribute classifiers on a tiny synthetic set with easy cues: learning, masking, test isolation, save/load."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cfaudit.data.images import save_image
from cfaudit.data.records import DataIndex, empty_label_row
from cfaudit.data.vocabulary import FINDINGS, RACES
from cfaudit.errors import CfauditError
from cfaudit.evaluate.classifiers import AttributeClassifier, report_classifier
from cfaudit.models.classifier import CALIBRATED_HEADS, HEAD_BY_NAME, N_OUTPUTS
from cfaudit.train import classifier as training
from cfaudit.train.classifier import ClassifierConfig

SIZE = 32
SPLITS = ["train"] * 64 + ["val"] * 24 + ["test"] * 24


def synthetic_image(male: bool, cardiomegaly: bool, rng: np.random.Generator) -> np.ndarray:
    """A bright square in the top-left corner means male; a wide central blob means cardiomegaly."""
    image = 0.25 + 0.05 * rng.standard_normal((SIZE, SIZE))
    if male:
        image[3:11, 3:11] = 0.9
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    half_width = 10.0 if cardiomegaly else 4.0
    blob = ((xs - 16 + rng.normal(0, 0.5)) / half_width) ** 2 + ((ys - 20) / 5.0) ** 2 <= 1.0
    image[blob] = 0.65
    return np.clip(image, 0, 1).astype(np.float32)


def make_index(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for i, split in enumerate(SPLITS):
        male, cardiomegaly = bool(i % 2), bool((i // 2) % 2)
        save_image(synthetic_image(male, cardiomegaly, rng), root / "images" / f"img{i:03d}.png")
        labels = empty_label_row()
        labels["Cardiomegaly"] = 1.0 if cardiomegaly else 0.0
        labels["Support Devices"] = (
            1.0 if i % 5 == 0 else np.nan
        )  # mostly blank: masked under the policy below
        labels["No Finding"] = 0.0 if cardiomegaly else 1.0
        rows.append(
            {
                "image_id": f"img{i:03d}",
                "path": f"images/img{i:03d}.png",
                "subject_id": f"s{i:03d}",
                "study_id": f"st{i:03d}",
                "view": "PA",
                "age": float(30 + (i * 7) % 50),
                "sex": "Male" if male else "Female",
                "race": "Unknown" if i % 7 == 0 else RACES[i % 4],
                **labels,
                "split": split,
            }
        )
    index_path = root / "index.csv"
    DataIndex(pd.DataFrame(rows), root).write(index_path)
    return index_path


FAST = {"arch": "resnet-small", "size": SIZE, "epochs": 12, "batch_size": 16, "lr": 3e-3, "patience": 4}
MASKING_POLICY = {"uncertain": "blank", "blank": "blank"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("synthetic")
    index_path = make_index(root)
    out = root / "classifier"
    config = ClassifierConfig(**FAST, label_policy=MASKING_POLICY)
    record = training.train_classifier(index_path, out, config, device="cpu")
    return index_path, out, record


def test_easy_cues_are_learned_with_test_auc_above_point_nine(trained: tuple[Path, Path, dict]) -> None:
    index_path, out, record = trained
    assert (out / "model.safetensors").is_file() and (out / "classifier.json").is_file()
    assert not (out / "checkpoint.safetensors").exists()
    assert record["metrics"]["test"] is None  # training never scores the test split
    report = report_classifier(out, index_path, "test", device="cpu")
    assert report["sex"]["auc"] > 0.9
    assert report["Cardiomegaly"]["auc"] > 0.9
    assert report["sex"]["n"] == 24
    assert report["race"]["n"] == sum(1 for i, s in enumerate(SPLITS) if s == "test" and i % 7 != 0)
    assert 0.0 <= report["race"]["accuracy"] <= 1.0
    assert report["age"]["mae"] >= 0.0
    assert report["Pneumonia"]["auc"] is None and report["Pneumonia"]["n"] == 0  # all blank -> masked
    saved = json.loads((out / "classifier.json").read_text())
    assert saved["metrics"]["test"]["sex"]["auc"] == report["sex"]["auc"]
    assert saved["index"]["rows"] == {"train": 64, "val": 24, "test": 24}
    predictions = pd.read_csv(out / "test_predictions.csv")
    assert len(predictions) == 24 and {"sex", "Cardiomegaly", "race_Asian", "age"} <= set(predictions.columns)


def test_save_and_load_round_trip_predictions_exactly(
    trained: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    _, out, record = trained
    rng = np.random.default_rng(9)
    images = np.stack([synthetic_image(bool(i % 2), bool(i // 2 % 2), rng) for i in range(6)])
    first = AttributeClassifier.load(out, device="cpu")
    before = first.predict(images)
    training.save_classifier(first.model, first.record, tmp_path / "copy")
    after = AttributeClassifier.load(tmp_path / "copy", device="cpu").predict(images)
    assert set(before) == {"sex", "race", "age", *FINDINGS}
    for head, values in before.items():
        np.testing.assert_array_equal(values, after[head])
    assert before["race"].shape == (6, 4)
    np.testing.assert_allclose(before["race"].sum(axis=1), 1.0, rtol=1e-6)
    assert before["sex"].shape == (6,) and ((before["sex"] >= 0) & (before["sex"] <= 1)).all()
    # the classifier is a metrics Predictor: calling it predicts; inputs may come at other sizes
    bigger = [np.kron(image, np.ones((2, 2), dtype=np.float32)) for image in images]
    assert first(bigger)["sex"].shape == (6,)
    temperatures = record["calibration"]["temperatures"]
    assert set(temperatures) == set(CALIBRATED_HEADS)
    np.testing.assert_allclose(first.model.temperature.numpy(), [temperatures[h] for h in CALIBRATED_HEADS])


def test_temperature_scaling_reduces_validation_nll(trained: tuple[Path, Path, dict]) -> None:
    calibration = trained[2]["calibration"]
    assert calibration["val_nll_after"] <= calibration["val_nll_before"] + 1e-9


def test_fitted_temperature_softens_an_overconfident_head() -> None:
    generator = torch.Generator().manual_seed(0)
    n = 400
    truth = torch.rand(n, generator=generator) < 0.5
    noisy_signal = truth.float() * 2 - 1 + 1.2 * torch.randn(n, generator=generator)
    logits = torch.zeros(n, N_OUTPUTS)
    logits[:, HEAD_BY_NAME["sex"].start] = 8.0 * noisy_signal  # far too confident
    targets = {
        "sex": truth.float(),
        "race": torch.full((n,), training.IGNORE_CLASS, dtype=torch.long),
        "age": torch.full((n,), 50.0),
        "findings": torch.full((n, len(FINDINGS)), math.nan),
    }
    ones = torch.ones(len(CALIBRATED_HEADS))
    temperature = training.fit_temperatures(logits, targets)
    sex_t = temperature[CALIBRATED_HEADS.index("sex")].item()
    assert sex_t > 2.0
    assert training.calibration_nll(logits, targets, temperature) < 0.8 * training.calibration_nll(
        logits, targets, ones
    )


def test_nan_labels_are_masked_out_of_the_loss() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(6, N_OUTPUTS, generator=generator)
    findings = torch.full((6, len(FINDINGS)), math.nan)
    findings[:3, FINDINGS.index("Cardiomegaly")] = torch.tensor([1.0, 0.0, 1.0])
    targets = {
        "sex": torch.tensor([1.0, 0, 1, 0, 1, 0]),
        "race": torch.tensor([0, 1, training.IGNORE_CLASS, 3, 2, training.IGNORE_CLASS]),
        "age": torch.full((6,), 40.0),
        "findings": findings,
    }
    losses = training.head_losses(logits, targets)
    assert set(losses) == {"sex", "race", "age", "Cardiomegaly"}
    assert all(torch.isfinite(loss) for loss in losses.values())
    column = HEAD_BY_NAME["Cardiomegaly"].start
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:3, column], torch.tensor([1.0, 0, 1])
    )
    torch.testing.assert_close(losses["Cardiomegaly"], expected)
    changed = logits.clone()
    changed[3:, column] = 100.0  # rows whose label is blank: must not matter
    race = HEAD_BY_NAME["race"]
    changed[2, race.start : race.stop] = 50.0  # Unknown race: must not matter
    torch.testing.assert_close(training.total_loss(changed, targets), training.total_loss(logits, targets))


def test_the_test_split_is_never_read_during_training(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    index_path = make_index(tmp_path, seed=1)
    index = DataIndex.read(index_path)
    for row in range(len(index)):
        if index.table.loc[row, "split"] == "test":
            index.image_path(row).write_bytes(b"this is not a PNG")
    out = tmp_path / "classifier"
    config = ClassifierConfig(**{**FAST, "epochs": 2})
    record = training.train_classifier(index_path, out, config, device="cpu")
    assert record["training"]["epochs_run"] == 2
    with pytest.raises(CfauditError, match=r"img0\d\d\.png: cannot decode image"):
        report_classifier(out, index_path, "test", device="cpu")


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    index_path = make_index(tmp_path, seed=2)
    config = ClassifierConfig(**{**FAST, "epochs": 4, "patience": 10})
    straight = training.train_classifier(index_path, tmp_path / "straight", config, device="cpu")

    class Stop(Exception):
        pass

    def stop_after_epoch_two(message: str) -> None:
        if message.startswith("epoch 2/"):
            raise Stop

    with pytest.raises(Stop):
        training.train_classifier(
            index_path, tmp_path / "resumed", config, device="cpu", log=stop_after_epoch_two
        )
    assert (tmp_path / "resumed" / "checkpoint.safetensors").is_file()
    messages: list[str] = []
    resumed = training.train_classifier(
        index_path, tmp_path / "resumed", config, device="cpu", log=messages.append
    )
    assert any(m.startswith("resuming after epoch 2") for m in messages)
    assert [round(h["val_loss"], 5) for h in resumed["training"]["history"]] == [
        round(h["val_loss"], 5) for h in straight["training"]["history"]
    ]


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CfauditError, match="unknown architecture"):
        ClassifierConfig(arch="vgg")
    for values in ({"lr": -1.0}, {"lr": 0.0}, {"weight_decay": -1.0}):
        with pytest.raises(
            CfauditError, match="classifier lr must be positive and weight_decay not negative"
        ):
            ClassifierConfig(**values)
    with pytest.raises(CfauditError, match="classifiers train"):
        AttributeClassifier.load(tmp_path / "nowhere")
    index_path = make_index(tmp_path)
    index = DataIndex.read(index_path)
    index.table["split"] = "train"
    index.write(index_path)
    with pytest.raises(CfauditError, match="val split has 0 row"):
        training.train_classifier(index_path, tmp_path / "out", ClassifierConfig(**FAST), device="cpu")


def test_roc_auc_known_values() -> None:
    assert training.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert training.roc_auc(np.array([0, 0, 1, 1]), np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert training.roc_auc(np.array([0, 1, np.nan]), np.array([0.5, 0.5, 0.0])) == 0.5
    assert math.isnan(training.roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))
