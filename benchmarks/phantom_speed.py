"""Time phantom generation: by default 10,000 images at 256 x 256 with 2 workers (the target is < 120 s).

    python benchmarks/phantom_speed.py                       # 10,000 images, 256 px, 2 workers
    python benchmarks/phantom_speed.py --n 2000 --workers 1  # a quicker look

Writes into a temporary folder (deleted afterwards unless --keep) and prints one result line with the wall
time, images per second and milliseconds per image per worker. Timings on a shared machine are pessimistic,
so it also measures the CPU time per image of a single in-process run (--cpu-sample images, default 300) and
prints what 10,000 images would take on that many idle cores (CPU time is far less sensitive to other load).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from cfaudit.data.phantom import generate_phantom, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="write here and keep the output")
    parser.add_argument(
        "--cpu-sample", type=int, default=300, help="images for the CPU-time measurement (0: skip)"
    )
    args = parser.parse_args(argv)
    config = load_config(args.config).with_overrides(n=args.n, size=args.size)
    out = args.keep or Path(tempfile.mkdtemp(prefix="phantom-bench-"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    started = time.perf_counter()
    try:
        result = generate_phantom(
            out / "phantom" if args.keep is None else out, config, seed=args.seed, workers=args.workers
        )
        elapsed = time.perf_counter() - started
        size_mb = sum(p.stat().st_size for p in (out).rglob("*") if p.is_file()) / 1e6
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
    cpu_ms = float("nan")
    if args.cpu_sample > 0:
        scratch = Path(tempfile.mkdtemp(prefix="phantom-cpu-"))
        try:
            sample = config.with_overrides(n=args.cpu_sample)
            cpu_started = time.process_time()
            generate_phantom(scratch / "phantom", sample, seed=args.seed, workers=1)
            cpu_ms = 1000 * (time.process_time() - cpu_started) / args.cpu_sample
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    idle_estimate = cpu_ms * 10_000 / 1000 / args.workers
    print(
        f"phantom_speed: n={result.n} size={args.size} workers={args.workers} cpus={os.cpu_count()} "
        f"load_before={load:.2f} wall={elapsed:.1f}s images_per_s={result.n / elapsed:.1f} "
        f"ms_per_image_per_worker={1000 * elapsed * args.workers / result.n:.1f} output_mb={size_mb:.0f} "
        f"cpu_ms_per_image={cpu_ms:.1f} idle_estimate_10000={idle_estimate:.0f}s_on_{args.workers}_cores "
        f"target=<120s for 10000 at 256px"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
