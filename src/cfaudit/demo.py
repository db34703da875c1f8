"""The end-to-end demo on the embedded default: the README's main job, as a Python function.

Today it runs the data layer: phantom -> index with a patient-level split -> Table 1. Each later stage (model,
edits, scores, discovery, report) is added here as it lands, so ``cfaudit demo`` always shows the whole tool.
Every step is resumable: re-running into the same folder reuses what is already there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cfaudit.data.adapters import build_index, write_index
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config
from cfaudit.data.records import DataIndex
from cfaudit.data.stats import table1


@dataclass
class DemoResult:
    out: Path
    phantom: Path
    index: Path
    contact_sheet: Path
    table1: pd.DataFrame


def run_demo(
    out: str | os.PathLike[str],
    *,
    n: int = 2000,
    size: int | None = None,
    seed: int = 0,
    workers: int = 2,
    config: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Make the phantom data set in ``out/phantom``, index it into ``out/index.csv`` and compute Table 1."""
    out = Path(out)
    # 1. Data: a phantom with planted relations (the default config plants pacemaker <-> cardiomegaly, age -> effusion).
    settings = load_config(config or default_config_path("default")).with_overrides(n=n, size=size)
    phantom = generate_phantom(out / "phantom", settings, seed=seed, workers=workers, progress=progress)
    # 2. Index with a seeded patient-level 70/15/15 split (written beside it as splits.csv).
    index_path = out / "index.csv"
    index = build_index("phantom", phantom.out, seed=seed)
    write_index(index, index_path)
    # 3. Table 1 of the paper for this data set.
    stats = table1(DataIndex.read(index_path))
    return DemoResult(out, phantom.out, index_path, phantom.out / "contact_sheet.png", stats)
