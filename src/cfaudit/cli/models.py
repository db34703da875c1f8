"""``cfaudit models ...``: write random pipelines, fetch the tokenizer, describe a model, train the tiny VAE, write
model cards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cfaudit.cli.options import Model, Resume, Seed, ShowProgress, command_group

models_app = command_group("models", "Diffusion model folders: create, inspect, prepare.")


@models_app.command("init-random")
def init_random_command(
    out: Annotated[Path, typer.Option(help="Folder to write (a diffusers StableDiffusionPipeline layout).")],
    arch: Annotated[
        str,
        typer.Option(
            help="sd15 (SD v1.5), sd21 (SD 2.1, v-prediction), tiny-f4 (the demo's CPU preset) or tiny (coarser, faster)."
        ),
    ] = "sd15",
    seed: Seed = 0,
    dtype: Annotated[
        str, typer.Option(help="Stored precision: float32 or float16 (half the disk).")
    ] = "float32",
    text_encoder: Annotated[
        str,
        typer.Option(
            help="clip (random, SD's architecture) or minilm (the frozen pretrained MiniLM-L6; "
            "`cfaudit assets fetch --minilm` first)."
        ),
    ] = "clip",
    vae: Annotated[
        str | None,
        typer.Option(
            help="Take a trained VAE instead of a random one: a model's (demo, a folder) or a preset's shipped "
            "autoencoder (tiny-f4 or tiny)."
        ),
    ] = None,
) -> None:
    """Write a randomly initialised pipeline with the exact architecture of ARCH (no download needed).

    With --text-encoder minilm and --vae, it is the start of a UNet trained under a frozen pretrained text
    encoder on the same latents as the demo model (configs/train/demo_minilm.yaml).
    """
    import torch

    from cfaudit.errors import CfauditError
    from cfaudit.models.random_init import write_random_pipeline

    dtypes = {"float32": torch.float32, "float16": torch.float16}
    if dtype not in dtypes:
        raise CfauditError(f"--dtype {dtype!r} is not one of {', '.join(dtypes)}")
    folder = write_random_pipeline(
        out, arch, seed=seed, dtype=dtypes[dtype], text_encoder=text_encoder, vae_from=vae
    )
    Console().print(f"wrote random {arch} pipeline ({text_encoder} text encoder) to {folder}")


@models_app.command("fetch-tokenizer")
def fetch_tokenizer_command(
    wheel: Annotated[
        Path | None, typer.Option(help="Use this open_clip_torch wheel instead of downloading it.")
    ] = None,
) -> None:
    """Build SD v1.5's CLIP tokenizer (vocab.json, merges.txt) into the cache from the open_clip_torch wheel."""
    from cfaudit.models.tokenizer import sd_tokenizer_dir

    Console().print(f"SD tokenizer in {sd_tokenizer_dir(wheel=wheel)}")


@models_app.command("info")
def info_command(
    model: Model = "demo",
) -> None:
    """Print a model's parts, sizes, resolution, prediction type and attention layer counts."""
    from rich.table import Table

    from cfaudit.models.loading import load_components

    components = load_components(model)
    table = Table(title=f"model {model}")
    table.add_column("part")
    table.add_column("class")
    table.add_column("parameters", justify="right")
    for name in ("unet", "vae", "text_encoder"):
        part = getattr(components, name)
        table.add_row(name, type(part).__name__, f"{sum(p.numel() for p in part.parameters()):,}")
    console = Console()
    console.print(table)
    processors = components.unet.attn_processors
    cross = sum(1 for key in processors if ".attn2." in key)
    console.print(
        f"resolution {components.resolution} (latents {components.resolution // components.vae_scale_factor}), "
        f"prediction {components.prediction_type}, attention layers: {len(processors) - cross} self + {cross} cross, "
        f"vocabulary {len(components.tokenizer)} tokens"
    )


@models_app.command("train-vae")
def train_vae_command(
    config: Annotated[Path, typer.Option(help="YAML config (see configs/train/tiny_vae.yaml).")],
    resume: Resume = None,
    progress: ShowProgress = True,
) -> None:
    """Train a pipeline's VAE on a data index (for the tiny presets) and write the pipeline with it."""
    from cfaudit.cli.train import log_to_console
    from cfaudit.train.config import VaeTrainConfig
    from cfaudit.train.vae import train_vae

    log_to_console()
    result = train_vae(VaeTrainConfig.from_yaml(config), resume=resume, progress=progress)
    Console().print(
        f"VAE trained {result.step} steps, final loss {result.losses[-1]:.4f}, latent scale "
        f"{result.scaling_factor:.4f}; pipeline written to {result.model_dir}"
    )


@models_app.command("install-demo")
def install_demo_command(
    from_: Annotated[Path, typer.Option("--from", help="A pipeline folder written by `cfaudit train`.")],
    note: Annotated[
        list[str] | None, typer.Option(help="A line for PROVENANCE.txt's notes (repeatable).")
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            help="The data index it was trained on, if the recorded path does not reach it (Table 1)."
        ),
    ] = None,
) -> None:
    """Copy a trained pipeline into the package as the demo model (with PROVENANCE.txt and README.md)."""
    from cfaudit.models.shipped_model import install_demo

    Console().print(f"demo model installed in {install_demo(from_, notes=note, index=index)}")


@models_app.command("install-autoencoder")
def install_autoencoder_command(
    from_: Annotated[
        Path,
        typer.Option("--from", help="A pipeline folder written by `cfaudit models train-vae` (RUN/model)."),
    ],
    arch: Annotated[str, typer.Option(help="The preset it belongs to (tiny-f4 or tiny).")] = "tiny-f4",
) -> None:
    """Copy a trained VAE into the package as a preset's shipped autoencoder (reused by --vae ARCH)."""
    from cfaudit.models.shipped_model import install_autoencoder

    Console().print(f"{arch} autoencoder installed in {install_autoencoder(from_, arch)}")


@models_app.command("card")
def card_command(
    model: Annotated[str, typer.Argument(help="demo or a pipeline folder.")],
    index: Annotated[
        Path | None,
        typer.Option(
            help="The data index the model was trained on, if the recorded path does not reach it "
            "(checked against the recorded sha256; gives the card Table 1)."
        ),
    ] = None,
    metrics: Annotated[
        list[Path] | None,
        typer.Option(
            help="YAML or JSON of figures measured on this model, each with its source (repeatable; "
            "see src/cfaudit/models/demo/metrics.yaml). A metrics.yaml beside the weights is always quoted."
        ),
    ] = None,
) -> None:
    """Write or refresh MODEL's model card (README.md, Hugging Face's format) from its records.

    Only the text between the card's cfaudit:card markers and the front-matter keys derived from the records are
    rewritten: your own text outside the markers, your tags and a license already in the card are kept.
    """
    from cfaudit.models.model_card import write_model_card

    path = write_model_card(model, index=index, metrics=metrics or ())
    Console().print(f"model card written to {path}", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app)
