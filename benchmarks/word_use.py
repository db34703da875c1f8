"""Which words of its captions a model uses: the denoising error under the true caption against the same caption
with one attribute taken away, on held-out images, for several models side by side.

    python benchmarks/word_use.py --model demo --model runs/tx/bias/model --index runs/phantom-s21/index.csv

For each attribute (a finding, ``sex`` or ``race``), up to ``--images`` images of ``--split`` that have it (sex:
any image; race: any image whose race is known) are encoded once; at each of ``--times`` noisy timesteps the same
noise is added and the UNet predicts it under the image's caption and under the caption with the finding left out
(sex: the other sex; race: another group, White for every group but White, whose other is Black). The gap is the mean
squared error under the altered caption minus that under the true one, x1000: positive when the true words help
the model denoise the image, so that it has learnt them; ~0 when the words make no difference to it (an edit that
names them can then do nothing). Cheap (forward passes only, ~1 min per model and attribute on one core), so it
can follow a training run checkpoint by checkpoint; the edit-based measures (``benchmarks/fidelity.py``) say how
much of that reaches an edit.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfaudit.atomic_io import write_json, write_text
from cfaudit.data.images import load_model_tensor
from cfaudit.data.labels import label_value
from cfaudit.data.prompts import record_prompt
from cfaudit.data.records import DataIndex
from cfaudit.data.vocabulary import RACES
from cfaudit.models.loading import load_components
from cfaudit.models.text_encoding import encode_prompts

DEFAULT_ATTRIBUTES = ("sex", "Cardiomegaly", "Pleural Effusion", "Edema", "Atelectasis", "Pneumothorax",
                      "Support Devices")  # fmt: skip
DEFAULT_TIMES = (950, 850, 750, 650, 550, 450, 350)


def clean(record: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}


def altered(record: dict[str, Any], attribute: str) -> dict[str, Any]:
    """The record with ``attribute`` taken away (a finding left out; sex swapped; race named as another group)."""
    if attribute == "sex":
        return {**record, "sex": "Female" if str(record.get("sex")).lower() == "male" else "Male"}
    if attribute == "race":
        return {**record, "race": "Black" if record.get("race") == "White" else "White"}
    return {**record, attribute: None}


def timesteps(text: str) -> tuple[int, ...]:
    """``--times``: comma-separated training timesteps, each in 0..999."""
    try:
        times = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of whole timesteps"
        ) from None
    if not times or any(not 0 <= t <= 999 for t in times):
        raise argparse.ArgumentTypeError(f"{text!r}: every timestep must lie in 0..999")
    return times


def has_attribute(record: dict[str, Any], attribute: str) -> bool:
    if attribute == "sex":
        return True
    if attribute == "race":
        return record.get("race") in RACES
    return label_value(record, attribute) == 1.0


def word_gaps(components: Any, index: DataIndex, attribute: str, images: int, times: tuple[int, ...]) -> dict:
    records = [clean(r) for r in index.table.to_dict(orient="records")]
    chosen = [k for k, r in enumerate(records) if has_attribute(r, attribute)][:images]
    if not chosen:
        return {"images": 0, "gap": float("nan"), "per_time": []}
    pixels = torch.stack([load_model_tensor(index.image_path(k), components.resolution) for k in chosen])
    with torch.no_grad():
        pixels = pixels.repeat(1, components.image_channels, 1, 1)
        latents = components.vae.encode(pixels).latent_dist.mean * components.latent_scale
        true = encode_prompts(
            components.text_encoder, components.tokenizer, [record_prompt(records[k]) for k in chosen]
        )
        other = encode_prompts(components.text_encoder, components.tokenizer,
                               [record_prompt(altered(records[k], attribute)) for k in chosen])  # fmt: skip
        generator = torch.Generator().manual_seed(0)
        per_time, per_image = [], []
        for t in times:
            noise = torch.randn(latents.shape, generator=generator)
            steps = torch.full((len(chosen),), t, dtype=torch.long)
            noisy = components.noise_scheduler.add_noise(latents, noise, steps)
            errors = [
                ((components.unet(noisy, steps, encoder_hidden_states=h).sample - noise) ** 2).mean(
                    dim=(1, 2, 3)
                )
                for h in (true, other)
            ]
            gap = (errors[1] - errors[0]) * 1000
            per_time.append(float(gap.mean()))
            per_image.append(gap)
    by_image = torch.stack(per_image).mean(dim=0).numpy()
    low, high = bootstrap(by_image)
    return {"images": len(chosen), "gap": float(by_image.mean()), "ci": [low, high], "per_time": per_time}


def bootstrap(values: np.ndarray, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    generator = np.random.default_rng(seed)
    means = [values[generator.integers(0, len(values), len(values))].mean() for _ in range(rounds)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="demo, a pipeline folder; repeat")
    parser.add_argument("--index", required=True, help="index.csv of held-out images (e.g. a fresh phantom)")
    parser.add_argument("--split", default="all")
    parser.add_argument("--attribute", action="append", default=None, help="a finding, sex or race; repeat")
    parser.add_argument(
        "--times", type=timesteps, default=DEFAULT_TIMES, help="comma-separated timesteps (0..999)"
    )
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="folder for word_use.md and word_use.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    index = DataIndex.read(args.index).split(args.split)
    attributes = args.attribute or list(DEFAULT_ATTRIBUTES)
    times: tuple[int, ...] = args.times
    results: dict[str, dict[str, Any]] = {}
    lines = ["| model | " + " | ".join(attributes) + " |", "|---" * (len(attributes) + 1) + "|"]
    for model in args.model:
        components = load_components(model)
        results[model] = {a: word_gaps(components, index, a, args.images, times) for a in attributes}
        cells = [
            f"{r['gap']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] (n={r['images']})"
            if r["images"]
            else "-"
            for r in results[model].values()
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        record = {
            "index": str(args.index),
            "split": args.split,
            "times": list(times),
            "results": results,
        }
        write_json(args.out / "word_use.json", record)
        write_text(args.out / "word_use.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
