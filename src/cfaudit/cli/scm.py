"""``cfaudit scm train`` and ``cfaudit scm edit``: the causal-model baseline (graph mechanisms + conditional HVAE)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cfaudit.cli.options import Device, EditSplit, Limit, Resume, Seed, SeedOverride, command_group

scm_app = command_group(
    "scm",
    "The SCM baseline: a causal graph with learned mechanisms and a conditional HVAE; counterfactuals by do().",
)


@scm_app.command("train")
def train_command(
    index: Annotated[Path, typer.Option(help="index.csv to train on (made by `cfaudit data index`).")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints/ and, at the end, model/.")],
    preset: Annotated[
        str, typer.Option(help="small (64 px, CPU minutes) or mimic192 (192 px, ~8M parameters).")
    ] = "small",
    steps: Annotated[
        int | None, typer.Option(help="Training steps of the image model (overrides the preset).")
    ] = None,
    resume: Resume = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML overriding the preset's keys (see cfaudit.scm.config).")
    ] = None,
    graph: Annotated[
        Path | None, typer.Option(help="Causal graph YAML (default: sex, race, age -> ...).")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split to train on (default: train).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Images per step (overrides the preset).")] = None,
    seed: SeedOverride = None,
    device: Device = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice).")] = None,
) -> None:
    """Fit the graph's mechanisms, then train the image HVAE; resumable with --resume latest."""
    from cfaudit.scm.config import load_config
    from cfaudit.scm.train import train_scm

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = {"index": str(index), "output_dir": str(out), "max_steps": steps, "graph_file": str(graph) if graph else None,
                 "split": split, "batch_size": batch_size, "seed": seed, "device": device, "threads": threads}  # fmt: skip
    settings = load_config(preset, config, overrides)
    result = train_scm(settings, resume=resume)
    console = Console()
    if result.model_dir is None:
        console.print(f"stopped at step {result.step}; continue with --resume latest")
        return
    figures = result.evaluation
    extra = (f"; val {figures['val_bits_per_dim']:.3f} bits/dim, reconstruction L1 {figures['val_reconstruction_l1']:.4f}"
             if figures else "")  # fmt: skip
    console.print(f"trained {result.step} steps ({result.skipped} updates skipped) in {result.seconds:.0f} s{extra}; "
                  f"model: {result.model_dir}")  # fmt: skip


@scm_app.command("edit")
def edit_command(
    model: Annotated[
        Path,
        typer.Option(
            help="Run folder of `cfaudit scm train` (or its model/ folder), or demo (the shipped one)."
        ),
    ],
    index: Annotated[
        Path, typer.Option(help="index.csv of the images to edit (their records are the parents).")
    ],
    do: Annotated[
        list[str],
        typer.Option("--do", help="Intervention A=v on graph nodes, e.g. 'age=80' or 'sex=female'; repeat."),
    ],
    out: Annotated[Path, typer.Option(help="Folder for images, difference maps, edits.csv.")],
    split: EditSplit = "test",
    limit: Limit = None,
    latents: Annotated[
        str, typer.Option(help="noise: keep each latent's prior noise (default); fixed: keep the latents.")
    ] = "noise",
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 8,
    seed: Seed = 0,
    device: Device = None,
) -> None:
    """Counterfactuals by abduction -> do() -> prediction, written like `cfaudit edit` (edits.csv); resumable."""
    from cfaudit.data.edit_jobs import items_from_index
    from cfaudit.data.interventions import parse_interventions
    from cfaudit.data.records import DataIndex
    from cfaudit.devices import resolve_device
    from cfaudit.scm.job import ScmEditSettings, run_scm_edit_job
    from cfaudit.scm.model import CausalImageModel

    interventions = parse_interventions(do)
    settings = ScmEditSettings(latents=latents, batch_size=batch_size, seed=seed)
    loaded = CausalImageModel.load(model, device=resolve_device(device))
    items = items_from_index(DataIndex.read(index), split, limit, policy=loaded.label_policy)
    report = run_scm_edit_job(loaded, items, interventions, out, settings, model_id=str(model))
    Console().print(report.summary())


def register(app: typer.Typer) -> None:
    app.add_typer(scm_app)
