"""``cfaudit phantom``: generate the synthetic chest X-ray data set with planted hidden relations."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from cfaudit.cli.options import Seed


def register(app: typer.Typer) -> None:
    app.command(name="phantom")(phantom)


def phantom(
    out: Path = typer.Option(
        ..., "--out", help="Folder to write (created; re-running with the same settings resumes)."
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="Phantom YAML config (default: the shipped default.yaml; 'null' for null.yaml).",
    ),
    n: int | None = typer.Option(None, "--n", help="Number of images (overrides population.n)."),
    size: int | None = typer.Option(
        None, "--size", help="Image width = height in pixels (overrides image.size)."
    ),
    seed: Seed = 0,
    workers: int = typer.Option(
        min(4, os.cpu_count() or 1), "--workers", help="Worker processes (the output does not depend on it)."
    ),
) -> None:
    """Generate synthetic frontal chest X-rays, metadata.csv, ground truth and a contact sheet in OUT."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from cfaudit.atomic_io import check_output_folder
    from cfaudit.data.phantom import default_config_path, generate_phantom, load_config

    check_output_folder(out, "--out")
    if config is not None and str(config) in ("default", "null"):
        config = default_config_path(str(config))
    settings = load_config(config).with_overrides(n=n, size=size)
    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("phantom", total=settings.population.n)
        result = generate_phantom(
            out,
            settings,
            seed=seed,
            workers=workers,
            progress=lambda done, total: bar.update(task, completed=done),
        )
    typer.echo(
        f"wrote {result.n} images to {result.out} ({result.rendered} rendered now, "
        f"{result.n - result.rendered} already there) in {result.elapsed_s:.1f} s; "
        f"metadata: {result.out / 'metadata.csv'}"
    )
