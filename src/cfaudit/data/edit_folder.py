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
``cfaudit.scm.job``) write through the pieces here: the row files, the staging left by a killed write, the merge
into ``edits.csv``, the counterfactual's files and ``job.json`` with the resume refusal :func:`check_job_file`;
the items they edit and the report of a run are :mod:`cfaudit.data.edit_jobs`'s; what is model-specific
(inversion caches, fingerprints, the editing loops, the ``job.json`` record) stays with them.

An image is done (a resumed job skips it) when its row file is readable, holds one row per edit the job asks of
the image, each row records the inputs the image is edited from now (:func:`unfinished_reason`: its id,
intervention, the content of its original file and its source prompt, and what else the runner says identifies
the edit) and every file the rows name is there. The original is known by its bytes, not its path: a file
replaced in place is a new image, and a data set moved to another root is not edited again (its rows are pointed
at the files' new place). Any other image is redone; :func:`prepare_resume` removes the row files of those and the
``edits.csv`` of a folder that is not finished, so that what a folder holds never claims more than is done.
``job.json`` also records how many images the latest run was given (``images``, not compared on resume), so that a
reader of an unfinished folder can say how far it got (:func:`unfinished_job`).

The readers (evaluation, report, review, discovery) take the names and column lists from here, and
:func:`read_edits_table` (which refuses a repeated edit or an unreadable intervention), :func:`read_job_json` and
:func:`resolve_path`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit import atomic_io
from cfaudit.config_files import read_json
from cfaudit.data.difference import save_difference, signed_difference
from cfaudit.data.edit_jobs import JobItem, original_digest
from cfaudit.data.images import save_image
from cfaudit.data.interventions import Intervention
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
    "diff_scale", "inversion_cached", "original", "original_sha256", "counterfactual", "reconstruction",
    "difference", "difference_png",
)  # fmt: skip
#: ``reference_prompt`` is the prompt the target was measured against: the source prompt, or in ``contrast`` mode
#: the partial prompt of the image's current values (empty for the SCM). ``original`` is the source image file as
#: given (absolute path), ``original_sha256`` the digest of its bytes (:func:`original_digest`); the image paths
#: after them are relative to the job folder.
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
#: Every file a row names (relative to the folder): an image whose rows name a missing one is not done.
ROW_FILE_COLUMNS: tuple[str, ...] = (*EDIT_FILE_COLUMNS, "difference_png")
#: The key of ``job.json`` that counts the images of the latest run (not part of the settings a resume must match).
JOB_IMAGES_KEY = "images"
#: The columns a reader that shows edits (report, review) needs.
SHOWN_COLUMNS: tuple[str, ...] = ("image_id", "intervention", "counterfactual", "difference")
#: The columns of a row that showing one edit reads (:func:`cfaudit.report.edits.load_example`): the original,
#: or where it is gone the reconstruction, beside the counterfactual and its difference.
EXAMPLE_COLUMNS: tuple[str, ...] = (*SHOWN_COLUMNS, "reconstruction", "original")
#: The columns the evaluation needs of an ``edits.csv`` and of a ``pairs.csv``.
JOB_REQUIRED: tuple[str, ...] = ("image_id", "intervention", "method", "original", "counterfactual")
PAIRS_REQUIRED: tuple[str, ...] = ("original", "counterfactual", "intervention")


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


def _as_json(value: Any) -> Any:
    """``value`` as a row file holds it after a write and a read."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def unfinished_reason(out: Path, image_id: str, expected: Sequence[Mapping[str, Any]]) -> str:
    """Why the image ``image_id`` of the folder ``out`` is not done; ``""`` when it is.

    ``expected`` holds one mapping per edit the job asks of the image, in order: the values its row must hold (at
    least :func:`item_inputs`; a runner adds what else decides the edit, e.g. its target prompt). The image is done
    when its row file is a readable list of exactly those rows, each agreeing with its mapping, and every file
    (:data:`ROW_FILE_COLUMNS`) the rows name is there."""
    path = row_file(out, image_id)
    if not path.is_file():
        return "no row file"
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"{path} is not readable ({error})"
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        return f"{path} is not a list of rows"
    if len(rows) != len(expected):
        return f"{path} holds {len(rows)} row(s) for the {len(expected)} edit(s) of the image"
    for row, wanted in zip(rows, expected, strict=True):
        for column, value in wanted.items():
            if column == "original" and "original_sha256" in row:
                continue  # the bytes decide, not the path: prepare_resume points the rows at a moved file
            if column == "original_sha256" and column not in row:
                continue  # a row written before digests were: its path decides
            if column not in row or row[column] != _as_json(value):
                return f"{path}: its {column} is {row.get(column)!r}, now {_as_json(value)!r}"
        for column in ROW_FILE_COLUMNS:
            name = row.get(column)
            if not isinstance(name, str) or not name or not resolve_path(out, name).is_file():
                return f"{path}: the {column} file {name!r} is missing"
    return ""


def prepare_resume(
    out: Path, expected: Mapping[str, Sequence[Mapping[str, Any]]], also: Iterable[str] = ()
) -> tuple[int, int]:
    """Before a job edits into ``out``: remove the row file of every image that is not done
    (:func:`unfinished_reason`; ``expected`` by image id), so that it is redone; and, when any image of the job is
    not done, ``edits.csv`` and the merged files named in ``also``, so that the folder reads as unfinished until
    the job ends. Returns (images done, images redone: they had a row file). Only the main process calls it."""
    done = redone = 0
    for image_id, rows in expected.items():
        reason = unfinished_reason(out, image_id, rows)
        if not reason:
            done += 1
            _relink_original(out, image_id, rows)
        elif row_file(out, image_id).is_file():
            row_file(out, image_id).unlink()
            redone += 1
    if done < len(expected):
        for name in (EDITS_CSV, *also):
            (out / name).unlink(missing_ok=True)
    return done, redone


def batches_to_edit(
    out: Path, items: Sequence[JobItem], batch_size: int, rank: int = 0, world: int = 1
) -> list[list[JobItem]]:
    """After :func:`prepare_resume`: the batches of ``batch_size`` items, in input order, that hold any image not
    done (no row file), each whole; with ``world`` processes, ``rank``'s share (every ``world``-th from ``rank``).
    A batch is redone whole because a result's last bits depend on the batch it is computed in (the kernels round
    a batch of one otherwise than a batch of several): so a resumed job writes what one uninterrupted run writes."""
    batches = [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    return [
        batch
        for batch in batches[rank::world]
        if not all(row_file(out, item.image_id).is_file() for item in batch)
    ]


def _relink_original(out: Path, image_id: str, expected: Sequence[Mapping[str, Any]]) -> None:
    """Point a done image's rows at where its original file is now (the same bytes, another path)."""
    path = row_file(out, image_id)
    rows = json.loads(path.read_text(encoding="utf-8"))
    relinked = [
        {**row, "original": wanted.get("original", row.get("original"))}
        for row, wanted in zip(rows, expected, strict=True)
    ]
    if relinked != rows:
        atomic_io.write_json(path, relinked)


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
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CfauditError(
            f"{path}: not readable JSON ({error}); re-run the edit job, which redoes this image"
        ) from None
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise CfauditError(f"{path}: not a list of rows; re-run the edit job, which redoes this image")
    return rows


def other_images(out: Path, image_ids: Sequence[str]) -> int:
    """How many images of ``out`` have rows but are not among ``image_ids`` (an earlier job's, in the same folder)."""
    ours = {row_file(out, image_id).name for image_id in image_ids}
    return sum(1 for path in (out / ROWS_FOLDER).glob("*.json") if path.name not in ours)


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
        "original_sha256": original_digest(original),
        "counterfactual": str(relative / f"{slug}.png"),
        "reconstruction": str(relative / RECONSTRUCTION_FILE),
        "difference": str(relative / f"{slug}_diff.npy"),
        "difference_png": str(relative / f"{slug}_diff.png"),
    }


def check_job_file(out: Path, record: dict[str, Any], rank: int = 0, images: int | None = None) -> bool:
    """Refuse to resume into ``out`` when its ``job.json`` records other settings; write it on a fresh start.

    ``images``: how many images this run was given, kept in ``job.json`` as :data:`JOB_IMAGES_KEY` (updated on a
    resume, never compared: a resume may take more or fewer). Returns whether this call wrote a new ``job.json``
    (which :func:`abandon_job` may remove again)."""
    path = out / JOB_JSON
    counted = {**record, **({JOB_IMAGES_KEY: images} if images is not None else {})}
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            existing = None
        wanted = _as_json(record)
        settings = (
            {k: v for k, v in existing.items() if k != JOB_IMAGES_KEY} if isinstance(existing, dict) else None
        )
        if settings != wanted:
            differ = (
                sorted(k for k in set(settings) | set(wanted) if settings.get(k) != wanted.get(k))
                if isinstance(settings, dict)
                else ["the whole file (not a readable JSON object)"]
            )
            raise CfauditError(
                f"{out} holds an edit job with other settings, interventions or model ({path}; differs in: "
                f"{', '.join(differ)}); use a new --out folder or delete that one"
            )
        if rank == 0 and images is not None and existing.get(JOB_IMAGES_KEY) != images:
            atomic_io.write_json(path, counted)
        return False
    if rank == 0:
        atomic_io.write_json(path, counted)
        return True
    return False


def new_folders(*folders: Path) -> list[Path]:
    """Those of ``folders`` that are not there yet (a job may create them), for :func:`abandon_job`."""
    return [folder for folder in folders if not folder.exists()]


def abandon_job(out: Path, image_ids: Sequence[str], created: Sequence[Path]) -> None:
    """Undo the start of a job that failed before any image was done: remove the ``job.json`` it wrote (call this
    only then) and those of the folders it ``created`` (:func:`new_folders`, taken before it wrote anything) that
    are still empty, with their empty subfolders, so that a corrected command starts afresh. Nothing is removed
    once an image of the job has a row file."""
    if any(row_file(out, image_id).is_file() for image_id in image_ids):
        return
    (out / JOB_JSON).unlink(missing_ok=True)
    for folder in sorted(created, key=lambda p: len(p.parts), reverse=True):
        if not folder.is_dir():
            continue
        for sub in sorted(
            (p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            _remove_if_empty(sub)
        _remove_if_empty(folder)


@contextlib.contextmanager
def undone_on_failure(
    out: Path, image_ids: Sequence[str], created: Sequence[Path], fresh: bool
) -> Iterator[None]:
    """Around a job's edits: if they raise and this run wrote ``job.json`` (``fresh``, from
    :func:`check_job_file`), undo the start (:func:`abandon_job`), then let the error go on."""
    try:
        yield
    except BaseException:
        if fresh:  # nothing done: leave no job.json behind to refuse the corrected command
            abandon_job(out, image_ids, created)
        raise


def finish_images(
    out: Path,
    items: Sequence[JobItem],
    rows: Sequence[list[dict[str, Any]]],
    on_image_done: Callable[[str], None] | None = None,
    *,
    clear_staged: bool = False,
) -> None:
    """Write the row file of each edited item (:func:`finish_image`: the image is then done), then tell
    ``on_image_done`` its id."""
    for item, image_rows in zip(items, rows, strict=True):
        finish_image(out, item.image_id, image_rows, clear_staged=clear_staged)
        if on_image_done is not None:
            on_image_done(item.image_id)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not empty (or gone): keep it
        folder.rmdir()


# --- reading ---------------------------------------------------------------------------------------------------


def read_edits_table(path: Path, advice: str | None = None) -> pd.DataFrame:
    """An ``edits.csv`` (or ``pairs.csv``) with every cell as written, a string, after :func:`check_edit_rows`.

    ``advice`` ends an error (default: re-run the edit job, for a ``pairs.csv``: fix the file). Every reader of the
    edits (evaluation, report, review) reads them through here, so all refuse the same rows."""
    if advice is None:
        advice = "; re-run the edit job" if path.name != PAIRS_CSV else "; fix or remove that row"
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CfauditError(f"{path}: not a readable CSV ({error}){advice}") from None
    check_edit_rows(table, path, advice)
    return table


def check_edit_rows(table: pd.DataFrame, path: Path, advice: str = "; re-run the edit job") -> None:
    """Refuse a row whose intervention does not parse, and a row that repeats the edit of an earlier one (the
    same image id and intervention; without an image id, the same original, counterfactual and intervention),
    which every reader would count twice. Errors name the file and line (the header is line 1)."""
    if "intervention" not in table.columns:
        return  # the reader says which columns it needs
    seen: dict[tuple[str, ...], int] = {}
    for position, row in enumerate(table.to_dict("records")):
        line = position + 2
        text = str(row["intervention"])
        try:
            intervention = str(Intervention.parse(text))
        except CfauditError as error:
            raise CfauditError(f"{path}, line {line}: {error}{advice}") from None
        image_id = str(row.get("image_id") or "").strip()
        key = (
            (image_id, intervention)
            if image_id
            else ("", str(row.get("original") or ""), str(row.get("counterfactual") or ""), intervention)
        )
        if key in seen:
            raise CfauditError(
                f"{path}, line {line}: repeats the edit of line {seen[key]} "
                f"({image_id or row.get('original')}, {text}){advice}"
            )
        seen[key] = line


def read_job_json(folder: Path) -> dict[str, Any]:
    """The ``job.json`` of an edit folder (it must be there, beside ``edits.csv``)."""
    return read_json(folder / JOB_JSON, missing=f"missing; an editing job writes it beside {EDITS_CSV}")


def unfinished_job(folder: Path) -> str | None:
    """What to say of an edit folder whose job has not finished (``job.json`` or row files, but no
    ``edits.csv``): how many of its images are done and which command finishes it; ``None`` for anything else."""
    if (folder / EDITS_CSV).is_file():
        return None
    rows = folder / ROWS_FOLDER
    done = len([p for p in rows.glob("*.json") if p.is_file()]) if rows.is_dir() else 0
    if not (folder / JOB_JSON).is_file() and not done:
        return None
    job: Any = None
    with contextlib.suppress(OSError, UnicodeDecodeError, json.JSONDecodeError):
        job = json.loads((folder / JOB_JSON).read_text(encoding="utf-8"))
    job = job if isinstance(job, dict) else {}
    total = job.get(JOB_IMAGES_KEY)
    if isinstance(total, int) and not isinstance(total, bool) and total > 0:
        progress = f"{min(done, total)} of {total} images done"
    else:  # a job.json written before it counted its images
        progress = f"{done} image(s) done"
    command = "cfaudit scm edit" if job.get("method") == SCM_METHOD else "cfaudit edit"
    return f"unfinished edit job ({progress}); re-run the same `{command}` command to finish it"


def resolve_path(folder: Path, value: str | os.PathLike[str]) -> Path:
    """A path of a row: absolute as given, else relative to the edit folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path
