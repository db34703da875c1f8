"""Review queues: which counterfactuals an expert rates, in what order, and what they were made from.

A queue is a file, ``queue.json`` in a review folder (by default ``review/`` beside the edits), made by
:func:`make_queue` from

* an **edit folder** (``edits.csv`` of ``cfaudit edit`` or ``cfaudit scm edit``): its edits grouped by
  intervention, at most ``images`` per intervention; each intervention is one candidate of kind
  ``intervention`` (did the editor make the change it was asked for?);
* a **discovery** (``candidates.csv`` or ``candidates.json`` of ``cfaudit discover``): its flagged candidates
  first, then the ``top`` best-ranked others (the union, each once, flagged ones first, then by rank); for each,
  the edits of its intervention in the discovery's ``edits/`` (a region candidate's example images first), at most
  ``images`` per candidate. An edit that belongs to several candidates (they share the intervention) is one item
  listing all of them, so it is rated once.

Each item keeps a digest of its edit: the identifying columns of its ``edits.csv`` row and the bytes of its
counterfactual, reconstruction and difference map. :func:`changed_items` recomputes them, so an edit folder that
changed after the queue was made (a re-run job, a deleted image) is detected instead of rated, or reported,
against images that are no longer the ones the queue names. Paths inside the file are relative to the queue's
folder, so the whole tree can be moved or shared.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from cfaudit import __version__, atomic_io
from cfaudit.config_files import read_json
from cfaudit.data.edit_folder import (
    EDIT_FILE_COLUMNS,
    EDITS_CSV,
    EXAMPLE_COLUMNS,
    IDENTIFYING_COLUMNS,
    SHOWN_COLUMNS,
    read_edits_table,
)
from cfaudit.digests import file_sha256
from cfaudit.errors import CfauditError

QUEUE_FORMAT = "cfaudit-review-queue"
QUEUE_VERSION = 1
QUEUE_FILE = "queue.json"
RATINGS_FILE = "ratings.csv"
REVIEW_FOLDER = "review"
CANDIDATE_FILES = ("candidates.csv", "candidates.json")
DISCOVERY_FILE = "discovery.json"
#: Candidates of a discovery reviewed besides the flagged ones (the best-ranked).
DEFAULT_TOP = 5
#: Edits per candidate (per intervention for an edit folder) put in the queue.
DEFAULT_IMAGES = 8
SOURCE_KINDS = ("edits", "discovery")


@dataclass(frozen=True)
class Candidate:
    """What a group of items is evidence for: a discovery's candidate relation, or an edit folder's intervention."""

    key: str  # "rank-3" for a discovery's candidate; the intervention for an edit folder's
    intervention: str
    kind: str  # "head", "region" (a discovery's) or "intervention" (an edit folder's)
    target: str = ""
    rank: int | None = None
    status: str = ""
    flagged: bool = False
    description: str = ""
    x: float | None = None  # a region candidate's centre, 0-1 from the image's top left
    y: float | None = None
    examples: tuple[str, ...] = ()  # a region candidate's example images, best first

    @property
    def title(self) -> str:
        return f"{self.intervention} → {self.target}" if self.target else self.intervention


@dataclass(frozen=True)
class ReviewItem:
    """One counterfactual to rate: an edit of the edit folder (paths relative to it) and its digest."""

    image_id: str
    intervention: str
    line: int  # its line in edits.csv when the queue was made
    counterfactual: str
    difference: str
    reconstruction: str
    original: str  # the source image as the edit job recorded it (absolute), may be gone
    source_prompt: str
    target_prompt: str
    digest: str
    candidates: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.image_id, self.intervention)

    def edit_row(self) -> dict[str, str]:
        """The item as an ``edits.csv`` row of the columns that showing it reads (:data:`EXAMPLE_COLUMNS`)."""
        return {column: getattr(self, column) for column in EXAMPLE_COLUMNS}


@dataclass
class ReviewQueue:
    """A queue read from (or written to) ``path``; ``edit_folder`` and ``source`` are absolute."""

    path: Path
    source: Path
    source_kind: str
    edit_folder: Path
    candidates: list[Candidate]
    items: list[ReviewItem]
    created: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    #: A discovery's candidates file (name, sha256) when the queue was made, to tell a re-run discovery.
    candidates_file: tuple[str, str] | None = None

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def ratings_path(self) -> Path:
        """Ratings are kept beside the queue, so every queue of one review folder shares them."""
        return self.folder / RATINGS_FILE

    def candidate(self, key: str) -> Candidate:
        return next(c for c in self.candidates if c.key == key)

    def items_of(self, candidate_key: str) -> list[ReviewItem]:
        return [item for item in self.items if candidate_key in item.candidates]

    def to_dict(self) -> dict[str, Any]:
        def relative(path: Path) -> str:
            return Path(os.path.relpath(path, self.folder)).as_posix()

        return {
            "format": QUEUE_FORMAT,
            "version": QUEUE_VERSION,
            "created": self.created,
            "cfaudit_version": __version__,
            "source": {
                "kind": self.source_kind,
                "path": relative(self.source),
                **({"candidates": list(self.candidates_file)} if self.candidates_file else {}),
            },
            "edit_folder": relative(self.edit_folder),
            "settings": self.settings,
            "candidates": [asdict(c) for c in self.candidates],
            "items": [{**asdict(item), "candidates": list(item.candidates)} for item in self.items],
        }

    def write(self) -> Path:
        atomic_io.write_json(self.path, self.to_dict())
        return self.path


@dataclass(frozen=True)
class QueueChanges:
    """Items whose edit differs from what the queue recorded, and items whose edit is gone."""

    changed: list[ReviewItem]
    missing: list[ReviewItem]

    @property
    def keys(self) -> set[tuple[str, str]]:
        return {item.key for item in self.changed + self.missing}

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing)


# --- reading the sources ---------------------------------------------------------------------------------------


def read_edit_rows(folder: Path) -> list[dict[str, str]]:
    """The rows of ``folder/edits.csv`` as strings (what the digests are made of), each with its ``line``."""
    path = folder / EDITS_CSV
    if not path.is_file():
        raise CfauditError(
            f"{folder}: no {EDITS_CSV}; give the folder of `cfaudit edit` or `cfaudit discover`"
        )
    table = read_edits_table(path, "; re-run the edit job")
    missing = [c for c in SHOWN_COLUMNS if c not in table.columns]
    if missing:
        raise CfauditError(
            f"{path}: missing column(s) {', '.join(missing)}; was it written by `cfaudit edit`?"
        )
    # read_edits_table refused a row that repeats an edit or names no valid intervention
    return [
        {**record, "line": str(position + 2)}
        for position, record in enumerate(table.to_dict(orient="records"))
    ]


def edit_digest(folder: Path, row: Mapping[str, str]) -> str:
    """Digest of one edit: its identifying ``edits.csv`` columns and the bytes of its image files."""
    digest = hashlib.sha256()
    fields = {column: str(row[column]) for column in IDENTIFYING_COLUMNS if column in row}
    digest.update(json.dumps(fields, sort_keys=True).encode("utf-8"))
    for column in EDIT_FILE_COLUMNS:  # the files whose bytes enter the digest
        relative = str(row.get(column, "") or "")
        path = folder / relative
        content = file_sha256(path) if relative and path.is_file() else "missing"
        digest.update(f"\n{column}:{content}".encode())
    return digest.hexdigest()[:16]


def _item(folder: Path, row: Mapping[str, str], candidates: Sequence[str]) -> ReviewItem:
    line = int(row["line"])
    for column in ("counterfactual", "difference"):
        if not (folder / row[column]).is_file():
            raise CfauditError(
                f"{folder / EDITS_CSV}, line {line}: {column} {folder / row[column]} is missing; "
                "re-run the edit job before making a review queue"
            )
    return ReviewItem(
        image_id=row["image_id"],
        intervention=row["intervention"],
        line=line,
        counterfactual=row["counterfactual"],
        difference=row["difference"],
        reconstruction=row.get("reconstruction", ""),
        original=row.get("original", ""),
        source_prompt=row.get("source_prompt", ""),
        target_prompt=row.get("target_prompt", ""),
        digest=edit_digest(folder, row),
        candidates=tuple(candidates),
    )


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) and not (isinstance(value, float) and math.isnan(value))


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def read_candidates(folder: Path) -> list[Candidate]:
    """A discovery's candidates in rank order (``candidates.csv``, or ``candidates.json`` without it)."""
    csv_path, json_path = (folder / name for name in CANDIDATE_FILES)
    if csv_path.is_file():
        path = csv_path
        try:
            table = pd.read_csv(csv_path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise CfauditError(
                f"{csv_path}: not a readable CSV ({error}); re-run `cfaudit discover`"
            ) from None
    elif json_path.is_file():
        path = json_path
        table = pd.DataFrame(read_json(json_path, "re-run `cfaudit discover`", expect=list))
    else:
        raise CfauditError(f"{folder}: no candidates.csv or candidates.json; run `cfaudit discover` first")
    missing = [c for c in ("intervention", "target") if c not in table.columns]
    if missing:
        raise CfauditError(
            f"{path}: missing column(s) {', '.join(missing)}; was it written by `cfaudit discover`?"
        )
    candidates = []
    for position, record in enumerate(table.to_dict(orient="records")):
        rank = _number(record.get("rank"))
        rank = int(rank) if rank is not None else position + 1
        candidates.append(
            Candidate(
                key=f"rank-{rank}",
                intervention=_text(record["intervention"]),
                kind=_text(record.get("kind")) or "head",
                target=_text(record["target"]),
                rank=rank,
                status=_text(record.get("status")),
                flagged=_flag(record.get("flagged", False)),
                description=_text(record.get("description")),
                x=_number(record.get("x")),
                y=_number(record.get("y")),
                examples=tuple(_examples(_text(record.get("examples")))),
            )
        )
    keys = [c.key for c in candidates]
    if len(set(keys)) != len(keys):
        raise CfauditError(f"{path}: two candidates share a rank; re-run `cfaudit discover`")
    return sorted(candidates, key=lambda c: c.rank or 0)


def select_candidates(candidates: Sequence[Candidate], top: int) -> list[Candidate]:
    """The flagged candidates and the ``top`` best-ranked ones, each once: flagged first, then by rank."""
    ranked = sorted(candidates, key=lambda c: c.rank or 0)
    flagged = [c for c in ranked if c.flagged]
    return flagged + [c for c in ranked[: max(0, top)] if not c.flagged]


def _examples(text: str) -> list[str]:
    return [part.strip() for part in text.split(";") if part.strip()]


def _discovery_items(
    edit_folder: Path, rows: list[dict[str, str]], candidates: Sequence[Candidate], images: int | None
) -> list[ReviewItem]:
    """Items of each candidate in turn (its examples first), shared edits listed once with every candidate."""
    order: dict[tuple[str, str], dict[str, str]] = {}
    members: dict[tuple[str, str], list[str]] = {}
    for candidate in candidates:
        own = [row for row in rows if row["intervention"] == candidate.intervention]
        first = list(candidate.examples)
        own.sort(key=lambda row: first.index(row["image_id"]) if row["image_id"] in first else len(first))
        for row in own[:images] if images else own:
            key = (row["image_id"], row["intervention"])
            order.setdefault(key, row)
            members.setdefault(key, []).append(candidate.key)
    return [_item(edit_folder, row, members[key]) for key, row in order.items()]


def _edit_folder_items(
    edit_folder: Path, rows: list[dict[str, str]], images: int | None
) -> tuple[list[Candidate], list[ReviewItem]]:
    interventions = list(dict.fromkeys(row["intervention"] for row in rows))
    candidates = [Candidate(key=i, intervention=i, kind="intervention") for i in interventions]
    items = []
    for intervention in interventions:
        own = [row for row in rows if row["intervention"] == intervention]
        items += [_item(edit_folder, row, [intervention]) for row in (own[:images] if images else own)]
    return candidates, items


def source_kind(source: Path) -> tuple[str, Path]:
    """("discovery" or "edits", the folder) of what ``source`` names: a folder or its marker file."""
    if source.is_file():
        if source.name == EDITS_CSV:
            return "edits", source.parent
        if source.name in (*CANDIDATE_FILES, DISCOVERY_FILE):
            return "discovery", source.parent
        raise CfauditError(
            f"{source}: give an edit folder (with {EDITS_CSV}) or a discovery folder (with candidates.csv)"
        )
    if not source.is_dir():
        raise CfauditError(
            f"{source}: no such folder; give the output folder of `cfaudit edit` or `cfaudit discover`"
        )
    if any((source / name).is_file() for name in (*CANDIDATE_FILES, DISCOVERY_FILE)):
        return "discovery", source
    if (source / EDITS_CSV).is_file():
        return "edits", source
    raise CfauditError(
        f"{source}: neither an edit folder ({EDITS_CSV}) nor a discovery (candidates.csv); "
        "give the output folder of `cfaudit edit` or `cfaudit discover`"
    )


# --- making, reading and checking a queue ----------------------------------------------------------------------


def default_queue_path(source: str | os.PathLike[str]) -> Path:
    """``review/queue.json`` in the folder ``source`` names."""
    return source_kind(Path(source))[1] / REVIEW_FOLDER / QUEUE_FILE


def queue_path(path: str | os.PathLike[str]) -> Path:
    """The queue file a path names: the file itself, or ``queue.json`` in a review folder."""
    path = Path(path)
    return path / QUEUE_FILE if path.is_dir() or path.suffix.lower() != ".json" else path


def make_queue(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    top: int = DEFAULT_TOP,
    images: int | None = DEFAULT_IMAGES,
) -> ReviewQueue:
    """Make the queue of ``source`` (an edit folder or a discovery) and write it to ``out`` (a review folder or a
    ``.json`` file; default ``SOURCE/review/queue.json``). ``images``: edits per candidate, None or 0 for all."""
    # 1. Check the arguments
    if top < 0:
        raise CfauditError(f"--top must be 0 or more, got {top}")
    if images is not None and images < 0:
        raise CfauditError(f"--images must be 0 (all) or more, got {images}")
    kind, folder = source_kind(Path(source))
    path = (queue_path(out) if out is not None else folder / REVIEW_FOLDER / QUEUE_FILE).absolute()
    edit_folder = (folder / "edits" if kind == "discovery" else folder).absolute()

    # 2. Pick the candidates and their edits
    rows = read_edit_rows(edit_folder)
    candidates_file = None
    if kind == "discovery":
        candidates_file = _candidates_digest(folder)
        candidates = select_candidates(read_candidates(folder), top)
        items = _discovery_items(edit_folder, rows, candidates, images or None)
    else:
        candidates, items = _edit_folder_items(edit_folder, rows, images or None)
    if not items:
        raise CfauditError(
            f"{source}: nothing to review (no edits of the selected candidates in {edit_folder})"
        )

    # 3. Write it, unless the folder already holds the review of other edits
    _refuse_foreign_review(path, edit_folder)
    queue = ReviewQueue(
        path=path,
        source=folder.absolute(),
        source_kind=kind,
        edit_folder=edit_folder,
        candidates=candidates,
        items=items,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        settings={"top": top if kind == "discovery" else None, "images": images or None},
        candidates_file=candidates_file,
    )
    queue.write()
    return queue


def _candidates_digest(folder: Path) -> tuple[str, str] | None:
    """(name, sha256) of the candidates file a discovery's queue is made from (the CSV, else the JSON)."""
    for name in CANDIDATE_FILES:
        if (folder / name).is_file():
            return name, file_sha256(folder / name)
    return None


def candidates_changed(queue: ReviewQueue) -> bool:
    """Whether a discovery's candidates file differs from the one the queue was made from (a re-run discovery)."""
    if queue.candidates_file is None:
        return False
    name, digest = queue.candidates_file
    path = queue.source / name
    return not path.is_file() or file_sha256(path) != digest


def _refuse_foreign_review(path: Path, edit_folder: Path) -> None:
    """Re-making a queue is how a changed edit folder is taken up, so overwriting one is allowed; but a review
    folder whose ratings belong to another edit folder must not be pointed at this one."""
    ratings = path.parent / RATINGS_FILE
    if not path.is_file() or not ratings.is_file():
        return
    try:
        previous = read_queue(path)
    except CfauditError:
        return  # an unreadable queue is remade; the ratings file is never touched here
    if previous.edit_folder.resolve() != edit_folder.resolve():
        raise CfauditError(
            f"{path.parent} holds the ratings of another edit folder ({previous.edit_folder}); "
            "choose another --out for this queue"
        )


def read_queue(path: str | os.PathLike[str]) -> ReviewQueue:
    """Read a queue (``queue.json`` or its folder); a malformed one is a :class:`CfauditError` naming the file."""
    path = queue_path(path).absolute()
    remake = "re-make it with `cfaudit review queue`"
    data = read_json(
        path, remake, missing="no review queue there; make one with `cfaudit review queue SOURCE`"
    )
    if data.get("format") != QUEUE_FORMAT:
        raise CfauditError(f"{path}: not a cfaudit review queue; {remake}")
    if data.get("version") != QUEUE_VERSION:
        raise CfauditError(f"{path}: queue version {data.get('version')!r} is not {QUEUE_VERSION}; {remake}")
    try:
        source = data["source"]
        if source["kind"] not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {source['kind']!r}")
        candidates = [
            Candidate(**{**c, "examples": tuple(c.get("examples", ()))}) for c in data["candidates"]
        ]
        items = [ReviewItem(**{**i, "candidates": tuple(i["candidates"])}) for i in data["items"]]
        return ReviewQueue(
            path=path,
            source=(path.parent / source["path"]).resolve(),
            source_kind=source["kind"],
            edit_folder=(path.parent / data["edit_folder"]).resolve(),
            candidates=candidates,
            items=items,
            created=str(data.get("created", "")),
            settings=dict(data.get("settings") or {}),
            candidates_file=tuple(source["candidates"]) if source.get("candidates") else None,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CfauditError(
            f"{path}: malformed review queue ({type(error).__name__}: {error}); {remake}"
        ) from None


def changed_items(queue: ReviewQueue) -> QueueChanges:
    """Items whose edit is no longer what the queue recorded (digest differs) or no longer there."""
    try:
        rows = {(r["image_id"], r["intervention"]): r for r in read_edit_rows(queue.edit_folder)}
    except CfauditError:
        if (queue.edit_folder / EDITS_CSV).is_file():
            raise
        return QueueChanges([], list(queue.items))  # the whole edit folder is gone
    changed, missing = [], []
    for item in queue.items:
        row = rows.get(item.key)
        if row is None:
            missing.append(item)
        elif edit_digest(queue.edit_folder, row) != item.digest:
            changed.append(item)
    return QueueChanges(changed, missing)


def _listed(items: Iterable[ReviewItem], limit: int = 3) -> str:
    items = list(items)
    text = "; ".join(f"{item.image_id} {item.intervention}" for item in items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def require_item_unchanged(queue: ReviewQueue, item: ReviewItem) -> None:
    """Refuse to rate one item whose edit changed (or went) while the queue was open; checked on every save."""
    try:
        rows = {(r["image_id"], r["intervention"]): r for r in read_edit_rows(queue.edit_folder)}
    except CfauditError:
        rows = {}
    row = rows.get(item.key)
    if row is None or edit_digest(queue.edit_folder, row) != item.digest:
        state = "is gone from" if row is None else "changed in"
        raise CfauditError(
            f"the edit {item.image_id} {item.intervention} {state} {queue.edit_folder} since the review queue was "
            f"made, so this rating was not saved (the others are kept); re-make the queue with "
            f"`cfaudit review queue {queue.source} --out {queue.folder}` and open it again"
        )


def require_unchanged(queue: ReviewQueue) -> None:
    """Refuse a queue whose edit folder changed since it was made, saying which items and what to do."""
    changes = changed_items(queue)
    if not changes:
        return
    parts = []
    if changes.changed:
        parts.append(f"{len(changes.changed)} changed ({_listed(changes.changed)})")
    if changes.missing:
        parts.append(f"{len(changes.missing)} gone ({_listed(changes.missing)})")
    raise CfauditError(
        f"the edit folder {queue.edit_folder} changed since the review queue {queue.path} was made: "
        f"of its {len(queue.items)} items, {' and '.join(parts)}. The ratings in {queue.ratings_path} are kept; "
        f"re-make the queue with `cfaudit review queue {queue.source} --out {queue.folder}` (ratings of unchanged "
        "items carry over, those of changed items stay in the file but are no longer counted)"
    )
