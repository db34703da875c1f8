"""`cfaudit review open` end to end in headless Chromium: rate three counterfactuals, reload, see them kept, report them.

Chromium comes from the ``chromium`` fixture of ``tests/conftest.py`` (skipped with the reason where there is none).
The edit folder is the report tests' fake one (``tests/report/fake_outputs.py``): real phantom images at 64 px with
synthetic edits, so no model runs here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cfaudit.review.queue import ReviewQueue, make_queue
from cfaudit.review.ratings import read_ratings
from tests.browser_support import free_port
from tests.report.fake_outputs import make_edit_job, make_phantom_index

TIMEOUT_MS = 30_000
pytestmark = pytest.mark.filterwarnings(
    r"ignore:(?s).*(no_silent_downcasting|The copy keyword is deprecated):Warning"
)


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> ReviewQueue:
    """6 counterfactuals: 3 phantom images x do(Cardiomegaly=0), do(sex=Female); queue in edits/review/."""
    root = tmp_path_factory.mktemp("review-ui")
    index_csv = make_phantom_index(root, n=6)
    return make_queue(make_edit_job(root / "edits", index_csv, images=3))


@pytest.fixture(scope="module")
def review_ui(queue: ReviewQueue) -> Iterator:
    from cfaudit.ui.review_app import ReviewSession, start_review

    running = start_review(ReviewSession.open(queue.folder), port=free_port())
    yield running
    running.close()
    assert not running.temp_root.exists()


@pytest.fixture
def new_page(chromium, review_ui) -> Iterator:
    """Open the review page in a fresh browser context (a new tab of a new window); all closed afterwards."""
    contexts = []

    def open_page():
        context = chromium.new_context(viewport={"width": 1400, "height": 1300})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(review_ui.url)
        page.wait_for_selector("#review-counterfactual img")
        return page

    yield open_page
    for context in contexts:
        context.close()


def text(page, elem_id: str) -> str:
    return " ".join(page.inner_text(f"#{elem_id}").split())


def wait_for_text(page, elem_id: str, fragment: str) -> None:
    page.wait_for_function(
        "([id, fragment]) => document.querySelector('#' + id).innerText.includes(fragment)",
        arg=[elem_id, fragment],
    )


def start(page, name: str) -> None:
    page.fill("#review-name textarea, #review-name input", name)
    page.click("#review-start")
    wait_for_text(page, "review-progress", f"reviewing as {name}")


def answer(page, plausible: str, intended: str, other: str) -> None:
    for elem_id, value in (
        ("review-plausible", plausible),
        ("review-intended", intended),
        ("review-other", other),
    ):
        page.check(f"#{elem_id} input[value='{value}']")


def checked(page, elem_id: str) -> str | None:
    return page.evaluate(f"document.querySelector('#{elem_id} input:checked')?.value ?? null")


def mark_pixel(page, elem_id: str, pixel: tuple[int, int], size: int = 64) -> None:
    """Click the centre of image pixel ``pixel`` of the picture ``elem_id`` shows (as the browser lays it out)."""
    image = page.locator(f"#{elem_id} img")
    box = image.bounding_box()
    natural = page.evaluate(f"document.querySelector('#{elem_id} img').naturalWidth")
    shown = min(box["width"], box["height"])  # the enlarged picture, scaled to fit its square box
    per_pixel = shown / size
    left = (box["width"] - shown) / 2
    top = (box["height"] - shown) / 2
    assert natural % size == 0 and natural >= size
    image.click(position={"x": left + (pixel[0] + 0.5) * per_pixel, "y": top + (pixel[1] + 0.5) * per_pixel})


def save(page, expect: str) -> None:
    page.click("#review-save")
    wait_for_text(page, "review-status", expect)


def test_rate_three_reload_see_them_kept_and_report_them(new_page, queue: ReviewQueue, tmp_path: Path):
    page = new_page()
    assert "enter your name" in text(page, "review-progress")
    start(page, "Dr Rao")
    assert text(page, "review-progress").startswith("Counterfactual 1 of 6")
    first, second, third = queue.items[:3]
    assert first.intervention in text(page, "review-item") and first.image_id in text(page, "review-item")

    # 1: plausible, intended change visible, something else changed: marked on the difference map.
    answer(page, "plausible", "yes", "yes")
    mark_pixel(page, "review-difference", (20, 41))
    wait_for_text(page, "review-mark", "Marked: x 20, y 41")
    save(page, f"saved {first.image_id}")
    # 2: plausible, nothing else; a comment.
    assert text(page, "review-progress").startswith("Counterfactual 2 of 6")
    answer(page, "plausible", "yes", "no")
    page.fill("#review-comment textarea", "clean edit")
    save(page, f"saved {second.image_id}")
    # 3: implausible; a mark, then "no" takes it away again.
    answer(page, "implausible", "no", "yes")
    mark_pixel(page, "review-counterfactual", (5, 5))
    wait_for_text(page, "review-mark", "Marked: x 5, y 5")
    page.check("#review-other input[value='no']")
    wait_for_text(page, "review-mark", "No place marked")
    save(page, f"saved {third.image_id}")

    saved = {r.image_id + r.intervention: r for r in read_ratings(queue.ratings_path)}
    assert len(saved) == 3
    one, two, three = (saved[i.image_id + i.intervention] for i in (first, second, third))
    assert (one.plausible, one.intended_visible, one.other_change, one.mark, one.image_size) == (
        True, True, True, (20, 41), (64, 64),
    )  # fmt: skip
    assert (two.other_change, two.mark, two.comment) == (False, None, "clean edit")
    assert (three.plausible, three.intended_visible, three.other_change, three.mark) == (
        False,
        False,
        False,
        None,
    )
    assert {r.reviewer for r in saved.values()} == {"Dr Rao"} and one.item_digest == first.digest

    # Reload: the name is asked again, and the page continues at the first counterfactual not rated.
    page.reload()
    page.wait_for_selector("#review-counterfactual img")
    start(page, "Dr Rao")
    assert text(page, "review-progress").startswith("Counterfactual 4 of 6") and "rated 3 of 6" in text(
        page, "review-progress"
    )
    assert checked(page, "review-plausible") is None
    page.click("#review-previous")
    wait_for_text(page, "review-progress", "Counterfactual 3 of 6")
    assert [checked(page, e) for e in ("review-plausible", "review-intended", "review-other")] == [
        "implausible", "no", "no",
    ]  # fmt: skip
    page.click("#review-previous")
    wait_for_text(page, "review-progress", "Counterfactual 2 of 6")
    assert page.input_value("#review-comment textarea") == "clean edit"
    page.click("#review-previous")
    wait_for_text(page, "review-progress", "Counterfactual 1 of 6")
    assert checked(page, "review-other") == "yes" and "x 20, y 41" in text(page, "review-mark")

    # A re-rating replaces the row; the report shows the three ratings.
    page.check("#review-plausible input[value='implausible']")
    save(page, "replacing your rating")
    assert len(read_ratings(queue.ratings_path)) == 3
    from cfaudit.report import build_report

    report = build_report([queue.edit_folder], tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="review-1"' in report and "Dr Rao</b>3 rated" in report


def test_two_tabs_of_one_reviewer_keep_each_others_ratings(new_page, queue: ReviewQueue):
    left, right = new_page(), new_page()
    start(left, "Dr Two Tabs")
    start(right, "Dr Two Tabs")
    assert text(left, "review-progress") == text(right, "review-progress")  # both at the first unrated
    right.click("#review-next")
    wait_for_text(right, "review-progress", "Counterfactual 2 of 6")

    answer(left, "plausible", "yes", "no")
    save(left, "saved")
    answer(right, "implausible", "no", "no")  # saved by a tab that never saw the left tab's rating
    save(right, "saved")

    mine = [r for r in read_ratings(queue.ratings_path) if r.reviewer == "Dr Two Tabs"]
    assert sorted((r.image_id, r.intervention, r.plausible) for r in mine) == sorted(
        [(queue.items[0].image_id, queue.items[0].intervention, True),
         (queue.items[1].image_id, queue.items[1].intervention, False)]
    )  # fmt: skip


def test_saving_without_a_name_or_an_answer_says_why_and_saves_nothing(new_page, queue: ReviewQueue):
    page = new_page()
    before = queue.ratings_path.read_bytes() if queue.ratings_path.exists() else b""
    answer(page, "plausible", "yes", "no")
    save(page, "enter your name and press Start")
    start(page, "Dr Incomplete")
    page.check("#review-plausible input[value='plausible']")
    save(page, "missing: intended change visible, something else changed")
    assert "Traceback" not in page.inner_text("body")
    after = queue.ratings_path.read_bytes() if queue.ratings_path.exists() else b""
    assert after == before
