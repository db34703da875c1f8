"""SIGKILL in the middle of `cfaudit edit` and `cfaudit train`, resume, and get what an uninterrupted run gets.

Each job runs as the real command in a fresh process, three times: uninterrupted (the reference), killed once a
file shows it is half done, and re-run with the same command to the end. The outputs are compared as
``benchmarks/crash_resume.py`` compares them (that benchmark kills at random moments, many times).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfaudit.data.images import save_image
from cfaudit.train.checkpoint import list_checkpoints
from tests.train import tiny_data


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


ROOT = Path(__file__).parents[1]
crash = _load("crash_resume_benchmark", ROOT / "benchmarks" / "crash_resume.py")


def run(command: list[str], log: Path) -> None:
    process = crash.launch(command, log)
    assert process.wait() == 0, log.read_text(errors="replace")[-3000:]


def kill_when(command: list[str], log: Path, appears: Path, timeout: float = 120.0) -> None:
    """Start ``command`` and SIGKILL it as soon as ``appears`` exists."""
    process = crash.launch(command, log)
    deadline = time.monotonic() + timeout
    while not appears.exists():
        assert process.poll() is None, f"it ended before {appears.name} appeared:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{appears} did not appear in {timeout} s"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


@dataclass(frozen=True)
class EditRuns:
    reference: Path
    resumed: Path
    command: Callable[[Path], list[str]]  # the edit command into a folder


@pytest.fixture(scope="module")
def edit_runs(tmp_path_factory: pytest.TempPathFactory) -> EditRuns:
    """Edits of the demo model on 3 images: uninterrupted, and killed after the first image's row file."""
    work = tmp_path_factory.mktemp("crash-edit")
    index = tiny_data.make_index(work / "data", n=3)

    def command(out: Path) -> list[str]:
        return crash.cfaudit("edit", "--model", "demo", "--index", index, "--split", "train", "--do", "Cardiomegaly=0",
                             "--steps", 4, "--check-identity", "--device", "cpu", "--out", out)  # fmt: skip

    reference, resumed = work / "reference" / "run", work / "killed" / "run"
    run(command(reference), work / "reference.log")
    kill_when(command(resumed), work / "killed.log", resumed / "rows" / "img0.json")
    assert not (resumed / "edits.csv").exists() and not (resumed / "rows" / "img2.json").exists()
    run(command(resumed), work / "killed.log")
    return EditRuns(reference, resumed, command)


@dataclass(frozen=True)
class TrainRuns:
    reference: Path
    resumed: Path
    settings: dict[str, Any]  # the config, less output_dir


@pytest.fixture(scope="module")
def train_runs(tmp_path_factory: pytest.TempPathFactory) -> TrainRuns:
    """Runs of 6 steps of the tiny preset: uninterrupted, and killed once the step-2 checkpoint is written."""
    from cfaudit.models.random_init import write_random_pipeline
    from cfaudit.train.config import TrainConfig
    from cfaudit.train.trainer import train

    work = tmp_path_factory.mktemp("crash-train")
    model = write_random_pipeline(work / "tiny", "tiny", seed=0)
    index = tiny_data.make_index(work / "data")
    settings = {"model": str(model), "index": str(index), "output_dir": str(work / "warm"), "resolution": 64,
                "max_steps": 6, "batch_size": 4, "learning_rate": 1e-3, "checkpoint_every": 2, "keep_checkpoints": 2,
                "use_ema": True, "ema_decay": 0.9, "caption_dropout": 0.5, "log_every": 1,
                "latent_cache_dir": str(work / "latents")}  # fmt: skip
    # Fill the latent cache first, as a first launch does, so that every run below reads it (a process that encodes
    # and then trains rounds ~1e-7 differently from one that reads the cache; benchmarks/crash_resume.py says why).
    train(TrainConfig.from_dict({**settings, "max_steps": 1}), progress=False)
    config = work / "train.json"
    config.write_text(pd.Series(settings).to_json(), encoding="utf-8")

    def command(out: Path) -> list[str]:
        return crash.cfaudit(
            "train", "--config", config, "--output-dir", out, "--resume", "latest", "--no-progress"
        )

    reference, resumed = work / "reference" / "run", work / "killed" / "run"
    run(command(reference), work / "reference.log")
    kill_when(
        command(resumed),
        work / "killed.log",
        resumed / "checkpoints" / "step-0000002" / "training_state.json",
    )
    assert not (resumed / "model").exists()
    run(command(resumed), work / "killed.log")
    return TrainRuns(reference, resumed, settings)


def test_an_edit_job_killed_after_its_first_image_resumes_to_the_uninterrupted_output(
    edit_runs: EditRuns,
) -> None:
    reference, resumed = edit_runs.reference, edit_runs.resumed
    comparison = crash.compare_outputs(reference, resumed)
    assert comparison.identical, comparison.summary()
    assert not comparison.leftovers
    rows = pd.read_csv(resumed / "edits.csv")
    assert rows["image_id"].tolist() == ["img0", "img1", "img2"]
    # per image 5 files (reconstruction, null edit, counterfactual, its map as .npy and .png), its row file and
    # its inversion; job.json; and the 3 rows of edits.csv
    assert comparison.items == 3 * (5 + 1 + 1) + 1 + 3


def test_training_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(
    train_runs: TrainRuns,
) -> None:
    reference, resumed = train_runs.reference, train_runs.resumed
    comparison = crash.compare_outputs(reference, resumed)
    assert comparison.identical, comparison.summary()
    assert not comparison.leftovers
    assert [p.name for p in list_checkpoints(resumed)] == ["step-0000004", "step-0000006"]
    compared = {Path(p).parts[0] for p in crash.output_files(reference)[0]}
    assert compared == {"checkpoints", "model"}  # weights, optimizer / EMA / RNG state and the final pipeline


def test_the_comparison_reports_lost_extra_and_differing_outputs(edit_runs: EditRuns, tmp_path: Path) -> None:
    reference, resumed = edit_runs.reference, edit_runs.resumed
    damaged = tmp_path / "run"
    shutil.copytree(resumed, damaged)
    (damaged / "images" / "img1" / "reconstruction.png").unlink()
    counterfactual = damaged / "images" / "img2" / "cardiomegaly-0.png"
    pixels = np.asarray(Image.open(counterfactual)).astype(np.float32) / 65535.0
    pixels[0, 0] = 1.0 - pixels[0, 0]
    save_image(pixels, counterfactual, bits=16)
    table = pd.read_csv(damaged / "edits.csv")
    pd.concat([table, table.tail(1)]).to_csv(damaged / "edits.csv", index=False)
    (damaged / "rows" / ".img0.json.x1y2.part").write_text("[", encoding="utf-8")

    comparison = crash.compare_outputs(reference, damaged)
    assert comparison.lost == ["images/img1/reconstruction.png"]
    assert comparison.differ == ["images/img2/cardiomegaly-0.png"]
    assert comparison.extra == ["edits.csv row 4"]
    assert comparison.leftovers == ["rows/.img0.json.x1y2.part"]
    assert not comparison.identical


def _killed_mid_prune(run: Path) -> None:
    """Killed while the step-6 checkpoint's save pruned step 2: ``rmtree`` had removed its weights, not its state."""
    shutil.copytree(run / "checkpoints" / "step-0000004", run / "checkpoints" / "step-0000002")
    shutil.rmtree(run / "checkpoints" / "step-0000002" / "unet")


def _killed_before_prune(run: Path) -> None:
    """Killed right after the step-6 checkpoint was renamed into place, before step 2 was pruned."""
    shutil.copytree(run / "checkpoints" / "step-0000004", run / "checkpoints" / "step-0000002")


def _killed_writing_the_model(run: Path) -> None:
    """Killed while the final pipeline was written into its staging folder (``PipelineComponents.save``)."""
    shutil.rmtree(run / "model")
    staging = run / ".model.k1ll3d.part"
    shutil.copytree(run / "checkpoints" / "step-0000006" / "unet", staging / "unet")


def _killed_swapping_the_model(run: Path) -> None:
    """Killed between ``save``'s two renames: the old model moved aside, the new one not yet in place."""
    (run / "model").rename(run / ".model.old")
    shutil.copytree(run / "checkpoints" / "step-0000006" / "unet", run / ".model.k1ll3d.part" / "unet")


@pytest.mark.parametrize(
    "kill",
    [_killed_mid_prune, _killed_before_prune, _killed_writing_the_model, _killed_swapping_the_model],
    ids=["mid-prune", "before-prune", "writing-the-model", "swapping-the-model"],
)
def test_a_run_killed_after_its_last_checkpoint_resumes_to_the_uninterrupted_folder(
    train_runs: TrainRuns, tmp_path: Path, kill: Any
) -> None:
    # These kills fall in windows of milliseconds (the benchmark's random ones rarely land there): the folder a kill
    # leaves is made here, then the run resumes in this process, from its last checkpoint (step 6 of 6).
    from cfaudit.train.config import TrainConfig
    from cfaudit.train.trainer import train

    run = tmp_path / "run"
    shutil.copytree(train_runs.reference, run)
    for record in run.rglob("provenance.json"):  # as if the run had been made here
        record.write_text(record.read_text().replace(str(train_runs.reference), str(run)))
    kill(run)
    result = train(
        TrainConfig.from_dict({**train_runs.settings, "output_dir": str(run)}),
        resume="latest",
        progress=False,
    )
    assert result.step == 6 and result.losses == []
    comparison = crash.compare_outputs(train_runs.reference, run)
    assert comparison.identical, comparison.summary()
    assert not comparison.leftovers, comparison.summary()


def test_an_edit_job_killed_while_writing_an_image_leaves_no_temporary_file(
    edit_runs: EditRuns, tmp_path: Path
) -> None:
    # The benchmark's random kills landed once in 30 inside such a write; here the folder it leaves is made: the
    # image's counterfactual half written to its staging file, its row file not written yet.
    run_folder = tmp_path / "run"
    shutil.copytree(edit_runs.reference, run_folder)
    (run_folder / "rows" / "img1.json").unlink()
    (run_folder / "edits.csv").unlink()
    staging = run_folder / "images" / "img1" / ".cardiomegaly-0.png.k1ll3d.part"
    staging.write_bytes((run_folder / "images" / "img1" / "cardiomegaly-0.png").read_bytes()[:100])
    run(edit_runs.command(run_folder), tmp_path / "resume.log")
    comparison = crash.compare_outputs(edit_runs.reference, run_folder)
    assert comparison.identical, comparison.summary()
    assert not comparison.leftovers, comparison.summary()
