"""`cfaudit discover` under a two-process launch (torchrun, gloo on the CPU): the same edits and candidates as
one process, the analysis run once.

Compared: every row file and ``edits.csv`` without the timing columns (:data:`~cfaudit.data.edit_folder.TIMING_COLUMNS`:
``seconds``, ``inversion_cached``); every edited image and difference map, and every analysis output
(``candidates.csv/json``, ``cochange.csv``, ``clusters.csv``, ``cluster_members.csv``, ``power.csv``, the mean
maps), byte for byte; ``discovery.json`` too (it records no time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cfaudit.data.edit_folder import TIMING_COLUMNS
from tests.launch_support import ENV, LAUNCH, phantom_index, run_launch


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return phantom_index(tmp_path_factory.mktemp("phantom"), n=120, seed=1)


def discover_command(index: Path, out: Path) -> list[str]:
    return [
        "-m", "cfaudit", "discover", "--index", str(index), "--out", str(out), "--do", "Cardiomegaly=0",
        "--do", "age=+20", "--images", "4", "--steps", "3", "--batch-size", "2", "--device", "cpu",
    ]  # fmt: skip


def outputs(folder: Path) -> dict[str, object]:
    found: dict[str, object] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if not path.is_file() or name.startswith("edits/inversions/"):  # the cache: tests/edit compares it
            continue
        if name == "edits/edits.csv":
            found[name] = pd.read_csv(path).drop(columns=list(TIMING_COLUMNS)).to_csv(index=False)
        elif name.startswith("edits/rows/"):
            rows = json.loads(path.read_text(encoding="utf-8"))
            found[name] = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]
        else:
            found[name] = path.read_bytes()
    return found


def test_two_processes_find_what_one_process_finds(index: Path, tmp_path: Path) -> None:
    single = subprocess.run(
        [sys.executable, *discover_command(index, tmp_path / "single")],
        capture_output=True, text=True, env=ENV, timeout=300, check=False,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    double = run_launch([*LAUNCH, *discover_command(index, tmp_path / "double")])
    assert double.returncode == 0, double.stderr[-3000:]
    assert double.stdout.count("candidates: ") == 1  # one analysis, printed by the main process
    mine, theirs = outputs(tmp_path / "double"), outputs(tmp_path / "single")
    assert sorted(mine) == sorted(theirs)
    rows = [n for n in mine if n.startswith("edits/rows/")]
    assert (
        len(rows) >= 4
        and "candidates.csv" in mine
        and not pd.read_csv(tmp_path / "double" / "candidates.csv").empty
    )
    different = [name for name in mine if mine[name] != theirs[name]]
    assert not different, different
