"""The review page's session (cfaudit.ui.review_app.ReviewSession, no browser): opening, pictures, clicks, saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cfaudit.data.images import load_image, save_image
from cfaudit.errors import CfauditError
from cfaudit.review.queue import make_queue
from cfaudit.review.ratings import Rating, RatingStore, read_ratings
from cfaudit.ui.review_app import DISPLAY_PIXELS, MARK_COLOUR, ReviewSession


def test_opening_a_queue_whose_edits_changed_is_refused_and_the_ratings_kept(edits: Path):
    queue = make_queue(edits)
    store = RatingStore(queue.ratings_path)
    item = queue.items[0]
    store.save(Rating("Dr A", item.image_id, item.intervention, item.digest, True, True, False))
    before = queue.ratings_path.read_bytes()
    path = edits / queue.items[2].difference
    np.save(path, np.load(path) * 2)

    with pytest.raises(CfauditError) as caught:
        ReviewSession.open(queue.folder)

    message = str(caught.value)
    assert (
        f"{queue.items[2].image_id} {queue.items[2].intervention}" in message
        and "re-make the queue" in message
    )
    assert queue.ratings_path.read_bytes() == before
    make_queue(edits)  # re-made: it opens, and the unchanged item's rating still counts
    assert set(ReviewSession.open(queue.folder).rated_by("Dr A")) == {item.key}


def test_opening_with_a_corrupt_ratings_file_names_the_line(edits: Path):
    queue = make_queue(edits)
    queue.ratings_path.write_text("reviewer,image_id\nDr A,x\n", encoding="utf-8")
    with pytest.raises(CfauditError, match=rf"{queue.ratings_path}, line 1: the header is"):
        ReviewSession.open(queue.folder)


def test_a_save_is_refused_when_the_edit_changed_while_the_page_was_open(edits: Path):
    session = ReviewSession.open(make_queue(edits).folder)
    item = session.item(1)
    save_image(
        np.clip(load_image(edits / item.counterfactual) + 0.2, 0, 1), edits / item.counterfactual, bits=16
    )
    with pytest.raises(CfauditError, match=r"changed in .* this rating was not saved"):
        session.save("Dr A", 1, True, True, False, None, "")
    assert read_ratings(session.queue.ratings_path) == []
    saved = session.save("Dr A", 0, True, True, True, (3, 4), "ok")
    assert saved.rating.mark == (3, 4) and saved.rating.image_size == (64, 64)


def test_pictures_are_enlarged_by_a_whole_factor_and_clicks_map_back_to_pixels(edits: Path):
    session = ReviewSession.open(make_queue(edits).folder)
    view = session.view(0)
    factor = -(-DISPLAY_PIXELS // 64)
    assert view.factor == factor and view.size == (64, 64) and view.original_label == "original"

    plain = session.pictures(0, None)
    marked = session.pictures(0, (10, 50))

    for picture in plain:
        assert picture.shape == (64 * factor, 64 * factor, 3) and picture.dtype == np.uint8
    original = np.asarray(plain[0][::factor, ::factor, 0], dtype=np.float64) / 255
    assert np.abs(original - view.original).max() <= 0.5 / 255 + 1e-6  # whole pixels, not resampled
    changed = np.any(marked[1] != plain[1], axis=-1)
    rows, cols = np.nonzero(changed)
    assert abs(cols.mean() / factor - 10.5) < 0.5 and abs(rows.mean() / factor - 50.5) < 0.5
    assert (marked[2] == MARK_COLOUR).all(axis=-1).any()
    assert session.to_image_pixels(0, (10 * factor + factor - 1, 50 * factor)) == (10, 50)
    assert session.to_image_pixels(0, (10**6, -3)) == (63, 0)


def test_the_next_unrated_item_skips_rated_ones_wraps_round_and_ignores_stale_ratings(edits: Path):
    session = ReviewSession.open(make_queue(edits).folder)
    store = session.store
    for position in (0, 1, 3):
        item = session.item(position)
        store.save(Rating("Dr A", item.image_id, item.intervention, item.digest, True, True, False))
    stale = session.item(2)
    store.save(Rating("Dr A", stale.image_id, stale.intervention, "0" * 16, True, True, False))

    assert session.next_unrated("Dr A") == 2
    assert session.next_unrated("Dr A", after=4) == 5
    assert session.next_unrated("Dr A", after=5) == 2
    assert session.next_unrated("Dr B") == 0
    assert "rated 3 of 6" in session.progress(0, "Dr A", len(session.rated_by("Dr A")))
