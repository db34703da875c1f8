"""Fixtures of the report tests: fake outputs of every step (built once) and one report made from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfaudit.report import build_report
from tests.report.fake_outputs import Workspace, make_workspace


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("report-inputs") / "demo")


@pytest.fixture(scope="session")
def report_path(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the whole workspace (one --from folder), with the default number of examples."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    return build_report([workspace.root], out, title="Phantom audit")
