"""The ratings file: saved per reviewer and item, merged under a lock, and never written over when it is corrupt."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from filelock import FileLock

from cfaudit.errors import CfauditError
from cfaudit.review import ratings as ratings_module
from cfaudit.review.ratings import RATING_COLUMNS, Rating, RatingStore, read_ratings


def rating(reviewer: str = "Dr A", image: str = "img-1", **changes) -> Rating:
    values = dict(
        reviewer=reviewer,
        image_id=image,
        intervention="do(Cardiomegaly=0)",
        item_digest="0123456789abcdef",
        plausible=True,
        intended_visible=True,
        other_change=False,
    )
    return Rating(**{**values, **changes})


def test_a_saved_rating_reads_back_with_its_mark_comment_and_time(tmp_path: Path):
    store = RatingStore(tmp_path / "ratings.csv")
    saved = store.save(
        rating(
            other_change=True,
            mark=(12, 40),
            image_size=(64, 64),
            comment='pacemaker gone, "lead" too\nsee apex',
        )
    )

    assert saved.replaced is None and saved.rating.rated_at
    [back] = read_ratings(tmp_path / "ratings.csv")
    assert back == saved.rating
    assert back.mark == (12, 40) and back.image_size == (64, 64) and back.comment.endswith("see apex")
    header = (tmp_path / "ratings.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == ",".join(RATING_COLUMNS)


def test_a_re_rating_replaces_that_reviewers_row_only(tmp_path: Path):
    store = RatingStore(tmp_path / "ratings.csv")
    store.save(rating("Dr A", "img-1"))
    store.save(rating("Dr B", "img-1"))
    store.save(rating("Dr A", "img-2"))

    again = store.save(rating("Dr A", "img-1", plausible=False, comment="on second look, no"))

    assert again.replaced is not None and again.replaced.plausible
    rows = store.read()
    assert [(r.reviewer, r.image_id) for r in rows] == [
        ("Dr A", "img-1"),
        ("Dr B", "img-1"),
        ("Dr A", "img-2"),
    ]
    assert not rows[0].plausible and rows[1].plausible
    assert set(store.of_reviewer("  Dr   A ")) == {
        ("img-1", "do(Cardiomegaly=0)"),
        ("img-2", "do(Cardiomegaly=0)"),
    }


def test_two_tabs_saving_at_once_keep_every_rating(tmp_path: Path):
    """Two stores on one file (two browser tabs, or two apps) saving concurrently: no rating is lost."""
    path = tmp_path / "ratings.csv"
    errors: list[BaseException] = []

    def tab(name: str) -> None:
        store = RatingStore(path)  # each tab its own store, as two processes would have
        try:
            for k in range(25):
                store.save(rating("Dr A", f"{name}-{k}"))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=tab, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(r.image_id for r in read_ratings(path)) == sorted(
        f"{name}-{k}" for name in ("left", "right") for k in range(25)
    )


def test_a_save_keeps_what_another_tab_wrote_since_this_one_read(tmp_path: Path):
    path = tmp_path / "ratings.csv"
    first_tab, second_tab = RatingStore(path), RatingStore(path)
    first_tab.save(rating(image="img-1"))
    seen_by_second = second_tab.of_reviewer("Dr A")
    first_tab.save(rating(image="img-2"))  # the second tab has not seen this one

    second_tab.save(rating(image="img-3"))

    assert len(seen_by_second) == 1
    assert [r.image_id for r in read_ratings(path)] == ["img-1", "img-2", "img-3"]


def test_a_half_written_last_row_is_refused_and_left_untouched(tmp_path: Path):
    path = tmp_path / "ratings.csv"
    store = RatingStore(path)
    store.save(rating(image="img-1"))
    store.save(rating(image="img-2"))
    cut = path.read_bytes()[:-20]
    path.write_bytes(cut)

    with pytest.raises(CfauditError) as caught:
        store.save(rating(image="img-3"))

    message = str(caught.value)
    assert message.startswith(f"{path}, line 3: the last row is cut short")
    assert "no rating was saved" in message
    assert path.read_bytes() == cut


@pytest.mark.parametrize(
    ("row", "why"),
    [
        (
            "Dr B,img-9,do(sex=Female),0123456789abcdef,maybe,yes,no,,,,,,2024-05-01T10:00:00+00:00",
            "not yes or no",
        ),
        (
            "Dr B,img-9,do(sex=Female),0123456789abcdef,yes,yes,no,3,,64,64,,2024-05-01T10:00:00+00:00",
            "mark_x, mark_y",
        ),
        (
            "Dr B,img-9,do(sex=Female),0123456789abcdef,yes,yes,no,3,4,64,64,,2024-05-01T10:00:00+00:00",
            "needs the answer",
        ),
        (
            "Dr B,img-9,do(sex=Female),0123456789abcdef,yes,yes,yes,70,4,64,64,,2024-05-01T10:00:00+00:00",
            "outside the 64x64",
        ),
        ("Dr B,img-9,do(sex=Female),0123456789abcdef,yes,yes,no,,,,,,yesterday", "not an ISO 8601"),
        ("Dr B,img-9,do(sex=Female),0123456789abcdef,yes,yes,no", "7 fields"),
        (",img-9,do(sex=Female),0123456789abcdef,yes,yes,no,,,,,,2024-05-01T10:00:00+00:00", "name is empty"),
        (
            'Dr B,img-9,do(sex=Female),0123456789abcdef,yes,yes,no,,,,,"unclosed,2024-05-01T10:00:00+00:00',
            "not valid CSV",
        ),
    ],
)
def test_a_bad_row_is_named_by_its_line_after_a_multi_line_comment(tmp_path: Path, row: str, why: str):
    path = tmp_path / "ratings.csv"
    RatingStore(path).save(rating(comment="first line\nsecond line"))  # one rating on lines 2-3
    text = path.read_text(encoding="utf-8") + row + "\n"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(CfauditError) as caught:
        RatingStore(path).save(rating(image="img-2"))

    assert str(caught.value).startswith(f"{path}, line 4: ") and why in str(caught.value)
    assert path.read_text(encoding="utf-8") == text


def test_a_wrong_header_an_empty_file_and_a_repeated_rating_are_refused(tmp_path: Path):
    path = tmp_path / "ratings.csv"
    path.write_text("reviewer,image\n", encoding="utf-8")
    with pytest.raises(CfauditError, match=r"line 1: the header is"):
        read_ratings(path)
    path.write_text("", encoding="utf-8")
    with pytest.raises(CfauditError, match=r"line 1: the file is empty"):
        read_ratings(path)
    path.unlink()
    store = RatingStore(path)
    store.save(rating())
    row = path.read_text(encoding="utf-8").splitlines()[1]
    path.write_text(path.read_text(encoding="utf-8") + row + "\n", encoding="utf-8")
    with pytest.raises(CfauditError, match=r"line 3: repeats the rating of line 2"):
        read_ratings(path)


def test_ratings_check_their_answers():
    with pytest.raises(CfauditError, match="name is empty"):
        rating(reviewer="   ")
    with pytest.raises(CfauditError, match="needs the answer 'something else changed: yes'"):
        rating(mark=(1, 1), image_size=(8, 8))
    with pytest.raises(CfauditError, match="needs the size"):
        rating(other_change=True, mark=(1, 1))
    with pytest.raises(CfauditError, match=r"\(8, 2\) lies outside the 8x8 image"):
        rating(other_change=True, mark=(8, 2), image_size=(8, 8))
    assert rating(reviewer="  Dr \t A ").reviewer == "Dr A"
    assert dataclasses.replace(rating(), comment="  ok  ").comment == "ok"


def test_a_save_waits_for_the_lock_and_then_gives_up_with_a_message(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(ratings_module, "LOCK_TIMEOUT_S", 0.2)
    path = tmp_path / "ratings.csv"
    store = RatingStore(path)
    with FileLock(str(tmp_path / ".ratings.csv.lock")), pytest.raises(CfauditError, match="another program"):
        store.save(rating())
    assert not path.exists()
    store.save(rating())
    assert len(read_ratings(path)) == 1
