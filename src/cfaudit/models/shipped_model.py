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


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def portable(value: Any, root: Path | None = None) -> Any:
    """``value`` with absolute paths under ``root`` (default: the working directory) made relative to it, and
    other absolute paths cut to their last two parts: shipped records name no one's machine."""
    root = (root or Path.cwd()).resolve()
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, root) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        words = value.split(" ")
        out = []
        for word in words:
            path = Path(word)
            if word.startswith("/"):
                try:
                    word = str(path.resolve().relative_to(root))
                except ValueError:
                    word = str(Path(*path.parts[1:][-2:]))
            out.append(word)
        return " ".join(out)
    return value


def _architecture(unet_run: dict[str, Any], folder: Path | None) -> str:
    if folder is None:
        return "A tiny CPU preset"
    unet = _read_json(folder / "unet" / "config.json")
    vae = _read_json(folder / "vae" / "config.json")
    factor = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    size = unet.get("sample_size", 0)
    article = "an" if factor == 8 else "a"
    return (f"A tiny CPU preset ({size * factor}x{size * factor} grayscale, {article} "
            f"{factor}x VAE with {size}x{size}x{vae.get('latent_channels')} latents, SD v1.5's CLIP tokenizer)")  # fmt: skip


def provenance_markdown(
    unet_run: dict[str, Any],
    vae_run: dict[str, Any],
    sizes: dict[str, int],
    notes: list[str] | None = None,
    folder: Path | None = None,
) -> str:
    """The human-readable record written beside the shipped weights (``folder``: the model, for its shapes)."""
    config = unet_run.get("config", {})
    data = unet_run.get("data", {})
    curve = vae_run.get("held_out_l1") or {}
    lines = [
        "# Demo model provenance",
        "",
        f"{_architecture(unet_run, folder)} trained on the synthetic phantom.",
        "Rebuild with the commands at the top of its training config (below); this file is written by",
        "`cfaudit models install-demo`.",
        "",
        "## Data",
        f"- index: `{data.get('index')}` (split `{data.get('split')}`, {data.get('rows')} images)",
        f"- index sha256: `{data.get('index_sha256')}`",
        "",
        "## VAE (`cfaudit models train-vae --config configs/train/tiny_vae.yaml`)",
        f"- steps {vae_run.get('steps')}, final loss {vae_run.get('final_loss')}, latent scale "
        f"{vae_run.get('scaling_factor')}, {vae_run.get('seconds_this_call', vae_run.get('seconds'))} s",
        "- held-out reconstruction L1 (0-255) by step: "
        + (
            ", ".join(f"{k}: {v}" for k, v in sorted(curve.items(), key=lambda kv: int(kv[0])))
            or "not recorded"
        ),
        f"- config: `{json.dumps(vae_run.get('config', {}), sort_keys=True)}`",
        "",
        "## UNet + text encoder (`cfaudit train --config configs/train/demo.yaml`)",
        f"- steps {unet_run.get('step')}, seed {config.get('seed')}, "
        + (f"{unet_run['wall_seconds']} s in the last call, " if unet_run.get("wall_seconds") else "")
        + f"command `{unet_run.get('command')}`",
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
    unet_run, vae_run = portable(unet_run), portable(vae_run)
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
    for path in staging.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(destination, ignore_errors=True)
    os.replace(staging, destination)
    return destination
