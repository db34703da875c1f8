"""One UNet training step in float32 and under CPU bfloat16 autocast, side by side in one run (docs/BENCHMARKS.md,
"Race within the budget, and the race phase beside the pacemaker").

The step is the shipped demo UNet's (tiny-f4) forward, squared-error backward and AdamW update on random latents
and text states at the training batch's shape; nothing else of a training step (text encoder, EMA, data) is in it,
so it bounds what autocast could save. The two alternate, after a warm-up step each, so that a machine's drift
touches both alike.

    python benchmarks/cpu_bf16_step.py --threads 2 --steps 8
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from diffusers import UNet2DConditionModel

from cfaudit.models.shipped_model import DEMO_DIR


def seconds_per_step(unet: UNet2DConditionModel, batch: int, steps: int, bf16: bool, seed: int = 0) -> float:
    """Mean wall seconds of ``steps`` training steps (after one warm-up step) at ``batch`` images."""
    generator = torch.Generator().manual_seed(seed)
    config = unet.config
    size = config.sample_size
    latents = torch.randn(batch, config.in_channels, size, size, generator=generator)
    timesteps = torch.randint(0, 1000, (batch,), generator=generator)
    states = torch.randn(batch, 77, config.cross_attention_dim, generator=generator)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            prediction = unet(latents, timesteps, states).sample
        loss = (prediction.float() - latents).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="float32 then bfloat16, this many times")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    unet = UNet2DConditionModel.from_pretrained(DEMO_DIR, subfolder="unet").float()
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, batch {args.batch_size}")
    results: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for _ in range(args.rounds):
        for name in results:
            results[name].append(seconds_per_step(unet, args.batch_size, args.steps, name == "bfloat16"))
    for name, seconds in results.items():
        print(f"{name}: {min(seconds):.3f} s/step (best of {len(seconds)})")
    print(f"bfloat16 speed-up: {min(results['float32']) / min(results['bfloat16']):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
