"""Seconds a step of the demo recipe, and a digest of the weights it trains, for comparing two checkouts
(docs/BENCHMARKS.md, "Time back for `demo --train`"). Run once per checkout, alternating:

    PYTHONPATH=<checkout>/src python benchmarks/demo_recipe_step.py --out runs/step-a --init INIT --index INDEX
    PYTHONPATH=<checkout>/src python benchmarks/demo_recipe_step.py --digest --out runs/digest-a

``--init``: a random tiny-f4 pipeline (``cfaudit models init-random --arch tiny-f4 --vae tiny-f4``); ``--index``: a
phantom index. ``--digest`` instead trains both phases of the recipe at scale 0.01 on an 80-image phantom (seed 1,
one process) and prints the SHA-256 of every UNet and text-encoder tensor: equal digests, equal training.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
from pathlib import Path

import torch


def step_seconds(out: Path, init: str, index: str, steps: int) -> None:
    from cfaudit.demo_training import DEMO_F4_RECIPE
    from cfaudit.train.config import TrainConfig
    from cfaudit.train.trainer import train

    recipe = {**DEMO_F4_RECIPE, "max_steps": steps, "checkpoint_every": 10 * steps, "lr_warmup_steps": 5}
    config = TrainConfig(
        model=init, index=index, split="train", output_dir=str(out), seed=0, sample_every=0, **recipe
    )
    started = time.perf_counter()
    result = train(config, progress=False)
    total = time.perf_counter() - started
    print(
        f"median step {statistics.median(result.step_seconds[5:]):.3f} s; {steps} steps and setup {total:.1f} s"
    )


def weight_digest(out: Path) -> None:
    from safetensors.torch import load_file

    from cfaudit.demo import run_demo
    from cfaudit.demo_training import train_demo_editor

    data = run_demo(out / "data", n=80, size=128, seed=1, workers=1, until="data")
    model, _ = train_demo_editor(
        out / "models", data.index, seed=1, tell=lambda *a: None, scale=0.01, parallel=False
    )
    for part in ("unet", "text_encoder"):
        digest = hashlib.sha256()
        for path in sorted((Path(model) / part).glob("*.safetensors")):
            for name, tensor in sorted(load_file(str(path)).items()):
                digest.update(name.encode())
                digest.update(tensor.float().numpy().tobytes())
        print(part, digest.hexdigest()[:16])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--init", help="a random tiny-f4 pipeline folder (step timing)")
    parser.add_argument("--index", help="a phantom index.csv (step timing)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--digest", action="store_true", help="train both phases at scale 0.01; print digests"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.digest:
        weight_digest(args.out)
    elif args.init and args.index:
        step_seconds(args.out, args.init, args.index, args.steps)
    else:
        parser.error("give --init and --index (step timing) or --digest")


if __name__ == "__main__":
    main()
