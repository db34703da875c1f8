"""``cfaudit train --config FILE [--resume latest]``: fine-tune a diffusion model's UNet on a data index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from cfaudit.cli.options import Resume, ShowProgress


def log_to_console() -> None:
    """Show cfaudit's INFO messages (resumed from..., step losses in logs) on stderr, once."""
    import logging

    logger = logging.getLogger("cfaudit")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["max_steps=10", "sample_prompts=[a, b]"]`` -> values parsed as YAML scalars / lists."""
    import yaml

    from cfaudit.errors import CfauditError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CfauditError(f"--set {pair!r}: write key=value, e.g. --set max_steps=100")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise CfauditError(f"--set {pair!r}: value is not valid YAML ({error})") from None
    return out


def train_command(
    config: Annotated[Path, typer.Option(help="YAML training config (see configs/train/).")],
    resume: Resume = None,
    train_text_encoder: Annotated[
        bool | None,
        typer.Option(
            "--train-text-encoder/--freeze-text-encoder",
            help="Also train the text encoder (default: the config's value, normally frozen).",
        ),
    ] = None,
    lora_rank: Annotated[
        int | None, typer.Option(help="Train LoRA adapters of this rank instead of the full UNet.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Override the config's max_steps.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Override the config's output_dir.")] = None,
    stop_after: Annotated[
        int | None, typer.Option(min=1, help="Leave after this many steps (checkpointed); resume later.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override any config key: --set key=value (repeatable).")
    ] = None,
    progress: ShowProgress = True,
) -> None:
    """Fine-tune the UNet (by default only the UNet) of a Stable Diffusion model on captioned images."""
    from cfaudit.train.config import TrainConfig
    from cfaudit.train.trainer import train

    log_to_console()
    overrides = parse_overrides(set_ or [])
    for key, value in (("train_text_encoder", train_text_encoder), ("lora_rank", lora_rank),
                       ("max_steps", max_steps), ("output_dir", output_dir)):  # fmt: skip
        if value is not None:
            overrides[key] = value
    settings = TrainConfig.from_yaml(config, overrides)
    result = train(settings, resume=resume, stop_after=stop_after, progress=progress)
    if not result.main_process:
        return
    console = Console()
    last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
    console.print(
        f"step {result.step}/{settings.max_steps}, last loss {last}, {result.images_per_second:.1f} images/s"
    )
    if result.model_dir is not None:
        console.print(f"model written to {result.model_dir}")
    elif result.last_checkpoint is not None:
        console.print(f"stopped at checkpoint {result.last_checkpoint}; continue with --resume latest")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
