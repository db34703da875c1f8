"""Training throughput: cfaudit's training step against a plain reference loop, side by side in one run.

The reference is written the way diffusers' example ``train_text_to_image.py`` trains: every step decodes the
batch's image files and resizes them, encodes them with the VAE, encodes the captions with the (frozen) text
encoder, then runs the UNet forward/backward and the optimizer (fp32, no caching). Ours is
:func:`cfaudit.train.trainer.train` unchanged: latents encoded once (the cache), captions tokenised once and, the
text encoder being frozen, each distinct caption encoded once (the text cache), the same UNet step. Same model (the tiny preset, random weights), same images, same batch size, same optimizer.

    python benchmarks/train_throughput.py                   # tiny preset, 128x128, batch 16, CPU
    python benchmarks/train_throughput.py --steps 10 --batch-size 8 --threads 2
    python benchmarks/train_throughput.py --text-encoder minilm  # a frozen pretrained encoder (the paper's set-up)
    python benchmarks/train_throughput.py --arch sd15 --resolution 512 --batch-size 8 --device cuda \
        --mixed-precision bf16 --images 64       # on a GPU: SD v1.5 architecture, random weights

Prints images/s of both and the speed-up. Both loops use the same number of torch threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


def make_dataset(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` grayscale PNGs (random ellipses, so they are not trivially compressible) and their index."""
    from cfaudit.data.images import save_image
    from cfaudit.data.records import INDEX_COLUMNS, DataIndex, empty_label_row

    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rows = []
    for i in range(n):
        cx, cy, rx, ry = (
            rng.uniform(0.3, 0.7),
            rng.uniform(0.3, 0.7),
            rng.uniform(0.1, 0.3),
            rng.uniform(0.1, 0.3),
        )
        image = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1).astype(np.float32) * 0.7
        image += rng.random((size, size)).astype(np.float32) * 0.2
        save_image(image, folder / "images" / f"{i}.png")
        labels = empty_label_row()
        labels["Cardiomegaly" if i % 2 else "No Finding"] = 1.0
        rows.append({"image_id": str(i), "path": f"images/{i}.png", "subject_id": str(i), "study_id": str(i),
                     "view": "PA", "age": 30 + i % 50, "sex": "Male" if i % 3 else "Female", "race": "White",
                     **labels, "split": "train"})  # fmt: skip
    DataIndex(pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), folder).write(folder / "index.csv")
    return folder / "index.csv"


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def reference_loop(model: Path, index_csv: Path, *, steps: int, warmup: int, batch_size: int, resolution: int,
                   lr: float, seed: int, device: str = "cpu", mixed_precision: str = "no",
                   ) -> tuple[list[float], dict[str, float]]:  # fmt: skip
    """diffusers' example loop, reduced to its per-step work; returns the seconds of each measured step and the
    median seconds of its phases (image decoding + tokenising, VAE encoding, the rest)."""
    from diffusers.optimization import get_scheduler

    from cfaudit.data.images import load_model_tensor
    from cfaudit.data.prompts import record_prompt
    from cfaudit.data.records import DataIndex
    from cfaudit.models.loading import load_components

    torch.manual_seed(seed)
    parts = load_components(model, device=device)
    unet, vae, text_encoder, tokenizer, noise_scheduler = (parts.unet, parts.vae, parts.text_encoder, parts.tokenizer,
                                                          parts.noise_scheduler)  # fmt: skip
    # as the example: frozen VAE / text encoder in the compute dtype, the UNet in fp32 under autocast
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision, torch.float32)
    vae.to(dtype=weight_dtype)
    text_encoder.to(dtype=weight_dtype)
    autocast = torch.autocast(torch.device(device).type, dtype=weight_dtype, enabled=mixed_precision != "no")
    unet.train().requires_grad_(True)
    index = DataIndex.read(index_csv)
    paths, rows = index.image_paths(), [row for _, row in index.table.iterrows()]
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed))
    times: list[float] = []
    phases: dict[str, list[float]] = {"images_and_tokens": [], "vae_encode": []}
    for step in range(warmup + steps):
        started = time.perf_counter()
        batch = [int(order[(step * batch_size + k) % len(order)]) for k in range(batch_size)]
        # the example's dataset transform: decode, resize, crop, normalise - every step
        pixel_values = torch.stack([load_model_tensor(paths[i], resolution) for i in batch])
        pixel_values = pixel_values.expand(-1, vae.config.in_channels, -1, -1).to(device, weight_dtype)
        input_ids = tokenizer([record_prompt(rows[i]) for i in batch], max_length=tokenizer.model_max_length,
                              padding="max_length", truncation=True, return_tensors="pt").input_ids.to(device)  # fmt: skip
        loaded = time.perf_counter()
        # the example's training step
        latents = vae.encode(pixel_values).latent_dist.sample() * vae.config.scaling_factor
        _sync(device)
        encoded = time.perf_counter()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (len(batch),), device=device
        ).long()
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
        encoder_hidden_states = text_encoder(input_ids, return_dict=False)[0]
        with autocast:
            model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
        loss = F.mse_loss(model_pred.float(), noise.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - started)
            phases["images_and_tokens"].append(loaded - started)
            phases["vae_encode"].append(encoded - loaded)
    return times, {name: statistics.median(values) for name, values in phases.items()}


def ours(model: Path, index_csv: Path, out: Path, *, steps: int, warmup: int, batch_size: int, resolution: int,
         lr: float, seed: int, device: str = "cpu", mixed_precision: str = "no") -> tuple[list[float], float]:  # fmt: skip
    """cfaudit's trainer; returns the seconds of each measured step and the one-time latent-cache seconds."""
    from cfaudit.train.config import TrainConfig
    from cfaudit.train.trainer import train

    config = TrainConfig(model=str(model), index=str(index_csv), output_dir=str(out / "run"), resolution=resolution,
                         max_steps=warmup + steps, batch_size=batch_size, learning_rate=lr, seed=seed,
                         checkpoint_every=10**6, latent_cache_dir=str(out / "cache"), log_every=10**6,
                         mixed_precision=mixed_precision, save_dtype="float16")  # fmt: skip
    started = time.perf_counter()
    from cfaudit.models.loading import load_components
    from cfaudit.train.trainer import prepare_data

    prepare_data(
        config, load_components(model, device=device)
    )  # the one-time VAE pass (then read from the cache by train)
    cache_seconds = time.perf_counter() - started
    result = train(config, progress=False)
    return result.step_seconds[warmup:], cache_seconds


def _peak_memory(device: str) -> float | None:
    """Peak GPU memory since the last call, in GiB (None on CPU)."""
    if torch.device(device).type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return round(peak, 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--arch", default="tiny", help="tiny (CPU), or sd15 / sd21 (random weights; for a GPU)"
    )
    parser.add_argument(
        "--text-encoder",
        default="clip",
        choices=("clip", "minilm"),
        help="the frozen text encoder (minilm: pretrained)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (our loop takes accelerate's device)")
    parser.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cfaudit.models.random_init import write_random_pipeline

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = write_random_pipeline(
            root / args.arch, args.arch, seed=0, dtype=torch.float16, text_encoder=args.text_encoder
        )
        index_csv = make_dataset(root / "data", args.images, args.resolution)
        common = {"steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size,
                  "resolution": args.resolution, "lr": 1e-4, "seed": 0, "mixed_precision": args.mixed_precision}  # fmt: skip
        reference, phases = reference_loop(model, index_csv, device=args.device, **common)
        reference_peak = _peak_memory(args.device)
        mine, cache_seconds = ours(model, index_csv, root, **common)
        ours_peak = _peak_memory(args.device)

    def ips(times: list[float]) -> float:
        return args.batch_size / statistics.median(times)

    figures = {
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "batch_size": args.batch_size, "resolution": args.resolution, "steps": args.steps,
        "reference_images_per_s": round(ips(reference), 2), "ours_images_per_s": round(ips(mine), 2),
        "speedup": round(ips(mine) / ips(reference), 2), "latent_cache_seconds_once": round(cache_seconds, 2),
        "reference_s_per_step_median": round(statistics.median(reference), 4),
        "ours_s_per_step_median": round(statistics.median(mine), 4),
        "reference_images_and_tokens_s": round(phases["images_and_tokens"], 4),
        "reference_vae_encode_s": round(phases["vae_encode"], 4),
        "arch": args.arch, "text_encoder": args.text_encoder, "device": args.device, "mixed_precision": args.mixed_precision,
        "reference_peak_gib": reference_peak, "ours_peak_gib": ours_peak,
    }  # fmt: skip
    print(f"{args.arch} ({args.text_encoder} text encoder), {args.device}, {args.mixed_precision}, {args.resolution}x{args.resolution}, batch {args.batch_size}, {args.steps} steps "
          f"(+{args.warmup} warm-up), {figures['machine']}")  # fmt: skip
    print(f"{'loop':<34}{'images/s':>10}{'s/step':>10}")
    print(f"{'reference (diffusers example)':<34}{figures['reference_images_per_s']:>10.2f}"
          f"{figures['reference_s_per_step_median']:>10.3f}")  # fmt: skip
    print(
        f"{'cfaudit train (cached latents+text)':<34}{figures['ours_images_per_s']:>10.2f}{figures['ours_s_per_step_median']:>10.3f}"
    )
    print(f"reference per step: {phases['images_and_tokens']:.3f} s decoding images + tokenising, "
          f"{phases['vae_encode']:.3f} s VAE encoding (both removed by the cache)")  # fmt: skip
    print(
        f"speed-up {figures['speedup']:.2f}x; one-time latent cache {cache_seconds:.1f} s for {args.images} images"
    )
    if reference_peak is not None:
        print(f"peak GPU memory: reference {reference_peak:.1f} GiB, ours {ours_peak:.1f} GiB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
