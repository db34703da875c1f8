"""Shared test settings: one torch thread keeps the suite predictable on 2-core machines; the ``chromium`` fixture."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser_support import CHROMIUM_ARGS, HOW_TO_GET_ONE, browser_required, find_chromium

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Playwright, for the whole session; skips (or fails, in CI) without one."""
    path, why = find_chromium()
    if path is None:
        message = f"browser test needs Chromium: {why}; {HOW_TO_GET_ONE}"
        if browser_required():
            pytest.fail(f"{message} (CFAUDIT_REQUIRE_BROWSER is set)")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)
        yield browser
        browser.close()
