"""Signed difference maps: counterfactual minus reconstruction, kept signed.

An 8-bit PNG of ``cf - rec`` wraps negative values around (-1 becomes 255). The map is therefore stored as a
float32 ``.npy`` array (exact, signed, in image units of ``[0, 1]`` intensity: -1..1) and shown as a colour PNG
(blue where the counterfactual is darker, red where brighter, white where unchanged), scaled symmetrically by the
largest absolute change, which is returned so that it can be reported beside the picture.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from cfaudit.atomic_io import atomic_path


def signed_difference(counterfactual: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """``counterfactual - reconstruction`` as float32 (both ``[0, 1]`` images of one shape)."""
    if counterfactual.shape != reconstruction.shape:
        raise ValueError(f"shapes differ: {counterfactual.shape} vs {reconstruction.shape}")
    return counterfactual.astype(np.float32) - reconstruction.astype(np.float32)


def colour_map(difference: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """RGB uint8 picture of a signed map (blue-white-red) and the scale used (max ``|difference|`` by default)."""
    scale = float(np.abs(difference).max()) if scale is None else float(scale)
    unit = np.clip(difference / scale, -1.0, 1.0) if scale > 0 else np.zeros_like(difference)
    positive, negative = np.clip(unit, 0, 1), np.clip(-unit, 0, 1)
    red = 1.0 - negative
    green = 1.0 - positive - negative
    blue = 1.0 - positive
    rgb = np.stack([red, green, blue], axis=-1)
    return np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8), scale


def save_difference(
    difference: np.ndarray, npy_path: str | os.PathLike[str], png_path: str | os.PathLike[str]
) -> float:
    """Write the exact signed map (``.npy``) and its colour picture (``.png``), atomically; return the scale."""
    with atomic_path(npy_path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, difference.astype(np.float32), allow_pickle=False)
    picture, scale = colour_map(difference)
    with atomic_path(png_path) as tmp:
        Image.fromarray(picture, mode="RGB").save(tmp, format="PNG")
    return scale


def load_difference(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a map written by :func:`save_difference` (never unpickles)."""
    return np.load(Path(path), allow_pickle=False)
