"""Discovery on a fresh phantom with the shipped demo model and classifier: what is flagged, and how fast.

    OMP_NUM_THREADS=1 python benchmarks/discovery_phantom.py --config default --seed 3 --out runs/trial-default
    OMP_NUM_THREADS=1 python benchmarks/discovery_phantom.py --config null --seed 4 --out runs/trial-null

Prints the wall times and the first candidates (figures: docs/BENCHMARKS.md, "Discovery").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from cfaudit.data.adapters import build_index, write_index
from cfaudit.data.interventions import parse_interventions
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config
from cfaudit.discover import DiscoverySettings, run_discovery
from cfaudit.edit.editor import CounterfactualEditor
from cfaudit.edit.inversion import InversionSettings
from cfaudit.edit.job import JobSettings
from cfaudit.evaluate.classifiers import load_classifier

DEFAULT_DO = ["Cardiomegaly=0", "Support Devices=0", "Edema=1", "age=+20"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="default", help="phantom config: default, null or a YAML path")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--images", type=int, default=12, help="eligible images per intervention")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--do", action="append", help=f"intervention (repeat; default: {', '.join(DEFAULT_DO)})"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)

    started = time.perf_counter()
    config = default_config_path(args.config) if args.config in ("default", "null") else Path(args.config)
    phantom = generate_phantom(
        args.out / "phantom",
        load_config(config).with_overrides(n=args.n, size=128),
        seed=args.seed,
        workers=1,
    )
    write_index(build_index("phantom", phantom.out, seed=args.seed), args.out / "index.csv")
    print(f"phantom: {time.perf_counter() - started:.1f} s")
    editor = CounterfactualEditor.load("demo", device="cpu")
    started = time.perf_counter()
    result = run_discovery(
        editor, args.out / "index.csv", load_classifier("demo", "cpu"), args.out / "discovery",
        parse_interventions(args.do or DEFAULT_DO), DiscoverySettings(images=args.images),
        JobSettings(batch_size=4, inversion=InversionSettings(steps=args.steps)), model_id="demo",
    )  # fmt: skip
    print(
        f"discovery: {time.perf_counter() - started:.1f} s; {int(result.candidates['flagged'].sum())} flagged"
    )
    columns = [
        "rank",
        "intervention",
        "kind",
        "target",
        "status",
        "effect",
        "label_association",
        "data_association",
    ]
    with pd.option_context("display.width", 200):
        print(result.candidates[columns].head(8).to_string(index=False))


if __name__ == "__main__":
    main()
