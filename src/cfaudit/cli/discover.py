"""``cfaudit discover``: systematic edits, what else they change, ranked against controls."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console

from cfaudit.cli.options import AttributeGuidance, Device, Guidance, Method, Model, Seed, attribute_scales


def discover_command(
    index: Annotated[Path, typer.Option(help="index.csv of the data set (cfaudit data index).")],
    out: Annotated[Path, typer.Option(help="Folder for candidates.json/csv, tables, maps and the edits.")],
    model: Model = "demo",
    classifier: Annotated[
        str,
        typer.Option(
            help="Folder from `cfaudit classifiers train`, or demo (the shipped phantom classifier)."
        ),
    ] = "demo",
    do: Annotated[
        list[str] | None,
        typer.Option(
            help="Intervention A=v (repeat); default: every finding added and removed, sex, race, age +-20."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split whose images are edited.")] = "test",
    label_split: Annotated[str, typer.Option(help="Split whose labels give the label statistics.")] = "train",
    data_split: Annotated[
        str,
        typer.Option(
            help="Split whose real images give the data association (not the classifier's train split)."
        ),
    ] = "val",
    images: Annotated[
        str,
        typer.Option(
            help="Eligible images per intervention, or auto: as many as --detect-effect needs (80% power)."
        ),
    ] = "16",
    method: Method = "direct",
    steps: Annotated[
        int | None, typer.Option(help="DDIM steps (default: 20 for direct, 50 for the others).")
    ] = None,
    guidance: Guidance = 7.5,
    attribute_guidance: AttributeGuidance = None,
    prompt_mode: Annotated[
        str,
        typer.Option(
            help="full (default: every other attribute stays named), partial (the paper's) or contrast (partial, "
            "measured against the partial prompt of the current values)."
        ),
    ] = "full",
    batch_size: Annotated[int, typer.Option(help="Images inverted and edited together.")] = 4,
    margin: Annotated[
        float, typer.Option(help="Head changes must beat the controls by this (probability).")
    ] = 0.1,
    region_margin: Annotated[
        float, typer.Option(help="Change clusters must beat the controls by this share of images.")
    ] = 0.2,
    alpha: Annotated[
        float, typer.Option(help="Flag only relations whose q-value (false discovery rate) is at most this.")
    ] = 0.1,
    fdr: Annotated[
        str,
        typer.Option(help="q-values: bh (Benjamini-Hochberg) or by (Benjamini-Yekutieli, any dependence)."),
    ] = "bh",
    detect_effect: Annotated[
        float,
        typer.Option(
            help="With --images auto: the share of images a change must show in to be detected (0.3: 30%)."
        ),
    ] = 0.3,
    edit_budget: Annotated[
        int | None, typer.Option(help="With --images auto: at most this many edits in all.")
    ] = None,
    regions: Annotated[
        Path | None, typer.Option(help="YAML of expected regions per attribute (default: the shipped atlas).")
    ] = None,
    seed: Seed = 0,
    device: Device = None,
    top: Annotated[int, typer.Option(min=0, help="Candidates printed at the end.")] = 5,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Print the number of edits, UNet evaluations and the projected time; edit and write nothing."
        ),
    ] = False,
    seconds_per_eval: Annotated[
        float | None,
        typer.Option(
            help="With --dry-run: seconds per UNet evaluation measured on the device, to project time."
        ),
    ] = None,
) -> None:
    """Edit many images with many interventions and rank what else changes (resumable: re-run to continue).

    Runs data-parallel under `accelerate launch` or `torchrun`: every process edits its share into one --out
    folder (nodes share it on a common file system), then the main process analyses the edits once."""
    from contextlib import nullcontext

    from rich.console import Console

    from cfaudit.cli.progress import staged_progress
    from cfaudit.discover.api import discover, discovery_cost

    console = Console()
    options = dict(
        split=split, label_split=label_split, data_split=data_split, images=images, method=method, steps=steps,
        guidance=guidance, attribute_guidance=attribute_scales(attribute_guidance), prompt_mode=prompt_mode,
        batch_size=batch_size, margin=margin, region_margin=region_margin, alpha=alpha, fdr=fdr,
        detect_effect=detect_effect, edit_budget=edit_budget, regions=regions, seed=seed, device=device,
    )  # fmt: skip
    if dry_run:
        cost = discovery_cost(model, index, do, seconds_per_eval=seconds_per_eval, **options)
        for line in cost.lines():
            console.print(line, highlight=False)
        console.print("dry run: nothing was edited or written", highlight=False)
        return
    main = _is_main_process()
    with staged_progress(console) if main else nullcontext(None) as progress:
        result = discover(model, index, classifier, out, do, progress=progress, **options)
    if result is None:  # another process of a launch: its edits are in, the main process analyses them
        return
    print_candidates(console, result.candidates, top)
    print_power(console, result.power)
    console.print(
        f"candidates: {out / 'candidates.csv'} ({int(result.candidates['flagged'].sum())} flagged at q <= {alpha})"
    )


def _is_main_process() -> bool:
    """Rank 0 of a launch (``RANK`` as torchrun and accelerate set it), or a single process."""
    import os

    return os.environ.get("RANK", "0") == "0"


def print_candidates(console: Console, candidates: pd.DataFrame, top: int) -> None:
    """The first ``top`` candidates as numbered sentences."""
    if candidates.empty:
        console.print("no candidate relation: nothing the edits changed beat the controls")
        return
    for row in candidates.head(top).itertuples(index=False):
        mark = "[bold red]flagged[/]" if row.flagged else f"[dim]{row.status}[/]"
        console.print(f"{row.rank}. {mark} {row.description}", highlight=False)


def print_power(console: Console, power: pd.DataFrame) -> None:
    """One line on what the run could have detected: the range of its per-intervention detectable shares."""
    if power.empty:
        return
    shares = power["detectable_share"].dropna()
    if shares.empty:
        return
    undetectable = int((shares == float("inf")).sum())
    finite = shares[shares != float("inf")]
    said = f"{finite.min():.0%} to {finite.max():.0%} of images" if not finite.empty else "none"
    console.print(
        f"detectable with 80% power (power.csv): a change at one place in {said}"
        + (f"; {undetectable} intervention(s) have too few images to detect any" if undetectable else ""),
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.command("discover")(discover_command)
