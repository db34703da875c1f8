import json

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from cfaudit.cli.scm import register
from cfaudit.errors import CfauditError
from tests.scm import scm_tiny


@pytest.fixture
def app():
    app = typer.Typer()
    register(app)
    return app


def invoke(app, *args):
    return CliRunner().invoke(app, ["scm", *map(str, args)])


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    settings = {"model": scm_tiny.TINY_MODEL, "batch_size": 4, "checkpoint_every": 2, "lr_warmup_steps": 1,
                "mechanism_steps": 20, "eval_images": 4}  # fmt: skip
    path.write_text(json.dumps(settings), encoding="utf-8")  # JSON is YAML
    return path


def test_train_resume_and_edit(app, tmp_path, tiny_config):
    index = scm_tiny.make_index(tmp_path / "data")
    run = tmp_path / "run"
    common = [
        "train",
        "--index",
        index,
        "--out",
        run,
        "--config",
        tiny_config,
        "--threads",
        1,
        "--device",
        "cpu",
    ]
    result = invoke(app, *common, "--steps", 4)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "trained 4 steps" in text and "bits/dim" in text and str(run / "model") in text
    assert (run / "model" / "scm.json").is_file()
    again = invoke(app, *common, "--steps", 6, "--resume", "latest")  # continue the run to 6 steps
    assert again.exit_code == 0, again.output
    assert json.loads((run / "model" / "scm.json").read_text())["meta"]["training"]["steps"] == 6

    out = tmp_path / "edits"
    edit = ["edit", "--model", run, "--index", index, "--split", "test", "--do", "sex=female", "--do", "age=85",
            "--out", out, "--device", "cpu"]  # fmt: skip
    result = invoke(app, *edit)
    assert result.exit_code == 0, result.output
    assert "6 edit(s) of 3 image(s)" in " ".join(result.output.split())
    table = pd.read_csv(out / "edits.csv")
    assert table["intervention"].tolist() == ["do(sex=Female)", "do(age=85)"] * 3
    assert (table["method"] == "scm-hvae").all()
    assert "(3 already done" in " ".join(invoke(app, *edit).output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--index", "x.csv", "--out", "o", "--preset", "huge"], "unknown SCM preset 'huge'"),
        (["train", "--index", "missing.csv", "--out", "o"], "no such index file"),
        (["edit", "--model", "nowhere", "--index", "x.csv", "--do", "age=80", "--out", "o"], "no scm.json"),
        (
            ["edit", "--model", "nowhere", "--index", "x.csv", "--do", "height=3", "--out", "o"],
            "unknown attribute 'height'",
        ),
        (
            ["edit", "--model", "m", "--index", "x.csv", "--do", "age=1", "--out", "o", "--latents", "x"],
            "--latents 'x'",
        ),
    ],
)
def test_user_mistakes_are_cfaudit_errors(app, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke(app, *args)
    assert isinstance(result.exception, CfauditError), result.output
    assert message in str(result.exception)
