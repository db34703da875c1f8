"""What the multi-process tests share: the launch of two CPU processes and a small phantom to edit."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from cfaudit.data.adapters import build_index, write_index
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config

#: torchrun on CPUs, one thread per process
ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

#: the tests' launches take 10-90 s on 2 cores; one still alive after this long is stuck
HANG_SECONDS = 300


def run_launch(command: list[str], env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
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
        alive = []
        for member in stuck:  # one may exit while it is listed
            with contextlib.suppress(psutil.NoSuchProcess):
                alive.append(f"{member.pid} {' '.join(member.cmdline()[-4:])}")
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


def phantom_index(root: Path, n: int, seed: int) -> Path:
    """A default-config phantom of ``n`` images at 64 px under ``root``, indexed; the index's path."""
    settings = load_config(default_config_path("default")).with_overrides(n=n, size=64)
    phantom = generate_phantom(root / "phantom", settings, seed=seed, workers=1)
    write_index(build_index("phantom", phantom.out, seed=seed), root / "index.csv")
    return root / "index.csv"
