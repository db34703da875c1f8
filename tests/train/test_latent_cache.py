from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cfaudit.data.records import DataIndex
from cfaudit.models.loading import load_components
from cfaudit.train import latent_cache as lc


def test_encode_once_then_read_from_cache(tiny_model_dir: Path, tiny_index: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    vae = load_components(tiny_model_dir).vae
    paths = DataIndex.read(tiny_index).image_paths()
    key = lc.cache_key(
        lc.vae_fingerprint(vae, tiny_model_dir), lc.file_sha256(tiny_index), "train", 64, paths
    )
    first = lc.load_or_encode(vae, paths, 64, tmp_path / "cache", key)
    assert first.mean.shape == (6, 4, 8, 8) and (first.std > 0).all()
    assert first.path is not None and first.path.is_file()

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("encoded again although the cache was valid")

    monkeypatch.setattr(lc, "encode_images", fail)
    second = lc.load_or_encode(vae, paths, 64, tmp_path / "cache", key)
    assert torch.equal(first.mean, second.mean) and torch.equal(first.std, second.std)

    samples = first.sample(torch.tensor([0, 0]), torch.Generator().manual_seed(0))
    assert samples.shape == (2, 4, 8, 8) and not torch.equal(samples[0], samples[1])


def test_key_changes_with_inputs(tiny_index: Path) -> None:
    paths = DataIndex.read(tiny_index).image_paths()
    base = lc.cache_key("vae", "index", "train", 64, paths)
    assert base == lc.cache_key("vae", "index", "train", 64, paths)
    assert base != lc.cache_key("vae2", "index", "train", 64, paths)
    assert base != lc.cache_key("vae", "index", "val", 64, paths)
    assert base != lc.cache_key("vae", "index", "train", 128, paths)
    stat = paths[0].stat()
    os.utime(paths[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the image was rewritten
    assert base != lc.cache_key("vae", "index", "train", 64, paths)
