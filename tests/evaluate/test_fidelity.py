"""Tests for cfaudit.evaluate.fidelity: contrast kept, classifier drift, the whole measure on known changes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cfaudit.evaluate.fidelity import classifier_drift, contrast, contrast_kept, measure_fidelity


def _line_image(strength: float) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((64, 64), 0.4)
    mask = np.zeros((64, 64), dtype=bool)
    mask[10:50, 30] = True
    image[mask] += strength
    return image, mask


def test_contrast_is_the_step_between_a_structure_and_its_ring() -> None:
    image, mask = _line_image(0.3)
    assert contrast(image, mask) == pytest.approx(0.3)


def test_a_line_blurred_away_keeps_little_of_its_contrast_and_an_exact_copy_all() -> None:
    image, mask = _line_image(0.3)
    blurred = ndimage.gaussian_filter(image, 2.0)
    kept, counts = contrast_kept([image, image], [image, blurred], [{"line": mask}, {"line": mask}])
    assert counts == {"line": 2}
    assert 0.4 < kept["line"] < 0.7  # one exact, one mostly lost: summed over images
    alone, _ = contrast_kept([image], [blurred], [{"line": mask}])
    assert alone["line"] < 0.25
    tiny = np.zeros((64, 64), dtype=bool)
    tiny[0, 0] = True
    assert contrast_kept([image], [image], [{"dot": tiny}]) == ({}, {})  # too small to count


class _Classifier:
    """P(Male) = mean brightness; race: a fixed distribution that moves with the image's contrast."""

    def predict(self, images):
        images = [np.asarray(i, dtype=float) for i in images]
        race = np.array([[i.std(), 1 - i.std(), 0.0, 0.0] for i in images])
        return {"sex": np.array([i.mean() for i in images]), "race": race}


def test_classifier_drift_is_the_mean_change_per_head() -> None:
    a = [np.full((8, 8), 0.2), np.full((8, 8), 0.6)]
    b = [np.full((8, 8), 0.3), np.full((8, 8), 0.6)]
    drift = classifier_drift(_Classifier(), a, b)
    assert drift["sex"] == pytest.approx(0.05)
    assert drift["race"] == pytest.approx(0.0)


def test_measure_fidelity_against_image_and_reference() -> None:
    rng = np.random.default_rng(0)
    clean = [np.clip(_line_image(0.3)[0] + 0.1 * k, 0, 1) for k in range(3)]
    grainy = [np.clip(c + rng.normal(0, 0.02, c.shape), 0, 1) for c in clean]
    mask = _line_image(0.3)[1]
    result = measure_fidelity(grainy, clean, references=clean, masks=[{"line": mask}] * 3,
                              classifier=_Classifier(), lpips_size=64, lpips_device="cpu")  # fmt: skip
    assert result.n == 3
    assert result.l1_reference == pytest.approx(0.0)
    assert result.lpips_reference == pytest.approx(0.0, abs=1e-6)
    assert 3.0 < result.l1 < 5.5  # the grain alone: E|N(0, 0.02)| x 255 ~ 4.1
    assert result.contrast_kept["line"] == pytest.approx(1.0, abs=0.05)
    assert set(result.to_dict()["drift"]) == {"sex", "race"}
    # the reconstruction is the grain-free picture itself, so the grain alone explains all of the drift
    assert result.grain_drift == pytest.approx(result.drift)
    assert result.grain_drift["race"] > 0.0  # the fake race head reads the contrast, which the grain raises


def test_grain_drift_needs_the_grain_free_pictures() -> None:
    image = _line_image(0.3)[0]
    result = measure_fidelity([image], [image], classifier=_Classifier(), lpips_size=64, lpips_device="cpu")
    assert result.drift == {"sex": 0.0, "race": 0.0}
    assert result.grain_drift == {}
    assert result.reference_drift == {}


def test_reference_drift_is_the_autoencoders_drift_on_the_grain_free_picture() -> None:
    rng = np.random.default_rng(1)
    clean = [np.clip(_line_image(0.3)[0] + 0.1 * k, 0, 1) for k in range(3)]
    grainy = [np.clip(c + rng.normal(0, 0.05, c.shape), 0, 1) for c in clean]
    dimmed = [0.9 * c for c in clean]  # an autoencoder that darkens what it is given
    kept = measure_fidelity(grainy, clean, references=clean, reference_reconstructions=clean,
                            classifier=_Classifier(), lpips_size=64, lpips_device="cpu")  # fmt: skip
    assert kept.drift["race"] > 0.01  # against the grainy image, dropping the grain moves the race head...
    assert kept.reference_drift == {
        "sex": 0.0,
        "race": 0.0,
    }  # ... against the noise-free render, nothing moves
    darkened = measure_fidelity(grainy, dimmed, references=clean, reference_reconstructions=dimmed,
                                classifier=_Classifier(), lpips_size=64, lpips_device="cpu")  # fmt: skip
    assert darkened.reference_drift["sex"] == pytest.approx(0.1 * np.mean([c.mean() for c in clean]))
    with pytest.raises(ValueError, match="pass references"):
        measure_fidelity(grainy, clean, reference_reconstructions=clean, lpips_size=64, lpips_device="cpu")
