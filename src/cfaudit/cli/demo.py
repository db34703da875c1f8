"""``cfaudit demo``: the README's main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer

from cfaudit.cli.options import Seed


def register(app: typer.Typer) -> None:
    app.command(name="demo")(demo)


def demo(
    out: Path = typer.Option(Path("demo"), "--out", help="Folder for everything the demo makes (resumable)."),
    train: bool = typer.Option(
        False,
        "--train",
        help="Fit the diffusion model, classifier and SCM here instead of the shipped ones (41 min on 2 cores, "
        'under an hour on slower ones: docs/BENCHMARKS.md, "The quick recipe made robust").',
    ),
    recipe: str | None = typer.Option(
        None,
        "--recipe",
        "--arch",
        help="With --train: tiny-f4 (default: 64 px, then 128 px; fits an hour on slow cores; no race words), "
        "tiny-f4-shipped (the shipped model's: stronger heart and race words, about 2.5x as long) or tiny (8x "
        "autoencoder; coarser and about 3x faster).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="A diffusion model to edit with instead of the shipped one (a pipeline folder or hub id: e.g. a "
        "model you trained on the phantom), beside the shipped classifier and SCM; not with --train.",
    ),
    n: int = typer.Option(2000, "--n", help="Number of phantom images."),
    size: int = typer.Option(
        128, "--size", help="Phantom image size in pixels (the demo model works at 128)."
    ),
    seed: Seed = 0,
    config: str | None = typer.Option(
        None,
        "--config",
        help="Phantom config: default, null or a YAML file (planted relations of your own; configs/phantom/).",
    ),
    workers: int = typer.Option(2, "--workers", help="Worker processes for the phantom."),
    edit_images: int = typer.Option(16, "--edit-images", help="Test images edited for Table 2."),
    images: str = typer.Option(
        "auto",
        "--images",
        help="Images per intervention in the discovery, or auto: as many as --detect-effect needs.",
    ),
    detect_effect: float = typer.Option(
        0.5,
        "--detect-effect",
        help="With --images auto: the share of images a change must show in to be found (80% power).",
    ),
    do: list[str] | None = typer.Option(
        None,
        "--do",
        help="Discovery interventions A=v (repeat; default: cardiomegaly, pleural effusion, support devices, sex, "
        "race White/Black, age +-20, each way).",
    ),
    until: str = typer.Option(
        "report", "--until", help="Stop after: data, edit, evaluate, discover or report."
    ),
) -> None:
    """Run the whole tool on the embedded default (synthetic phantom data) and print where the results are."""
    from rich.console import Console
    from rich.table import Table

    from cfaudit.cli.discover import print_candidates
    from cfaudit.cli.progress import staged_progress
    from cfaudit.data.stats import paper_rows
    from cfaudit.demo import run_demo

    console = Console()
    with staged_progress(console) as progress:
        result = run_demo(
            out, n=n, size=size, seed=seed, workers=workers, config=_phantom_config(config), train=train, recipe=recipe,
            model=model, edit_images=edit_images, discover_images=images, discover_effect=detect_effect, discover_do=do, until=until, progress=progress,
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
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if result.table2_markdown:
        console.print("\nTable 2 (LPIPS, L1, CPG; mean [95% CI]):")
        console.print(result.table2_markdown, highlight=False, markup=False)
    if result.evaluation is not None:
        console.print(f"evaluation: {result.evaluation}")
    if result.candidates is not None:
        console.print("\nTop discoveries:")
        print_candidates(console, result.candidates, 3)
        console.print(f"discovery: {result.discovery}")
    if result.report is not None:
        console.print(f"\n[bold]report: {result.report}[/]")


def _phantom_config(config: str | None) -> Path | None:
    """``default``/``null`` name a shipped phantom config; anything else is a YAML file."""
    from cfaudit.data.phantom import default_config_path

    if config is None:
        return None
    return default_config_path(config) if config in ("default", "null") else Path(config)
