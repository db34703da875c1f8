"""Training checkpoints: weights in diffusers format, the rest of the training state beside them, no pickle.

A checkpoint ``checkpoints/step-0000500/`` holds

* ``unet/`` (``save_pretrained``, safetensors) or ``unet_lora/adapter_model.safetensors`` (peft format),
  ``text_encoder/`` when it trains;
* ``training_state.safetensors``: every tensor of the optimizer state, the EMA weights, the data order and the
  random generators; ``training_state.json``: step, position in the epoch, optimizer hyper-parameters, learning
  rate schedule and EMA counters;
* ``provenance.json``: the config, the data index (path and sha256) and the model the run started from.

It is written into a staging folder and renamed into place, so a kill leaves either a complete checkpoint or none;
:func:`latest_checkpoint` only ever sees complete ones. Nothing is unpickled on resume.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from cfaudit import atomic_io
from cfaudit.errors import CfauditError

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"
PROVENANCE = "provenance.json"


def checkpoint_dir(output_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS / f"step-{step:07d}"


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / STATE_JSON).is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_resume(output_dir: str | os.PathLike[str], resume: str) -> Path | None:
    """``latest`` -> the newest checkpoint of the run (None when there is none yet); else a checkpoint folder."""
    if resume == "latest":
        return latest_checkpoint(output_dir)
    path = Path(resume)
    if not (path / STATE_JSON).is_file():
        raise CfauditError(
            f"--resume {resume}: not a checkpoint folder (no {STATE_JSON}); use `latest` or a step-N folder"
        )
    return path


def flatten_state(prefix: str, state: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of a nested dict/list into ``tensors`` (keyed by path); return the JSON-able rest."""
    if isinstance(state, torch.Tensor):
        tensors[prefix] = state.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(state, dict):
        return {"__dict__": [[k, flatten_state(f"{prefix}.{k}", v, tensors)] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        return [flatten_state(f"{prefix}.{i}", v, tensors) for i, v in enumerate(state)]
    return state


def unflatten_state(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`flatten_state` (dict keys keep their types: optimizer states use int keys)."""
    if isinstance(data, dict) and "__tensor__" in data:
        return tensors[data["__tensor__"]]
    if isinstance(data, dict) and "__dict__" in data:
        return {k: unflatten_state(v, tensors) for k, v in data["__dict__"]}
    if isinstance(data, list):
        return [unflatten_state(v, tensors) for v in data]
    return data


def write_checkpoint(
    folder: Path,
    *,
    models: dict[str, Any],
    lora_state: dict[str, torch.Tensor] | None,
    state: dict[str, Any],
    provenance: dict[str, Any],
) -> Path:
    """Write one checkpoint atomically. ``models`` maps subfolder -> model (``save_pretrained``);
    ``state`` is a nested dict of tensors and plain values (optimizer, scheduler, EMA, RNG, step...)."""
    from safetensors.torch import save_file

    staging = folder.with_name(f".{folder.name}.part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name, model in models.items():
            model.save_pretrained(str(staging / name), safe_serialization=True)
        if lora_state is not None:
            (staging / "unet_lora").mkdir()
            save_file({k: v.detach().cpu().contiguous() for k, v in lora_state.items()}, str(staging / "unet_lora" / "adapter_model.safetensors"))  # fmt: skip
        tensors: dict[str, torch.Tensor] = {}
        plain = flatten_state("state", state, tensors)
        save_file(tensors, str(staging / STATE_TENSORS))
        atomic_io.write_json(staging / PROVENANCE, provenance)
        atomic_io.write_text(staging / STATE_JSON, json.dumps(plain, indent=1))  # last: marks it complete
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def read_state(folder: Path) -> dict[str, Any]:
    """The nested training state of a checkpoint (tensors on CPU)."""
    from safetensors.torch import load_file

    try:
        plain = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / STATE_TENSORS))
    except (OSError, json.JSONDecodeError) as error:
        raise CfauditError(f"{folder}: unreadable checkpoint ({error}); resume from an earlier one") from None
    return unflatten_state(plain, tensors)


def restore_optimisation(
    saved: dict[str, Any], optimizer: Any, lr_scheduler: Any, ema: Any, device: Any, data_gen: torch.Generator
) -> None:
    """Put back what every trainer here saves beside its weights: the optimizer, the learning rate schedule, the
    EMA weights (when the run keeps them, moved to ``device``) and the generator that draws the data order."""
    optimizer.load_state_dict(saved["optimizer"])
    lr_scheduler.load_state_dict(saved["lr_scheduler"])
    if ema is not None:
        ema.load_state_dict(saved["ema"])
        ema.to(device)
    data_gen.set_state(saved["data_gen"])


def read_lora_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = folder / "unet_lora" / "adapter_model.safetensors"
    if not path.is_file():
        raise CfauditError(
            f"{folder}: no unet_lora/adapter_model.safetensors; this checkpoint is not from a LoRA run"
        )
    return load_file(str(path))


def load_weights_into(model: Any, folder: Path, name: str) -> None:
    """Copy a checkpoint's ``name/`` weights into an existing model (strict: every tensor must match)."""
    from safetensors.torch import load_file

    sub = folder / name
    files = sorted(sub.glob("*.safetensors"))
    if not files:
        raise CfauditError(f"{folder}: missing {name}/*.safetensors; the checkpoint is incomplete")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        weights.update(load_file(str(file)))
    hint = "was the run's model or config changed? resume with the same ones or start a new output_dir"
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise CfauditError(
            f"{sub}: weights do not fit the model ({str(error).splitlines()[-1].strip()}); {hint}"
        ) from None
    missing = [k for k in result.missing_keys if "position_ids" not in k]
    if missing or result.unexpected_keys:
        raise CfauditError(
            f"{sub}: weights do not fit the model ({len(missing)} missing, {len(result.unexpected_keys)} "
            f"unexpected); {hint}"
        )


def prune_checkpoints(output_dir: str | os.PathLike[str], keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints. Each is first renamed out of sight (``.step-N.old``), so a
    kill during the deletion never leaves a half-deleted folder that looks like a checkpoint."""
    for old in list_checkpoints(output_dir)[:-keep]:
        hidden = old.with_name(f".{old.name}.old")
        shutil.rmtree(hidden, ignore_errors=True)
        os.replace(old, hidden)
        shutil.rmtree(hidden, ignore_errors=True)


def tidy_for_resume(output_dir: str | os.PathLike[str], keep: int, resuming_from: Path | None) -> None:
    """Finish what a killed run left half done, before a resume writes anything: remove checkpoint folders being
    written (``.step-N.part``) or deleted (``.step-N.old``) and, when resuming from the newest checkpoint, do the
    pruning its save had not finished (so the folder ends as an uninterrupted run leaves it). Main process only."""
    root = Path(output_dir) / CHECKPOINTS
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(".step-") and entry.name.endswith((".part", ".old")):
                shutil.rmtree(entry, ignore_errors=True)
    newest = latest_checkpoint(output_dir)
    if resuming_from is not None and newest is not None and resuming_from.resolve() == newest.resolve():
        prune_checkpoints(output_dir, keep)
