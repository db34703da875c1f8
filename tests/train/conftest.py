"""Tiny inputs for the training tests: a random tiny-preset pipeline on disk and an index of a few PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.tiny_data import make_index


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfaudit.models.random_init import write_random_pipeline

    return write_random_pipeline(tmp_path_factory.mktemp("models") / "tiny", "tiny", seed=0)


@pytest.fixture()
def tiny_index(tmp_path: Path) -> Path:
    return make_index(tmp_path / "data")
