"""The shipped demo model: the tiny preset trained on the phantom, small enough to live inside the package.

``--model demo`` anywhere means the folder :data:`DEMO_DIR`. :func:`install_demo` copies a trained pipeline
there and writes ``PROVENANCE.txt`` (command, configs, data index and its sha256, seeds, timings) from the
provenance files the VAE and UNet training wrote, so the shipped weights can be rebuilt and checked.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cfaudit import atomic_io
from cfaudit.errors import CfauditError

DEMO_DIR = Path(__file__).parent / "demo"
_PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_FILES = ("model_index.json", "provenance.json")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def provenance_markdown(
    unet_run: dict[str, Any], vae_run: dict[str, Any], sizes: dict[str, int], notes: list[str] | None = None
) -> str:
    """The human-readable record written beside the shipped weights."""
    config = unet_run.get("config", {})
    data = unet_run.get("data", {})
    lines = [
        "# Demo model provenance",
        "",
        "The tiny CPU preset (`cfaudit.models.presets.TINY`: 128x128 grayscale, 16x16x4 latents, SD v1.5's CLIP",
        "tokenizer) trained on the synthetic phantom. Rebuild with the commands at the top of",
        "`configs/train/demo.yaml`; this file is written by `cfaudit models install-demo`.",
        "",
        "## Data",
        f"- index: `{data.get('index')}` (split `{data.get('split')}`, {data.get('rows')} images)",
        f"- index sha256: `{data.get('index_sha256')}`",
        "",
        "## VAE (`cfaudit models train-vae --config configs/train/tiny_vae.yaml`)",
        f"- steps {vae_run.get('steps')}, final loss {vae_run.get('final_loss')}, latent scale "
        f"{vae_run.get('scaling_factor')}, {vae_run.get('seconds')} s",
        f"- config: `{json.dumps(vae_run.get('config', {}), sort_keys=True)}`",
        "",
        "## UNet + text encoder (`cfaudit train --config configs/train/demo.yaml`)",
        f"- steps {unet_run.get('step')}, seed {config.get('seed')}, {unet_run.get('wall_seconds')} s in the last "
        f"call, command `{unet_run.get('command')}`",
        f"- config: `{json.dumps(config, sort_keys=True)}`",
        f"- cfaudit {unet_run.get('cfaudit_version')}, torch {unet_run.get('torch_version')}",
        "",
        "## Files (bytes)",
        *[f"- `{name}`: {size:,}" for name, size in sorted(sizes.items())],
        "",
    ]
    if notes:
        lines += ["## Notes", *[f"- {note}" for note in notes], ""]
    return "\n".join(lines)


def install_demo(
    source: str | os.PathLike[str], destination: Path = DEMO_DIR, notes: list[str] | None = None
) -> Path:
    """Copy a trained pipeline folder into the package as the demo model (after checking it loads)."""
    from cfaudit.models.loading import check_pipeline_folder

    source = Path(source)
    check_pipeline_folder(source)
    unet_run = _read_json(source / "provenance.json")
    if not unet_run:
        raise CfauditError(f"{source}: no provenance.json; install a model written by `cfaudit train`")
    base = (unet_run.get("base_model") or {}).get("folder")
    vae_run = _read_json(source / "vae_provenance.json") or (
        _read_json(Path(base) / "vae_provenance.json") if base else {}
    )
    staging = destination.with_name(f".{destination.name}.part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for part in _PARTS:
        shutil.copytree(source / part, staging / part)
    for name in _FILES:
        shutil.copy2(source / name, staging / name)
    if vae_run:
        atomic_io.write_json(staging / "vae_provenance.json", vae_run)
    sizes = {str(p.relative_to(staging)): p.stat().st_size for p in staging.rglob("*") if p.is_file()}
    atomic_io.write_text(staging / "PROVENANCE.txt", provenance_markdown(unet_run, vae_run, sizes, notes))
    for path in staging.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(destination, ignore_errors=True)
    os.replace(staging, destination)
    return destination
