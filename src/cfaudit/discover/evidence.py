"""Pictures that back a discovery: mean difference maps per intervention and crops of each change cluster."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cfaudit.atomic_io import atomic_path
from cfaudit.data.difference import colour_map, load_difference
from cfaudit.data.edit_folder import IDENTITY_FILE, image_folder
from cfaudit.data.images import load_image
from cfaudit.data.interventions import Intervention

#: Side of one tile of an evidence montage, in pixels.
TILE = 96
#: Side of a crop around a cluster's centre, as a share of the image side.
CROP = 0.4


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def write_mean_maps(
    edits: pd.DataFrame, folder: Path, out: Path, interventions: Sequence[Intervention]
) -> dict[str, str]:
    """``out/<slug>_mean.npy`` (exact) and ``_mean.png`` (blue darker / red brighter) per intervention.

    Returns the PNG path of each intervention relative to ``out``'s parent (the discovery folder)."""
    paths: dict[str, str] = {}
    for intervention in interventions:
        rows = edits[edits["intervention"] == str(intervention)]
        if rows.empty:
            continue
        mean = _mean_map(folder / p for p in rows["difference"])
        with atomic_path(out / f"{intervention.slug}_mean.npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, mean, allow_pickle=False)
        picture, _ = colour_map(mean)
        _save_png(picture, out / f"{intervention.slug}_mean.png")
        paths[str(intervention)] = f"{out.name}/{intervention.slug}_mean.png"
    return paths


def _mean_map(paths: Iterable[Path]) -> np.ndarray:
    """The mean of difference maps read one at a time (a running float32 sum in file order: the same numbers as
    ``np.mean`` over the stacked maps, whose reduction over the first axis adds them in that order)."""
    total: np.ndarray | None = None
    count = 0
    for path in paths:
        difference = load_difference(path)
        total = (
            difference.astype(np.float32, copy=True)
            if total is None
            else np.add(total, difference, out=total)
        )
        count += 1
    if total is None:
        raise ValueError("no difference map to average")
    return np.true_divide(total, count, out=total, casting="unsafe").astype(np.float32)


def _crop(image: np.ndarray, x: float, y: float) -> np.ndarray:
    size = image.shape[0]
    half = max(4, round(CROP * size / 2))
    cx, cy = round(x * size), round(y * size)
    x0, y0 = min(max(0, cx - half), size - 2 * half), min(max(0, cy - half), size - 2 * half)
    return image[max(0, y0) : max(0, y0) + 2 * half, max(0, x0) : max(0, x0) + 2 * half]


def _tile(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat((np.clip(array, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    return np.asarray(Image.fromarray(array).resize((TILE, TILE), Image.Resampling.BICUBIC))


def write_cluster_evidence(
    members: pd.DataFrame, edits: pd.DataFrame, folder: Path, out: Path, grid: int, per_cluster: int = 4
) -> dict[tuple[str, int], str]:
    """A montage per cluster: rows of (null edit, counterfactual, signed difference) crops around the cluster,
    for its ``per_cluster`` strongest members. Returns paths relative to the discovery folder."""
    paths: dict[tuple[str, int], str] = {}
    if members.empty:
        return paths
    lookup = edits.set_index(["intervention", "image_id"])
    for (intervention, cluster), group in members.groupby(["intervention", "cluster"], sort=False):
        rows = []
        for member in group.sort_values("mass", ascending=False).head(per_cluster).itertuples(index=False):
            edit = lookup.loc[(intervention, member.image_id)]
            null = load_image(image_folder(folder, str(member.image_id)) / IDENTITY_FILE)
            counterfactual = load_image(folder / edit["counterfactual"])
            difference = counterfactual - null
            scale = max(float(np.abs(difference).max()), 1e-6)
            tiles = [
                _tile(_crop(null, member.x, member.y)),
                _tile(_crop(counterfactual, member.x, member.y)),
                _tile(_crop(colour_map(difference, scale)[0], member.x, member.y)),
            ]
            rows.append(np.concatenate(tiles, axis=1))
        slug = Intervention.parse(str(intervention)).slug
        name = f"{slug}_cluster{int(cluster)}.png"
        _save_png(np.concatenate(rows, axis=0), out / name)
        paths[(str(intervention), int(cluster))] = f"{out.name}/{name}"
    return paths
