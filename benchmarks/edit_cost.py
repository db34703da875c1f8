"""Cost and fidelity of counterfactual editing, every inversion method side by side on the same images and model.

    python benchmarks/edit_cost.py                          # random tiny preset, 2 synthetic images
    python benchmarks/edit_cost.py --model demo --index phantom/index.csv --images 8   # a trained model
    python benchmarks/edit_cost.py --arch sd15 --device cuda --threads 16 --only 1,15  # SD v1.5 at 512 (GPU)

For each configuration (inversion method, steps, target correction) every image is inverted once and then edited
with one intervention and, separately, with five (the first one the same), in `--prompt-mode` (default: partial).
Reported per configuration:

* ``evals/edit``: UNet evaluations per edit (forward-equivalents per latent: a backward pass counts 2, a batch of
  k latents k), inversion included and shared by the image's edits, for 1 and 5 edits per image;
* ``5x/1x``: the total cost of five edits of an image over the cost of one;
* ``s/edit``: wall seconds per edit (inversion included), for 1 and 5 edits;
* ``rec L1``: mean |reconstruction - image| in [0, 1] intensity (the VAE's own error included);
* ``edit L1``: mean |counterfactual - reconstruction| of the first edit (how much the edit changed);
* ``vs NTI``: mean |counterfactual - NTI+P2P's counterfactual| of the first edit (agreement with the reference);
* ``peak GiB``: on CUDA, the peak GPU memory of the configuration (inversion and both edit runs);
* ``heart``: with ``--heart``, the mean change of the phantom's heart width ratio under ``do(Cardiomegaly=0)``.

The reference is null-text inversion + prompt-to-prompt at 50 steps and 10 inner steps (Mokady et al.'s early stop
included). With the random tiny model the fidelity columns only check the plumbing; a trained model gives them
meaning. One torch thread by default (the machine is shared); timings are pessimistic under load.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from cfaudit.data.interventions import PROMPT_MODES, Intervention, caption_record
from cfaudit.edit.attention import AttentionSettings
from cfaudit.edit.editor import CounterfactualEditor, EditSettings
from cfaudit.edit.inversion import InversionSettings
from cfaudit.edit.job import edit_target

INTERVENTIONS = ["Cardiomegaly=0", "sex=female", "age=80", "race=Black", "Pleural Effusion=1"]
SOURCE = "Chest X-ray of 63-years old white male subject with cardiomegaly"


@dataclass(frozen=True)
class Config:
    label: str
    method: str
    steps: int
    correct_target: bool = True
    inner_steps: int = 10
    cross_fraction: float = 0.8  # prompt-to-prompt cross-attention injection (the default)
    self_fraction: float = 0.4  # self-attention injection (the default)


CONFIGS = [
    Config("nti+p2p (reference)", "nti", 50),
    Config("ddim+p2p", "ddim", 50),
    Config("npi+p2p", "npi", 50),
    Config("direct, Ju et al. (target uncorrected)", "direct", 50, correct_target=False),
    Config("direct", "direct", 50),
    Config("direct", "direct", 20),
    Config("direct", "direct", 10),
    Config("direct", "direct", 15),
    Config("direct, cross-attention 60%", "direct", 15, cross_fraction=0.6),
    Config("direct, cross-attention 60%", "direct", 20, cross_fraction=0.6),
    Config("direct, cross-attention 40%", "direct", 15, cross_fraction=0.4),
    Config("direct, cross 60%, self 20%", "direct", 15, cross_fraction=0.6, self_fraction=0.2),
    Config("direct, cross-attention 30%", "direct", 15, cross_fraction=0.3),
    Config("direct, cross-attention 20%", "direct", 15, cross_fraction=0.2),
    Config("direct (the default)", "direct", 12),
]


def synthetic_images(count: int, size: int) -> torch.Tensor:
    """Smooth chest-like pictures in [-1, 1]: a bright mediastinum between two dark lungs, varying per image."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = []
    for k in range(count):
        width = 0.25 + 0.05 * k
        lungs = torch.exp(-(((x.abs() - 0.45) / 0.25) ** 2 + (y / 0.7) ** 2) * 2)
        heart = torch.exp(-((x / width) ** 2 + ((y - 0.3) / 0.35) ** 2) * 2)
        images.append((0.3 - 0.6 * lungs + 0.5 * heart).clamp(-1, 1))
    return torch.stack(images)[:, None]


def index_images(path: str, count: int, size: int) -> tuple[torch.Tensor, list[str]]:
    from cfaudit.data.images import load_model_tensor
    from cfaudit.data.interventions import source_prompt
    from cfaudit.data.records import DataIndex

    index = DataIndex.read(path)
    table = index.table
    table = table[table["Cardiomegaly"] == 1.0] if (table["Cardiomegaly"] == 1.0).any() else table
    rows = table.head(count)
    images = torch.stack([load_model_tensor(index.image_path(r), size) for _, r in rows.iterrows()])
    return images, [source_prompt(r.to_dict()) for _, r in rows.iterrows()]


def load_editor(model: str | None, device: str, arch: str = "tiny") -> tuple[CounterfactualEditor, str]:
    if model is None:
        from cfaudit.models.random_init import build_random

        return CounterfactualEditor.from_components(
            build_random(arch, seed=0).to(device)
        ), f"random {arch} architecture"
    return CounterfactualEditor.load(model, device=device), model


def to_unit(image: torch.Tensor) -> np.ndarray:
    return ((image.float().cpu().numpy() + 1.0) / 2.0).clip(0.0, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="pipeline folder / demo / hub id (default: random tiny)"
    )
    parser.add_argument("--index", default=None, help="edit images of this index (cardiomegaly cases first)")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--heart", action="store_true", help="report the phantom heart width ratio change")
    parser.add_argument("--only", default=None, help="comma-separated config numbers to run (1-based)")
    parser.add_argument(
        "--arch", default="tiny", help="without --model: random weights of tiny, sd15 or sd21"
    )
    parser.add_argument(
        "--nti-inner", type=int, default=None, help="null-text inner steps (default: each config's)"
    )
    parser.add_argument("--prompt-mode", default="partial", choices=PROMPT_MODES)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    editor, model_name = load_editor(args.model, args.device, args.arch)
    if args.index:
        images, prompts = index_images(args.index, args.images, editor.resolution)
    else:
        images, prompts = synthetic_images(args.images, editor.resolution), [SOURCE] * args.images
    # the interventions' prompts for each image (contrast prompts read each caption for its current values)
    targets = []
    for prompt in prompts:
        record = caption_record(prompt, complete=False)
        targets.append(
            [
                edit_target(Intervention.parse(text).resolve(record), record, args.prompt_mode)
                for text in INTERVENTIONS
            ]
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"edit_cost: model={model_name} images={len(prompts)} resolution={editor.resolution} "
        f"guidance={args.guidance} prompt_mode={args.prompt_mode} device={args.device} threads={args.threads} "
        f"load_before={load:.2f}"
    )
    cuda = str(editor.device).startswith("cuda")
    chosen = [CONFIGS[int(k) - 1] for k in args.only.split(",")] if args.only else CONFIGS
    reference: list[torch.Tensor] | None = None
    header = (
        f"| {'configuration':40} | steps | evals/edit 1 | evals/edit 5 | 5x/1x | s/edit 1 | s/edit 5 "
        f"| rec L1 | edit L1 | vs NTI |"
        + (" peak GiB |" if cuda else "")
        + (" heart |" if args.heart else "")
    )
    print(header)
    print("|" + "|".join("---" for _ in header.split("|")[1:-1]) + "|")
    for config in chosen:
        settings = InversionSettings(
            method=config.method,
            steps=config.steps,
            guidance_scale=args.guidance,
            inner_steps=args.nti_inner or config.inner_steps,
        )
        edit = EditSettings(
            guidance_scale=args.guidance,
            correct_target=config.correct_target,
            attention=AttentionSettings(
                cross_fraction=config.cross_fraction, self_fraction=config.self_fraction
            ),
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        inversions = editor.invert(images.to(editor.device), prompts, settings)
        runs = {}
        for count in (1, 5):
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            results = editor.edit(inversions, prompts, [tg[:count] for tg in targets], edit)
            if cuda:
                torch.cuda.synchronize()
            loop = time.perf_counter() - started
            evals = sum(sum(r.unet_evals) for r in results) / (count * len(results))
            seconds = (sum(inv.seconds for inv in inversions) + loop) / (count * len(results))
            runs[count] = (results, evals, seconds)
        one, five = runs[1][0], runs[5][0]
        rec_l1 = np.mean(
            [
                np.abs(to_unit(r.reconstruction) - to_unit(img)).mean()
                for r, img in zip(one, images, strict=True)
            ]
        )
        edit_l1 = np.mean(
            [np.abs(to_unit(r.counterfactuals[0]) - to_unit(r.reconstruction)).mean() for r in one]
        )
        first = [r.counterfactuals[0] for r in one]
        if config.method == "nti" and reference is None:
            reference = first
        versus = (
            np.mean([np.abs(to_unit(a) - to_unit(b)).mean() for a, b in zip(first, reference, strict=True)])
            if reference is not None
            else float("nan")
        )
        ratio = (runs[5][1] * 5) / runs[1][1]
        line = (
            f"| {config.label:40} | {config.steps:5} | {runs[1][1]:12.0f} | {runs[5][1]:12.0f} | {ratio:5.2f} "
            f"| {runs[1][2]:8.3f} | {runs[5][2]:8.3f} | {rec_l1:6.4f} | {edit_l1:7.4f} | {versus:6.4f} |"
        )
        if cuda:
            line += f" {torch.cuda.max_memory_allocated() / 2**30:8.2f} |"
        if args.heart:
            from cfaudit.data.phantom.measure import heart_width_ratio

            change = np.mean(
                [
                    heart_width_ratio(to_unit(r.counterfactuals[0][0]))
                    - heart_width_ratio(to_unit(r.reconstruction[0]))
                    for r in one
                ]
            )
            line += f" {change:+.3f} |"
        print(line, flush=True)
        del five
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
