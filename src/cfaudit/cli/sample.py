"""``cfaudit sample --model M --prompt TEXT --out DIR``: DDIM + classifier-free guidance, PNGs and a JSON record."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cfaudit.cli.options import Device, Guidance, Model, Seed


def sample_command(
    prompt: Annotated[list[str], typer.Option(help="Text prompt (repeat for several prompts).")],
    out: Annotated[Path, typer.Option(help="Folder for the PNGs and samples.json.")],
    model: Model = "demo",
    n: Annotated[int, typer.Option(help="Images per prompt (seeds seed, seed+1, ...).")] = 1,
    seed: Seed = 0,
    steps: Annotated[int, typer.Option(help="DDIM steps.")] = 50,
    guidance: Guidance = 7.5,
    batch_size: Annotated[int, typer.Option(help="Images per UNet batch.")] = 8,
    device: Device = None,
) -> None:
    """Sample images for one or more prompts and write them as PNGs."""
    from cfaudit.models.sampling import write_samples

    record = write_samples(model, prompt, out, n=n, seed=seed, steps=steps, guidance=guidance,
                           batch_size=batch_size, device=device)  # fmt: skip
    Console().print(f"wrote {len(record['images'])} image(s) to {out}")


def register(app: typer.Typer) -> None:
    app.command("sample")(sample_command)
