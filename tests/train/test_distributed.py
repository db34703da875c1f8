"""`cfaudit train` under a two-process launch (torchrun, gloo on the CPU): the same code a multi-GPU run takes."""

from __future__ import annotations

from pathlib import Path

import yaml

from cfaudit.train.checkpoint import list_checkpoints, read_state
from tests.launch_support import LAUNCH, run_launch


def test_two_processes_share_one_run(tiny_model_dir: Path, tiny_index: Path, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    out = tmp_path / "run"
    config.write_text(yaml.safe_dump(
        {"model": str(tiny_model_dir), "index": str(tiny_index), "output_dir": str(out), "resolution": 64,
         "max_steps": 4, "batch_size": 2, "learning_rate": 1e-3, "checkpoint_every": 2, "log_every": 1,
         "latent_cache_dir": str(tmp_path / "cache")}
    ))  # fmt: skip
    # accelerate runs several CPU processes as one job (gloo) when told to stay on the CPU (launch_support.ENV)
    result = run_launch([*LAUNCH, "-m", "cfaudit", "train", "--config", str(config), "--no-progress"])
    assert result.returncode == 0, result.stderr[-3000:]
    # one job: the checkpoint holds both processes' noise generators, the summary is printed once
    state = read_state(list_checkpoints(out)[-1])
    assert state["step"] == 4 and state["noise_gen"].shape[0] == 2
    assert result.stdout.count("model written to") == 1
    assert (out / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    # every step drew batch_size rows for each process from the one shared order: 4 steps x 2 x 2 = 16 rows
    drawn = (state["epoch"] - 1) * state["n_rows"] + state["position"]
    assert drawn == 4 * 2 * 2, (state["epoch"], state["position"], state["n_rows"])
