"""The discovery's tests on synthetic data with known answers: null p-values are uniform (or conservative), BH
q-values match a hand computation, and an effect of the stated detectable size is found at the stated power."""

import math

import numpy as np
import pytest
from scipy import stats

from cfaudit.discover.significance import (
    EXACT_MAX,
    POWER,
    detectable_change,
    detectable_share,
    detection_level,
    draws_for,
    images_for_share,
    presence_needed,
    presence_p,
    q_values,
    sign_flip_p,
)


def test_sign_flip_p_by_hand():
    # d = (1, 2, -0.5): the 8 sign vectors give sums +-1 +-2 +-0.5; the observed sum 2.5 is reached or passed
    # upwards by (1, 2, 0.5) = 3.5 and (1, 2, -0.5) = 2.5 (2 of 8), downwards by 6 of 8: p = 2 * 2/8
    assert sign_flip_p(np.array([1.0, 2.0, -0.5]))[0] == pytest.approx(0.5)
    # All of 10 images move the same way: only the observed signs are as extreme, p = 2 / 2^10
    assert sign_flip_p(np.full(10, 0.3))[0] == pytest.approx(2 / 1024)
    # ... but not beyond an off-target control of 0.3: d - 0.3 is 0 everywhere, every flip ties
    assert sign_flip_p(np.full(10, 0.3), shift=0.3)[0] == pytest.approx(1.0)
    assert np.isnan(sign_flip_p(np.array([1.0, np.nan]))[0])


def test_monte_carlo_p_is_one_plus_k_over_one_plus_b_and_seeded():
    d = np.full(EXACT_MAX + 4, 0.5)  # no random flip reaches the observed: k = 0 on each side
    assert sign_flip_p(d, draws=999)[0] == pytest.approx(2 / 1000)
    noisy = np.random.default_rng(0).normal(0.2, 1.0, (EXACT_MAX + 8, 5))
    first = sign_flip_p(noisy, draws=999, seed=1)
    assert np.array_equal(first, sign_flip_p(noisy, draws=999, seed=1))
    assert not np.array_equal(first, sign_flip_p(noisy, draws=999, seed=2))
    assert np.all(np.round(first * 1000 / 2) == first * 1000 / 2)  # 2 (1 + k) / 1000 with whole k


@pytest.mark.parametrize(("n", "draws"), [(10, 0), (EXACT_MAX + 8, 999)], ids=["exact", "monte-carlo"])
def test_null_p_values_are_uniform(n, draws):
    rng = np.random.default_rng(n)
    p = sign_flip_p(rng.standard_t(4, size=(n, 3000)), draws=draws, seed=3)  # symmetric, heavy tails
    assert stats.kstest(p, "uniform").pvalue > 0.01
    for level in (0.01, 0.05, 0.1, 0.5):
        assert abs(np.mean(p <= level) - level) < 3 * math.sqrt(level * (1 - level) / p.size) + 2 / 2**n


def test_null_at_the_off_target_boundary_is_conservative():
    rng = np.random.default_rng(7)
    p = sign_flip_p(
        rng.normal(0.3, 1.0, (12, 3000)), shift=0.3
    )  # the edit moves it exactly as much as others
    for level in (0.05, 0.1, 0.2):
        assert np.mean(p <= level) <= level + 3 * math.sqrt(level / p.size)


def test_cluster_p_values_under_the_null_are_valid():
    rng = np.random.default_rng(11)
    rate, n = 0.3, 20
    p = np.array(
        [presence_p(rng.random(n) < rate, rng.random(n) < rate, rate) for _ in range(3000)]  # edit ~ controls
    )
    for level in (0.01, 0.05, 0.1, 0.2):
        assert np.mean(p <= level) <= level + 3 * math.sqrt(level / p.size)


def test_cluster_p_by_hand():
    edit = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    null = np.zeros(12, dtype=bool)
    assert presence_p(edit, null, 0.0) == pytest.approx(1 / 32)  # 5 images gain it, none lose it
    assert presence_p(edit, null, math.nan) == pytest.approx(1 / 32)  # no off-target control
    # Other edits change the place in a quarter of images: 5 of 12 is then P(Bin(12, 0.25) >= 5)
    assert presence_p(edit, null, 0.25) == pytest.approx(stats.binom.sf(4, 12, 0.25))
    assert presence_p(edit, edit, 0.0) == 1.0  # the null edit changes the same images


def test_bh_q_values_match_a_hand_computation_and_skip_missing_p_values():
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    # q_(i) = min over j >= i of p_(j) m / j with m = 10, by hand
    expected = [0.01, 0.04, 0.084, 0.084, 0.084, 0.1, 0.074 * 10 / 7, 0.216, 0.216, 0.216]
    order = np.random.default_rng(0).permutation(10)
    shuffled = np.array(p)[order]
    q = q_values(np.concatenate([shuffled, [np.nan]]))
    assert np.allclose(q[:10], np.array(expected)[order]) and np.isnan(q[10])
    assert np.all(q_values(shuffled, "by") >= q[:10])  # Benjamini-Yekutieli is more cautious
    with pytest.raises(ValueError, match="bh"):
        q_values(shuffled, "holm")


def test_detection_level_is_the_bh_threshold_for_one_more_rejection():
    q = q_values(np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]))
    assert detection_level(q, 0.1) == pytest.approx(0.1 * 7 / 10)  # 6 at q <= 0.1
    assert detection_level(np.array([0.5, 0.9]), 0.1) == pytest.approx(0.1 / 2)
    assert detection_level(np.array([]), 0.1) == 0.1
    assert draws_for(500, 0.1) >= 10 * 500 / 0.1 and draws_for(1, 0.1) == 9999


def simulated_rejections(effect, spread, n, level, runs=2000, seed=0, draws=999):
    rng = np.random.default_rng(seed)
    p = sign_flip_p(rng.normal(effect, spread, (n, runs)), draws=draws, seed=seed)
    return float(np.mean(p <= level))


@pytest.mark.parametrize(("n", "level"), [(8, 0.05), (12, 0.01), (30, 0.05)])
def test_a_change_of_the_detectable_size_is_detected_at_the_stated_power(n, level):
    spread = 0.2
    smallest = float(detectable_change(spread, n, level))
    found = simulated_rejections(smallest, spread, n, level, seed=n)
    assert abs(found - POWER) < 0.06, (smallest, found)
    assert simulated_rejections(smallest / 2, spread, n, level, seed=n + 1) < POWER - 0.2


def test_the_detectable_change_counts_the_off_target_control_and_the_exact_floor():
    assert float(detectable_change(0.2, 12, 0.05, shift=0.1)) == pytest.approx(
        0.1 + float(detectable_change(0.2, 12, 0.05))
    )
    assert math.isinf(float(detectable_change(0.2, 8, 0.001)))  # 2^(1-8) = 0.0078 > 0.001
    assert math.isnan(float(detectable_change(0.2, 1, 0.05)))


@pytest.mark.parametrize(("n", "level", "offtarget"), [(12, 0.03, 0.0), (40, 0.001, 0.0), (40, 0.01, 0.1)])
def test_a_change_in_the_detectable_share_of_images_is_detected_at_the_stated_power(n, level, offtarget):
    share = detectable_share(n, level, offtarget)
    rng = np.random.default_rng(n)
    p = np.array([presence_p(rng.random(n) < share, np.zeros(n, bool), offtarget) for _ in range(3000)])
    assert abs(np.mean(p <= level) - POWER) < 0.04, share
    k = presence_needed(n, level, offtarget)  # the fewest images that make the test reject
    assert presence_p(np.arange(n) < k, np.zeros(n, bool), offtarget) <= level
    assert presence_p(np.arange(n) < k - 1, np.zeros(n, bool), offtarget) > level


def test_too_few_images_detect_no_share_and_auto_images_reach_the_power():
    assert math.isinf(detectable_share(8, 0.1 / 650))  # 2^-8 > 0.00015: not even all 8 images would do
    n = images_for_share(0.3, 0.1 / 60)
    rng = np.random.default_rng(3)
    p = np.array([presence_p(rng.random(n) < 0.3, np.zeros(n, bool), 0.0) for _ in range(3000)])
    assert np.mean(p <= 0.1 / 60) >= POWER - 0.03
    assert detectable_share(n, 0.1 / 60) <= 0.3 < detectable_share(n - 1, 0.1 / 60)
    with pytest.raises(ValueError, match="share"):
        images_for_share(1.5, 0.01)


def test_bh_over_a_simulated_run_keeps_the_false_discovery_rate():
    """Many runs of 200 head tests, 20 of them with a real change: the share of false ones among those with
    q <= alpha, averaged over runs, stays at or below alpha (BH: alpha m0 / m)."""
    rng = np.random.default_rng(5)
    alpha, ratios = 0.1, []
    for run in range(60):
        effects = np.zeros(200)
        effects[:20] = 0.25
        p = sign_flip_p(rng.normal(effects, 0.3, (14, 200)), seed=run)
        found = q_values(p) <= alpha
        ratios.append(found[20:].sum() / max(found.sum(), 1))
    assert np.mean(ratios) <= alpha + 0.03
