"""The report's counterfactual examples: example grids and mean difference maps of each edit job."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from cfaudit.data.difference import load_difference
from cfaudit.data.edit_folder import EDITS_CSV
from cfaudit.data.images import load_image, resize_and_crop
from cfaudit.errors import CfauditError
from cfaudit.report import figures
from cfaudit.report.collect import EditJobInput
from cfaudit.report.formatting import meta_items, number, slugify

#: Example grids are shown at this fraction of their pixel width (six images fit beside the mean map at 1400 px;
#: screens with more than one pixel per CSS pixel get the extra resolution).
GRID_DISPLAY_SCALE = 0.72


#: Called with a short message before each step of the report (what it is doing now).
Say = Callable[[str], None]


def _load_float_map(path: Path, edits_csv: Path, line: int) -> np.ndarray:
    if not path.is_file():
        raise CfauditError(f"{edits_csv}, line {line}: difference map {path} is missing; re-run the edit job")
    try:
        array = load_difference(path)
    except (ValueError, OSError) as error:
        raise CfauditError(
            f"{path}: not a readable .npy difference map ({error}); re-run the edit job"
        ) from None
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise CfauditError(f"{path}: difference map has shape {array.shape}; expected a 2-D map")
    return array


def _resize_float(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if array.shape == shape:
        return array
    resized = Image.fromarray(array.astype(np.float32), mode="F").resize(
        (shape[1], shape[0]), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)


def load_example(folder: Path, row: Mapping[str, Any], line: int, notes: list[str]) -> figures.Example:
    """One edit of the job in ``folder`` (``row`` of its ``edits.csv``, at ``line``) as original, counterfactual and
    signed difference at the counterfactual's size. The original is brought to that size as the model saw it; where
    it is gone, the reconstruction stands in (with a note). The review page shows edits through this too."""
    edits_csv = folder / EDITS_CSV
    counterfactual_path = folder / row["counterfactual"]
    if not counterfactual_path.is_file():
        raise CfauditError(
            f"{edits_csv}, line {line}: counterfactual {counterfactual_path} is missing; re-run the edit job"
        )
    counterfactual = load_image(counterfactual_path)
    difference = _resize_float(
        _load_float_map(folder / row["difference"], edits_csv, line), counterfactual.shape
    )
    original_path = Path(str(row.get("original", ""))) if isinstance(row.get("original"), str) else None
    label = "original"
    if original_path is not None and original_path.is_file():
        original = resize_and_crop(load_image(original_path), counterfactual.shape[0])
        original = _resize_float(original, counterfactual.shape)
    else:
        reconstruction = folder / str(row.get("reconstruction", ""))
        if isinstance(row.get("reconstruction"), str) and reconstruction.is_file():
            original, label = load_image(reconstruction), "reconstruction"
            original = _resize_float(original, counterfactual.shape)
        else:
            original, label = np.full(counterfactual.shape, 0.5, dtype=np.float32), "missing"
        notes.append(f"{edits_csv}: original image {original_path} not found; showing the {label} instead")
    return figures.Example(str(row["image_id"]), original, counterfactual, difference, label)


def mean_difference(job: EditJobInput, rows: pd.DataFrame, shape: tuple[int, int]) -> np.ndarray:
    """The mean signed difference map over ``rows`` of a job (every row, not only the examples shown)."""
    total = np.zeros(shape, dtype=np.float64)
    for i, row in rows.iterrows():
        path = job.folder / row["difference"]
        total += _resize_float(_load_float_map(path, job.folder / EDITS_CSV, int(i) + 2), shape)
    return (total / max(1, len(rows))).astype(np.float32)


#: A discovery's edit job shows the examples of its flagged interventions and of this many top-ranked ones.
DISCOVERY_EXAMPLE_INTERVENTIONS = 6


def discovery_interventions_to_show(job: EditJobInput) -> set[str] | None:
    """For the edit job of a discovery: the interventions of its flagged and top-ranked candidates (None: all)."""
    if job.part_of is None or not (job.part_of / "candidates.csv").is_file():
        return None
    try:
        candidates = pd.read_csv(job.part_of / "candidates.csv")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError):
        return None
    if not {"intervention", "flagged"} <= set(candidates.columns):
        return None
    if "rank" in candidates.columns:
        candidates = candidates.sort_values("rank", kind="stable")
    flagged = candidates[candidates["flagged"].astype(str).str.lower() == "true"]["intervention"]
    top = candidates["intervention"].head(DISCOVERY_EXAMPLE_INTERVENTIONS)
    return set(flagged.astype(str)) | set(top.astype(str))


def edit_groups(
    job: EditJobInput, prefix: str, max_examples: int, notes: list[str], progress: Say | None
) -> list[dict[str, Any]]:
    """One entry per (method, intervention) of a job: the example grid and the mean difference map."""
    edits = job.edits.reset_index(drop=True)
    keep = discovery_interventions_to_show(job)
    if keep is not None:
        left_out = sorted(set(edits["intervention"].astype(str)) - keep)
        edits = edits[edits["intervention"].astype(str).isin(keep)]  # keeps the CSV line numbers
        if left_out:
            notes.append(
                f"{job.folder}: examples shown for the discovery's flagged and top-ranked interventions only; "
                f"{len(left_out)} more are in the folder ({', '.join(left_out[:4])}{', ...' if len(left_out) > 4 else ''})"
            )
    groups = []
    for (method, intervention), rows in edits.groupby(["method", "intervention"], sort=False):
        if progress is not None:
            progress(f"edits: {intervention} ({method})")
        first = rows.drop_duplicates("image_id").head(max_examples)
        examples = [load_example(job.folder, row, int(i) + 2, notes) for i, row in first.iterrows()]
        mean = mean_difference(job, rows, examples[0].counterfactual.shape)
        grid_uri, scale, grid_width = figures.edit_grid(examples)
        prompts = rows["target_prompt"].dropna().astype(str).unique() if "target_prompt" in rows else []
        groups.append(
            {
                "id": f"{prefix}-{slugify(str(method))}-{slugify(str(intervention))}",
                "intervention": str(intervention),
                "method": str(method),
                "images": int(rows["image_id"].nunique()),
                "shown": len(examples),
                "target_prompt": prompts[0] if len(prompts) else "",
                "prompt_varies": len(prompts) > 1,
                "grid_uri": grid_uri,
                # Shown at a fixed fraction of its pixels, so grids of fewer images are not blown up.
                "grid_width": round(grid_width * GRID_DISPLAY_SCALE),
                "scale": number(scale),
                "mean_uri": figures.mean_map(mean, len(rows)),
                "mean_edit_l1": number(rows["edit_l1"].mean()) if "edit_l1" in rows else "–",
            }
        )
    return groups


def edit_job_section(
    job: EditJobInput, number_: int, max_examples: int, notes: list[str], progress: Say | None
) -> dict[str, Any]:
    settings = job.job.get("settings", {}) if isinstance(job.job.get("settings"), dict) else {}
    details = meta_items(job.job, ("model", "model_fingerprint"))
    inversion = settings.get("inversion", {}) if isinstance(settings.get("inversion"), dict) else {}
    details += meta_items(inversion, ("method", "steps", "guidance_scale"))
    details += meta_items(settings, ("prompt_mode", "seed"))
    label = job.folder.name
    if job.part_of is not None:
        label = f"{job.part_of.name}/{job.folder.name}"
    return {
        "id": f"edits-{number_}",
        "title": "Counterfactual examples",
        "name": label,
        "path": str(job.folder),
        "images": int(job.edits["image_id"].nunique()),
        "edits": len(job.edits),
        "meta": details,
        "groups": edit_groups(job, f"edits-{number_}", max_examples, notes, progress),
    }
