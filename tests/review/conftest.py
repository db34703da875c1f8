"""Fixtures of the review tests: a small phantom index (built once), and fresh edit folders and discoveries."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.fake_outputs import make_discovery, make_edit_job, make_phantom_index


@pytest.fixture(scope="session")
def index_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 phantom images at 64 px and their index."""
    return make_phantom_index(tmp_path_factory.mktemp("review-phantom"), n=12)


@pytest.fixture
def edits(tmp_path: Path, index_csv: Path) -> Path:
    """An edit folder of 3 images x 2 interventions (do(Cardiomegaly=0), do(sex=Female))."""
    return make_edit_job(tmp_path / "edits", index_csv, images=3)


@pytest.fixture
def discovery(tmp_path: Path, index_csv: Path) -> Path:
    """A discovery: 5 candidates (ranks 1 and 2 flagged, both do(Cardiomegaly=0); rank 2 a region at x 0.72,
    y 0.3) and its edits of 6 images x 3 interventions in edits/."""
    return make_discovery(tmp_path / "discovery", index_csv)
