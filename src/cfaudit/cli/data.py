"""``cfaudit data index`` (any source -> index.csv + index.json + splits.csv) and ``cfaudit data stats`` (Table 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cfaudit.cli.options import (
    Blank,
    BlankOverride,
    Seed,
    Uncertain,
    UncertainOverride,
    command_group,
    label_policy_overrides,
)

data_app = command_group("data", "Build the normalised index of a data set and describe it.")


@data_app.command("index")
def index_command(
    source: Annotated[str, typer.Option(help="Data set kind: mimic, chexpert, csv or phantom.")],
    root: Annotated[Path, typer.Option(help="Folder of the data set (image paths start here).")],
    out: Annotated[Path, typer.Option(help="index.csv to write (index.json and splits.csv go beside it).")],
    mimic_iv: Annotated[
        Path | None, typer.Option(help="mimic: MIMIC-IV folder with patients/admissions (or hosp/, core/).")
    ] = None,
    columns: Annotated[Path | None, typer.Option(help="csv: column map, YAML or JSON.")] = None,
    demographics: Annotated[
        Path | None,
        typer.Option(help="chexpert: CHEXPERT DEMO .xlsx or a CSV of it (default: found in root)."),
    ] = None,
    seed: Seed = 0,
    fractions: Annotated[str, typer.Option(help="Train,val,test fractions of subjects.")] = "0.7,0.15,0.15",
    splits: Annotated[Path | None, typer.Option(help="Apply a saved splits.csv (subject_id,split).")] = None,
    split_source: Annotated[str, typer.Option(help="random, or official (MIMIC's split file).")] = "random",
    on_bad_row: Annotated[
        str, typer.Option(help="error: stop at the first bad row; skip: count and skip.")
    ] = "error",
    check_images: Annotated[
        str, typer.Option(help="exists (stat each file), decode (read each), none.")
    ] = "exists",
    uncertain: Uncertain = "negative",
    blank: Blank = "negative",
) -> None:
    """Read a data set, assign patient-level splits, write index.csv + index.json + splits.csv."""
    from cfaudit.data.adapters import SOURCES, SPLIT_SOURCES, build_index, check_index_output, write_index
    from cfaudit.data.adapters.common import check_choice, check_reading_options
    from cfaudit.data.labels import LabelPolicy
    from cfaudit.data.splits import parse_fractions

    check_choice("--source", source, SOURCES)
    check_choice("--split-source", split_source, SPLIT_SOURCES)
    check_reading_options(on_bad_row, check_images)
    policy = LabelPolicy(uncertain=uncertain, blank=blank)  # type: ignore[arg-type]
    check_index_output(out)  # before the (possibly long) read: a bad --out fails now, having written nothing
    index = build_index(
        source,
        root,
        seed=seed,
        fractions=parse_fractions(fractions),
        splits=splits,
        split_source=split_source,
        label_policy=policy,
        mimic_iv=mimic_iv,
        columns=columns,
        demographics=demographics,
        on_bad_row=on_bad_row,
        check_images=check_images,
    )
    written = write_index(index, out)
    _print_summary(index.meta, written)


def _print_summary(meta: dict, written: dict[str, Path]) -> None:
    console = Console()
    summary = meta["summary"]
    console.print(
        f"{meta['source']}: {summary['rows_read']} rows read, {summary['rows_kept']} kept, "
        f"{summary['rows_skipped']} skipped",
        highlight=False,
    )
    for reason, entry in summary["skipped"].items():
        example = f" (e.g. {entry['examples'][0]})" if entry["examples"] else ""
        console.print(f"  skipped {entry['count']}: {reason}{example}", highlight=False, soft_wrap=True)
    for warning in summary["warnings"]:
        console.print(f"  [yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    counts = meta["split"]["counts"]
    parts = ", ".join(f"{name} {c['images']} images / {c['subjects']} subjects" for name, c in counts.items())
    console.print(f"split ({meta['split']['method']}): {parts}", highlight=False)
    console.print(
        f"wrote {written['index']}, {written['meta'].name}, {written['splits'].name}", highlight=False
    )


@data_app.command("stats")
def stats_command(
    index: Annotated[Path, typer.Argument(help="index.csv written by `cfaudit data index`.")],
    fmt: Annotated[str, typer.Option("--format", help="table (rich), csv or markdown.")] = "table",
    uncertain: UncertainOverride = None,
    blank: BlankOverride = None,
    finding: Annotated[str, typer.Option(help="Finding reported beside sex and race.")] = "Pleural Effusion",
) -> None:
    """The paper's Table 1 (sex, pleural effusion, race, samples per split) for an index."""
    from cfaudit.data.adapters.common import check_choice
    from cfaudit.data.labels import LabelPolicy
    from cfaudit.data.records import DataIndex
    from cfaudit.data.stats import FORMATS, format_table1, paper_rows, table1
    from cfaudit.data.vocabulary import canonical_finding

    check_choice("--format", fmt, FORMATS)
    data = DataIndex.read(index)
    policy = label_policy_overrides(data.meta.get("label_policy"), uncertain, blank)
    frame = table1(data, LabelPolicy.from_dict(policy), finding=canonical_finding(finding))
    console = Console()
    if fmt != "table":
        typer.echo(format_table1(frame, fmt), nl=False)
        return
    header, rows = paper_rows(frame)
    table = Table(title=f"{index.name}: {len(data)} images")
    for position, name in enumerate(header):
        table.add_column(name, justify="left" if position == 0 else "right")
    for cells in rows:
        table.add_row(*cells)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
