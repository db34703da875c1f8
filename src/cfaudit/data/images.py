"""Images in, tensors out: one loader for 8- and 16-bit PNG/JPEG (and DICOM with pydicom), one normalisation.

Intensity convention (documented once, used everywhere):

* :func:`load_image` returns a float32 ``H x W`` array in ``[0, 1]``, 0 = black. 8-bit files are divided by 255,
  16-bit files by 65535 (by the file's bit depth, never by the image's own min/max, so two images of one data
  set stay comparable). Colour files are converted to luminance. DICOM: modality rescale, then the VOI LUT /
  window of the file, MONOCHROME1 inverted, then scaled to the full ``[0, 1]`` range of the windowed values.
  It refuses what cannot be a chest X-ray to edit: a side under :data:`MIN_SIDE` pixels, sides more than
  :data:`MAX_ASPECT` : 1 apart (the centre crop would keep a sliver and upscale it), and transparent pixels
  (an alpha channel with any value below opaque: what lies under them is unknown, and any background cfaudit
  chose would be edited as if it were anatomy; a fully opaque alpha channel is dropped).
* :func:`to_model_tensor` resizes the shorter side to the model resolution, centre-crops a square and maps to
  ``[-1, 1]`` (``2x - 1``), the input range of Stable Diffusion's VAE. (torchxrayvision models use ``[-1024, 1024]``;
  whoever loads those converts from ``[0, 1]`` there.)
* :func:`save_image` writes integer PNG/JPEG files (8- or 16-bit), atomically; the reverse of :func:`load_image`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cfaudit.atomic_io import atomic_path
from cfaudit.errors import CfauditError

DICOM_SUFFIXES = (".dcm", ".dicom")
#: Images with a shorter side below this many pixels are refused (no chest X-ray is that small; the model's
#: resize would invent nearly every pixel).
MIN_SIDE = 16
#: Images whose longer side is more than this many times the shorter are refused (a strip, not a radiograph).
MAX_ASPECT = 4.0
# Shown wherever an image is loaded (edit, evaluate, report, training...): true for an index's image and for a
# file given directly. Callers with another remedy strip it (ui, realism).
_BAD_IMAGE_HINT = (
    "replace the file; if it is an image of a data set, `cfaudit data index --check-images decode "
    "--on-bad-row skip` leaves such images out of the index"
)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _load_dicom(path: Path) -> np.ndarray:
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise CfauditError(
            f"{path}: reading DICOM needs pydicom; install it with `pip install 'cfaudit[dicom]'`"
        ) from None
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for damaged files
        raise CfauditError(f"{path}: cannot decode DICOM ({error}); {_BAD_IMAGE_HINT}") from None
    if pixels.ndim != 2:
        raise CfauditError(f"{path}: DICOM has {pixels.ndim} pixel dimensions; expected one grayscale frame")
    values = apply_modality_lut(pixels, dataset)
    values = apply_voi_lut(values, dataset, prefer_lut=True).astype(np.float64)
    if str(getattr(dataset, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        values = values.max() - values
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).astype(np.float32)


def _pil_to_unit(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(image, dtype=np.float32) / 65535.0
    if mode == "I":
        array = np.asarray(image)
        # PNG 16-bit greyscale arrives as mode "I" in some Pillow versions: values up to 65535.
        scale = 65535.0 if array.max(initial=0) > 255 or image.info.get("bits") == 16 else 255.0
        return array.astype(np.float32) / scale
    if mode == "F":
        raise CfauditError(f"{path}: floating-point image files are not supported; save as 8- or 16-bit PNG")
    _refuse_transparency(image, path)
    if mode == "1":
        image = image.convert("L")
    elif mode != "L":
        image = image.convert("L")  # RGB, RGBA, LA, P, CMYK, YCbCr -> luminance
    return np.asarray(image, dtype=np.float32) / 255.0


def _refuse_transparency(image: Image.Image, path: Path) -> None:
    """Refuse an image with any transparent or translucent pixel (alpha channel or PNG transparency key).

    Compositing would need a background, and any choice (black, white) puts made-up intensities into an X-ray
    that the editor and the scores would treat as anatomy; only the person who made the file knows what belongs
    there. A fully opaque alpha channel carries nothing and is dropped.
    """
    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        return
    rgba = image if image.mode in ("RGBA", "LA") else image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"))
    see_through = int(np.count_nonzero(alpha < 255))
    if see_through:
        share = 100.0 * see_through / alpha.size
        raise CfauditError(
            f"{path}: {share:.3g}% of the image's pixels are transparent or translucent (mode {image.mode}); an "
            "X-ray has no transparency and cfaudit will not guess what lies behind them (save the picture "
            f"flattened, without an alpha channel); {_BAD_IMAGE_HINT}"
        )


def _check_shape(array: np.ndarray, path: Path) -> None:
    """Refuse what is not a 2-D picture of usable size and proportions (see :data:`MIN_SIDE`, :data:`MAX_ASPECT`)."""
    if array.ndim != 2 or min(array.shape) < 1:
        raise CfauditError(f"{path}: image has shape {array.shape}; expected a 2-D grayscale picture")
    height, width = array.shape
    if min(height, width) < MIN_SIDE:
        raise CfauditError(
            f"{path}: the image is only {width}x{height} pixels (width x height); cfaudit needs at least "
            f"{MIN_SIDE} pixels a side; {_BAD_IMAGE_HINT}"
        )
    if max(height, width) > MAX_ASPECT * min(height, width):
        raise CfauditError(
            f"{path}: the image is {width}x{height} pixels (width x height), sides more than {MAX_ASPECT:g}:1 "
            f"apart: not a chest X-ray (its centre square would be a sliver, scaled up); {_BAD_IMAGE_HINT}"
        )


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one image as float32 ``H x W`` in ``[0, 1]``; a missing or damaged file is a :class:`CfauditError`."""
    path = Path(path)
    if not path.is_file():
        raise CfauditError(f"{path}: no such image file; check the data root and the index's path column")
    if path.suffix.lower() in DICOM_SUFFIXES:
        array = _load_dicom(path)
        _check_shape(array, path)
        return array
    try:
        with Image.open(path) as image:
            image.load()
            array = _pil_to_unit(image, path)
    except CfauditError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CfauditError(f"{path}: cannot decode image ({error}); {_BAD_IMAGE_HINT}") from None
    _check_shape(array, path)
    return array


def verify_image(path: str | os.PathLike[str]) -> None:
    """Raise :class:`CfauditError` if the file is missing or cannot be decoded completely."""
    load_image(path)


def resize_and_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` (bicubic on floats; area-like when shrinking), then centre-crop."""
    if size < 1:
        raise CfauditError(f"image size must be positive, got {size}")
    height, width = image.shape
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        pil = Image.fromarray(image.astype(np.float32), mode="F")
        resample = Image.Resampling.BOX if scale < 0.5 else Image.Resampling.BICUBIC
        image = np.asarray(pil.resize((new_w, new_h), resample=resample), dtype=np.float32)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.clip(image[top : top + size, left : left + size], 0.0, 1.0)


def to_model_tensor(image: np.ndarray, size: int):  # -> torch.Tensor (torch imported lazily)
    """``[0, 1]`` image -> float32 tensor ``[1, size, size]`` in ``[-1, 1]``."""
    import torch

    return torch.from_numpy(resize_and_crop(image, size) * 2.0 - 1.0).unsqueeze(0)


def load_model_tensor(path: str | os.PathLike[str], size: int):  # -> torch.Tensor
    """:func:`load_image` then :func:`to_model_tensor`."""
    return to_model_tensor(load_image(path), size)


def to_uint(image: np.ndarray, bits: int = 8) -> np.ndarray:
    """``[0, 1]`` float -> rounded unsigned integers of the given bit depth (values outside are clipped)."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    top = 255 if bits == 8 else 65535
    dtype = np.uint8 if bits == 8 else np.uint16
    return np.rint(np.clip(image, 0.0, 1.0) * top).astype(dtype)


def save_image(image: np.ndarray, path: str | os.PathLike[str], bits: int = 8, quality: int = 95) -> None:
    """Write a ``[0, 1]`` grayscale image as an integer PNG (8/16-bit) or JPEG (8-bit), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    pixels = to_uint(image, bits)
    if suffix in (".jpg", ".jpeg"):
        if bits != 8:
            raise CfauditError(f"{path}: JPEG files hold 8-bit images; use .png for 16-bit")
        with atomic_path(path) as tmp:
            Image.fromarray(pixels, mode="L").save(tmp, format="JPEG", quality=quality)
    elif suffix == ".png":
        pil = Image.fromarray(pixels, mode="L") if bits == 8 else Image.fromarray(pixels)
        with atomic_path(path) as tmp:
            pil.save(tmp, format="PNG", compress_level=1)
    else:
        raise CfauditError(f"{path}: unsupported image suffix {suffix!r}; use .png, .jpg or .jpeg")
