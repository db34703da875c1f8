"""`cfaudit train` under a two-process launch (torchrun, gloo on the CPU): the same code a multi-GPU run takes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import yaml

from cfaudit.train.checkpoint import list_checkpoints, read_state

# A tiny run takes ~10 s on 2 cores; a launch still alive after this long is stuck.
HANG_SECONDS = 240


def _run_or_dump_stacks(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``command``; if it hangs, have every Python process of the launch print its stacks, then fail with them.

    The workers run in sessions of their own (torchrun starts them so), so they are found as descendants rather than
    by process group; ``PYTHONFAULTHANDLER`` makes each one write all its threads' stacks to stderr on SIGABRT.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**env, "PYTHONFAULTHANDLER": "1"})  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=HANG_SECONDS)
    except subprocess.TimeoutExpired:
        launch = psutil.Process(process.pid)
        stuck = [launch, *launch.children(recursive=True)]
        alive = [f"{p.pid} {' '.join(p.cmdline()[-4:])}" for p in stuck if p.is_running()]
        for member in stuck:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGABRT)
        time.sleep(2)
        for member in stuck:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"the launch hung for {HANG_SECONDS} s; still alive: {alive}\nstdout:\n{stdout[-2000:]}\n"
            f"stacks and stderr:\n{stderr[-12000:]}"
        ) from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_two_processes_share_one_run(tiny_model_dir: Path, tiny_index: Path, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    out = tmp_path / "run"
    config.write_text(yaml.safe_dump(
        {"model": str(tiny_model_dir), "index": str(tiny_index), "output_dir": str(out), "resolution": 64,
         "max_steps": 4, "batch_size": 2, "learning_rate": 1e-3, "checkpoint_every": 2, "log_every": 1,
         "latent_cache_dir": str(tmp_path / "cache")}
    ))  # fmt: skip
    # accelerate runs several CPU processes as one job (gloo) when told to stay on the CPU
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = _run_or_dump_stacks(
        [*launch, "-m", "cfaudit", "train", "--config", str(config), "--no-progress"], env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # one job: the checkpoint holds both processes' noise generators, the summary is printed once
    state = read_state(list_checkpoints(out)[-1])
    assert state["step"] == 4 and state["noise_gen"].shape[0] == 2
    assert result.stdout.count("model written to") == 1
    assert (out / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    # every step drew batch_size rows for each process from the one shared order: 4 steps x 2 x 2 = 16 rows
    drawn = (state["epoch"] - 1) * state["n_rows"] + state["position"]
    assert drawn == 4 * 2 * 2, (state["epoch"], state["position"], state["n_rows"])
