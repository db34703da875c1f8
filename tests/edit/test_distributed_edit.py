"""`cfaudit edit` under a two-process launch (torchrun, gloo on the CPU), killed and resumed: the same outputs
as one process.

Every file of the two folders is compared byte for byte, except ``edits.csv`` and the per-image ``rows/``, which
are compared without their timing columns (:data:`~cfaudit.data.edit_folder.TIMING_COLUMNS`: ``seconds`` and
``inversion_cached``, which legitimately differ between runs), and the inversion cache, whose tensors are
compared byte for byte and whose header is compared without its ``seconds``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors import safe_open

from cfaudit.data.edit_folder import TIMING_COLUMNS
from tests.launch_support import ENV, LAUNCH, phantom_index, run_launch


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return phantom_index(tmp_path_factory.mktemp("phantom"), n=40, seed=0)


def edit_command(index: Path, out: Path) -> list[str]:
    return [
        "-m", "cfaudit", "edit", "--index", str(index), "--split", "all", "--limit", "5", "--out", str(out),
        "--do", "Cardiomegaly=1", "--do", "age=80", "--steps", "3", "--check-identity", "--device", "cpu",
    ]  # fmt: skip


def outputs(folder: Path) -> dict[str, object]:
    """Every file's bytes; edits.csv and the row files without their timing columns."""
    found: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.endswith(".part"):
            continue
        name = str(path.relative_to(folder))
        if name == "edits.csv":
            found[name] = pd.read_csv(path).drop(columns=list(TIMING_COLUMNS)).to_csv(index=False)
        elif name.startswith("rows/"):
            rows = json.loads(path.read_text(encoding="utf-8"))
            found[name] = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]
        elif name.startswith("inversions/"):
            with safe_open(path, framework="numpy") as handle:
                header = {k: v for k, v in (handle.metadata() or {}).items() if k != "seconds"}
                found[name] = (header, {k: handle.get_tensor(k).tobytes() for k in sorted(handle.keys())})
        else:
            found[name] = path.read_bytes()
    return found


def test_two_processes_killed_and_resumed_write_what_one_process_writes(index: Path, tmp_path: Path) -> None:
    single = subprocess.run(
        [sys.executable, *edit_command(index, tmp_path / "single")],
        capture_output=True, text=True, env=ENV, timeout=300, check=False,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    # Two processes, killed (the whole launch, SIGKILL) as soon as the first image's rows are written
    shared = tmp_path / "shared"
    launch = subprocess.Popen(
        [*LAUNCH, *edit_command(index, shared)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while (
        not list((shared / "rows").glob("*.json")) and launch.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    os.killpg(launch.pid, signal.SIGKILL)
    launch.wait()
    assert not (shared / "edits.csv").exists(), "the launch finished before it could be killed"
    resumed = run_launch([*LAUNCH, *edit_command(index, shared)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("edit(s) of 5 image(s)") == 1  # reported once, by the main process
    assert "already done" in resumed.stdout and "(0 already done" not in resumed.stdout
    mine, theirs = outputs(shared), outputs(tmp_path / "single")
    assert sorted(mine) == sorted(theirs)
    assert len([n for n in mine if n.startswith("rows/")]) == 5
    different = [name for name in mine if mine[name] != theirs[name]]
    assert not different, different
