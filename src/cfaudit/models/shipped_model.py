"""The shipped demo model: the tiny-f4 preset trained on the phantom, small enough to live inside the package.

``--model demo`` anywhere means the folder :data:`DEMO_DIR`. :func:`install_demo` copies a trained pipeline
there and writes ``PROVENANCE.txt`` (command, configs, data index and its sha256, seeds, timings) from the
provenance files the VAE and UNet training wrote, so the shipped weights can be rebuilt and checked, and the
model card ``README.md`` (:mod:`cfaudit.models.model_card`) from the same records.

What is shipped names no one's machine: recorded paths are made relative to the run's folder or to the package
(:func:`portable`), and the recorded command line is shown as the ``cfaudit`` command it was
(:func:`cfaudit_command`), whatever program ran it (a virtual environment's script, a local runner script).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cfaudit import atomic_io
from cfaudit.errors import CfauditError
from cfaudit.models.card_file import CARD_FILE
from cfaudit.models.presets import ARCHITECTURES

DEMO_DIR = Path(__file__).parent / "demo"
#: The installed package's folder: a recorded path inside it is shipped as ``cfaudit/<path>``.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: Top-level cfaudit commands that record a training run (``cfaudit train``, ``cfaudit models train-vae``,
#: ``cfaudit demo``); a command line starting otherwise was no cfaudit command (the Python API, a test).
TRAINING_COMMANDS = ("train", "demo", "models")
_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
#: The VAE config keys that tell one preset's autoencoder from another's.
_VAE_SHAPE_KEYS = ("block_out_channels", "latent_channels", "in_channels")
#: Per preset, the training configs that rebuild a demo UNet of it, phase by phase, named in PROVENANCE.txt (its
#: autoencoder's is :func:`_vae_config`): the recipes of ``cfaudit.demo_training.DEMO_RECIPES`` that made the shipped
#: models (``tiny-f4-shipped`` and ``tiny``; a test keeps them equal).
_UNET_CONFIGS = {
    "tiny": ("configs/train/demo.yaml",),
    "tiny-f4": (
        "configs/train/demo_f4_scratch.yaml",
        "configs/train/demo_f4_race_alone.yaml",
        "configs/train/demo_f4_race_whole.yaml",
    ),
}
#: The ``cfaudit demo --train --recipe`` name that runs those configs in turn, by preset.
_SHIPPED_RECIPES = {"tiny": "tiny", "tiny-f4": "tiny-f4-shipped"}


def _vae_config(preset: str) -> str:
    """The config that trains ``preset``'s autoencoder (``configs/train/tiny_f4_vae.yaml`` for tiny-f4)."""
    return f"configs/train/{preset.replace('-', '_')}_vae.yaml"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def portable(value: Any, root: Path | None = None) -> Any:
    """``value`` with absolute paths inside the package written ``cfaudit/<path>``, those under ``root`` (default:
    the working directory, where the run was made) made relative to it, and other absolute paths cut to their last
    two parts: shipped records name no one's machine."""
    root = (root or Path.cwd()).resolve()
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, root) for v in value]
    if isinstance(value, str) and ("/" in value):
        return " ".join(_portable_word(word, root) for word in value.split(" "))
    return value


def _portable_word(word: str, root: Path) -> str:
    """One word of a recorded string; ``--option=/a/path`` keeps its option."""
    option, equals, rest = word.partition("=")
    if equals and rest.startswith("/"):
        return f"{option}={_portable_word(rest, root)}"
    if not word.startswith("/"):
        return word
    path = Path(word).resolve()
    if path.is_relative_to(PACKAGE_DIR):
        return f"cfaudit/{path.relative_to(PACKAGE_DIR).as_posix()}"
    if path.is_relative_to(root):
        return str(path.relative_to(root))
    return str(Path(*Path(word).parts[1:][-2:]))


def cfaudit_command(command: str | None) -> str | None:
    """A recorded command line (``" ".join(sys.argv)``) as the cfaudit command it was: its program, whatever ran
    it, named ``cfaudit``; ``None`` when it was no cfaudit training command (see :data:`TRAINING_COMMANDS`)."""
    words = str(command or "").split()
    if len(words) < 2 or words[1] not in TRAINING_COMMANDS:
        return None
    return " ".join(["cfaudit", *words[1:]])


def preset_name(unet: dict[str, Any], vae: dict[str, Any]) -> str | None:
    """The preset (:data:`cfaudit.models.presets.ARCHITECTURES`) whose shapes a UNet and VAE config have, if any."""
    unet_keys = (
        "block_out_channels",
        "cross_attention_dim",
        "sample_size",
        "in_channels",
        "layers_per_block",
    )
    for name, spec in ARCHITECTURES.items():
        if all(unet.get(k) == spec.unet.get(k) for k in unet_keys if k in spec.unet) and all(
            vae.get(k) == spec.vae.get(k) for k in _VAE_SHAPE_KEYS if k in spec.vae
        ):
            return name
    return None


_PRESET_TITLES = {
    "sd15": "Stable Diffusion v1.5's architecture",
    "sd21": "Stable Diffusion 2.1's architecture",
}


def architecture_summary(folder: Path | None) -> str:
    """One line on a pipeline folder's shapes: preset, image size, VAE factor and latents, text side."""
    if folder is None:
        return "A tiny CPU preset"
    unet = _read_json(folder / "unet" / "config.json")
    vae = _read_json(folder / "vae" / "config.json")
    factor = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    size = unet.get("sample_size", 0)
    size = size[0] if isinstance(size, list) else size
    article = "an" if factor == 8 else "a"
    colour = "grayscale" if vae.get("in_channels") == 1 else "RGB"
    encoder = (_read_json(folder / "model_index.json").get("text_encoder") or [None, "CLIPTextModel"])[1]
    preset = preset_name(unet, vae)
    if encoder == "BertModel":
        text = "the frozen pretrained all-MiniLM-L6-v2 text encoder"
    else:
        text = "a CLIP text encoder" if preset in _PRESET_TITLES else "SD v1.5's CLIP tokenizer"
    if preset in _PRESET_TITLES:
        title = _PRESET_TITLES[preset]
    elif preset is not None:
        title = f"A {preset} CPU preset"
    else:
        title = "A Stable Diffusion-style pipeline"
    return (f"{title} ({size * factor}x{size * factor} {colour}, {article} {factor}x VAE with "
            f"{size}x{size}x{vae.get('latent_channels')} latents, {text})")  # fmt: skip


def provenance_markdown(
    unet_run: dict[str, Any],
    vae_run: dict[str, Any],
    sizes: dict[str, int],
    notes: list[str] | None = None,
    folder: Path | None = None,
) -> str:
    """The human-readable record written beside the shipped weights (``folder``: the model, for its shapes)."""
    data = unet_run.get("data", {})
    curve = vae_run.get("held_out_l1") or {}
    shapes = (
        (_read_json(folder / "unet" / "config.json"), _read_json(folder / "vae" / "config.json"))
        if folder
        else ({}, {})
    )
    preset = preset_name(*shapes)
    vae_config = _vae_config(preset) if preset in _UNET_CONFIGS else "its VAE config"
    unet_configs = _UNET_CONFIGS.get(preset or "", ("its UNet config",))
    unet_commands = ", then ".join(f"`cfaudit train --config {config}`" for config in unet_configs)
    lines = [
        "# Demo model provenance",
        "",
        f"{architecture_summary(folder)} trained on the synthetic phantom.",
        *(
            [
                f"Rebuild with `cfaudit demo --train --recipe {_SHIPPED_RECIPES[preset]}`, which runs the training",
                "configs below in turn (each names its own commands at its top). A command recorded below is the one",
                "that ran: a `demo --train` without `--recipe` ran the default recipe of its day.",
            ]
            if preset in _SHIPPED_RECIPES
            else ["Rebuild with the commands at the top of its training config (below)."]
        ),
        "This file is written by `cfaudit models install-demo`.",
        "",
        "## Data",
        f"- index: `{data.get('index')}` (split `{data.get('split')}`, {data.get('rows')} images)",
        f"- index sha256: `{data.get('index_sha256')}`",
        "",
        f"## VAE (`cfaudit models train-vae --config {vae_config}`)",
        f"- steps {vae_run.get('steps')}, final loss {vae_run.get('final_loss')}, latent scale "
        f"{vae_run.get('scaling_factor')}, {vae_run.get('seconds_this_call', vae_run.get('seconds'))} s",
        "- held-out reconstruction L1 (0-255) by step: "
        + (
            ", ".join(f"{k}: {v}" for k, v in sorted(curve.items(), key=lambda kv: int(kv[0])))
            or "not recorded"
        ),
        f"- config: `{json.dumps(vae_run.get('config', {}), sort_keys=True)}`",
        "",
        f"## UNet + text encoder ({unet_commands})",
        *_phase_lines(unet_run),
        f"- cfaudit {unet_run.get('cfaudit_version')}, torch {unet_run.get('torch_version')}",
        "",
        "## Files (bytes)",
        *[f"- `{name}`: {size:,}" for name, size in sorted(sizes.items())],
        "",
    ]
    if notes:
        lines += ["## Notes", *[f"- {note}" for note in notes], ""]
    return "\n".join(lines)


def _phase_lines(unet_run: dict[str, Any]) -> list[str]:
    """The UNet's training record, phase by phase (an earlier phase's is in ``base_model.trained``), first first."""
    from cfaudit.models.card_facts import training_phases  # card_facts imports this module

    phases = training_phases(unet_run)
    lines: list[str] = []
    for number, run in enumerate(phases, start=1):
        config = run.get("config", {})
        title = f"phase {number}: " if len(phases) > 1 else ""
        lines += [
            f"- {title}steps {run.get('step')}, seed {config.get('seed')}, "
            + (f"{run['wall_seconds']} s in the last call, " if run.get("wall_seconds") else "")
            + f"command `{run.get('command')}`",
            f"- {title}config: `{json.dumps(config, sort_keys=True)}`",
        ]
    return lines


def _load_text_encoder_in_float32(config: Path) -> None:
    """Make transformers load the shipped text encoder in float32, whatever precision stores it: next to the
    float32 UNet diffusers loads, a float16 one breaks ``StableDiffusionPipeline.from_pretrained(folder)`` on a CPU
    (pipelines saved before :meth:`PipelineComponents.save` kept the compute precision named float16)."""
    import json

    data = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else None
    if data is not None and data.get("dtype") not in (None, "float32"):
        data["dtype"] = "float32"
        atomic_io.write_json(config, data)


def install_demo(
    source: str | os.PathLike[str],
    destination: Path = DEMO_DIR,
    notes: list[str] | None = None,
    index: str | os.PathLike[str] | None = None,
) -> Path:
    """Copy a trained pipeline folder into the package as the demo model (after checking it loads), with its
    model card; the source's own card text and ``metrics.yaml`` (figures measured on these weights) travel with
    it. ``index``: the data index, where the recorded path does not reach it (for the card's Table 1)."""
    # imported here: both modules import this one (DEMO_DIR, portable)
    from cfaudit.models.card_facts import METRICS_FILE
    from cfaudit.models.loading import check_pipeline_folder
    from cfaudit.models.model_card import write_model_card

    source = Path(source)
    check_pipeline_folder(source)
    unet_run = _read_json(source / "provenance.json")
    if not unet_run:
        raise CfauditError(f"{source}: no provenance.json; install a model written by `cfaudit train`")
    base = (unet_run.get("base_model") or {}).get("folder")
    vae_run = _read_json(source / "vae_provenance.json") or (
        _read_json(Path(base) / "vae_provenance.json") if base else {}
    )
    unet_run, vae_run = portable(unet_run), portable(vae_run)
    run: Any = unet_run
    while isinstance(run, dict):  # each phase's record (an earlier one is in base_model.trained)
        if cfaudit_command(run.get("command")):
            run["command"] = cfaudit_command(run["command"])
        run = (run.get("base_model") or {}).get("trained")
    staging = destination.with_name(f".{destination.name}.part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for part in _PARTS:
        shutil.copytree(source / part, staging / part)
    shutil.copy2(source / "model_index.json", staging / "model_index.json")
    _load_text_encoder_in_float32(staging / "text_encoder" / "config.json")
    atomic_io.write_json(staging / "provenance.json", unet_run)
    if vae_run:
        atomic_io.write_json(staging / "vae_provenance.json", vae_run)
    sizes = {str(p.relative_to(staging)): p.stat().st_size for p in staging.rglob("*") if p.is_file()}
    atomic_io.write_text(
        staging / "PROVENANCE.txt", provenance_markdown(unet_run, vae_run, sizes, notes, staging)
    )
    for name in (CARD_FILE, METRICS_FILE):
        if (source / name).is_file():
            shutil.copy2(source / name, staging / name)
    write_model_card(staging, index=index, name="demo" if destination == DEMO_DIR else destination.name)
    for path in staging.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(destination, ignore_errors=True)
    os.replace(staging, destination)
    return destination


#: Autoencoders shipped in the package by preset: each trained once on the demo phantom's train split, as SD ships
#: its pretrained VAE, and reused by every UNet of that preset (``write_random_pipeline(..., vae_from=preset)``,
#: ``cfaudit demo --train --recipe``). The demo model carries a copy of its own preset's (tiny-f4).
AUTOENCODER_DIR = Path(__file__).parent / "autoencoders"
_VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")


def shipped_autoencoder(preset: str) -> Path:
    """The folder (diffusers' ``AutoencoderKL`` format) of the autoencoder shipped for ``preset``."""
    folder = AUTOENCODER_DIR / preset
    if not all((folder / name).is_file() for name in _VAE_FILES):
        raise CfauditError(
            f"no autoencoder for the {preset!r} preset in this install ({folder} has no {' or '.join(_VAE_FILES)}); "
            f"train one with {_vae_config(preset)} and install it with "
            f"`cfaudit models install-autoencoder --from RUN/model --arch {preset}`"
        )
    return folder


def shipped_autoencoder_provenance(preset: str) -> dict[str, Any]:
    """What trained the autoencoder shipped for ``preset`` (its ``vae_provenance.json``), or {}."""
    return _read_json(shipped_autoencoder(preset) / "vae_provenance.json")


def install_autoencoder(source: str | os.PathLike[str], preset: str, destination: Path | None = None) -> Path:
    """Copy the VAE of a pipeline written by ``cfaudit models train-vae`` into the package as ``preset``'s shipped
    autoencoder (its config and float16 safetensors: the precision the demo recipes store every pipeline in, so a
    UNet's pipeline holds exactly the shipped weights; diffusers loads them as float32), with its training record
    made portable. It must have the preset's shapes."""
    import torch
    from diffusers import AutoencoderKL

    if preset not in ARCHITECTURES:
        raise CfauditError(f"install-autoencoder --arch {preset!r}: choose one of {', '.join(ARCHITECTURES)}")
    source = Path(source)
    vae_folder = source / "vae"
    if not all((vae_folder / name).is_file() for name in _VAE_FILES):
        raise CfauditError(f"{source}: no vae/ with {' and '.join(_VAE_FILES)}; give a pipeline folder written "
                           "by `cfaudit models train-vae` (its RUN/model)")  # fmt: skip
    config = _read_json(vae_folder / "config.json")
    wanted = ARCHITECTURES[preset].vae
    differing = [k for k in _VAE_SHAPE_KEYS if k in wanted and config.get(k) != wanted[k]]
    if differing:
        raise CfauditError(f"{source}: its VAE does not have the {preset} preset's shapes ({', '.join(differing)} "
                           "differ)")  # fmt: skip
    record = _read_json(source / "vae_provenance.json")
    if not record:
        raise CfauditError(
            f"{source}: no vae_provenance.json; install a model written by `cfaudit models train-vae`"
        )
    destination = destination or AUTOENCODER_DIR / preset
    staging = destination.with_name(f".{destination.name}.part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    vae = AutoencoderKL.from_pretrained(vae_folder).to(torch.float16)
    vae.save_pretrained(staging, safe_serialization=True)
    record = portable(record)
    if cfaudit_command(record.get("command")):
        record["command"] = cfaudit_command(record["command"])
    atomic_io.write_json(staging / "vae_provenance.json", record)
    for path in staging.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(destination, ignore_errors=True)
    os.replace(staging, destination)
    return destination
