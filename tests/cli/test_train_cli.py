"""``cfaudit train``, ``cfaudit sample`` and ``cfaudit models`` through the real entry point (tiny inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from cfaudit.cli import main as cli_main
from cfaudit.cli import models, sample, train
from tests.train.tiny_data import make_index  # the training tests' tiny data set


@pytest.fixture()
def run(monkeypatch: pytest.MonkeyPatch):
    """``run([...]) -> exit code`` with a fresh app holding this change's commands (registered as main will)."""

    def register() -> None:
        app = typer.Typer(pretty_exceptions_enable=False)
        for module in (models, train, sample):
            module.register(app)
        monkeypatch.setattr(cli_main, "app", app)

    monkeypatch.setattr(cli_main, "_register_commands", register)
    return cli_main.main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfaudit.models.random_init import write_random_pipeline

    return write_random_pipeline(tmp_path_factory.mktemp("cli") / "tiny", "tiny", seed=1)


def test_init_random_and_info(run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run(["models", "init-random", "--arch", "tiny", "--out", str(tmp_path / "m"), "--dtype", "float16"])
        == 0
    )
    assert (tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert run(["models", "info", "--model", str(tmp_path / "m")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "7 self + 7 cross" in out and "resolution 128" in out and "49408 tokens" in out
    assert run(["models", "init-random", "--arch", "sdxl", "--out", str(tmp_path / "x")]) == 2
    assert "unknown architecture 'sdxl'" in " ".join(capsys.readouterr().err.split())


def test_train_then_resume_then_sample(
    run, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = make_index(tmp_path / "data")
    config = tmp_path / "train.yaml"
    config.write_text(
        f"model: {tiny_model}\nindex: {index}\noutput_dir: {tmp_path / 'run'}\nresolution: 64\nbatch_size: 2\n"
        f"max_steps: 4\ncheckpoint_every: 2\nlearning_rate: 0.001\nlatent_cache_dir: {tmp_path / 'cache'}\n"
    )
    assert run(["train", "--config", str(config), "--stop-after", "2", "--no-progress"]) == 0
    assert "continue with --resume latest" in " ".join(capsys.readouterr().out.split())
    assert run(["train", "--config", str(config), "--resume", "latest", "--no-progress"]) == 0
    assert "model written to" in " ".join(capsys.readouterr().out.split())
    model = tmp_path / "run" / "model"
    assert json.loads((model / "provenance.json").read_text())["step"] == 4

    out = tmp_path / "samples"
    code = run(["sample", "--model", str(model), "--prompt", "chest x-ray", "--n", "2", "--seed", "3",
                "--steps", "2", "--out", str(out)])  # fmt: skip
    assert code == 0
    record = json.loads((out / "samples.json").read_text())
    assert [e["seed"] for e in record["images"]] == [3, 4]
    assert all((out / e["file"]).is_file() for e in record["images"])


def test_config_mistakes_are_one_line_errors(
    run, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(f"model: {tiny_model}\nindex: {tmp_path / 'index.csv'}\nresolution: 64\n")
    assert run(["train", "--config", str(config), "--set", "batch_sise=4"]) == 2
    assert "unknown key(s) batch_sise" in " ".join(capsys.readouterr().err.split())
    assert run(["train", "--config", str(config), "--set", "resolution=65"]) == 2
    assert "multiple of 8" in " ".join(capsys.readouterr().err.split())
    assert run(["train", "--config", str(config), "--set", "nonsense"]) == 2
    assert "write key=value" in " ".join(capsys.readouterr().err.split())
    assert run(["train", "--config", str(config)]) == 2
    assert "no such index file" in " ".join(capsys.readouterr().err.split())
    assert (
        run(["sample", "--model", str(tmp_path / "none"), "--prompt", "x", "--out", str(tmp_path / "o")]) == 2
    )
    assert "no such model folder" in " ".join(capsys.readouterr().err.split())
