"""The report's expert review sections: the raters' agreement and what the review confirmed."""

from __future__ import annotations

from typing import Any

from cfaudit.report.collect import ReviewInput
from cfaudit.report.formatting import count, number, percent
from cfaudit.review.agreement import CONFIRMED_MEANING, QUESTIONS, Agreement, summarize
from cfaudit.review.queue import candidates_changed


def kappa_parts(result: Agreement) -> tuple[str, str]:
    """(``+0.520``, ``Cohen's kappa, 12 items``), or a dash and why it was not computed."""
    if result.kappa is None:
        return "–", result.note
    return number(result.kappa, signed=True), f"{result.statistic}, {result.items} items"


def kappa_text(result: Agreement) -> str:
    """``+0.520 (Cohen's kappa, 12 items)``, or a dash with why it was not computed."""
    return "{} ({})".format(*kappa_parts(result))


def review_section(review: ReviewInput, number_: int, notes: list[str]) -> dict[str, Any]:
    """Per candidate the reviews and the share that confirmed it; agreement per question; the comments."""
    queue = review.queue
    summary = summarize(queue, review.ratings, review.changes.keys)
    local_notes = []
    if review.changes:
        changed = (
            f"the edit folder {queue.edit_folder} changed since this queue was made: {len(review.changes.changed)} "
            f"item(s) differ and {len(review.changes.missing)} are gone; their ratings are left out. Re-make the "
            "queue with `cfaudit review queue` to review them again."
        )
        local_notes.append(changed[0].upper() + changed[1:])
        notes.append(
            f"{queue.path}: {changed}"
        )  # also among the page's notes at the top: the review is partial
    if candidates_changed(queue):
        local_notes.append(
            f"The discovery's {queue.candidates_file[0] if queue.candidates_file else 'candidates'} changed since this "
            "queue was made (was the discovery re-run?): the candidates below are the ones the queue recorded; "
            "re-make the queue to review the new ones."
        )
    if summary.stale:
        local_notes.append(
            f"{summary.stale} rating(s) are of an earlier version of their edit (or of a changed one) and are "
            "left out."
        )
    if summary.outside:
        local_notes.append(
            f"{summary.outside} rating(s) in {queue.ratings_path.name} are of edits not in this queue."
        )
    candidates = []
    for reviewed in summary.candidates:
        candidate = reviewed.candidate
        answers = {
            q: percent(n / reviewed.reviews) if reviewed.reviews else "–" for q, n in reviewed.answers.items()
        }
        candidates.append(
            {
                "rank": count(candidate.rank) if candidate.rank is not None else "",
                "intervention": candidate.intervention,
                "target": candidate.target,
                "kind": candidate.kind,
                "flagged": candidate.flagged,
                "status": candidate.status,
                "n_items": reviewed.items,
                "rated_items": reviewed.rated_items,
                "reviews": reviewed.reviews,
                "reviewers": len(reviewed.reviewers),
                "confirmed": f"{reviewed.confirmed} of {reviewed.reviews}" if reviewed.reviews else "–",
                "share": percent(reviewed.share_confirmed),
                "answers": answers,
                "kappa": kappa_parts(reviewed.agreement),
            }
        )
    kinds = list(dict.fromkeys(c.kind for c in queue.candidates))
    return {
        "id": f"review-{number_}",
        "title": "Expert review",
        "name": f"{queue.folder.parent.name}/{queue.folder.name}",
        "path": str(queue.path),
        "source": f"{'discovery' if queue.source_kind == 'discovery' else 'edit folder'} {queue.source}",
        "n_items": summary.items,
        "ratings": summary.ratings,
        "reviewers": list(summary.reviewers.items()),
        "candidates": candidates,
        "questions": ["plausible", "intended change", "other change"],  # short headers of QUESTIONS
        "agreement": [(QUESTIONS[q], kappa_text(a)) for q, a in summary.agreement.items()],
        "definitions": [(kind, CONFIRMED_MEANING.get(kind, CONFIRMED_MEANING["head"])) for kind in kinds],
        "comments": [
            {
                "reviewer": r.reviewer,
                "image_id": r.image_id,
                "intervention": r.intervention,
                "candidates": ", ".join(titles),
                "comment": r.comment,
            }
            for r, titles in summary.comments
        ],
        "notes": local_notes,
    }
