"""A contact sheet: N images in a grid, each with its caption underneath, written as one PNG.

Generic: it takes image paths and caption strings, so it serves any data set (the phantom writes one with
every generation; ``cfaudit data`` and later reports can call it too). Images of any mode and size are shown
as grayscale/RGB tiles fitted into ``tile`` x ``tile`` pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from cfaudit.atomic_io import atomic_path
from cfaudit.errors import CfauditError


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(
    text: str, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int
) -> str:
    """Shorten a caption line with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def write_contact_sheet(
    images: Sequence[str | os.PathLike[str]],
    captions: Sequence[str],
    out: str | os.PathLike[str],
    *,
    columns: int = 4,
    tile: int = 256,
    caption_lines: int = 3,
) -> tuple[int, int]:
    """Write the sheet to ``out`` (PNG, atomically) and return its (width, height) in pixels.

    Each tile is ``tile`` pixels wide and ``tile`` + the caption band high; captions are split on newlines
    (at most ``caption_lines`` lines, each cut to the tile's width).
    """
    if len(images) != len(captions):
        raise CfauditError(
            f"contact sheet: {len(images)} images but {len(captions)} captions; give one caption per image"
        )
    if not images:
        raise CfauditError("contact sheet: no images to show")
    if columns < 1 or tile < 16:
        raise CfauditError(f"contact sheet: columns must be >= 1 and tile >= 16 (got {columns}, {tile})")
    font_size = max(8, tile // 18)
    font = _font(font_size)
    line_height = font_size + 3
    band = caption_lines * line_height + 6
    rows = -(-len(images) // columns)
    mode = "L"
    tiles = []
    for path in images:
        try:
            with Image.open(path) as source:
                source.load()
                picture = source.convert("RGB") if source.mode in ("RGB", "RGBA", "P") else _to_gray(source)
        except (FileNotFoundError, UnidentifiedImageError, OSError) as error:
            raise CfauditError(f"contact sheet: cannot read image {path} ({error}); check the path") from None
        if picture.mode == "RGB":
            mode = "RGB"
        picture.thumbnail((tile, tile), Image.Resampling.LANCZOS)
        tiles.append(picture)
    sheet = Image.new(mode, (columns * tile, rows * (tile + band)), 0)
    draw = ImageDraw.Draw(sheet)
    white = 255 if mode == "L" else (255, 255, 255)
    for i, (picture, text) in enumerate(zip(tiles, captions, strict=True)):
        x0, y0 = (i % columns) * tile, (i // columns) * (tile + band)
        sheet.paste(
            picture.convert(mode), (x0 + (tile - picture.width) // 2, y0 + (tile - picture.height) // 2)
        )
        for j, line in enumerate(str(text).splitlines()[:caption_lines]):
            draw.text(
                (x0 + 4, y0 + tile + 3 + j * line_height),
                _fit(line, draw, font, tile - 8),
                fill=white,
                font=font,
            )
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG", optimize=False)
    return sheet.size


def _to_gray(picture: Image.Image) -> Image.Image:
    """Any single-channel image (8/16-bit, float) to 8-bit gray, stretching 16-bit and float ranges."""
    if picture.mode == "L":
        return picture
    if picture.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        values = np.asarray(picture, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else values * 0.0
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    return picture.convert("L")
