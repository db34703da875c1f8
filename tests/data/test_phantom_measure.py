"""Tests for cfaudit.data.phantom.measure: the cardiothoracic ratio read from pixels tracks the ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFilter

from cfaudit.data.phantom import effusion_score, generate_phantom, heart_width_ratio, load_config


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("measure") / "run"
    generate_phantom(out, load_config().with_overrides(n=260, size=128), seed=21, workers=2)
    return out, pd.read_csv(out / "metadata.csv"), pd.read_csv(out / "ground_truth" / "summary.csv")


def measured(out: Path, paths: pd.Series, size: int | None = None, blur: float = 0.0) -> np.ndarray:
    values = []
    for path in paths:
        image = Image.open(out / path)
        if size is not None:
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        if blur:
            image = image.filter(ImageFilter.GaussianBlur(blur))
        values.append(heart_width_ratio(np.asarray(image)))
    return np.asarray(values)


@pytest.mark.parametrize(("size", "blur"), [(None, 0.0), (64, 0.0), (64, 1.0), (32, 0.0)])
def test_heart_width_ratio_tracks_the_ground_truth(
    phantom: tuple[Path, pd.DataFrame, pd.DataFrame], size: int | None, blur: float
) -> None:
    out, metadata, summary = phantom
    # Large effusions hide the heart borders (as on real films): measure where the bases are clear.
    clear = (metadata["Pleural Effusion"] != 1.0).to_numpy()
    ratio = measured(out, metadata["path"][clear], size, blur)
    truth = summary["cardiothoracic_ratio"].to_numpy()[clear]
    assert np.isfinite(ratio).mean() > 0.95
    ok = np.isfinite(ratio)
    r = np.corrcoef(ratio[ok], truth[ok])[0, 1]
    assert r > (0.8 if size != 32 else 0.7), r
    cardiomegaly = (metadata["Cardiomegaly"] == 1.0).to_numpy()[clear]
    assert ratio[ok & cardiomegaly].mean() > ratio[ok & ~cardiomegaly].mean() + 0.05


def test_effusion_score_is_higher_with_effusion(phantom: tuple[Path, pd.DataFrame, pd.DataFrame]) -> None:
    out, metadata, summary = phantom
    scores = np.asarray([effusion_score(np.asarray(Image.open(out / p))) for p in metadata["path"]])
    big = ((summary["effusion_height_right"] > 0.3) | (summary["effusion_height_left"] > 0.3)).to_numpy()
    none = (summary["effusion_right"] + summary["effusion_left"] == 0).to_numpy()
    assert scores[big].mean() > scores[none].mean()


def test_measures_reject_what_is_not_an_image() -> None:
    with pytest.raises(ValueError, match="2-D image"):
        heart_width_ratio(np.zeros(10))
    assert np.isnan(heart_width_ratio(np.zeros((64, 64), dtype=np.uint8)))
