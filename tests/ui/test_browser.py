"""`cfaudit ui` end to end in headless Chromium: upload a phantom, do(Cardiomegaly=0), see and download the result.

Chromium is found and started by the ``chromium`` fixture of ``tests/conftest.py``, found by ``tests/browser_support.py`` (the system's, Playwright's, or
``CFAUDIT_CHROMIUM``; skipped with the reason where there is none, a failure under ``CFAUDIT_REQUIRE_BROWSER=1``). The page's screenshot is written to a temporary folder, or
to ``docs/images/ui.png`` (the README's picture) with ``CFAUDIT_UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.browser_support import free_port

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "ui.png"
STEPS = 10
TIMEOUT_MS = 60_000
# Gradio's own event statistics use pandas options that pandas 3 deprecates (the app filters these too).
pytestmark = pytest.mark.filterwarnings(
    r"ignore:(?s).*(no_silent_downcasting|The copy keyword is deprecated):Warning"
)


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    """Four phantom X-rays at 128 px and their index (``index.csv``, every image in the offered split)."""
    from cfaudit.data.adapters import build_index, write_index
    from cfaudit.data.phantom import generate_phantom, load_config

    root = tmp_path_factory.mktemp("phantom")
    generate_phantom(root / "data", load_config().with_overrides(n=4, size=128), seed=11)
    write_index(build_index("phantom", root / "data", seed=0), root / "index.csv")
    return root


@pytest.fixture(scope="module")
def phantoms(phantom_root) -> list[Path]:
    return sorted((phantom_root / "data" / "images").glob("*.png"))


@pytest.fixture(scope="module")
def ui(phantom_root) -> Iterator:
    import torch

    from cfaudit.ui.app import UiOptions, make_temp_root, start
    from cfaudit.ui.session import EditorSession
    from cfaudit.ui.sources import DataSource

    torch.set_num_threads(1)
    temp_root = make_temp_root()
    session = EditorSession.from_model("demo", temp_root / "outputs", device="cpu")
    data = DataSource.read(phantom_root / "index.csv", "all")
    running = start(session, data, UiOptions(steps=STEPS), port=free_port(), temp_root=temp_root)
    yield running
    running.close()
    assert not temp_root.exists()


@pytest.fixture
def requests_made() -> dict[str, list[str]]:
    """The URLs the page asked for, of the app itself ("app") and of anywhere else ("elsewhere")."""
    return {"app": [], "elsewhere": []}


@pytest.fixture
def page(chromium, ui, requests_made) -> Iterator:
    context = chromium.new_context(viewport={"width": 1400, "height": 1300}, accept_downloads=True)
    page = context.new_page()
    local = (ui.url, "data:", "blob:", "about:")
    page.on(
        "request",
        lambda request: requests_made["app" if request.url.startswith(local) else "elsewhere"].append(
            request.url
        ),
    )
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(ui.url)
    page.wait_for_selector("#cfaudit-run")
    yield page
    context.close()


def upload(page, path: Path) -> None:
    page.set_input_files("#cfaudit-upload input[type=file]", str(path))


def choose(page, elem_id: str, option: str) -> None:
    """Pick ``option`` in a Gradio drop-down."""
    from playwright.sync_api import expect

    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=option, exact=True).click()
    expect(page.locator(f"#{elem_id} input")).to_have_value(option)


def shown_image(page, elem_id: str) -> np.ndarray:
    """The pixels of the image a component shows, fetched from its URL as the browser does."""
    source = page.get_attribute(f"#{elem_id} img", "src")
    response = page.request.get(source)
    assert response.ok, (source, response.status)
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("L"), dtype=np.float64) / 255.0


def status(page) -> str:
    return " ".join(page.inner_text("#cfaudit-status").split())


def test_upload_edit_cardiomegaly_absent_and_download(page, ui, phantoms, tmp_path, requests_made):
    upload(page, phantoms[0])
    page.wait_for_selector("#cfaudit-input img")
    assert "is ready" in status(page)
    assert page.input_value("#cfaudit-source-prompt textarea") == "Chest X-ray of subject"
    uploaded = list((ui.temp_root / "gradio").rglob(phantoms[0].name))
    assert uploaded, "the upload should be stored in the app's temporary folder"
    page.fill("#cfaudit-source-prompt textarea", "Chest X-ray of 70-years old male subject with cardiomegaly")
    choose(page, "cfaudit-finding-cardiomegaly", "absent")

    page.click("#cfaudit-run")
    page.wait_for_selector("#cfaudit-counterfactual img")
    page.wait_for_function("document.querySelector('#cfaudit-status').innerText.includes('done')")
    model_input = shown_image(page, "cfaudit-input")
    reconstruction = shown_image(page, "cfaudit-reconstruction")
    counterfactual = shown_image(page, "cfaudit-counterfactual")
    assert counterfactual.shape == model_input.shape == (128, 128)
    assert np.abs(counterfactual - model_input).mean() > 0.01, (
        "the counterfactual should differ from the input"
    )
    assert np.abs(counterfactual - reconstruction).mean() > 0.01, "the edit should change the reconstruction"
    summary = " ".join(page.inner_text("#cfaudit-summary").split())
    assert (
        "do(Cardiomegaly=0)" in summary
        and "target prompt: Chest X-ray of subject with no cardiomegaly" in summary
    )
    assert f"direct inversion, {STEPS} steps" in summary and "time taken:" in summary

    with page.expect_download() as download_info:
        page.click("#cfaudit-download")
    bundle = tmp_path / "outputs.zip"
    download_info.value.save_as(bundle)
    with zipfile.ZipFile(bundle) as archive:
        names = archive.namelist()
        record = json.loads(archive.read(next(n for n in names if n.endswith("record.json"))))
    assert any(n.endswith("counterfactual.png") for n in names)
    assert record["intervention"] == "do(Cardiomegaly=0)" and record["model"] == "demo"
    assert record["source"]["name"] == phantoms[0].name and record["steps"] == STEPS

    screenshot = SCREENSHOT if os.environ.get("CFAUDIT_UPDATE_SCREENSHOTS") == "1" else tmp_path / "ui.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert Image.open(screenshot).size[0] == 1400

    # A second edit of the same image reuses its inversion.
    choose(page, "cfaudit-sex", "Female")
    page.click("#cfaudit-run")
    page.wait_for_function(
        "document.querySelector('#cfaudit-summary').innerText.includes('do(sex=Female, Cardiomegaly=0)')"
    )
    assert "inversion cached in memory" in " ".join(page.inner_text("#cfaudit-summary").split())
    assert len(requests_made["app"]) > 10
    assert requests_made["elsewhere"] == [], (
        "the page should load nothing from outside the app (fonts, analytics)"
    )


def test_corrupt_and_disguised_uploads_show_a_message(page, ui, phantoms, tmp_path):
    data = phantoms[1].read_bytes()
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(data[: len(data) // 3])
    disguised = tmp_path / "notes.png"
    disguised.write_text("a text file renamed .png\n", encoding="utf-8")

    upload(page, corrupt)
    page.wait_for_function("document.querySelector('#cfaudit-status').innerText.includes('corrupt.png')")
    assert "Error: corrupt.png cannot be read" in status(page)
    assert page.locator("#cfaudit-input img").count() == 0

    upload(page, disguised)  # the refused file was cleared, so the upload box takes the next one at once
    page.wait_for_function("document.querySelector('#cfaudit-status').innerText.includes('notes.png')")
    message = status(page)
    assert "Error: notes.png is not a readable image" in message and "upload a PNG, JPEG or DICOM" in message
    assert "Traceback" not in page.inner_text("body") and str(ui.temp_root) not in message

    page.click("#cfaudit-run")  # nothing was accepted, so there is nothing to edit
    page.wait_for_function("document.querySelector('#cfaudit-status').innerText.includes('no image yet')")


def test_pick_from_the_data_set_shows_its_metadata_and_caption(page, phantom_root):
    from cfaudit.data.prompts import record_prompt
    from cfaudit.data.records import DataIndex

    row = DataIndex.read(phantom_root / "index.csv").table.iloc[1].to_dict()
    choose(page, "cfaudit-image-id", row["image_id"])
    page.wait_for_function("document.querySelector('#cfaudit-status').innerText.includes('is ready')")
    assert page.input_value("#cfaudit-source-prompt textarea") == record_prompt(row)
    metadata = " ".join(page.inner_text("#cfaudit-metadata").split())
    assert "data set image" in metadata and row["image_id"] in metadata and row["sex"] in metadata
    assert page.locator("#cfaudit-input img").count() == 1
