"""Tiny inputs for the SCM tests: an index of small PNGs whose disc width follows sex, and a tiny HVAE config."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scm.scm_tiny import TINY_MODEL, make_index


@pytest.fixture()
def tiny_index(tmp_path: Path) -> Path:
    return make_index(tmp_path / "data")


@pytest.fixture()
def tiny_model_config() -> dict:
    return dict(TINY_MODEL)
