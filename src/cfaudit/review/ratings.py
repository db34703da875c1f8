"""The ratings file: one CSV row per reviewer and counterfactual, kept beside the review queue.

``ratings.csv`` has the columns :data:`RATING_COLUMNS`. Answers are ``yes`` / ``no``; ``mark_x, mark_y`` is where
the reviewer clicked to show what else changed, in pixels of the counterfactual (0, 0 = top left), and
``image_width, image_height`` the size of that pixel grid; ``item_digest`` is the digest of the edit that was
rated (:func:`cfaudit.review.queue.edit_digest`), so a rating never silently attaches to a different image.

:class:`RatingStore` is the only writer. A save takes a lock on the file (``.ratings.csv.lock``, an OS lock that
dies with its process), re-reads the file, replaces that reviewer's row for that item or appends one, and
writes the whole file atomically (:mod:`cfaudit.atomic_io`). Re-reading under the lock is what keeps two browser
tabs, or two apps, from dropping each other's ratings. A file that does not parse (a row cut short, a value out
of place, a repeated rating) is a :class:`~cfaudit.errors.CfauditError` naming the file and line, and nothing is
written over it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# filelock comes with torch and huggingface_hub (both required); it locks on POSIX and Windows alike.
from filelock import FileLock, Timeout

from cfaudit.atomic_io import atomic_open
from cfaudit.errors import CfauditError

RATING_COLUMNS: tuple[str, ...] = (
    "reviewer", "image_id", "intervention", "item_digest", "plausible", "intended_visible", "other_change",
    "mark_x", "mark_y", "image_width", "image_height", "comment", "rated_at",
)  # fmt: skip
ANSWERS = {"yes": True, "no": False}
MAX_NAME = 80
MAX_COMMENT = 2000
#: Seconds a save waits for another writer of the same file before giving up with a message.
LOCK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Rating:
    """One reviewer's answers about one counterfactual; invalid combinations are a :class:`CfauditError`."""

    reviewer: str
    image_id: str
    intervention: str
    item_digest: str
    plausible: bool
    intended_visible: bool
    other_change: bool
    mark: tuple[int, int] | None = None  # (x, y) in pixels of the counterfactual
    image_size: tuple[int, int] | None = None  # (width, height) of that pixel grid
    comment: str = ""
    rated_at: str = ""  # ISO 8601, set by the store when saved

    def __post_init__(self) -> None:
        reviewer = " ".join(str(self.reviewer).split())
        object.__setattr__(self, "reviewer", reviewer)
        object.__setattr__(self, "comment", str(self.comment).strip())
        if not reviewer:
            raise CfauditError("the reviewer's name is empty; enter your name")
        if len(reviewer) > MAX_NAME:
            raise CfauditError(f"the reviewer's name is longer than {MAX_NAME} characters")
        if len(self.comment) > MAX_COMMENT:
            raise CfauditError(f"the comment is longer than {MAX_COMMENT} characters; shorten it")
        if not self.image_id or not self.intervention or not self.item_digest:
            raise CfauditError("a rating needs the image, the intervention and the edit's digest")
        if self.mark is not None:
            if not self.other_change:
                raise CfauditError("a marked place needs the answer 'something else changed: yes'")
            if self.image_size is None:
                raise CfauditError("a marked place needs the size of the image it was marked on")
            (x, y), (width, height) = self.mark, self.image_size
            if not (0 <= x < width and 0 <= y < height):
                raise CfauditError(f"the mark ({x}, {y}) lies outside the {width}x{height} image")
        if self.rated_at:
            try:
                datetime.fromisoformat(self.rated_at)
            except ValueError:
                raise CfauditError(f"rated_at {self.rated_at!r} is not an ISO 8601 time") from None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.reviewer, self.image_id, self.intervention)

    @property
    def item_key(self) -> tuple[str, str]:
        return (self.image_id, self.intervention)

    def answers(self) -> dict[str, bool]:
        return {
            "plausible": self.plausible,
            "intended_visible": self.intended_visible,
            "other_change": self.other_change,
        }

    def to_row(self) -> list[str]:
        mark_x, mark_y = (str(v) for v in self.mark) if self.mark is not None else ("", "")
        width, height = (str(v) for v in self.image_size) if self.image_size is not None else ("", "")
        yes_no = {True: "yes", False: "no"}
        return [
            self.reviewer, self.image_id, self.intervention, self.item_digest, yes_no[self.plausible],
            yes_no[self.intended_visible], yes_no[self.other_change], mark_x, mark_y, width, height,
            self.comment, self.rated_at,
        ]  # fmt: skip

    @classmethod
    def from_row(cls, row: dict[str, str]) -> Rating:
        """A rating from a CSV row of strings; a malformed value is a :class:`CfauditError` (without the line)."""

        def answer(column: str) -> bool:
            value = row[column].strip().lower()
            if value not in ANSWERS:
                raise CfauditError(f"column {column} holds {row[column]!r}, not yes or no")
            return ANSWERS[value]

        def pair(first: str, second: str) -> tuple[int, int] | None:
            values = (row[first].strip(), row[second].strip())
            if values == ("", ""):
                return None
            try:
                return int(values[0]), int(values[1])
            except ValueError:
                raise CfauditError(
                    f"columns {first}, {second} hold {values[0]!r}, {values[1]!r}; expected two whole numbers "
                    "or two blanks"
                ) from None

        if not row["rated_at"].strip():
            raise CfauditError("column rated_at is empty")
        return cls(
            reviewer=row["reviewer"],
            image_id=row["image_id"],
            intervention=row["intervention"],
            item_digest=row["item_digest"],
            plausible=answer("plausible"),
            intended_visible=answer("intended_visible"),
            other_change=answer("other_change"),
            mark=pair("mark_x", "mark_y"),
            image_size=pair("image_width", "image_height"),
            comment=row["comment"],
            rated_at=row["rated_at"].strip(),
        )


@dataclass(frozen=True)
class Saved:
    """What a save did: the rating as written, and the row it replaced (None when it was the first)."""

    rating: Rating
    replaced: Rating | None


def read_ratings(path: str | os.PathLike[str]) -> list[Rating]:
    """Every rating in ``path`` in file order ([] when there is no file); see the module docstring."""
    path = Path(path)
    if not path.exists():
        return []

    def bad(line: int, why: str) -> CfauditError:
        return CfauditError(
            f"{path}, line {line}: {why}. The file was left as it is and no rating was saved; fix or delete that "
            "line (keep a copy of the file), then try again"
        )

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise bad(line, "not UTF-8 text (a damaged or foreign file)") from None
    if not text:
        raise bad(1, f"the file is empty; a ratings file starts with the header {','.join(RATING_COLUMNS)}")
    if not text.endswith("\n"):
        # Every row this module writes ends with a line break: a file that does not was cut short.
        raise bad(
            text.count("\n") + 1, "the last row is cut short (no line break at its end): a half-written file"
        )
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    ratings: list[Rating] = []
    seen: dict[tuple[str, str, str], int] = {}
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if line == 1:
                if tuple(fields) != RATING_COLUMNS:
                    raise bad(1, f"the header is {','.join(fields)!r}; expected {','.join(RATING_COLUMNS)}")
                continue
            if len(fields) != len(RATING_COLUMNS):
                raise bad(line, f"{len(fields)} fields where a rating has {len(RATING_COLUMNS)}")
            try:
                rating = Rating.from_row(dict(zip(RATING_COLUMNS, fields, strict=True)))
            except CfauditError as error:
                raise bad(line, str(error)) from None
            if rating.key in seen:
                raise bad(
                    line, f"repeats the rating of line {seen[rating.key]} (same reviewer, image and edit)"
                )
            seen[rating.key] = line
            ratings.append(rating)
    except csv.Error as error:
        raise bad(start, f"not valid CSV ({error})") from None
    return ratings


def write_ratings(path: str | os.PathLike[str], ratings: list[Rating]) -> None:
    """Write the whole file atomically (a reader sees the old file or the new one, never half of one)."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(RATING_COLUMNS)
        writer.writerows(rating.to_row() for rating in ratings)


class RatingStore:
    """Reads and saves the ratings of one review folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = FileLock(str(self.path.parent / f".{self.path.name}.lock"), timeout=LOCK_TIMEOUT_S)

    def read(self) -> list[Rating]:
        return read_ratings(self.path)

    def of_reviewer(self, reviewer: str) -> dict[tuple[str, str], Rating]:
        """One reviewer's ratings by item (image id, intervention)."""
        name = " ".join(reviewer.split())
        return {r.item_key: r for r in self.read() if r.reviewer == name}

    def reviewers(self) -> list[str]:
        return list(dict.fromkeys(r.reviewer for r in self.read()))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise CfauditError(
                f"{self.path}: another program has been saving ratings for {LOCK_TIMEOUT_S:g} s (lock file "
                f"{self._lock.lock_file}); try again, and if it persists check that no other cfaudit review is stuck"
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    def save(self, rating: Rating) -> Saved:
        """Save ``rating`` (time-stamped now), replacing the same reviewer's earlier rating of the same item."""
        rating = dataclasses.replace(rating, rated_at=datetime.now(UTC).isoformat(timespec="seconds"))
        with self._locked():
            ratings = self.read()  # a corrupt file raises here, before anything is written
            position = next((i for i, r in enumerate(ratings) if r.key == rating.key), None)
            replaced = None if position is None else ratings[position]
            if position is None:
                ratings.append(rating)
            else:
                ratings[position] = rating
            write_ratings(self.path, ratings)
        return Saved(rating, replaced)
