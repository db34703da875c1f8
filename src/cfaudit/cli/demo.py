"""``cfaudit demo``: the README's main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command(name="demo")(demo)


def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for everything the demo makes (resumable)."),
    n: int = typer.Option(2000, "--n", help="Number of phantom images."),
    size: int | None = typer.Option(
        None, "--size", help="Phantom image size in pixels (default: the config's)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the phantom and the split."),
    workers: int = typer.Option(2, "--workers", help="Worker processes for the phantom."),
) -> None:
    """Run the whole tool on the embedded default (synthetic phantom data); prints where the results are."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
    from rich.table import Table

    from cfaudit.data.stats import paper_rows
    from cfaudit.demo import run_demo

    console = Console()
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("phantom", total=n)
        result = run_demo(
            out, n=n, size=size, seed=seed, workers=workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
    header, rows = paper_rows(result.table1)
    table = Table(title="Table 1 (paper layout) of the demo data set")
    for column in header:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"phantom data set: {result.phantom}")
    console.print(f"index: {result.index} (splits.csv beside it)")
    console.print(f"contact sheet: {result.contact_sheet}")
