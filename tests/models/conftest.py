"""A tiny-preset random pipeline on disk, shared by the models tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cfaudit.models.random_init import write_random_pipeline

    return write_random_pipeline(tmp_path_factory.mktemp("models") / "tiny", "tiny", seed=0)
