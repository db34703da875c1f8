"""What the multi-process tests share: the launch of two CPU processes and a small phantom to edit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cfaudit.data.adapters import build_index, write_index
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config

#: torchrun on CPUs, one thread per process
ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
LAUNCH = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def phantom_index(root: Path, n: int, seed: int) -> Path:
    """A default-config phantom of ``n`` images at 64 px under ``root``, indexed; the index's path."""
    settings = load_config(default_config_path("default")).with_overrides(n=n, size=64)
    phantom = generate_phantom(root / "phantom", settings, seed=seed, workers=1)
    write_index(build_index("phantom", phantom.out, seed=seed), root / "index.csv")
    return root / "index.csv"
