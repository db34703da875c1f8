"""The report's expert review section: per candidate the reviews and the share confirmed, kappa, and bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cfaudit.data.images import load_image, save_image
from cfaudit.errors import CfauditError
from cfaudit.report import build_report
from cfaudit.review.agreement import cohen_kappa, fleiss_kappa
from cfaudit.review.queue import ReviewQueue, make_queue
from cfaudit.review.ratings import Rating, RatingStore
from tests.report.fake_outputs import make_discovery, make_edit_job, make_phantom_index
from tests.report.html_page import Node, parse


@pytest.fixture(scope="module")
def index_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_phantom_index(tmp_path_factory.mktemp("review-report"), n=12)


@pytest.fixture
def discovery_queue(tmp_path: Path, index_csv: Path) -> ReviewQueue:
    """Candidates rank-1 (head) and rank-2 (region at x 0.72, y 0.3), both do(Cardiomegaly=0), 4 images each."""
    return make_queue(make_discovery(tmp_path / "discovery", index_csv), top=2, images=4)


def rate(queue: ReviewQueue, reviewer: str, other: list[bool], mark: tuple[int, int] | None = None, **extra):
    store = RatingStore(queue.ratings_path)
    for item, changed in zip(queue.items, other, strict=True):
        store.save(
            Rating(reviewer, item.image_id, item.intervention, item.digest, plausible=True, intended_visible=True,
                   other_change=changed, mark=mark if changed else None, image_size=(64, 64), **extra)
        )  # fmt: skip


def review_of(report: Path) -> Node:
    section = parse(report.read_text(encoding="utf-8")).find("section", id="review-1")
    assert section is not None, "the report should have an expert review section"
    return section


def rows_of(table: Node) -> list[list[str]]:
    return [[cell.text() for cell in row.iter("td")] for row in table.find("tbody").iter("tr")]


def test_the_section_gives_reviews_confirmed_shares_and_cohens_kappa(
    discovery_queue: ReviewQueue, tmp_path: Path
):
    queue = discovery_queue
    centre = (46, 19)  # (0.72, 0.3) of a 64 px image
    a_said, b_said = [True, True, True, False], [True, True, False, False]
    rate(queue, "Dr A", a_said, centre, comment="pacemaker gone")
    rate(queue, "Dr B", b_said, (5, 60))  # B sees a change, but far from the cluster

    section = review_of(build_report([queue.source.parent], tmp_path / "report.html"))

    facts = section.find("ul", cls="facts").text()
    assert "counterfactuals 4" in facts and "ratings 8" in facts and "Dr A 4 rated" in facts
    head, region = rows_of(section.find("table", cls="review-table"))
    assert head[1].startswith("do(Cardiomegaly=0) → Support Devices") and "flagged" in head[1]
    # Head: confirmed whenever plausible and something else changed: A 3 + B 2 of 8 reviews.
    assert head[2] == "8 2 reviewers 4 of 4 rated" and head[3] == "62% 5 of 8"
    expected = cohen_kappa(a_said, b_said)
    assert head[7] == f"{expected:+.3f} Cohen's kappa, 4 items".replace("-", "−")
    # Region: only marks near its centre confirm it: A's three.
    assert region[1].startswith("do(Cardiomegaly=0) → cluster 1") and region[3] == "38% 3 of 8"
    assert "marked within 15%" in section.find("p", cls="lead").text()
    agreement = dict(rows_of(list(section.iter("table"))[1]))
    assert agreement["something else changed"].startswith(f"{expected:+.3f}".replace("-", "−"))
    assert "undefined" in agreement["plausible"]  # every answer "plausible": kappa has nothing to measure
    assert "pacemaker gone" in section.find("details").text()
    assert "changed since" not in section.text() and "left out" not in section.text()


def test_three_reviewers_get_fleiss_kappa(discovery_queue: ReviewQueue, tmp_path: Path):
    said = {"A": [True, True, False, False], "B": [True, False, False, False], "C": [True, True, True, False]}
    for name, answers in said.items():
        rate(discovery_queue, name, answers)

    section = review_of(build_report([discovery_queue.path], tmp_path / "report.html"))

    counts = [[sum(not said[r][i] for r in said), sum(said[r][i] for r in said)] for i in range(4)]
    expected = f"{fleiss_kappa(counts):+.3f}".replace("-", "−")
    agreement = dict(rows_of(list(section.iter("table"))[1]))
    assert agreement["something else changed"] == f"{expected} (Fleiss' kappa, 4 items)"


def test_an_edit_folder_review_confirms_by_the_intended_change(tmp_path: Path, index_csv: Path):
    edits = make_edit_job(tmp_path / "edits", index_csv, images=2)
    queue = make_queue(edits)
    store = RatingStore(queue.ratings_path)
    for k, item in enumerate(queue.items):
        store.save(Rating("Dr A", item.image_id, item.intervention, item.digest, True, k != 1, False))

    section = review_of(build_report([tmp_path], tmp_path / "report.html"))

    first, second = rows_of(section.find("table", cls="review-table"))
    assert first[1].startswith(queue.items[0].intervention) and first[3] == "50% 1 of 2"
    assert second[3] == "100% 2 of 2" and second[7] == "– one reviewer"
    assert "intended change visible" in section.find("p", cls="lead").text()


def test_ratings_of_a_changed_edit_are_left_out_with_a_note(discovery_queue: ReviewQueue, tmp_path: Path):
    rate(discovery_queue, "Dr A", [True, True, True, True])
    item = discovery_queue.items[0]
    path = discovery_queue.edit_folder / item.counterfactual
    save_image(np.clip(load_image(path) * 0.5, 0, 1), path, bits=16)

    report = build_report([discovery_queue.path], tmp_path / "report.html")
    section = review_of(report)

    assert "ratings 3" in section.find("ul", cls="facts").text()
    assert "1 item(s) differ" in section.text() and "Re-make the queue" in section.text()
    assert (
        "changed since this queue was made"
        in parse(report.read_text(encoding="utf-8")).find("div", cls="notes").text()
    )


def test_a_re_run_discovery_is_noted(discovery_queue: ReviewQueue, tmp_path: Path):
    candidates = discovery_queue.source / "candidates.csv"
    text = candidates.read_text(encoding="utf-8")
    candidates.write_text(text.replace("Support Devices", "Pneumonia"), encoding="utf-8")
    section = review_of(build_report([discovery_queue.path], tmp_path / "report.html"))
    assert "candidates.csv changed since this queue was made" in section.text()
    assert "Support Devices" in section.find("table", cls="review-table").text()  # what was reviewed


def test_a_corrupt_ratings_file_stops_the_report_naming_the_line(
    discovery_queue: ReviewQueue, tmp_path: Path
):
    rate(discovery_queue, "Dr A", [True, False, True, False])
    text = discovery_queue.ratings_path.read_text(encoding="utf-8")
    discovery_queue.ratings_path.write_text(text[:-30], encoding="utf-8")
    with pytest.raises(
        CfauditError, match=rf"{discovery_queue.ratings_path}, line 5: the last row is cut short"
    ):
        build_report([discovery_queue.path], tmp_path / "report.html")


def test_another_programs_queue_json_is_skipped_and_no_review_is_noted(tmp_path: Path, index_csv: Path):
    edits = make_edit_job(tmp_path / "edits", index_csv, images=1)
    (edits / "jobs").mkdir()
    (edits / "jobs" / "queue.json").write_text('{"tasks": []}', encoding="utf-8")

    page = parse(build_report([tmp_path], tmp_path / "report.html").read_text(encoding="utf-8"))

    assert page.find("section", id="review-1") is None
    assert "Expert review left out" in page.find("ul", cls="absent").text()
    assert "not a review queue of cfaudit" in page.find("div", cls="notes").text()
