"""Tests for cfaudit.data.contact_sheet: a captioned grid of any images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cfaudit.data.contact_sheet import write_contact_sheet
from cfaudit.errors import CfauditError


def images(tmp_path: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = tmp_path / f"img{i}.png"
        mode_array = (
            (np.full((40, 30), 20 * i, dtype=np.uint8)) if i % 3 else np.full((20, 20), 1000 * i, np.uint16)
        )
        Image.fromarray(mode_array).save(path)
        paths.append(path)
    return paths


def test_sheet_has_one_tile_per_image_with_captions(tmp_path: Path) -> None:
    paths = images(tmp_path, 6)
    out = tmp_path / "sheet.png"
    size = write_contact_sheet(paths, [f"image {i}\nsecond line" for i in range(6)], out, columns=4, tile=64)
    sheet = Image.open(out)
    assert sheet.size == size
    band = (size[1] // 2) - 64
    assert size[0] == 4 * 64 and band > 0  # two rows of tile + caption band
    pixels = np.asarray(sheet.convert("L"))
    # Tile 2 (20 * 2 gray, 40x30 fitted into 64x64) sits centred in its cell; the caption band holds text.
    assert pixels[32, 64 * 2 + 32] == 40
    assert pixels[64 : 64 + band, 0:64].max() > 128
    # The last two cells of the second row are empty.
    assert pixels[size[1] // 2 :, 2 * 64 :].max() == 0


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    paths = images(tmp_path, 2)
    with pytest.raises(CfauditError, match="2 images but 1 captions"):
        write_contact_sheet(paths, ["one"], tmp_path / "x.png")
    with pytest.raises(CfauditError, match="cannot read image"):
        write_contact_sheet([tmp_path / "absent.png"], ["gone"], tmp_path / "x.png")
    with pytest.raises(CfauditError, match="no images"):
        write_contact_sheet([], [], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
