"""``cfaudit report``: one self-contained HTML audit report from the outputs of the other commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def report_command(
    sources: Annotated[
        list[Path],
        typer.Option(
            "--from",
            metavar="DIR",
            help="A folder with cfaudit outputs (index.csv, evaluate's table2.csv, edit jobs, discover's "
            "discovery.json), searched 3 levels down; repeat for more.",
        ),
    ],
    out: Annotated[
        Path, typer.Option(metavar="FILE", help="The HTML file to write (images embedded; opens offline).")
    ],
    title: Annotated[str | None, typer.Option(help="Title of the report.")] = None,
    examples: Annotated[
        int, typer.Option(help="Images shown per intervention (the mean map uses all of them).")
    ] = 6,
) -> None:
    """Build the audit report: Table 1, Table 2, example edits, co-change and label matrices, candidates."""
    from cfaudit.report import build_report

    console = Console()
    with console.status("building the report", spinner="dots") as status:
        path = build_report(
            sources,
            out,
            title=title,
            max_examples=examples,
            progress=lambda message: status.update(f"building the report: {message}"),
        )
    size = path.stat().st_size / 1e6
    console.print(f"report: {path} ({size:.1f} MB); open it in any browser")


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
