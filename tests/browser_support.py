"""Finding the browser that the browser tests drive.

The browser tests (the report in ``tests/report``, the editor in ``tests/ui``) drive a Chromium through Playwright.
:func:`find_chromium` looks for one the usual ways: ``CFAUDIT_CHROMIUM`` (a path), the system's Chromium or Chrome
on ``PATH`` (Debian: ``apt-get install chromium``), then Playwright's own download
(``.venv/bin/playwright install chromium``). Where there is none the browser tests are skipped with that reason,
unless ``CFAUDIT_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes a missing browser a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

#: Names of a system Chromium or Chrome on PATH, in the order they are tried.
SYSTEM_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: The network is closed: without these flags Chromium waits on connections it will never get.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
HOW_TO_GET_ONE = (
    "install one (Debian: `apt-get install chromium`; anywhere: `.venv/bin/playwright install chromium`) "
    "or set CFAUDIT_CHROMIUM to a Chromium binary"
)


def _playwright_chromium() -> Path | None:
    """Playwright's own Chromium, where ``playwright install chromium`` has put it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    try:
        with sync_playwright() as playwright:
            path = Path(playwright.chromium.executable_path)
    except Exception:  # a broken driver install: no browser from this source
        return None
    return path if path.is_file() else None


def find_chromium(environ: dict[str, str] | None = None) -> tuple[Path | None, str]:
    """The Chromium to drive, or ``None`` and why none was found."""
    environ = dict(os.environ) if environ is None else environ
    named = environ.get("CFAUDIT_CHROMIUM")
    if named:
        path = Path(named)
        if path.is_file():
            return path, f"CFAUDIT_CHROMIUM={named}"
        return None, f"CFAUDIT_CHROMIUM={named} is not a file"
    for name in SYSTEM_BROWSERS:
        found = shutil.which(name, path=environ.get("PATH"))
        if found:
            return Path(found), f"{name} on PATH"
    bundled = _playwright_chromium()
    if bundled is not None:
        return bundled, "Playwright's Chromium"
    return None, "no Chromium found (none on PATH, none installed by Playwright)"


def browser_required(environ: dict[str, str] | None = None) -> bool:
    environ = dict(os.environ) if environ is None else environ
    return environ.get("CFAUDIT_REQUIRE_BROWSER", "").strip().lower() in ("1", "true", "yes")


def free_port() -> int:
    """A local TCP port nobody listens on now, for a page under test."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
