"""The report in a real browser: headless Chromium (the ``chromium`` fixture of tests/conftest.py) opens the file offline.

It checks that the main sections are there and visible, that every image decodes (``naturalWidth > 0``), that the
page asks for nothing but itself, that the table of contents stays in view, and that a phone-width window gets no
horizontal scroll bar; then it saves a full-page screenshot (to the test's temporary folder, or to
``docs/images/report.png`` with ``CFAUDIT_UPDATE_SCREENSHOTS=1``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

SECTIONS = ("summary", "data-1", "evaluation-1", "discovery-1", "edits-1", "provenance")
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "report.png"


def save_docs_screenshot(shot: Path, target: Path, width: int = 1000) -> None:
    """The full-page screenshot at ``width`` px in 256 colours: small enough for the README (~1 MB)."""
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
    small = rgb.resize((width, round(rgb.height * width / rgb.width)), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    small.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(target, optimize=True)


def test_report_renders_in_chromium(chromium, report_path: Path, tmp_path: Path):
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report_path.as_uri(), wait_until="load")

    for section in SECTIONS:
        locator = page.locator(f"#{section}")
        assert locator.count() == 1 and locator.is_visible(), section
        assert locator.bounding_box()["height"] > 100, section
    images = page.evaluate(
        "Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0,"
        " shown: i.getBoundingClientRect().width}))"
    )
    assert len(images) >= 10
    assert all(image["ok"] for image in images), [i["alt"] for i in images if not i["ok"]]
    assert all(image["shown"] > 50 for image in images), [i["alt"] for i in images if i["shown"] <= 50]
    # Offline: the only thing loaded is the file itself (data: URIs are not requests).
    assert requests == [report_path.as_uri()]
    # Wide window: nothing sticks out sideways; the table of contents stays in view when scrolled to the end.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_timeout(100)
    assert page.locator("nav.toc").bounding_box()["y"] == pytest.approx(0, abs=1)
    page.evaluate("window.scrollTo(0, 0)")

    out = tmp_path / "report.png"
    page.screenshot(path=str(out), full_page=True)
    with Image.open(out) as shot:
        assert shot.width == 1400 and shot.height > 3000
    if os.environ.get("CFAUDIT_UPDATE_SCREENSHOTS") == "1":
        save_docs_screenshot(out, DOCS_SCREENSHOT)
    page.close()


def test_report_fits_a_narrow_window(chromium, report_path: Path):
    page = chromium.new_page(viewport={"width": 420, "height": 800})
    page.goto(report_path.as_uri(), wait_until="load")
    # Tables scroll inside their own boxes, pictures shrink: the page itself never scrolls sideways.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    toc = page.locator("nav.toc").bounding_box()
    assert toc["height"] < 120  # the table of contents becomes a bar on top
    assert page.locator("#summary").is_visible()
    page.close()
