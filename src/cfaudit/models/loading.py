"""One way in for every model: ``demo``, a local diffusers folder, or a hub id from the local hub cache.

A folder is checked before anything is loaded: a missing part (``unet/``, ``vae/``...) or a missing weights file
is a :class:`CfauditError` naming it, never a silently random network. Weights are read only from safetensors
files; pickle ``.bin`` files are refused with the command that converts them. Hub ids go through
``huggingface_hub``'s cache (``local_files_only`` when ``HF_HUB_OFFLINE`` is set or the hub cannot be reached).
SD 1.x (epsilon) and SD 2.x (v-prediction) load alike: the prediction type comes from the scheduler config.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from cfaudit.errors import CfauditError
from cfaudit.models.components import PipelineComponents
from cfaudit.models.shipped_model import DEMO_DIR

#: Files that may hold a part's weights, in the order we accept them.
_WEIGHT_FILES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"),
    "text_encoder": ("model.safetensors", "model.safetensors.index.json"),
}
#: Text encoders a pipeline may name: SD's CLIP, and BERT-family encoders (the tiny preset's frozen MiniLM).
TEXT_ENCODER_CLASSES = ("CLIPTextModel", "BertModel")
TOKENIZER_CLASSES = ("CLIPTokenizer", "CLIPTokenizerFast", "BertTokenizer", "BertTokenizerFast")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_HUB_PATTERNS = ["model_index.json", "unet/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*"]
_HUB_IGNORE = [
    "*.bin",
    "*.ckpt",
    "*.msgpack",
    "*.onnx",
    "*.onnx_data",
    "*.pb",
    "*.h5",
    "*fp16*",
    "*non_ema*",
    "*.ot",
]


def check_pipeline_folder(folder: Path, label: str | None = None) -> None:
    """Raise a :class:`CfauditError` naming the first missing subfolder or file of a pipeline folder."""
    label = label or str(folder)
    if not folder.is_dir():
        raise CfauditError(
            f"{label}: no such model folder; give a diffusers pipeline folder, a hub id or `demo`"
        )
    for part, candidates in _WEIGHT_FILES.items():
        sub = folder / part
        if not (sub / "config.json").is_file():
            raise CfauditError(
                f"{label}: missing {part}/config.json; the folder must hold a complete diffusers pipeline "
                f"(unet/, vae/, text_encoder/, tokenizer/, scheduler/) - re-download or re-save it"
            )
        if not any((sub / name).is_file() for name in candidates):
            pickles = sorted(p.name for p in sub.glob("*.bin"))
            if pickles:
                raise CfauditError(
                    f"{label}: {part}/ has only pickle weights ({', '.join(pickles)}); cfaudit loads safetensors "
                    "only - convert a trusted copy with diffusers' save_pretrained(safe_serialization=True)"
                )
            raise CfauditError(
                f"{label}: missing {part}/{candidates[0]}; the download or save was incomplete"
            )
    tokenizer = folder / "tokenizer"
    if (
        not ((tokenizer / "vocab.json").is_file() and (tokenizer / "merges.txt").is_file())
        and not (tokenizer / "tokenizer.json").is_file()
        and not (tokenizer / "vocab.txt").is_file()
    ):
        raise CfauditError(
            f"{label}: missing tokenizer/vocab.json and merges.txt (or a BERT vocab.txt); copy the model's "
            "tokenizer folder there"
        )
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        raise CfauditError(f"{label}: missing scheduler/scheduler_config.json")


def text_classes(folder: Path, label: str | None = None) -> tuple[Any, Any]:
    """The text encoder and tokenizer classes a pipeline folder names (``model_index.json``, else CLIP's).

    Only the classes in :data:`TEXT_ENCODER_CLASSES` and :data:`TOKENIZER_CLASSES` are accepted: a folder cannot
    make cfaudit import an arbitrary class.
    """
    import json

    import transformers

    label = label or str(folder)
    index_file = folder / "model_index.json"
    try:
        index = json.loads(index_file.read_text(encoding="utf-8")) if index_file.is_file() else {}
    except (OSError, ValueError) as error:
        raise CfauditError(
            f"{label}: model_index.json is not readable JSON ({error}); re-save the pipeline"
        ) from None
    names = []
    for part, allowed, default in (
        ("text_encoder", TEXT_ENCODER_CLASSES, "CLIPTextModel"),
        ("tokenizer", TOKENIZER_CLASSES, "CLIPTokenizer"),
    ):
        entry = index.get(part) or [None, default]
        name = str(entry[1]) if isinstance(entry, (list, tuple)) and len(entry) == 2 else default
        if name not in allowed:
            raise CfauditError(
                f"{label}: model_index.json names {part} class {name!r}; cfaudit loads {', '.join(allowed)}"
            )
        names.append(name)
    return getattr(transformers, names[0]), getattr(transformers, names[1])


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """The local folder of ``model``: ``demo``, an existing folder, or a hub id found in (or fetched into) the cache."""
    text = str(model)
    if text == "demo":
        if not (DEMO_DIR / "unet").is_dir():
            raise CfauditError(
                f"the demo model is not in this install ({DEMO_DIR} has no unet/); rebuild it with "
                "`cfaudit demo --train --recipe tiny-f4-shipped --out runs/demo-f4` and `cfaudit models "
                "install-demo --from runs/demo-f4/models/race-whole/model` (configs/train/demo_f4_scratch.yaml, "
                "demo_f4_race_alone.yaml, then demo_f4_race_whole.yaml)"
            )
        return DEMO_DIR
    path = Path(text).expanduser()
    if path.exists() or text.startswith((".", "/", "~")) or not _HUB_ID.match(text):
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with diffusers
        raise CfauditError(f"{text}: looks like a hub id but huggingface_hub is not installed") from None
    try:
        return Path(
            snapshot_download(
                text, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_IGNORE, local_files_only=True
            )
        )
    except Exception:  # not in the cache (or a partial entry): try the hub unless told to stay offline
        if _hub_offline():
            raise CfauditError(
                f"{text}: not in the local hub cache and HF_HUB_OFFLINE is set; download it on a connected "
                "machine (`huggingface-cli download` ...) or pass a local folder"
            ) from None
    try:
        return Path(snapshot_download(text, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_IGNORE))
    except Exception as error:
        raise CfauditError(
            f"{text}: could not fetch from the hub ({type(error).__name__}); check the id and the network, "
            "or pass a local folder"
        ) from None


def _load_strict(cls: Any, folder: Path, **kwargs: object) -> object:
    """``from_pretrained`` that refuses a weights file lacking tensors (both libraries would fill them with
    random values and only log a warning). ``cls``: a diffusers or transformers model class."""
    model, info = cls.from_pretrained(str(folder), use_safetensors=True, output_loading_info=True, **kwargs)
    missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
    mismatched = info.get("mismatched_keys") or []
    if missing or mismatched:
        first = missing[0] if missing else mismatched[0]
        raise CfauditError(
            f"{folder}: weights file is partial or does not fit the config ({len(missing)} missing, "
            f"{len(mismatched)} mismatched tensors; first {first}); re-download or re-save this part"
        )
    return model


def load_components(
    model: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PipelineComponents:
    """Load UNet, VAE, text encoder, tokenizer and a ``DDPMScheduler`` (the training schedule) from ``model``.

    Parts are returned in eval mode with gradients off; the trainer switches on what it trains.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    folder = resolve_model(model)
    check_pipeline_folder(folder, label=str(model))
    text_class, tokenizer_class = text_classes(folder, label=str(model))
    parts = {}
    loaders = {
        "unet": lambda: _load_strict(UNet2DConditionModel, folder / "unet", torch_dtype=dtype),
        "vae": lambda: _load_strict(AutoencoderKL, folder / "vae", torch_dtype=dtype),
        "text_encoder": lambda: _load_strict(text_class, folder / "text_encoder", dtype=dtype),
        "tokenizer": lambda: tokenizer_class.from_pretrained(str(folder / "tokenizer")),
        "noise_scheduler": lambda: DDPMScheduler.from_pretrained(str(folder), subfolder="scheduler"),
    }  # fmt: skip
    for name, load in loaders.items():
        try:
            parts[name] = load()
        except CfauditError:
            raise
        except Exception as error:  # a corrupt or mismatched file: name the part, keep the library's reason
            sub = "scheduler" if name == "noise_scheduler" else name
            raise CfauditError(f"{model}: cannot load {sub}/ ({type(error).__name__}: {error})") from None
    components = PipelineComponents(**parts, source=str(model), meta={"folder": str(folder)})
    for part in (components.unet, components.vae, components.text_encoder):
        part.requires_grad_(False)
    return components.to(device).eval()
