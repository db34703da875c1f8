"""Where the image to edit comes from: a checked upload, or a row of a data index.

An upload is untrusted: :func:`load_upload` checks, in order, the file name's suffix, the size in bytes, the header
(format, pixel mode, frame count, width x height) and only then decodes the pixels with the project's loader
(:func:`cfaudit.data.images.load_image`), so that an oversized or malformed file is refused before it is decoded.
Every refusal is one :class:`~cfaudit.errors.CfauditError` whose message names the uploaded file (never the
temporary path it was stored under) and says what to upload instead.

A picked image comes from an index (:class:`DataSource`); its record gives the source prompt
(:func:`cfaudit.data.prompts.record_prompt`) and the metadata shown beside it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cfaudit.data.images import DICOM_SUFFIXES, load_image
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.prompts import DEFAULT_TEMPLATE, PromptTemplate, record_prompt
from cfaudit.data.records import DataIndex
from cfaudit.data.vocabulary import PATHOLOGIES, normalize_sex
from cfaudit.digests import file_sha256
from cfaudit.errors import CfauditError

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)
#: Pixel modes the loader reads: grayscale (8/16-bit) as is, colour converted to luminance.
GRAYSCALE_MODES = frozenset({"1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N"})
COLOUR_MODES = frozenset({"LA", "P", "PA", "RGB", "RGBA", "RGBX"})
#: Images smaller than this on either side are refused (nothing of a chest X-ray is left to edit).
MIN_SIDE = 32
#: The caption offered for an upload without metadata; the user describes the image by editing it.
UPLOAD_PROMPT = DEFAULT_TEMPLATE.compose()
_UPLOAD_HINT = "upload a PNG, JPEG or DICOM (.dcm) chest X-ray"


@dataclass(frozen=True)
class UploadLimits:
    """What an upload may be: bytes on disk and decoded pixels (width x height)."""

    max_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1:
            raise CfauditError(
                f"upload limits must be positive, got {self.max_bytes} bytes and {self.max_pixels} pixels"
            )

    @classmethod
    def from_megabytes(cls, megabytes: float, megapixels: float) -> UploadLimits:
        return cls(int(megabytes * 1024 * 1024), int(megapixels * 1_000_000))


@dataclass
class SourceImage:
    """One image ready to edit: pixels ``H x W`` in ``[0, 1]``, its caption and where it came from."""

    pixels: np.ndarray
    name: str
    path: Path
    prompt: str
    kind: str  # "upload" | "data"
    sha256: str
    record: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def image_id(self) -> str:
        return (
            str(self.record["image_id"])
            if self.record and "image_id" in self.record
            else Path(self.name).stem
        )


def _megabytes(count: int) -> str:
    return f"{count / (1024 * 1024):.1f} MB"


def _readable_reason(error: BaseException | str, path: Path, name: str) -> str:
    """The decoder's reason with the temporary path replaced by the uploaded name and CLI hints left out."""
    from cfaudit.data import images

    text = str(error).replace(str(path), name).replace(f"; {images._BAD_IMAGE_HINT}", "")
    prefix = f"{name}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _check_header(path: Path, name: str) -> dict[str, Any]:
    """Width, height and pixel mode from the header (nothing is decoded); refuse what the loader cannot use."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return _check_dicom_header(path, name)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            mode, frames, kind = image.mode, int(getattr(image, "n_frames", 1)), image.format
    except Image.DecompressionBombError:
        raise CfauditError(
            f"{name} has more pixels than any chest X-ray (Pillow refuses to decode it); downscale it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise CfauditError(
            f"{name} is not a readable image ({_readable_reason(error, path, name)}); {_UPLOAD_HINT}"
        ) from None
    if kind not in ("PNG", "JPEG", "MPO"):
        raise CfauditError(f"{name} holds a {kind} image, not PNG or JPEG; {_UPLOAD_HINT}")
    if frames > 1:
        raise CfauditError(f"{name} holds {frames} frames (an animation); {_UPLOAD_HINT} with one frame")
    if mode not in GRAYSCALE_MODES | COLOUR_MODES:
        raise CfauditError(
            f"{name} has pixel mode {mode}, which is not supported; save it as an 8- or 16-bit grayscale PNG"
        )
    return {"width": width, "height": height, "mode": mode, "format": kind}


def _check_dicom_header(path: Path, name: str) -> dict[str, Any]:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise CfauditError(
            f"{name}: reading DICOM needs pydicom; install it with `pip install 'cfaudit[dicom]'`"
        ) from None
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        width, height = int(dataset.Columns), int(dataset.Rows)
    except (InvalidDicomError, AttributeError, OSError, ValueError, TypeError, EOFError) as error:
        reason = _readable_reason(error, path, name) or type(error).__name__
        raise CfauditError(f"{name} is not a readable DICOM image ({reason}); {_UPLOAD_HINT}") from None
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise CfauditError(f"{name} holds {frames} frames; upload a DICOM with one frontal image")
    return {
        "width": width,
        "height": height,
        "mode": str(getattr(dataset, "PhotometricInterpretation", "")),
        "format": "DICOM",
        "patient_age": str(getattr(dataset, "PatientAge", "") or ""),
        "patient_sex": str(getattr(dataset, "PatientSex", "") or ""),
    }


def dicom_prompt(details: Mapping[str, Any], template: PromptTemplate = DEFAULT_TEMPLATE) -> str:
    """A caption from a DICOM header's age (``063Y``) and sex (``M``/``F``), where the header has them."""
    age: float | None = None
    text = str(details.get("patient_age", "")).strip().upper()
    if len(text) >= 2 and text[:-1].isdigit() and text[-1] in "YMWD":
        per_year = {"Y": 1.0, "M": 12.0, "W": 52.0, "D": 365.0}[text[-1]]
        age = int(text[:-1]) / per_year
        age = age if 0.0 <= age <= 120.0 else None
    try:
        sex: str | None = normalize_sex(details.get("patient_sex", ""))
    except CfauditError:
        sex = None
    return template.compose(age=age, sex=sex)


def load_upload(path: str | os.PathLike[str] | None, limits: UploadLimits | None = None) -> SourceImage:
    """Check and read an uploaded file (see the module docstring); a bad file is a :class:`CfauditError`."""
    limits = limits or UploadLimits()
    if path is None or str(path).strip() == "":
        raise CfauditError(f"no image yet: {_UPLOAD_HINT}, or pick one from the data set")
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise CfauditError(f"{name}: the upload did not arrive; upload it again")
    # 1. Suffix
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        shown = f"{suffix} files" if suffix else "files without a suffix"
        raise CfauditError(f"{name}: {shown} are not supported; {_UPLOAD_HINT}")
    # 2. Bytes
    size = path.stat().st_size
    if size == 0:
        raise CfauditError(f"{name} is empty (0 bytes); {_UPLOAD_HINT}")
    if size > limits.max_bytes:
        raise CfauditError(
            f"{name} is {_megabytes(size)}, over the {_megabytes(limits.max_bytes)} limit; "
            "upload a smaller file (or start the app with a larger --max-upload-mb)"
        )
    # 3. Header: format, mode, frames, pixels
    details = _check_header(path, name)
    width, height = details["width"], details["height"]
    if width * height > limits.max_pixels:
        raise CfauditError(
            f"{name} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), over the "
            f"{limits.max_pixels / 1e6:g} megapixel limit; downscale it (or start the app with a larger "
            "--max-megapixels)"
        )
    if min(width, height) < MIN_SIDE:
        raise CfauditError(
            f"{name} is only {width}x{height} pixels; upload an image at least {MIN_SIDE} pixels a side"
        )
    # 4. Decode with the project's loader
    try:
        pixels = load_image(path)
    except CfauditError as error:
        raise CfauditError(
            f"{name} cannot be read: {_readable_reason(error, path, name)}; {_UPLOAD_HINT}"
        ) from None
    if not np.isfinite(pixels).all():
        raise CfauditError(f"{name} decodes to non-finite pixel values; {_UPLOAD_HINT}")
    notes = []
    if details["mode"] in COLOUR_MODES:
        notes.append(f"converted from {details['mode']} colour to grayscale")
    prompt = dicom_prompt(details) if details["format"] == "DICOM" else UPLOAD_PROMPT
    return SourceImage(pixels, name, path, prompt, "upload", file_sha256(path), None, notes, details)


# --- images from a data index ----------------------------------------------------------------------------------


class DataSource:
    """The images of one split of an index, by id, with their records and captions."""

    def __init__(
        self,
        index: DataIndex,
        index_path: Path | None = None,
        split: str | None = "test",
        template: PromptTemplate = DEFAULT_TEMPLATE,
        policy: LabelPolicy = DEFAULT_POLICY,
    ) -> None:
        self.index = index.split(split)
        self.index_path = index_path
        self.split = split or "all"
        self.template, self.policy = template, policy
        if len(self.index) == 0:
            raise CfauditError(
                f"{index_path or 'the index'} has no images in split {self.split!r}; choose another --split"
            )
        self._rows = {str(image_id): i for i, image_id in enumerate(self.index.table["image_id"])}

    @classmethod
    def read(cls, path: str | os.PathLike[str], split: str | None = "test") -> DataSource:
        return cls(DataIndex.read(path), Path(path).resolve(), split)

    @property
    def image_ids(self) -> list[str]:
        return list(self._rows)

    def record(self, image_id: str) -> dict[str, Any]:
        key = str(image_id).strip()
        if key not in self._rows:
            raise CfauditError(
                f"image id {key!r} is not in split {self.split!r} of {self.index_path or 'the index'}; "
                "pick one from the list"
            )
        return self.index.table.iloc[self._rows[key]].to_dict()

    def load(self, image_id: str) -> SourceImage:
        """Read one image of the index (a missing or damaged file is a :class:`CfauditError`)."""
        record = self.record(image_id)
        path = self.index.image_path(self.index.table.iloc[self._rows[str(image_id).strip()]])
        pixels = load_image(path)
        prompt = record_prompt(record, self.template, self.policy)
        details = {
            "width": int(pixels.shape[1]),
            "height": int(pixels.shape[0]),
            "format": path.suffix.lstrip("."),
        }
        return SourceImage(pixels, path.name, path, prompt, "data", file_sha256(path), record, [], details)


def record_summary(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, value) pairs that describe an index row to a reader: demographics, view, split, findings."""

    def text(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:g}" if isinstance(value, float) else str(value)

    states: dict[str, list[str]] = {"positive": [], "uncertain": [], "negative": []}
    for finding in PATHOLOGIES:
        value = record.get(finding)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        state = {1.0: "positive", -1.0: "uncertain", 0.0: "negative"}.get(float(value))
        if state:
            states[state].append(finding)
    pairs = [(name, text(record.get(name))) for name in ("image_id", "age", "sex", "race", "view", "split")]
    pairs += [(f"{state} findings", ", ".join(items) or "-") for state, items in states.items()]
    return pairs
