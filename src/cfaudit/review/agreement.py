"""What the reviewers said: per candidate, how many reviews and what share confirmed it; how much they agreed.

**Confirmed** (:func:`confirms`) depends on what the candidate claims:

* an edit folder's intervention (kind ``intervention``): the counterfactual is plausible *and* the intended change
  is visible (the editor did what it was asked, believably);
* a discovery's classifier-head candidate (kind ``head``): the counterfactual is plausible *and* something else
  changed (an expert sees the co-change the classifier reported);
* a discovery's change-cluster candidate (kind ``region``): plausible, something else changed, *and* the reviewer
  marked it within :data:`REGION_RADIUS` of the cluster's centre (a change elsewhere is not this one). A region
  candidate without a recorded centre is treated as a head candidate.

Only ratings of the edit the queue names count: a rating whose digest differs from the queue item's (the edit
changed after it was rated) is *stale* and left out, as are ratings of items that changed since the queue was
made. The share confirmed is over ratings (one per reviewer and item).

**Agreement** between reviewers is Cohen's kappa for two reviewers and Fleiss' kappa for three or more, over the
items that every one of them rated (kappa needs each item judged by all raters; items rated by only some are
left out, and with fewer than two shared items it is not computed). Kappa is undefined when every answer is the
same (agreement is then complete but expected by chance as well); it is reported as missing with that reason.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from cfaudit.review.queue import Candidate, ReviewQueue
from cfaudit.review.ratings import Rating

#: A region candidate is confirmed by a mark within this distance of its centre, as a fraction of the image side.
REGION_RADIUS = 0.15
QUESTIONS: dict[str, str] = {
    "plausible": "plausible",
    "intended_visible": "intended change visible",
    "other_change": "something else changed",
}
CONFIRMED_MEANING: dict[str, str] = {
    "intervention": "plausible and the intended change visible",
    "head": "plausible and something else changed",
    "region": f"plausible and something else changed, marked within {REGION_RADIUS:.0%} of the image side of the "
    "cluster's centre",
}


# --- kappa -----------------------------------------------------------------------------------------------------


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """Cohen's kappa of two raters' labels of the same items (NaN when chance agreement is 1)."""
    if len(first) != len(second):
        raise ValueError(
            f"the raters labelled {len(first)} and {len(second)} items; they must label the same ones"
        )
    if not first:
        raise ValueError("no items")
    n = len(first)
    categories = sorted(set(first) | set(second), key=str)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    expected = sum((list(first).count(c) / n) * (list(second).count(c) / n) for c in categories)
    return math.nan if expected >= 1.0 else (observed - expected) / (1.0 - expected)


def fleiss_kappa(counts: np.ndarray | Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa of an items x categories table of how many raters chose each category (every row sums to
    the same number of raters, at least two). NaN when chance agreement is 1."""
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
        raise ValueError(f"expected an items x categories table, got shape {table.shape}")
    if (table < 0).any() or not np.allclose(table, np.round(table)):
        raise ValueError("counts must be whole numbers of raters, 0 or more")
    raters = table.sum(axis=1)
    if not np.allclose(raters, raters[0]) or raters[0] < 2:
        raise ValueError("every item needs the same number of raters, at least two")
    n, items = float(raters[0]), table.shape[0]
    shares = table.sum(axis=0) / (items * n)  # p_j: the share of all ratings in category j
    per_item = ((table**2).sum(axis=1) - n) / (n * (n - 1))  # P_i: agreeing pairs of raters on item i
    observed, expected = float(per_item.mean()), float((shares**2).sum())
    return math.nan if expected >= 1.0 else (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class Agreement:
    """Kappa between reviewers over the items all of them rated; ``kappa`` None when not computed (see ``note``)."""

    statistic: str  # "Cohen's kappa", "Fleiss' kappa" or "" (not computed)
    kappa: float | None
    items: int
    reviewers: tuple[str, ...]
    note: str = ""


#: Whatever names a rated item (a mapping's keys are invariant, so one type variable for any of them).
Item = TypeVar("Item", bound=Hashable)


def agreement(labels: Mapping[Item, Mapping[str, Hashable]]) -> Agreement:
    """Agreement of the reviewers in ``labels`` (item -> reviewer -> answer); see the module docstring."""
    reviewers = tuple(sorted({reviewer for by in labels.values() for reviewer in by}))
    if len(reviewers) < 2:
        return Agreement("", None, 0, reviewers, "one reviewer" if reviewers else "no ratings")
    shared = [item for item, by in labels.items() if all(r in by for r in reviewers)]
    statistic = "Cohen's kappa" if len(reviewers) == 2 else "Fleiss' kappa"
    if len(shared) < 2:
        note = f"fewer than two items rated by all {len(reviewers)} reviewers"
        return Agreement(statistic, None, len(shared), reviewers, note)
    if len(reviewers) == 2:
        kappa = cohen_kappa(
            [labels[i][reviewers[0]] for i in shared], [labels[i][reviewers[1]] for i in shared]
        )
    else:
        categories = sorted({labels[i][r] for i in shared for r in reviewers}, key=str)
        counts = [[sum(labels[i][r] == c for r in reviewers) for c in categories] for i in shared]
        kappa = fleiss_kappa(counts)
    if math.isnan(kappa):
        return Agreement(
            statistic, None, len(shared), reviewers, "every answer was the same: kappa is undefined"
        )
    return Agreement(statistic, kappa, len(shared), reviewers)


# --- per candidate ---------------------------------------------------------------------------------------------


def mark_near(rating: Rating, candidate: Candidate, radius: float = REGION_RADIUS) -> bool:
    """Whether the rating's mark lies within ``radius`` (a fraction of the image side) of the candidate's centre."""
    if rating.mark is None or rating.image_size is None or candidate.x is None or candidate.y is None:
        return False
    (x, y), (width, height) = rating.mark, rating.image_size
    return math.hypot((x + 0.5) / width - candidate.x, (y + 0.5) / height - candidate.y) <= radius


def confirms(rating: Rating, candidate: Candidate) -> bool:
    """Whether ``rating`` confirms ``candidate`` (the definitions are in the module docstring)."""
    if candidate.kind == "intervention":
        return rating.plausible and rating.intended_visible
    if not (rating.plausible and rating.other_change):
        return False
    if candidate.kind == "region" and candidate.x is not None and candidate.y is not None:
        return mark_near(rating, candidate)
    return True


@dataclass(frozen=True)
class CandidateReview:
    """The reviews of one candidate's items."""

    candidate: Candidate
    items: int  # items of the candidate in the queue
    rated_items: int  # of them, rated by at least one reviewer
    reviews: int  # ratings counted (one per reviewer and item)
    reviewers: tuple[str, ...]
    confirmed: int
    answers: dict[str, int]  # question -> ratings answering yes
    agreement: Agreement  # on "confirmed"

    @property
    def share_confirmed(self) -> float | None:
        return self.confirmed / self.reviews if self.reviews else None

    @property
    def meaning(self) -> str:
        kind = self.candidate.kind
        if kind == "region" and (self.candidate.x is None or self.candidate.y is None):
            kind = "head"  # confirmed as a head candidate is (see confirms)
        return CONFIRMED_MEANING.get(kind, CONFIRMED_MEANING["head"])


@dataclass(frozen=True)
class ReviewSummary:
    """Everything the report says about one queue's ratings."""

    candidates: list[CandidateReview]
    agreement: dict[str, Agreement]  # question -> agreement over every item of the queue
    reviewers: dict[str, int]  # reviewer -> items rated (counted ratings)
    ratings: int  # counted
    stale: int  # left out: the rated edit is not the one the queue names (changed since)
    outside: int  # left out: ratings of edits that are not in this queue
    items: int
    comments: list[tuple[Rating, tuple[str, ...]]] = field(default_factory=list)  # (rating, candidate titles)


def summarize(
    queue: ReviewQueue, ratings: Sequence[Rating], changed: set[tuple[str, str]] | frozenset = frozenset()
) -> ReviewSummary:
    """Count and compare the ratings of ``queue``'s items; ``changed``: item keys whose edit changed since the
    queue was made (:func:`cfaudit.review.queue.changed_items`), whose ratings are left out."""
    items = {item.key: item for item in queue.items}
    counted: list[Rating] = []
    stale = outside = 0
    for rating in ratings:
        item = items.get(rating.item_key)
        if item is None:
            outside += 1
        elif item.key in changed or rating.item_digest != item.digest:
            stale += 1
        else:
            counted.append(rating)
    by_item: dict[tuple[str, str], dict[str, Rating]] = {}
    for rating in counted:
        by_item.setdefault(rating.item_key, {})[rating.reviewer] = rating

    reviews = []
    for candidate in queue.candidates:
        own = [item.key for item in queue.items_of(candidate.key)]
        own_ratings = [r for key in own for r in by_item.get(key, {}).values()]
        decisions = {
            key: {name: confirms(r, candidate) for name, r in by_item[key].items()}
            for key in own
            if key in by_item
        }
        reviews.append(
            CandidateReview(
                candidate=candidate,
                items=len(own),
                rated_items=len(decisions),
                reviews=len(own_ratings),
                reviewers=tuple(sorted({r.reviewer for r in own_ratings})),
                confirmed=sum(confirms(r, candidate) for r in own_ratings),
                answers={q: sum(r.answers()[q] for r in own_ratings) for q in QUESTIONS},
                agreement=agreement(decisions),
            )
        )
    overall = {
        question: agreement(
            {key: {name: r.answers()[question] for name, r in by.items()} for key, by in by_item.items()}
        )
        for question in QUESTIONS
    }
    per_reviewer: dict[str, int] = {}
    for rating in counted:
        per_reviewer[rating.reviewer] = per_reviewer.get(rating.reviewer, 0) + 1
    titles = {c.key: c.title for c in queue.candidates}
    comments = [
        (r, tuple(titles[k] for k in items[r.item_key].candidates if k in titles))
        for r in counted
        if r.comment
    ]
    return ReviewSummary(
        candidates=reviews,
        agreement=overall,
        reviewers=dict(sorted(per_reviewer.items())),
        ratings=len(counted),
        stale=stale,
        outside=outside,
        items=len(queue.items),
        comments=comments,
    )
