"""The edit folder: what ``cfaudit edit`` and ``cfaudit scm edit`` write, and every reader of it reads.

An edit folder holds::

    job.json                                 the job's settings, interventions and model (a resume must match)
    rows/<id>.json                           one image's rows, written last: the image is done
    images/<id>/reconstruction.png           the editor's reconstruction of the input (16-bit)
    images/<id>/<intervention>.png           one counterfactual per edit (16-bit)
    images/<id>/<intervention>_diff.npy/png  its signed difference counterfactual - reconstruction (exact / colour)
    edits.csv                                the rows of every image merged (:data:`EDIT_COLUMNS`), in image order

``<id>`` is :func:`safe_name` of the image id and the paths in ``edits.csv`` after ``original`` are relative to
the folder (``original``, the source image as given, is absolute). Both job runners (``cfaudit.edit.job``,
``cfaudit.scm.job``) write through the pieces here: the items and report of a job, the row files (an image whose
row file exists is done, so a resumed job skips it), the staging left by a killed write, the merge into
``edits.csv``, the counterfactual's files and ``job.json`` with the resume refusal :func:`check_job_file`; what
is model-specific (inversion caches, fingerprints, the editing loops, the ``job.json`` record) stays with them.
The readers (evaluation, report, review, discovery) take the names and column lists from here, and
:func:`read_edits_table`, :func:`read_job_json` and :func:`resolve_path`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit import atomic_io
from cfaudit.config_files import read_json
from cfaudit.data.difference import save_difference, signed_difference
from cfaudit.data.images import save_image
from cfaudit.data.interventions import Intervention, source_prompt
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.prompts import DEFAULT_TEMPLATE, PromptTemplate
from cfaudit.data.records import DataIndex
from cfaudit.errors import CfauditError

# --- names -----------------------------------------------------------------------------------------------------

EDITS_CSV = "edits.csv"
JOB_JSON = "job.json"
ROWS_FOLDER = "rows"
IMAGES_FOLDER = "images"
#: The diffusion editor's default inversion cache inside the folder (``cfaudit edit --cache`` puts it elsewhere).
INVERSIONS_FOLDER = "inversions"
RECONSTRUCTION_FILE = "reconstruction.png"
#: With ``identity_check``, the null edit (target = source prompt) of each image is kept as this file.
IDENTITY_FILE = "identity.png"
#: The ``method`` of the SCM baseline's rows and ``job.json`` (``cfaudit scm edit``).
SCM_METHOD = "scm-hvae"
#: A folder of pairs made by anything else (no ``job.json``): ``pairs.csv`` with :data:`PAIRS_REQUIRED`.
PAIRS_CSV = "pairs.csv"

# --- the row schema --------------------------------------------------------------------------------------------

EDIT_COLUMNS: tuple[str, ...] = (
    "image_id", "intervention", "source_prompt", "target_prompt", "reference_prompt", "prompt_mode", "method",
    "steps", "guidance_scale", "seed", "unet_evals", "seconds", "reconstruction_l1", "identity_l1", "edit_l1",
    "diff_scale", "inversion_cached", "original", "counterfactual", "reconstruction", "difference", "difference_png",
)  # fmt: skip
#: ``reference_prompt`` is the prompt the target was measured against: the source prompt, or in ``contrast`` mode
#: the partial prompt of the image's current values (empty for the SCM). ``original`` is the source image file as
#: given (absolute path); the image paths after it are relative to the job folder.
#: Columns that legitimately differ between two runs of the same job.
TIMING_COLUMNS: tuple[str, ...] = ("seconds", "inversion_cached")
#: The columns of a row that say which edit it is (timings and caches are left out: a resumed job rewrites those
#: without changing the images).
IDENTIFYING_COLUMNS: tuple[str, ...] = (
    "image_id", "intervention", "source_prompt", "target_prompt", "prompt_mode", "method", "steps",
    "guidance_scale", "seed", "counterfactual", "reconstruction", "difference",
)  # fmt: skip
#: The image files of an edit, as relative paths in its row.
EDIT_FILE_COLUMNS: tuple[str, ...] = ("counterfactual", "reconstruction", "difference")
#: The columns a reader that shows edits (report, review) needs.
SHOWN_COLUMNS: tuple[str, ...] = ("image_id", "intervention", "counterfactual", "difference")
#: The columns the evaluation needs of an ``edits.csv`` and of a ``pairs.csv``.
JOB_REQUIRED: tuple[str, ...] = ("image_id", "intervention", "method", "original", "counterfactual")
PAIRS_REQUIRED: tuple[str, ...] = ("original", "counterfactual", "intervention")


# --- the items of a job and its report ---------------------------------------------------------------------------


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
    image twice, or one intervention twice for an image. ``ids``: what the messages call the image ids."""
    if not items:
        raise CfauditError("nothing to edit: no images given")
    if not interventions and any(item.interventions is None for item in items):
        raise CfauditError("no intervention given; add one or more --do 'A=v'")
    image_ids = [item.image_id for item in items]
    check_unique_ids(image_ids, ids)
    for item in items:
        check_unique_slugs(interventions if item.interventions is None else item.interventions)
    return image_ids


# --- writing ---------------------------------------------------------------------------------------------------


def safe_name(image_id: str) -> str:
    """A folder / file name for an image id (ids with other characters get a short hash to stay unique)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id).strip("._")[:80] or "image"
    if safe != image_id:
        safe += "-" + hashlib.sha1(image_id.encode("utf-8")).hexdigest()[:8]
    return safe


def image_folder(out: Path, image_id: str) -> Path:
    """Where one image's files go: ``images/<safe id>``."""
    return out / IMAGES_FOLDER / safe_name(image_id)


def row_file(out: Path, image_id: str) -> Path:
    """One image's rows, ``rows/<safe id>.json``: there once the image is done."""
    return out / ROWS_FOLDER / f"{safe_name(image_id)}.json"


def is_done(out: Path, image_id: str) -> bool:
    """Whether a previous run finished this image (a resumed job skips it)."""
    return row_file(out, image_id).is_file()


def finish_image(out: Path, image_id: str, rows: list[dict[str, Any]], *, clear_staged: bool = False) -> None:
    """Write one image's rows, last of its files, which marks it done.

    ``clear_staged``: first remove what a killed write staged in its folder (``.<name>.<random>.part``); only for a
    writer that alone writes this image's folder and has written it all."""
    if clear_staged:
        for staged in image_folder(out, image_id).glob(".*.part"):
            staged.unlink(missing_ok=True)
    atomic_io.write_json(row_file(out, image_id), rows)


def read_image_rows(out: Path, image_id: str) -> list[dict[str, Any]] | None:
    """One image's rows as written (``None``: not done)."""
    path = row_file(out, image_id)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_edits_csv(out: Path, image_ids: Sequence[str]) -> int:
    """Merge the per-image row files into ``edits.csv`` (in image order), atomically; return the row count."""
    rows: list[dict[str, Any]] = []
    for image_id in image_ids:
        rows += read_image_rows(out, image_id) or []
    atomic_io.write_csv(out / EDITS_CSV, pd.DataFrame(rows, columns=list(EDIT_COLUMNS)))
    return len(rows)


def write_counterfactual(
    out: Path, folder: Path, slug: str, counterfactual: np.ndarray, reconstruction: np.ndarray, original: Path
) -> dict[str, Any]:
    """Write one counterfactual (16-bit PNG), its signed difference from the reconstruction (exact ``.npy`` and a
    colour PNG); return the file columns of its ``edits.csv`` row (paths relative to ``out``), ``edit_l1`` and
    ``diff_scale``. Both editors write their outputs through here, so their folders have one layout."""
    relative = folder.relative_to(out)
    save_image(counterfactual, folder / f"{slug}.png", bits=16)
    difference = signed_difference(counterfactual, reconstruction)
    scale = save_difference(difference, folder / f"{slug}_diff.npy", folder / f"{slug}_diff.png")
    return {
        "edit_l1": float(np.abs(difference).mean()),
        "diff_scale": scale,
        "original": str(Path(original).resolve()),
        "counterfactual": str(relative / f"{slug}.png"),
        "reconstruction": str(relative / RECONSTRUCTION_FILE),
        "difference": str(relative / f"{slug}_diff.npy"),
        "difference_png": str(relative / f"{slug}_diff.png"),
    }


def check_job_file(out: Path, record: dict[str, Any], rank: int = 0) -> None:
    """Refuse to resume into ``out`` when its ``job.json`` records other settings; write it on a fresh start."""
    path = out / JOB_JSON
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            existing = None
        wanted = json.loads(json.dumps(record, sort_keys=True, default=str))
        if existing != wanted:
            differ = (
                sorted(k for k in set(existing) | set(wanted) if existing.get(k) != wanted.get(k))
                if isinstance(existing, dict)
                else ["the whole file (not readable JSON)"]
            )
            raise CfauditError(
                f"{out} holds an edit job with other settings, interventions or model ({path}; differs in: "
                f"{', '.join(differ)}); use a new --out folder or delete that one"
            )
    elif rank == 0:
        atomic_io.write_json(path, record)


# --- reading ---------------------------------------------------------------------------------------------------


def read_edits_table(path: Path, advice: str = "") -> pd.DataFrame:
    """An ``edits.csv`` (or ``pairs.csv``) with every cell as written, a string (``advice`` ends the error)."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CfauditError(f"{path}: not a readable CSV ({error}){advice}") from None


def read_job_json(folder: Path) -> dict[str, Any]:
    """The ``job.json`` of an edit folder (it must be there, beside ``edits.csv``)."""
    return read_json(folder / JOB_JSON, missing=f"missing; an editing job writes it beside {EDITS_CSV}")


def resolve_path(folder: Path, value: str | os.PathLike[str]) -> Path:
    """A path of a row: absolute as given, else relative to the edit folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path
