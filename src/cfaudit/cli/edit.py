"""``cfaudit edit``: counterfactual edits of one image or a whole split, by intervention (``--do "A=v"``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cfaudit.cli.options import (
    AttributeGuidance,
    Device,
    EditSplit,
    EditSteps,
    Guidance,
    Limit,
    Method,
    Model,
    Seed,
    attribute_scales,
)


def edit_command(
    do: Annotated[
        list[str],
        typer.Option(
            "--do", help="Intervention A=v, e.g. 'Cardiomegaly=0' or 'age=80, sex=female'; repeat for more."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for images, difference maps and edits.csv.")],
    model: Model = "demo",
    index: Annotated[Path | None, typer.Option(help="index.csv of the images to edit.")] = None,
    split: EditSplit = "test",
    limit: Limit = None,
    image: Annotated[Path | None, typer.Option(help="A single image to edit (instead of --index).")] = None,
    prompt: Annotated[str | None, typer.Option(help="The caption that describes --image.")] = None,
    method: Method = "direct",
    steps: EditSteps = None,
    guidance: Guidance = 7.5,
    prompt_mode: Annotated[
        str,
        typer.Option(
            help="partial: name only the changes (the paper); full: whole caption, swapped; contrast: partial, "
            "measured against the partial prompt of the current values (keeps what neither names)."
        ),
    ] = "contrast",  # DEFAULT_PROMPT_MODE of cfaudit.data.interventions, not imported: the CLI starts light
    attribute_guidance: AttributeGuidance = None,
    p2p_mode: Annotated[str, typer.Option(help="Prompt-to-prompt: auto, replace or refine.")] = "auto",
    cross_fraction: Annotated[
        float, typer.Option(help="Fraction of steps with cross-attention injected.")
    ] = 0.8,
    self_fraction: Annotated[
        float, typer.Option(help="Fraction of steps with self-attention injected.")
    ] = 0.4,
    local_blend: Annotated[bool, typer.Option(help="Change only where the changed words attend.")] = False,
    inner_steps: Annotated[int, typer.Option(help="nti: Adam steps per denoising step.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Images edited together (all their edits batched).")] = 1,
    check_identity: Annotated[
        bool,
        typer.Option(help="Also edit with the source prompt; report its distance to the reconstruction."),
    ] = False,
    seed: Seed = 0,
    cache: Annotated[
        Path | None, typer.Option(help="Inversion cache folder (default: OUT/inversions).")
    ] = None,
    device: Device = None,
) -> None:
    """Invert each image once and apply every --do intervention to it; resumable (re-run the same command).

    Runs data-parallel under `accelerate launch` or `torchrun`: each process takes every n-th batch of images and
    writes its own rows into the one --out folder; the main process merges them into edits.csv."""
    from cfaudit.data.edit_jobs import items_from_index
    from cfaudit.data.interventions import parse_interventions
    from cfaudit.edit.attention import AttentionSettings
    from cfaudit.edit.editor import CounterfactualEditor, EditSettings
    from cfaudit.edit.inversion import InversionSettings
    from cfaudit.edit.job import JobSettings, ages_beyond_the_data, item_from_image, run_edit_job
    from cfaudit.errors import CfauditError

    if (index is None) == (image is None):
        raise CfauditError("give either --index (a split of an index) or --image with --prompt")
    if image is not None and prompt is None:
        raise CfauditError("--image needs --prompt, the caption that describes the image")
    interventions = parse_interventions(do)
    inversion = InversionSettings(
        method=method,
        guidance_scale=guidance,
        inner_steps=inner_steps,
        **({"steps": steps} if steps is not None else {}),
    )
    attention = AttentionSettings(
        cross_fraction=cross_fraction, self_fraction=self_fraction, local_blend=local_blend
    )
    settings = JobSettings(
        inversion=inversion,
        edit=EditSettings(guidance_scale=guidance, p2p_mode=p2p_mode, attention=attention),
        prompt_mode=prompt_mode,
        batch_size=batch_size,
        seed=seed,
        identity_check=check_identity,
        attribute_guidance=attribute_scales(attribute_guidance),
    )
    if index is not None:
        from cfaudit.data.records import DataIndex

        data = DataIndex.read(index)
        items = items_from_index(data, split, limit)
        if os.environ.get("RANK", "0") == "0":  # once, not by every process of a launched job
            for line in ages_beyond_the_data(items, interventions, data.table["age"].tolist()):
                Console(stderr=True).print(f"[yellow]warning:[/] {line}")
    else:
        assert image is not None and prompt is not None
        items = [item_from_image(image, prompt)]

    if device is None:
        from cfaudit.edit.job import launch_state

        device = str(launch_state().device)
    editor = CounterfactualEditor.load(model, device=device)
    report = run_edit_job(editor, items, interventions, out, settings, model_id=model, cache_dir=cache)
    if report.rank != 0:  # under accelerate launch / torchrun: the main process merges the rows and reports
        return
    Console().print(report.summary())


def register(app: typer.Typer) -> None:
    app.command("edit")(edit_command)
