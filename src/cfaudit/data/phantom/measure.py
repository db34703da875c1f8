"""The phantom's own image measures, read FROM THE PIXELS (never from ground truth).

Later stages score edited and generated images with them: did "remove cardiomegaly" shrink the heart, did
"add effusion" opacify a base? They are built for frontal phantom radiographs at 32-256 px and tolerate noise
and the blur of diffusion-model samples, because they work on smoothed row and column profiles.

``heart_width_ratio``: across the rows of the lower chest, each smoothed row profile has two dark lung
troughs beside a bright cardiomediastinal plateau. The heart's borders are where the profile, walking out
from the centre, falls below halfway between plateau and lung; the thorax's borders are where it rises again
beyond the lungs. The ratio of the widest heart to the widest thorax over the rows where both lungs are
clearly dark is the cardiothoracic ratio.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

_WORK_SIZE = 96


def _prepare(image: np.ndarray) -> np.ndarray:
    """2-D float image in 0..1 at ``_WORK_SIZE`` px, lightly smoothed (accepts uint8/uint16/float, HxW or HxWxC)."""
    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., :3].mean(axis=2) if array.shape[2] > 1 else array[..., 0]
    if array.ndim != 2 or min(array.shape) < 8:
        raise ValueError(
            f"expected a 2-D image of at least 8 x 8 pixels, got shape {np.asarray(image).shape}"
        )
    values = array.astype(np.float32)
    low, high = float(np.percentile(values, 1)), float(np.percentile(values, 99))
    values = np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0)
    picture = Image.fromarray(values, mode="F").resize((_WORK_SIZE, _WORK_SIZE), Image.Resampling.BOX)
    small = np.asarray(picture, dtype=np.float32)
    kernel = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16.0
    small = np.apply_along_axis(
        lambda r: np.convolve(np.pad(r, 2, mode="edge"), kernel, mode="valid"), 1, small
    )
    return np.apply_along_axis(
        lambda c: np.convolve(np.pad(c, 2, mode="edge"), kernel, mode="valid"), 0, small
    )


def _otsu(values: np.ndarray) -> float:
    """The threshold that best splits ``values`` into two classes (Otsu's method on a 64-bin histogram)."""
    counts, edges = np.histogram(values, bins=64, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    total = weight[-1]
    mean = np.cumsum(counts * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight / total - mean) ** 2 / (weight * (total - weight))
    between[~np.isfinite(between)] = 0
    return float(centres[int(np.argmax(between))])


def lung_mask(image: np.ndarray) -> np.ndarray:
    """Dark lung fields inside the body on the working grid (``_WORK_SIZE`` px), as a boolean array."""
    small = _prepare(image)
    n = small.shape[0]
    band = small[int(0.3 * n) : int(0.75 * n), int(0.1 * n) : int(0.9 * n)]
    body = band[band > 0.12]
    threshold = _otsu(body) if body.size else 0.5
    mask = small < threshold
    inside = small > 0.12  # not the air around the body
    cols = np.arange(n)
    for r in range(n):
        where = np.flatnonzero(inside[r])
        if where.size < 4:
            mask[r] = False
            continue
        margin = max(1, n // 48)
        mask[r] &= (cols > where[0] + margin) & (cols < where[-1] - margin)
    mask[: int(0.12 * n)] = False
    return mask


def _runs(values: np.ndarray, shortest: int) -> list[tuple[int, int]]:
    """(first, last) indices of the runs of True in a 1-D boolean array that are at least ``shortest`` long."""
    padded = np.concatenate(([False], values, [False])).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    return [
        (int(a), int(b) - 1) for a, b in zip(changes[::2], changes[1::2], strict=True) if b - a >= shortest
    ]


def _dome_row(mask: np.ndarray, spine: int, side: int) -> int | None:
    """The lowest lung row in the columns about 0.45 of the half-width from the spine: lateral to any heart,
    there the hemidiaphragm is still near its top (about 5% of the image height below it)."""
    n = mask.shape[0]
    offsets = range(int(0.2 * n), int(0.25 * n))
    columns = [spine + side * offset for offset in offsets if 0 <= spine + side * offset < n]
    lowest = [int(np.flatnonzero(mask[:, c])[-1]) for c in columns if mask[:, c].any()]
    return int(np.median(lowest)) if lowest else None


def heart_width_ratio(image: np.ndarray) -> float:
    """The cardiothoracic ratio measured on a frontal phantom radiograph (NaN when no lungs are found).

    On a lung mask (Otsu threshold inside the body, runs narrower than 5% of the width ignored: the dark rim
    of thin soft tissue at the body's edge, gaps between tubes), the heart's widest row lies just above the
    right hemidiaphragm: the heart's width is the widest gap between the lungs' inner edges over a few rows
    above the dome (found lateral to the heart), the thorax's width the widest span between the lungs' outer edges. Large effusions
    hide the heart borders and the domes, as on real radiographs, and then bias the value.
    """
    mask = lung_mask(image)
    n = mask.shape[0]
    small = _prepare(image)
    middle = small[int(0.3 * n) : int(0.75 * n), int(0.35 * n) : int(0.65 * n)].mean(axis=0)
    spine = int(np.argmax(middle)) + int(0.35 * n)
    shortest = max(2, int(0.05 * n))

    def sides(r: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return _runs(mask[r, :spine][::-1], shortest), _runs(mask[r, spine + 1 :], shortest)

    thoraces = []
    for r in range(int(0.15 * n), n):
        left, right = sides(r)
        if left and right:
            thoraces.append(max(run[1] for run in left) + max(run[1] for run in right) + 3)
    dome = _dome_row(mask, spine, -1)
    if dome is None:
        other = _dome_row(mask, spine, +1)
        dome = None if other is None else other - int(0.02 * n)
    if dome is None or len(thoraces) < 3:
        return float("nan")
    hearts = []
    for r in range(max(0, dome - int(0.09 * n)), dome - int(0.02 * n)):
        left, right = sides(r)
        if left and right:
            hearts.append(left[0][0] + right[0][0] + 1)
    if not hearts:
        return float("nan")
    return float(max(hearts)) / float(np.percentile(thoraces, 95))


def effusion_score(image: np.ndarray) -> float:
    """Basal opacity: brightness of the lower lung zones relative to the mid zones (higher = more fluid).

    Compares, on each side, the lower third of the lung band with its middle; returns the larger side's
    difference, so a one-sided effusion scores as high as a bilateral one.
    """
    small = _prepare(image)
    n = small.shape[0]
    scores = []
    for zone in (slice(int(0.15 * n), int(0.42 * n)), slice(int(0.58 * n), int(0.85 * n))):
        band = small[:, zone]
        mid = float(np.percentile(band[int(0.42 * n) : int(0.55 * n)], 30))
        low = float(np.percentile(band[int(0.62 * n) : int(0.72 * n)], 30))
        scores.append(low - mid)
    return max(scores)
