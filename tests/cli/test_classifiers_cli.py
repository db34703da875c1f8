"""``cfaudit classifiers train`` / ``report`` on a tiny synthetic index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from cfaudit.cli import classifiers as classifiers_cli
from cfaudit.data.images import save_image
from cfaudit.data.records import DataIndex, empty_label_row
from cfaudit.errors import CfauditError


def make_app() -> typer.Typer:
    app = typer.Typer()
    classifiers_cli.register(app)

    @app.callback()
    def root() -> None:
        pass

    return app


def tiny_index(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        image = 0.3 + 0.05 * rng.standard_normal((32, 32))
        if i % 2:
            image[2:10, 2:10] = 0.9
        save_image(np.clip(image, 0, 1), root / f"{i}.png")
        rows.append(
            {
                "image_id": str(i),
                "path": f"{i}.png",
                "subject_id": f"s{i}",
                "study_id": f"t{i}",
                "view": "AP",
                "age": 40.0 + i,
                "sex": "Male" if i % 2 else "Female",
                "race": "White",
                **empty_label_row(),
                "split": "train" if i < 18 else ("val" if i < 24 else "test"),
            }
        )
    DataIndex(pd.DataFrame(rows), root).write(root / "index.csv")
    return root / "index.csv"


def test_train_writes_the_classifier_and_reports_test_figures(tmp_path: Path) -> None:
    index = tiny_index(tmp_path)
    out = tmp_path / "clf"
    args = ["classifiers", "train", "--index", str(index), "--out", str(out), "--size", "32", "--epochs", "2",
            "--batch-size", "8", "--seed", "3", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(make_app(), args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "epoch 2/2" in result.output and "test (6 images)" in result.output
    record = json.loads((out / "classifier.json").read_text())
    assert record["config"]["seed"] == 3 and record["config"]["size"] == 32
    assert record["metrics"]["test"]["sex"]["n"] == 6
    assert (out / "test_predictions.csv").is_file()

    again = CliRunner().invoke(
        make_app(), ["classifiers", "report", "--classifier", str(out), "--split", "val"]
    )
    assert again.exit_code == 0, again.output
    assert json.loads((out / "classifier.json").read_text())["metrics"]["val"]["sex"]["n"] == 6


def test_bad_options_are_cfaudit_errors(tmp_path: Path) -> None:
    index = tiny_index(tmp_path)
    args = ["classifiers", "train", "--index", str(index), "--out", str(tmp_path / "o"), "--arch", "vgg11"]
    result = CliRunner().invoke(make_app(), args)
    assert isinstance(result.exception, CfauditError)
    assert "unknown architecture 'vgg11'" in str(result.exception)
    with pytest.raises(CfauditError, match="split 'train'"):
        CliRunner().invoke(
            make_app(),
            ["classifiers", "report", "--classifier", str(tmp_path), "--split", "train"],
            catch_exceptions=False,
        )


def test_an_empty_test_split_is_refused_before_training_unless_no_report(tmp_path: Path) -> None:
    """The report after training needs test images: refused up front, not after the whole run."""
    index = tiny_index(tmp_path)
    table = DataIndex.read(index)
    table.table.loc[table.table["split"] == "test", "split"] = "val"
    table.write(index)
    out = tmp_path / "o"
    args = ["classifiers", "train", "--index", str(index), "--out", str(out), "--epochs", "1", "--size", "32"]
    result = CliRunner().invoke(make_app(), args)
    assert isinstance(result.exception, CfauditError)
    assert "the test split is empty" in str(result.exception) and "--no-report" in str(result.exception)
    assert not out.exists()
    result = CliRunner().invoke(make_app(), [*args, "--no-report", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file()
