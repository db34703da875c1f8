"""The jobs that fill an edit folder (:mod:`cfaudit.data.edit_folder`): the images a job edits (:class:`JobItem`,
from an index by :func:`items_from_index`), the refusals every job makes before it starts
(:func:`check_job_items`), what an edit's row records of the image it was made from (:func:`item_inputs`, the
original known by the digest of its bytes) and what a run reports (:class:`JobReport`). Both job runners
(``cfaudit.edit.job``, ``cfaudit.scm.job``) and the discovery plan build on these.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfaudit.data.interventions import Intervention, source_prompt
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.prompts import DEFAULT_TEMPLATE, PromptTemplate
from cfaudit.data.records import DataIndex
from cfaudit.errors import CfauditError


@dataclass(frozen=True)
class JobItem:
    """One image to edit: its id, file, the caption it is inverted under and (from an index) its record."""

    image_id: str
    path: Path
    source_prompt: str
    record: dict[str, Any] | None = None
    #: This image's own interventions (a discovery plan edits each image with those it is eligible for);
    #: ``None``: the job's interventions.
    interventions: tuple[Intervention, ...] | None = None


def item_interventions(item: JobItem, default: Sequence[Intervention]) -> Sequence[Intervention]:
    """The interventions a job makes of ``item``: its own plan when it has one, else the job's ``default``."""
    return default if item.interventions is None else item.interventions


def plan_digest(items: Sequence[JobItem]) -> str | None:
    """A digest of the per-image interventions, which a job records so that a resume with another plan is
    refused (``None`` when every image takes the job's own)."""
    plan = [
        [item.image_id, [str(i) for i in item.interventions]]
        for item in items
        if item.interventions is not None
    ]
    if not plan:
        return None
    return hashlib.sha256(json.dumps(plan).encode("utf-8")).hexdigest()


@dataclass
class JobReport:
    """What one run of a job did: its ``edits.csv``, images given and already done before, rows merged, time."""

    edits_csv: Path
    images: int
    images_skipped: int
    edits: int
    seconds: float
    #: This process's rank and the number of processes that shared the job (``edits`` is 0 on the others:
    #: only the main process, rank 0, merges the rows into ``edits.csv``).
    rank: int = 0
    num_processes: int = 1
    #: Images that had a row file but were redone: it was unreadable, or its inputs or files had changed.
    images_redone: int = 0
    #: Images of earlier jobs in the same folder (other ids): their files stay, kept for a later run of that job,
    #: but ``edits.csv`` holds only this job's (:func:`other_images`).
    images_elsewhere: int = 0

    def summary(self) -> str:
        """One line for the command line: what was edited, what was already done or redone, and the time."""
        redone = (
            f", {self.images_redone} redone: their inputs or files had changed" if self.images_redone else ""
        )
        elsewhere = (
            f"; {self.images_elsewhere} image(s) of another job stay in the folder, not in edits.csv"
            if self.images_elsewhere
            else ""
        )
        return (
            f"{self.edits} edit(s) of {self.images} image(s) in {self.edits_csv} "
            f"({self.images_skipped} already done{redone}{elsewhere}; {self.seconds:.1f} s)"
        )


def items_from_index(
    index: DataIndex,
    split: str | None = "test",
    limit: int | None = None,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    policy: LabelPolicy = DEFAULT_POLICY,
) -> list[JobItem]:
    """The images of one split of an index (``None`` / ``all``: every row), the first ``limit`` of them."""
    selected = index.split(split)
    if limit is not None and limit < 1:
        raise CfauditError(f"--limit must be at least 1, got {limit}")
    table = selected.table if limit is None else selected.table.head(limit)
    if table.empty:
        raise CfauditError(f"the index has no images in split {split!r}; choose another --split")
    items = []
    for _, row in table.iterrows():
        record = row.to_dict()
        items.append(
            JobItem(
                str(row["image_id"]),
                selected.image_path(row),
                source_prompt(record, template, policy),
                record,
            )
        )
    return items


def check_unique_ids(image_ids: Sequence[str], ids: str = "image ids") -> None:
    """Refuse a job that names one image twice (its folder and row file would be shared); ``ids``: what the
    message calls them."""
    if len(set(image_ids)) != len(image_ids):
        duplicate = next(i for i in image_ids if image_ids.count(i) > 1)
        raise CfauditError(f"image id {duplicate!r} appears twice; {ids} must be unique")


def check_unique_slugs(interventions: Sequence[Intervention]) -> None:
    """Refuse the same intervention twice for one image (its files would be written twice)."""
    slugs = [i.slug for i in interventions]
    if len(set(slugs)) != len(slugs):
        raise CfauditError(f"the same intervention is given twice ({', '.join(slugs)})")


def check_job_items(
    items: Sequence[JobItem], interventions: Sequence[Intervention], ids: str = "image ids"
) -> list[str]:
    """The items' image ids, after refusing what no job can write: no image, an image with no intervention, one
    image twice, one intervention twice for an image, or an image file that is not there. ``ids``: what the
    messages call the image ids."""
    if not items:
        raise CfauditError("nothing to edit: no images given")
    if not interventions and any(item.interventions is None for item in items):
        raise CfauditError("no intervention given; add one or more --do 'A=v'")
    image_ids = [item.image_id for item in items]
    check_unique_ids(image_ids, ids)
    for item in items:
        check_unique_slugs(interventions if item.interventions is None else item.interventions)
    missing = [item for item in items if not Path(item.path).is_file()]
    if missing:
        first = missing[0]
        more = f" ({len(missing)} of {len(items)} image files are missing)" if len(missing) > 1 else ""
        raise CfauditError(
            f"{first.path}: no such image file (image {first.image_id!r}){more}; fix the paths (the index and its "
            "root) or choose other images"
        )
    return image_ids


def item_inputs(item: JobItem, intervention: Intervention) -> dict[str, Any]:
    """What the row of ``item``'s edit by ``intervention`` records of the item it was made from (its id, the
    intervention, the original file, its digest and the source prompt), as a job writes them: a resumed job redoes
    an image whose rows disagree with the current item in any of them but the path (:func:`unfinished_reason`)."""
    return {
        "image_id": item.image_id,
        "intervention": str(intervention),
        "original": str(Path(item.path).resolve()),
        "original_sha256": original_digest(item.path),
        "source_prompt": item.source_prompt,
    }


def original_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of an image file's bytes: what a resumed job knows the image by."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
        return _digest(str(resolved), stat.st_size, stat.st_mtime_ns)
    except OSError as error:
        raise CfauditError(
            f"{path}: cannot read the image ({error.strerror or error}); check the path the index gives, or "
            "restore the file"
        ) from None


@functools.lru_cache(maxsize=1 << 16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """The digest of ``path`` as it was at ``size`` and ``mtime_ns`` (a job asks once per edit of an image, and
    again when it writes the edit; 65,536 images are remembered)."""
    del size, mtime_ns  # the cache key: a file written again is read again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
