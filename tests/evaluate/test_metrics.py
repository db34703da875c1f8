"""Known answers for the counterfactual scores: L1, LPIPS wrapper, CPG, effectiveness, axioms, bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from cfaudit.errors import CfauditError
from cfaudit.evaluate import metrics


def chest_like(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    image = 0.2 + 0.5 * np.exp(-(xs**2 + ys**2) * 2) + 0.05 * rng.standard_normal((size, size))
    return np.clip(image, 0.0, 0.9).astype(np.float32)


# --- L1 and resizing ---------------------------------------------------------------------------------------


def test_l1_of_an_image_and_its_copy_shifted_by_ten_gray_levels_is_ten() -> None:
    image = chest_like(64)
    shifted = image + 10 / 255
    values = metrics.l1_distance(np.stack([image, image]), np.stack([shifted, image]), size=64)
    assert values.shape == (2,)
    assert values[0] == pytest.approx(10.0, abs=1e-4)
    assert values[1] == 0.0


def test_l1_compares_different_resolutions_at_one_stated_size() -> None:
    sd_like = np.full((512, 512), 100 / 255, dtype=np.float32)
    scm_like = np.full((192, 192), 120 / 255, dtype=np.float32)
    values = metrics.l1_distance([sd_like], [scm_like])
    assert values[0] == pytest.approx(20.0, abs=1e-3)
    common = metrics.to_common_size([sd_like, scm_like, chest_like(64)], size=metrics.COMPARE_SIZE)
    assert common.shape == (3, 192, 192)
    assert common.dtype == np.float32


def test_uint8_images_are_read_as_fractions_and_bad_ranges_refused() -> None:
    eight_bit = np.full((1, 32, 32), 200, dtype=np.uint8)
    assert metrics.l1_distance(eight_bit, eight_bit.astype(np.float32) / 255 - 10 / 255, size=32)[0] == (
        pytest.approx(10.0, abs=1e-4)
    )
    with pytest.raises(CfauditError, match=r"\[0, 1\]"):
        metrics.l1_distance(np.full((1, 32, 32), 200.0), np.zeros((1, 32, 32)), size=32)
    with pytest.raises(CfauditError, match="in pairs"):
        metrics.l1_distance(np.zeros((2, 32, 32)), np.zeros((3, 32, 32)), size=32)


def test_lpips_distance_on_unit_range_grayscale_batches() -> None:
    from cfaudit.models.lpips_weights import fetch_lpips_weights

    fetch_lpips_weights()
    image = chest_like(96, seed=3)
    rng = np.random.default_rng(4)
    noisy = [np.clip(image + s * rng.standard_normal(image.shape), 0, 1) for s in (0.0, 0.05, 0.2)]
    values = metrics.lpips_distance([image] * 3, noisy, size=96, device="cpu", batch_size=2)
    assert values.shape == (3,)
    assert values[0] == 0.0
    assert 0.0 < values[1] < values[2]


# --- counterfactual prediction gain ------------------------------------------------------------------------


def test_cpg_of_a_classifier_that_flips_point_one_to_point_nine_is_point_eight() -> None:
    gain = metrics.prediction_gain(np.array([0.1, 0.1]), np.array([0.9, 0.9]), target=1)
    np.testing.assert_allclose(gain.absolute, [0.8, 0.8])
    np.testing.assert_allclose(gain.signed, [0.8, 0.8])
    assert gain.mean_absolute == pytest.approx(0.8)
    wrong_way = metrics.prediction_gain(np.array([0.1]), np.array([0.9]), target=0)
    assert wrong_way.mean_absolute == pytest.approx(0.8)
    assert wrong_way.mean_signed == pytest.approx(-0.8)
    assert metrics.prediction_gain(np.array([0.1]), np.array([0.9])).signed is None


def test_cpg_for_categorical_and_regression_heads() -> None:
    before = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]])
    after = np.array([[0.1, 0.1, 0.7, 0.1], [0.25, 0.25, 0.25, 0.25]])
    towards_black = metrics.prediction_gain(before, after, target=2)
    np.testing.assert_allclose(towards_black.signed, [0.6, 0.0])
    np.testing.assert_allclose(metrics.prediction_gain(before, after).absolute, [0.6, 0.0])
    age = metrics.prediction_gain(
        np.array([40.0, 60.0]), np.array([70.0, 50.0]), target=70, kind="regression"
    )
    np.testing.assert_allclose(age.absolute, [30.0, 10.0])
    np.testing.assert_allclose(age.signed, [30.0, -10.0])
    with pytest.raises(CfauditError, match="out of range"):
        metrics.prediction_gain(before, after, target=4)


def test_cpg_through_a_classifier_callable() -> None:
    def brightness_classifier(images):
        means = np.stack(metrics.image_list(images)).mean(axis=(1, 2))
        return {"sex": means, "age": 100 * means}

    dark = np.full((3, 40, 40), 0.1, dtype=np.float32)
    bright = np.full((3, 40, 40), 0.9, dtype=np.float32)
    gain = metrics.counterfactual_prediction_gain(brightness_classifier, dark, bright, "sex", target=1)
    np.testing.assert_allclose(gain.absolute, 0.8, atol=1e-6)
    with pytest.raises(CfauditError, match="no head 'race'"):
        metrics.counterfactual_prediction_gain(brightness_classifier, dark, bright, "race")


# --- effectiveness -----------------------------------------------------------------------------------------


def test_effectiveness_counts_flips_and_heads_that_stayed() -> None:
    before = {
        "sex": np.array([0.1, 0.2, 0.8, 0.3]),
        "Cardiomegaly": np.array([0.9, 0.1, 0.2, 0.6]),
        "race": np.array([[0.9, 0.1, 0, 0], [0.9, 0.1, 0, 0], [0.1, 0.9, 0, 0], [0.1, 0.9, 0, 0]]),
        "age": np.array([50.0, 50.0, 50.0, 50.0]),
    }
    after = {
        "sex": np.array([0.9, 0.4, 0.9, 0.7]),
        "Cardiomegaly": np.array([0.8, 0.1, 0.7, 0.1]),
        "race": np.array([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0], [0.1, 0.9, 0, 0], [0.1, 0.9, 0, 0]]),
        "age": np.array([52.0, 70.0, 50.0, 49.0]),
    }
    result = metrics.effectiveness(before, after, "sex", target=1)
    np.testing.assert_array_equal(result.hit, [True, False, True, True])
    np.testing.assert_array_equal(result.already, [False, False, True, False])
    assert result.rate == pytest.approx(0.75)
    assert result.flip_rate == pytest.approx(2 / 3)
    assert result.kept_rate == {"Cardiomegaly": 0.5, "race": 0.75, "age": 0.75}


# --- axioms ------------------------------------------------------------------------------------------------


def test_composition_of_an_identity_editor_is_zero() -> None:
    images = np.stack([chest_like(48, seed=s) for s in range(3)])
    result = metrics.composition(lambda x: x, images, times=(1, 10), size=48)
    assert set(result) == {1, 10}
    np.testing.assert_array_equal(result[1], 0.0)
    np.testing.assert_array_equal(result[10], 0.0)


def test_composition_shows_drift_that_grows_with_repeats() -> None:
    images = np.full((2, 32, 32), 0.5, dtype=np.float32)
    calls = []

    def brightening(batch):
        calls.append(1)
        return np.asarray(batch) + 1 / 255

    result = metrics.composition(brightening, images, times=(1, 10), size=32)
    np.testing.assert_allclose(result[1], 1.0, atol=1e-3)
    np.testing.assert_allclose(result[10], 10.0, atol=1e-3)
    assert len(calls) == 10


def test_reversibility_and_minimality() -> None:
    images = np.stack([chest_like(32, seed=s) * 0.9 for s in range(2)])

    def forward(batch):
        return np.asarray(batch) + 20 / 255

    def backward(batch):
        return np.asarray(batch) - 20 / 255

    np.testing.assert_allclose(metrics.reversibility(images, forward, backward, size=32), 0.0, atol=1e-4)
    half_way = metrics.reversibility(images, reverted=images + 5 / 255, size=32)
    np.testing.assert_allclose(half_way, 5.0, atol=1e-4)
    with pytest.raises(CfauditError, match="reversibility needs"):
        metrics.reversibility(images, forward)

    result = metrics.minimality(
        images, images + 12 / 255, null_edit=lambda x: np.asarray(x) + 2 / 255, size=32
    )
    np.testing.assert_allclose(result.change, 12.0, atol=1e-4)
    np.testing.assert_allclose(result.reconstruction, 2.0, atol=1e-4)
    np.testing.assert_allclose(result.excess, 10.0, atol=1e-4)


# --- bootstrap ---------------------------------------------------------------------------------------------


def test_bootstrap_intervals_cover_the_true_mean() -> None:
    true_mean, covered, repeats = 3.0, 0, 200
    for repeat in range(repeats):
        sample = np.random.default_rng(1000 + repeat).exponential(true_mean, size=60)
        interval = metrics.bootstrap_ci(sample, level=0.95, resamples=1000, seed=repeat)
        assert interval.low <= interval.estimate <= interval.high
        covered += interval.low <= true_mean <= interval.high
    assert covered / repeats >= 0.9


def test_bootstrap_is_seeded_chunked_and_skips_nan() -> None:
    values = np.random.default_rng(5).normal(size=101)
    a = metrics.bootstrap_ci(values, seed=7)
    b = metrics.bootstrap_ci(values, seed=7, chunk=500)  # smaller chunks, same draws
    assert (a.low, a.high) == (b.low, b.high)
    assert a.n == 101 and a.estimate == pytest.approx(values.mean())
    with_nan = metrics.bootstrap_ci(np.append(values, np.nan), seed=7)
    assert with_nan.n == 101 and (with_nan.low, with_nan.high) == (a.low, a.high)
    median = metrics.bootstrap_ci(values, statistic="median", level=0.9)
    assert median.estimate == pytest.approx(np.median(values)) and median.level == 0.9
    empty = metrics.bootstrap_ci([])
    assert empty.n == 0 and np.isnan(empty.estimate)
    assert set(a.to_dict()) == {"estimate", "low", "high", "level", "n"}
