"""Edit effect per UNet evaluation: editing configurations against null-text inversion + P2P on many images.

    python benchmarks/edit_effect.py --model demo --seed 21 --images 24 --out runs/effect/tune \\
        --config nti:50 --config direct:20 --config direct:15:cross=0.4

``benchmarks/edit_cost.py`` counts what each method costs; this script asks whether a cheaper configuration
edits *as much* as the reference. On a freshly drawn phantom (``--seed``; the default config, so the model never
saw any of its images) it takes the first ``--images`` images with cardiomegaly and without pleural effusion (the
phantom's heart measure is unreliable beside an effusion), edits each with ``do(Cardiomegaly=0)`` under every
configuration, and reports per configuration:

* ``evals``: UNet evaluations per edit (inversion included; forward-equivalents per latent);
* ``effect``: mean change of the phantom's heart width ratio, counterfactual minus reconstruction, with a 95%
  bootstrap interval over images (more negative: the heart shrank more);
* ``vs ref``: the effect as a fraction of the reference's (the first ``--config``) on the same images, with a
  paired bootstrap interval: 1.0 is equal effect;
* ``shrunk``: the share of images whose heart shrank;
* ``outside``: mean |counterfactual - reconstruction| (0..1) away from the heart and the devices (ground-truth
  masks, dilated), how much else the edit changed;
* ``rec L1``: mean |reconstruction - image|.

A configuration is ``method:steps`` followed by any of ``cross=F`` (cross-attention injection fraction),
``self=F`` (self-attention injection fraction), ``guidance=G``, ``blend`` (local blending), ``uncorrected``
(Ju et al.'s targets). Per-image rows go to ``OUT/edits.csv``; a configuration already there is not run again
(the script resumes). ``OUT/summary.md`` holds the table.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import ndimage

from cfaudit.atomic_io import write_csv, write_text
from cfaudit.data.adapters import build_index
from cfaudit.data.images import load_model_tensor
from cfaudit.data.interventions import PROMPT_MODES, Intervention, source_prompt
from cfaudit.data.phantom import default_config_path, generate_phantom, heart_width_ratio, load_config
from cfaudit.data.records import DataIndex
from cfaudit.edit.attention import AttentionSettings
from cfaudit.edit.editor import CounterfactualEditor, EditSettings
from cfaudit.edit.inversion import InversionSettings
from cfaudit.edit.job import edit_target

HEART_BIT, DEVICE_BITS = 0, range(10, 16)
INTERVENTION = Intervention.parse("Cardiomegaly=0")


@dataclass(frozen=True)
class EditConfig:
    """One editing configuration, parsed from ``method:steps[:key=value...]``."""

    text: str
    method: str
    steps: int
    guidance: float = 7.5
    attention: AttentionSettings = field(default_factory=AttentionSettings)
    correct_target: bool = True

    @classmethod
    def parse(cls, text: str) -> EditConfig:
        method, steps, *options = text.split(":")
        attention: dict[str, object] = {}
        guidance, correct = 7.5, True
        for option in options:
            key, _, value = option.partition("=")
            if key == "cross":
                attention["cross_fraction"] = float(value)
            elif key == "self":
                attention["self_fraction"] = float(value)
            elif key == "guidance":
                guidance = float(value)
            elif key == "blend":
                attention["local_blend"] = True
            elif key == "uncorrected":
                correct = False
            else:
                raise SystemExit(f"unknown option {option!r} in configuration {text!r}")
        return cls(text, method, int(steps), guidance, AttentionSettings(**attention), correct)  # type: ignore[arg-type]


def phantom_cases(out: Path, seed: int, n: int, count: int) -> tuple[pd.DataFrame, Path]:
    """The first ``count`` images with cardiomegaly and no effusion of a fresh phantom (made once; all unseen).

    Their ``path`` column is made absolute.
    """
    root = out / "phantom"
    if not (root / "index.csv").is_file():
        settings = load_config(default_config_path("default")).with_overrides(n=n, size=128)
        phantom = generate_phantom(root, settings, seed=seed, workers=2)
        build_index("phantom", phantom.out, seed=seed).write(root / "index.csv")
    index = DataIndex.read(root / "index.csv")
    table = index.table
    chosen = table[(table["Cardiomegaly"] == 1) & (table["Pleural Effusion"] != 1)]
    if len(chosen) < count:
        raise SystemExit(f"only {len(chosen)} eligible images in {root}; raise --n")
    chosen = chosen.head(count).copy()
    chosen["path"] = [str(index.image_path(row)) for _, row in chosen.iterrows()]
    return chosen.reset_index(drop=True), root


def outside_mask(root: Path, image_id: str, size: int) -> np.ndarray:
    """True away from the heart and every device (ground truth, dilated by 6 px at 128 px)."""
    labels = np.asarray(Image.open(root / "ground_truth" / f"{image_id}_mask.png")).astype(np.int64)
    near = ((labels >> HEART_BIT) & 1).astype(bool)
    for bit in DEVICE_BITS:
        near |= ((labels >> bit) & 1).astype(bool)
    near = ndimage.binary_dilation(near, iterations=max(1, round(6 * labels.shape[0] / 128)))
    if near.shape[0] != size:
        near = np.asarray(Image.fromarray(near).resize((size, size), Image.Resampling.NEAREST))
    return ~near


def to_unit(image: torch.Tensor) -> np.ndarray:
    return ((image.float().cpu().numpy() + 1.0) / 2.0).clip(0.0, 1.0)


def run_config(
    editor: CounterfactualEditor, config: EditConfig, cases: pd.DataFrame, root: Path, mode: str, batch: int
) -> list[dict[str, object]]:
    settings = InversionSettings(method=config.method, steps=config.steps, guidance_scale=config.guidance)
    edit = EditSettings(
        guidance_scale=config.guidance, attention=config.attention, correct_target=config.correct_target
    )
    rows: list[dict[str, object]] = []
    for start in range(0, len(cases), batch):
        part = cases.iloc[start : start + batch]
        records = [r.to_dict() for _, r in part.iterrows()]
        images = torch.stack([load_model_tensor(r["path"], editor.resolution) for r in records])
        prompts = [source_prompt(r) for r in records]
        targets = [[edit_target(INTERVENTION, r, mode)] for r in records]
        began = time.perf_counter()
        inversions = editor.invert(images.to(editor.device), prompts, settings)
        results = editor.edit(inversions, prompts, targets, edit)
        seconds = (time.perf_counter() - began) / len(records)
        for record, image, result in zip(records, images, results, strict=True):
            reconstruction = to_unit(result.reconstruction[0])
            counterfactual = to_unit(result.counterfactuals[0][0])
            before, after = heart_width_ratio(reconstruction), heart_width_ratio(counterfactual)
            away = outside_mask(root, str(record["image_id"]), reconstruction.shape[0])
            rows.append(
                {
                    "config": config.text,
                    "image_id": record["image_id"],
                    "unet_evals": float(result.unet_evals[0]),
                    "seconds": seconds,
                    "heart_before": before,
                    "heart_after": after,
                    "effect": after - before,
                    "outside_l1": float(np.abs(counterfactual - reconstruction)[away].mean()),
                    "rec_l1": float(np.abs(reconstruction - to_unit(image[0])).mean()),
                }
            )
    return rows


def bootstrap(values: np.ndarray, statistic, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    generator = np.random.default_rng(seed)
    n = len(values)
    draws = [statistic(values[generator.integers(0, n, n)]) for _ in range(rounds)]
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def summary(table: pd.DataFrame, configs: list[str]) -> str:
    reference = table[table["config"] == configs[0]].set_index("image_id")
    lines = [
        "| configuration | evals/edit | vs ref evals | effect [95% CI] | vs ref effect [95% CI] | shrunk | outside L1 | rec L1 | s/edit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in configs:
        rows = table[table["config"] == name].set_index("image_id").loc[reference.index]
        effect = rows["effect"].to_numpy()
        low, high = bootstrap(effect, np.mean)
        paired = np.stack([effect, reference["effect"].to_numpy()], axis=1)
        ratio = effect.mean() / reference["effect"].mean()
        r_low, r_high = bootstrap(paired, lambda d: d[:, 0].mean() / d[:, 1].mean())
        fewer = reference["unet_evals"].mean() / rows["unet_evals"].mean()
        lines.append(
            f"| `{name}` | {rows['unet_evals'].mean():.0f} | {fewer:.1f}x fewer | {effect.mean():+.4f} "
            f"[{low:+.4f}, {high:+.4f}] | {ratio:.2f} [{r_low:.2f}, {r_high:.2f}] | "
            f"{(effect < 0).mean():.0%} | {rows['outside_l1'].mean():.4f} | {rows['rec_l1'].mean():.4f} | "
            f"{rows['seconds'].mean():.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=21, help="seed of the fresh phantom")
    parser.add_argument("--n", type=int, default=1500, help="images in the fresh phantom")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument(
        "--config", action="append", required=True, help="method:steps[:options]; first = reference"
    )
    parser.add_argument("--prompt-mode", default="partial", choices=PROMPT_MODES)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    cases, root = phantom_cases(args.out, args.seed, args.n, args.images)
    editor = CounterfactualEditor.load(args.model, device=args.device)
    csv = args.out / "edits.csv"
    table = pd.read_csv(csv) if csv.is_file() else pd.DataFrame()
    load = os.getloadavg()[0]
    print(f"edit_effect: model={args.model} phantom seed={args.seed} images={len(cases)} "
          f"mode={args.prompt_mode} threads={args.threads} load_before={load:.2f}", flush=True)  # fmt: skip
    for text in args.config:
        done = not table.empty and set(table[table["config"] == text]["image_id"]) >= set(cases["image_id"])
        if done:
            continue
        rows = run_config(editor, EditConfig.parse(text), cases, root, args.prompt_mode, args.batch)
        table = pd.concat([table[table["config"] != text] if not table.empty else table, pd.DataFrame(rows)])
        write_csv(csv, table, index=False)
        print(f"  {text}: effect {np.mean([r['effect'] for r in rows]):+.4f}", flush=True)
    text = summary(table, args.config)
    header = (f"model `{args.model}`, phantom seed {args.seed} (n={args.n}), {len(cases)} images with "
              f"cardiomegaly and no effusion, do(Cardiomegaly=0), {args.prompt_mode} prompts\n\n")  # fmt: skip
    write_text(args.out / "summary.md", header + text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
