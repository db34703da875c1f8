"""Tests for cfaudit.data.phantom.png: the fast encoder writes standard PNGs that decode to the same pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cfaudit.data.phantom.png import encode_png


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (64, 64)])
def test_round_trip_through_pillow(dtype: type, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, np.iinfo(dtype).max + 1, size=shape).astype(dtype)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(array, 1))))
    assert decoded.shape == shape
    assert np.array_equal(decoded.astype(np.int64), array.astype(np.int64))


def test_output_is_deterministic_and_compresses_smooth_images() -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (256, 1))
    first, second = encode_png(ramp, 6), encode_png(ramp, 6)
    assert first == second and first.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(first) < ramp.size // 20


def test_rejects_other_arrays() -> None:
    with pytest.raises(ValueError, match="2-D uint8 or uint16"):
        encode_png(np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="2-D uint8 or uint16"):
        encode_png(np.zeros((4, 4), dtype=np.float32))
