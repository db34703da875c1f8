"""How much a model's prompts control what it draws, for several models side by side (the phantom's heart measure).

    python benchmarks/prompt_control.py --model demo --model runs/minilm/unet/model --seeds 32

For each model, images are sampled from the same seeds under pairs of prompts that differ only in cardiomegaly,
and the phantom's heart width ratio (``heart_width_ratio``, read from the pixels) is compared within each pair:

* ``full``: ``Chest X-ray of 65-years old white male subject with cardiomegaly`` vs ``... with no finding``
  (the captions the model was trained on);
* ``partial``: ``Chest X-ray of subject with cardiomegaly`` vs ``Chest X-ray of subject with no cardiomegaly``
  (the paper's partial prompts: only the changed attribute named, its absence as ``no <finding>``).

Reported: the mean ratio under each prompt, the mean difference with a 95% bootstrap interval over seeds, and the
share of seeds where the cardiomegaly prompt drew the larger heart. A model that understands the prompt pair shows
a clearly positive difference; ``partial`` asks whether it understands prompts unlike its training captions.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from cfaudit.data.phantom.measure import heart_width_ratio
from cfaudit.models.loading import load_components
from cfaudit.models.sampling import sample_images

PAIRS = {
    "full": (
        "Chest X-ray of 65-years old white male subject with cardiomegaly",
        "Chest X-ray of 65-years old white male subject with no finding",
    ),
    "partial": ("Chest X-ray of subject with cardiomegaly", "Chest X-ray of subject with no cardiomegaly"),
}


def bootstrap_mean(values: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    generator = np.random.default_rng(seed)
    means = [values[generator.integers(0, len(values), len(values))].mean() for _ in range(rounds)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    print(f"prompt_control: {args.seeds} seeds, {args.steps} DDIM steps, guidance {args.guidance}")
    print("| model | prompts | heart (cardiomegaly) | heart (no) | difference [95% CI] | larger in |")
    print("|---|---|---|---|---|---|")
    for model in args.model:
        components = load_components(model)
        for name, (with_it, without) in PAIRS.items():
            images = sample_images(components, [with_it] * len(seeds) + [without] * len(seeds), seeds + seeds,
                                   steps=args.steps, guidance=args.guidance, batch_size=16)  # fmt: skip
            ratios = np.array([heart_width_ratio(image[0].numpy()) for image in images])
            big, small = ratios[: len(seeds)], ratios[len(seeds) :]
            ok = np.isfinite(big) & np.isfinite(small)
            difference = big[ok] - small[ok]
            low, high = bootstrap_mean(difference)
            print(f"| `{model}` | {name} | {big[ok].mean():.3f} | {small[ok].mean():.3f} | "
                  f"{difference.mean():+.3f} [{low:+.3f}, {high:+.3f}] | {(difference > 0).mean():.0%} of {ok.sum()} |",
                  flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
