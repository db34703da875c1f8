"""How the browser tests find Chromium (tests/browser_support.py): a named binary, PATH, Playwright's, or a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

import tests.browser_support as support


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_a_named_binary_wins(tmp_path: Path):
    binary = _executable(tmp_path / "my-chrome")
    found, why = support.find_chromium({"CFAUDIT_CHROMIUM": str(binary), "PATH": ""})
    assert found == binary and "CFAUDIT_CHROMIUM" in why


def test_a_named_binary_that_is_missing_says_so(tmp_path: Path):
    found, why = support.find_chromium({"CFAUDIT_CHROMIUM": str(tmp_path / "nothing"), "PATH": ""})
    assert found is None and "is not a file" in why


def test_chromium_on_path_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(support, "_playwright_chromium", lambda: None)
    binary = _executable(tmp_path / "chromium-browser")
    found, why = support.find_chromium({"PATH": str(tmp_path)})
    assert found == binary and "on PATH" in why


def test_playwright_chromium_is_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    binary = _executable(tmp_path / "chrome")
    monkeypatch.setattr(support, "_playwright_chromium", lambda: binary)
    found, why = support.find_chromium({"PATH": str(tmp_path / "empty")})
    assert found == binary and "Playwright" in why


def test_no_browser_gives_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(support, "_playwright_chromium", lambda: None)
    found, why = support.find_chromium({"PATH": str(tmp_path)})
    assert found is None and "no Chromium found" in why


@pytest.mark.parametrize(("value", "required"), [("1", True), ("true", True), ("", False), ("0", False)])
def test_ci_can_require_the_browser(value: str, required: bool):
    assert support.browser_required({"CFAUDIT_REQUIRE_BROWSER": value}) is required
