"""``cfaudit evaluate``: Table 2 (LPIPS, L1, CPG per method and intervention), the soundness axioms, realism."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cfaudit.cli.options import Device, Seed


def evaluate_command(
    edits: Annotated[
        list[Path],
        typer.Option(
            "--edits",
            help="Output folder of `cfaudit edit` / `cfaudit scm edit` (or a folder with pairs.csv); repeat.",
        ),
    ],
    classifier: Annotated[Path, typer.Option(help="Folder of `cfaudit classifiers train` (judges CPG).")],
    out: Annotated[
        Path, typer.Option(help="Folder for table2.csv/.md/.png, axioms.csv, scores.csv, realism.csv.")
    ],
    size: Annotated[
        int | None,
        typer.Option(
            help="Both images are compared at SIZE x SIZE pixels, one size for every method (default: the "
            "smallest counterfactual's resolution, so that no method is upsampled)."
        ),
    ] = None,
    bootstrap: Annotated[
        int, typer.Option(help="Bootstrap resamples for the 95% intervals (0: none).")
    ] = 1000,
    seed: Seed = 0,
    axiom_images: Annotated[
        int, typer.Option(help="Images per job for composition and reversibility (they re-run the model).")
    ] = 8,
    model_axioms: Annotated[
        bool | None,
        typer.Option(
            "--model-axioms/--no-model-axioms",
            help="Composition and reversibility by re-running each job's model. Default: where the model "
            "loads (a warning otherwise); --model-axioms makes a model that cannot be loaded an error.",
        ),
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(help="index.csv of the edited images: exact records (default: read from the captions)."),
    ] = None,
    include_null_edits: Annotated[
        bool,
        typer.Option(help="Keep edits whose intervention leaves the record unchanged in Table 2."),
    ] = False,
    device: Device = None,
    realism: Annotated[
        bool | None,
        typer.Option(
            "--realism/--no-realism",
            help="FD and KID of counterfactuals and reconstructions vs real images of the same split "
            "(realism.csv). Default: on when --index is given (it holds the real images).",
        ),
    ] = None,
    realism_features: Annotated[
        str,
        typer.Option(
            help="Features for FD/KID: 'classifier' (the --classifier's trunk) or the path of torchxrayvision "
            "DenseNet-121 weights converted to .safetensors.",
        ),
    ] = "classifier",
    samples: Annotated[
        list[Path] | None,
        typer.Option(
            "--samples",
            help="Folder of sampled PNGs (`cfaudit sample --out`) scored for realism like the edits; repeat.",
        ),
    ] = None,
    real_images: Annotated[
        int, typer.Option(help="At most N real images of the split for FD/KID (a seeded, fixed choice).")
    ] = 500,
) -> None:
    """Score edits side by side: LPIPS, L1 (0-255) and CPG with bootstrap intervals, plus the axioms."""

    from cfaudit.atomic_io import check_output_folder
    from cfaudit.cli.progress import staged_progress
    from cfaudit.evaluate.evaluation import evaluate_edits

    check_output_folder(out, "--out")
    console, errors = Console(), Console(stderr=True)
    command = shlex.join(["cfaudit", *sys.argv[1:]]) if Path(sys.argv[0]).name == "cfaudit" else None
    with staged_progress(errors) as progress:
        result = evaluate_edits(
            edits,
            classifier,
            out,
            size=size,
            n_boot=bootstrap,
            seed=seed,
            axiom_images=axiom_images,
            model_axioms=model_axioms,
            include_null_edits=include_null_edits,
            index=index,
            device=device,
            realism=realism,
            realism_features=realism_features,
            samples=samples or [],
            real_images=real_images,
            command=command,
            progress=progress,
            warn=lambda message: errors.print(f"[yellow]warning:[/] {message}", highlight=False),
        )
    console.print(result.markdown, markup=False, highlight=False, soft_wrap=True)
    for path in result.paths.values():
        console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
