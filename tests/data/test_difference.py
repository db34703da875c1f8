import numpy as np
from PIL import Image

from cfaudit.data.difference import colour_map, load_difference, save_difference, signed_difference


def test_signed_difference_keeps_negative_values_through_the_files(tmp_path):
    reconstruction = np.full((4, 4), 0.5, dtype=np.float32)
    counterfactual = reconstruction.copy()
    counterfactual[0, 0], counterfactual[3, 3] = 0.1, 0.9
    difference = signed_difference(counterfactual, reconstruction)
    scale = save_difference(difference, tmp_path / "d.npy", tmp_path / "d.png")
    loaded = load_difference(tmp_path / "d.npy")
    assert loaded.dtype == np.float32 and np.isclose(loaded[0, 0], -0.4) and np.isclose(loaded[3, 3], 0.4)
    assert loaded.min() < 0 and np.isclose(scale, 0.4)
    picture = np.asarray(Image.open(tmp_path / "d.png"))
    assert picture.shape == (4, 4, 3)
    assert tuple(picture[0, 0]) == (0, 0, 255)  # darker: blue
    assert tuple(picture[3, 3]) == (255, 0, 0)  # brighter: red
    assert tuple(picture[1, 1]) == (255, 255, 255)  # unchanged: white


def test_colour_map_of_no_change_is_white_and_scale_zero():
    picture, scale = colour_map(np.zeros((2, 2), dtype=np.float32))
    assert scale == 0.0 and (picture == 255).all()
