"""Kappa against textbook values, what "confirmed" means per kind of candidate, and the summary of a queue's ratings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cfaudit.review.agreement import (
    REGION_RADIUS,
    agreement,
    cohen_kappa,
    confirms,
    fleiss_kappa,
    summarize,
)
from cfaudit.review.queue import Candidate, make_queue
from cfaudit.review.ratings import Rating

# Fleiss (1971) as worked in the Wikipedia article "Fleiss' kappa": 10 items, 14 raters, 5 categories.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_cohens_kappa_of_the_textbook_two_by_two_table():
    """50 items: both yes 20, A yes B no 5, A no B yes 10, both no 15.
    p_o = 35/50 = 0.7; P(A yes) = 0.5, P(B yes) = 0.6, so p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2/0.5 = 0.4."""
    first = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(second, first) == pytest.approx(0.4)


def test_cohens_kappa_of_a_three_category_table():
    """Counts (rows A, columns B) [[10, 2, 0], [1, 8, 1], [0, 3, 5]], 30 items. p_o = 23/30. Marginals A: 12, 10,
    8; B: 11, 13, 6. p_e = (12*11 + 10*13 + 8*6) / 900 = 310/900. kappa = (690 - 310) / (900 - 310) = 380/590."""
    table = [[10, 2, 0], [1, 8, 1], [0, 3, 5]]
    first, second = [], []
    for a, row in enumerate(table):
        for b, n in enumerate(row):
            first += [a] * n
            second += [b] * n
    assert cohen_kappa(first, second) == pytest.approx(380 / 590)


def test_fleiss_kappa_of_the_textbook_table():
    """P-bar = 0.378, p_j = 20, 28, 39, 21, 32 out of 140, P_e = 0.2128; kappa = (0.3780 - 0.2128) / 0.7872 = 0.210."""
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=5e-4)


def test_kappa_is_one_for_full_agreement_and_undefined_when_every_answer_is_the_same():
    assert cohen_kappa([True, False, True], [True, False, True]) == pytest.approx(1.0)
    assert fleiss_kappa([[3, 0], [0, 3], [3, 0]]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa([True, True], [True, True]))
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))
    assert cohen_kappa([True, False], [False, True]) == pytest.approx(-1.0)


def test_fleiss_kappa_refuses_a_table_with_unequal_raters():
    with pytest.raises(ValueError, match="same number of raters"):
        fleiss_kappa([[2, 1], [1, 1]])
    with pytest.raises(ValueError, match="must label the same ones"):
        cohen_kappa([1, 2], [1])


def test_agreement_uses_cohen_for_two_reviewers_and_fleiss_for_more_over_shared_items():
    two = {"a": {"X": 1, "Y": 1}, "b": {"X": 0, "Y": 1}, "c": {"X": 0, "Y": 0}, "d": {"X": 1}}
    result = agreement(two)
    assert result.statistic == "Cohen's kappa" and result.items == 3 and result.reviewers == ("X", "Y")
    assert result.kappa == pytest.approx(cohen_kappa([1, 0, 0], [1, 1, 0]))

    three = {
        item: {"X": row[0], "Y": row[1], "Z": row[2]}
        for item, row in enumerate([(1, 1, 0), (0, 0, 0), (1, 1, 1), (0, 1, 0)])
    }
    result = agreement(three)
    counts = np.array([[1, 2], [3, 0], [0, 3], [2, 1]])  # (no, yes) per item
    assert result.statistic == "Fleiss' kappa" and result.items == 4
    assert result.kappa == pytest.approx(fleiss_kappa(counts))

    assert agreement({"a": {"X": 1}}).kappa is None and agreement({"a": {"X": 1}}).note == "one reviewer"
    sparse = agreement({"a": {"X": 1, "Y": 1}, "b": {"X": 1}})
    assert sparse.kappa is None and "fewer than two items" in sparse.note
    same = agreement({"a": {"X": 1, "Y": 1}, "b": {"X": 1, "Y": 1}})
    assert same.kappa is None and "undefined" in same.note


def _rating(
    reviewer="R", plausible=True, intended=True, other=False, mark=None, size=(100, 100), **keys
) -> Rating:
    return Rating(
        reviewer=reviewer, image_id=keys.get("image", "i"), intervention=keys.get("intervention", "do(x=1)"),
        item_digest=keys.get("digest", "d"), plausible=plausible, intended_visible=intended, other_change=other,
        mark=mark, image_size=size if mark else None,
    )  # fmt: skip


def test_what_confirms_a_candidate_depends_on_its_kind():
    intervention = Candidate("do(x=1)", "do(x=1)", "intervention")
    head = Candidate("rank-1", "do(x=1)", "head", "Support Devices")
    region = Candidate("rank-2", "do(x=1)", "region", "cluster 1", x=0.7, y=0.3)
    near = (69, 29 + round(REGION_RADIUS * 100) - 2)  # centre of pixel (69.5, 42.5): 0.125 from (70, 30)
    far = (20, 80)

    assert confirms(_rating(intended=True), intervention) and not confirms(
        _rating(intended=False), intervention
    )
    assert not confirms(_rating(plausible=False, intended=True), intervention)
    assert confirms(_rating(other=True), head) and not confirms(_rating(other=False), head)
    assert not confirms(_rating(plausible=False, other=True), head)
    assert confirms(_rating(other=True, mark=near), region)
    assert not confirms(_rating(other=True, mark=far), region)
    assert not confirms(_rating(other=True), region)  # no mark: not this change
    assert confirms(
        _rating(other=True), Candidate("rank-3", "do(x=1)", "region", "cluster 2")
    )  # no centre known


def test_the_summary_counts_reviews_per_candidate_and_leaves_out_stale_ratings(discovery: Path):
    queue = make_queue(discovery, top=3, images=4)
    by_candidate = {c.key: queue.items_of(c.key) for c in queue.candidates}
    assert [c.key for c in queue.candidates] == ["rank-1", "rank-2", "rank-3"]
    cardiomegaly, age = by_candidate["rank-1"], by_candidate["rank-3"]
    region = queue.candidate("rank-2")
    centre = (round(region.x * 64), round(region.y * 64))  # the fake edits are 64 px

    def rate(item, reviewer, other, mark=None, digest=None, plausible=True):
        return Rating(
            reviewer, item.image_id, item.intervention, digest or item.digest, plausible, True, other,
            mark=mark, image_size=(64, 64) if mark else None,
        )  # fmt: skip

    ratings = [
        # Two reviewers rate all four cardiomegaly edits; A marks the cluster on three, B sees a change on two.
        *(rate(i, "A", True, centre) for i in cardiomegaly[:3]),
        rate(cardiomegaly[3], "A", False),
        *(rate(i, "B", True) for i in cardiomegaly[:2]),
        *(rate(i, "B", False) for i in cardiomegaly[2:]),
        rate(age[0], "A", True, plausible=False),
        rate(age[1], "A", True, digest="feedfacefeedface"),  # an older edit: stale
        Rating("A", "not-in-queue", "do(x=1)", "d", True, True, False),
    ]

    summary = summarize(queue, ratings)

    assert summary.ratings == 9 and summary.stale == 1 and summary.outside == 1
    assert summary.reviewers == {"A": 5, "B": 4}
    rank1, rank2, rank3 = summary.candidates
    assert (rank1.items, rank1.reviews, rank1.rated_items, rank1.reviewers) == (4, 8, 4, ("A", "B"))
    assert rank1.confirmed == 5 and rank1.share_confirmed == pytest.approx(5 / 8)
    # Head: A yes yes yes no, B yes yes no no -> Cohen over 4 items: p_o = 3/4, p_e = 3/4*1/2 + 1/4*1/2 = 1/2.
    assert rank1.agreement.statistic == "Cohen's kappa" and rank1.agreement.kappa == pytest.approx(0.5)
    # Region: only A's marks at the centre count; B never marked.
    assert rank2.reviews == 8 and rank2.confirmed == 3
    assert (rank3.reviews, rank3.confirmed, rank3.answers["plausible"]) == (1, 0, 0)
    assert rank3.agreement.kappa is None
    assert summary.agreement["other_change"].items == 4
    assert summary.agreement["plausible"].kappa is None  # every shared answer "plausible": undefined

    changed = summarize(queue, ratings, changed={cardiomegaly[0].key})
    assert changed.stale == 3 and changed.candidates[0].reviews == 6
