"""Stable Diffusion's CLIP tokenizer, rebuilt offline from the BPE file that ships inside a PyPI wheel.

SD v1.5 uses OpenAI CLIP's byte-level BPE (49,408 tokens, 77 positions, lower case). Its source file,
``bpe_simple_vocab_16e6.txt.gz``, is carried by the ``open_clip_torch`` wheel; we download that wheel with pip
(no dependencies, never installed or imported), read the one file out of the zip, check its sha256, and follow
OpenAI's ``SimpleTokenizer`` recipe to write the ``vocab.json`` / ``merges.txt`` pair that
``transformers.CLIPTokenizer`` loads. The result lives in ``cache_dir()/tokenizer-sd15``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

from cfaudit import assets, atomic_io
from cfaudit.errors import CfauditError

OPEN_CLIP_REQUIREMENT = "open_clip_torch==3.3.0"
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
BPE_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
TOKENIZER_DIRNAME = "tokenizer-sd15"
MAX_LENGTH = 77
#: OpenAI's vocabulary keeps the first 49,152 - 256 - 2 merges of the file (after its header line).
_N_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible byte -> printable character table (printable bytes map to themselves)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    characters = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in characters), strict=True))


def vocab_and_merges(bpe_gz: bytes) -> tuple[dict[str, int], list[str]]:
    """Build the 49,408-entry vocabulary and the merge list from the gzipped BPE file's bytes."""
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    merges = [line for line in lines[1 : _N_MERGES + 1] if line.strip()]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}, merges


def tokenizer_files(pad_token: str = "<|endoftext|>") -> dict[str, Any]:
    """The small JSON files beside vocab/merges that make ``CLIPTokenizer.from_pretrained`` behave like SD's."""
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    }
    config = {
        **special,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": True,
        "add_prefix_space": False,
        "errors": "replace",
    }
    return {"special_tokens_map.json": special, "tokenizer_config.json": config}


def write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[str], pad_token: str) -> None:
    """Write a complete tokenizer folder (each file atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_io.write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    atomic_io.write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    for name, data in tokenizer_files(pad_token).items():
        atomic_io.write_json(folder / name, data)


def _read_bpe_from_wheel(wheel: Path) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(BPE_MEMBER)
    except (zipfile.BadZipFile, KeyError) as error:
        raise CfauditError(
            f"{wheel}: no {BPE_MEMBER} inside ({error}); is this the {OPEN_CLIP_REQUIREMENT} wheel?"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != BPE_SHA256:
        raise CfauditError(
            f"{wheel}: {BPE_MEMBER} has sha256 {digest}, expected {BPE_SHA256}; the wheel is not the one pinned"
        )
    return data


def sd_tokenizer_dir(*, fetch: bool = True, wheel: str | os.PathLike[str] | None = None) -> Path:
    """The folder of SD v1.5's tokenizer (``vocab.json``, ``merges.txt``...), built once into the cache.

    ``wheel`` uses a local ``open_clip_torch`` wheel instead of downloading one; ``fetch=False`` raises instead
    of downloading when the cache is empty.
    """
    folder = assets.cache_dir() / TOKENIZER_DIRNAME
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        return folder
    if wheel is None and not fetch:
        raise CfauditError(
            f"SD tokenizer missing: {folder} has no vocab.json/merges.txt; run `cfaudit models fetch-tokenizer`"
        )
    if wheel is not None:
        bpe = _read_bpe_from_wheel(Path(wheel))
    else:
        with assets.scratch_dir() as scratch:
            bpe = _read_bpe_from_wheel(assets.pip_download(OPEN_CLIP_REQUIREMENT, Path(scratch), binary=True))
    vocab, merges = vocab_and_merges(bpe)
    write_tokenizer(folder, vocab, merges, pad_token="<|endoftext|>")
    return folder


def copy_tokenizer(destination: Path, pad_token: str = "<|endoftext|>") -> Path:
    """Write SD's tokenizer into ``destination`` (a pipeline's ``tokenizer/`` folder) with the given padding."""
    source = sd_tokenizer_dir()
    vocab = json.loads((source / "vocab.json").read_text(encoding="utf-8"))
    merges = (source / "merges.txt").read_text(encoding="utf-8").split("\n")[1:]
    write_tokenizer(destination, vocab, [m for m in merges if m], pad_token)
    return destination


def load_sd_tokenizer(folder: str | os.PathLike[str] | None = None) -> Any:
    """A ``transformers.CLIPTokenizer`` from ``folder`` (default: the cached SD v1.5 tokenizer)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder or sd_tokenizer_dir()))
