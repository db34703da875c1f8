"""Error rates of a discovery: a p-value per tested relation, q-values across the run, detectable effects.

**Head tests** (:func:`sign_flip_p`). Per edited image, ``d_i = C(counterfactual_i) - C(null edit_i)``: the edit
paired against the same image's null edit. The null hypothesis is that the edit moves the head no more than the
editor's habit on that head, the off-target control ``c`` (the median move under the interventions that do not
target it): ``H0: |E d| <= c``. It is tested as two one-sided sign-flip tests, of ``d - c`` upwards and of
``d + c`` downwards, and ``p = min(1, 2 min(p_up, p_down))``: valid for every mean in ``[-c, c]`` (conservative
inside it) and the ordinary two-sided sign-flip test when ``c = 0``. A sign-flip test assumes that, under the
null, each image's change is as likely to be ``+x`` as ``-x`` around the boundary value; it assumes nothing
about the spread. With at most :data:`EXACT_MAX` images every one of the ``2^n`` sign vectors is enumerated
(the p-value is exact); with more, ``B`` seeded random sign vectors give ``p = (1 + k) / (1 + B)``, which is
never below ``1 / (1 + B)``, so ``B`` must grow with the number of tests (:func:`draws_for`).

**Change-cluster tests** (:func:`presence_p`). Per edited image, whether the edit changes the cluster's place
(``x_i``) and whether the image's null edit changes it (``y_i``). Against the null edit, the exact sign-flip
test of ``x_i - y_i`` (only the images where the two differ can flip: an exact McNemar test, one-sided); against
the other interventions, whose share at that place is a fixed reference ``c_off``, the exact binomial test of
``sum x_i`` against ``Binomial(n, c_off)`` (a sign-flip test of a 0/1 outcome around ``c_off`` would need a
symmetry that a Bernoulli variable lacks). A cluster recurs only when it beats both controls, so its p-value is
the larger of the two (an intersection-union test, valid without any correction).

**q-values** (:func:`q_values`) are Benjamini-Hochberg adjusted p-values over the run's *family*: every
(intervention, head) pair the run tested, whether or not it became a candidate, and every change cluster. Taking
the family after the margins have picked the candidates would select on the very effect the p-values measure
and understate the q-values. BH controls the false discovery rate for independent or positively dependent tests;
``fdr="by"`` (Benjamini-Yekutieli) holds under any dependence, at a cost in power (heads read from the same
images are dependent, not always positively).

**Detectable effects** (:func:`detectable_change`, :func:`detectable_share`): the smallest effect a test would
find with probability :data:`POWER` at the run's n and at the level the run's BH procedure applies to one more
relation (:func:`detection_level`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

#: Up to this many images a sign-flip test enumerates every sign vector (2^16 = 65,536 of them).
EXACT_MAX = 16
#: Detectable effects are stated at this power.
POWER = 0.8
#: Sign vectors held in memory at once are capped at about this many cells (rows x images).
_CELLS = 1 << 22


@lru_cache(maxsize=8)
def _all_signs(n: int) -> np.ndarray:
    """Every vector of n signs (+1/-1), one per row; the last row is all +1 (the observed data)."""
    codes = np.arange(1 << n, dtype=np.int64)[:, None]
    signs = (((codes >> np.arange(n)) & 1) * 2 - 1).astype(np.float64)
    signs.setflags(write=False)
    return signs


def _sign_chunks(n: int, draws: int, seed: int | tuple[int, ...]) -> Iterator[np.ndarray]:
    if n <= EXACT_MAX:
        signs = _all_signs(n)
        per = max(1, _CELLS // max(n, 1))
        for start in range(0, signs.shape[0], per):
            yield signs[start : start + per]
        return
    rng = np.random.default_rng(seed)
    per = max(1, _CELLS // n)
    for start in range(0, draws, per):
        count = min(per, draws - start)
        yield rng.integers(0, 2, size=(count, n)).astype(np.float64) * 2 - 1


def sign_flip_p(
    differences: np.ndarray,
    shift: float | np.ndarray = 0.0,
    *,
    draws: int = 9999,
    seed: int | tuple[int, ...] = 0,
) -> np.ndarray:
    """Two-sided sign-flip p-values of ``H0: |E d| <= shift``, one per column of ``differences`` (n x k).

    Exact (every sign vector) for n <= :data:`EXACT_MAX`; otherwise ``draws`` seeded random sign vectors,
    shared by the columns, and ``p = (1 + k) / (1 + draws)``. A 1-D input is one column (a 1-element result).
    Columns with a non-finite value, or fewer than one image, get NaN.
    """
    d = np.asarray(differences, dtype=np.float64)
    d = d[:, None] if d.ndim == 1 else d
    n, k = d.shape
    result = np.full(k, np.nan)
    c = np.broadcast_to(np.nan_to_num(np.asarray(shift, dtype=np.float64)), (k,))
    valid = np.isfinite(d).all(axis=0)
    if n == 0 or not valid.any():
        return result
    d, c = d[:, valid], c[valid]
    up, down = d - c, d + c  # H0 boundaries: mean = +c (tested upwards) and mean = -c (downwards)
    up_observed, down_observed = up.mean(axis=0), down.mean(axis=0)
    # Ties: a flipped statistic equal to the observed one (up to rounding) counts as at least as extreme
    up_tolerance = 1e-9 * (np.abs(up).mean(axis=0) + 1e-300)
    down_tolerance = 1e-9 * (np.abs(down).mean(axis=0) + 1e-300)
    up_count = np.zeros(d.shape[1])
    down_count = np.zeros(d.shape[1])
    total = 0
    for signs in _sign_chunks(n, draws, seed):
        up_count += (signs @ up / n >= up_observed - up_tolerance).sum(axis=0)
        down_count += (signs @ down / n <= down_observed + down_tolerance).sum(axis=0)
        total += signs.shape[0]
    if n <= EXACT_MAX:
        up_p, down_p = up_count / total, down_count / total
    else:
        up_p, down_p = (1 + up_count) / (1 + total), (1 + down_count) / (1 + total)
    result[valid] = np.minimum(1.0, 2.0 * np.minimum(up_p, down_p))
    return result


def presence_p(edit: np.ndarray, null: np.ndarray, offtarget: float) -> float:
    """One-sided p-value that a change is more frequent in the edit than under both of its controls.

    ``edit`` and ``null``: per image, whether the edit (or the image's null edit) changes the place;
    ``offtarget``: the share of images the other interventions change there (NaN: no such control).
    """
    edit, null = np.asarray(edit, dtype=bool), np.asarray(null, dtype=bool)
    gained, lost = int(np.sum(edit & ~null)), int(np.sum(~edit & null))
    # The exact sign-flip distribution of sum(x - y): each discordant image is +1 or -1 with probability 1/2
    against_null = float(stats.binom.sf(gained - 1, gained + lost, 0.5)) if gained + lost else 1.0
    if not np.isfinite(offtarget):
        return against_null
    against_others = float(stats.binom.sf(int(edit.sum()) - 1, edit.size, min(max(offtarget, 0.0), 1.0)))
    return max(against_null, against_others)


def directed_p(value: float, error: float, direction: float) -> float:
    """One-sided normal p-value that ``value`` (standard error ``error``) lies on the side of ``direction``;
    NaN when either is unknown, 1 when there is no direction."""
    if not (math.isfinite(value) and math.isfinite(error)) or math.isnan(direction):
        return math.nan
    if direction == 0:
        return 1.0
    if error <= 0:
        return 0.0 if value * direction > 0 else 1.0
    return float(stats.norm.sf(math.copysign(1.0, direction) * value / error))


def q_values(p: np.ndarray, method: str = "bh") -> np.ndarray:
    """Adjusted p-values (``bh``: Benjamini-Hochberg; ``by``: Benjamini-Yekutieli) over the finite entries."""
    if method not in ("bh", "by"):
        raise ValueError(f"fdr method must be 'bh' or 'by', got {method!r}")
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    known = np.isfinite(p)
    if known.any():
        q[known] = stats.false_discovery_control(p[known], method=method)
    return q


def detection_level(q: np.ndarray, alpha: float, method: str = "bh") -> float:
    """The p-value one more relation of the family would need to be flagged at ``alpha``.

    With ``R`` of the ``m`` tests at q <= alpha, a hypothesis whose p is at most ``alpha (R + 1) / m`` is
    rejected together with them (the R have p <= alpha R / m, so R + 1 tests lie under the BH line);
    Benjamini-Yekutieli divides by ``sum(1/i, i <= m)``."""
    q = np.asarray(q, dtype=np.float64)
    m = int(np.isfinite(q).sum())
    if m == 0:
        return alpha
    rejections = int(np.sum(q <= alpha))
    level = alpha * (rejections + 1) / m
    if method == "by":
        level /= float(np.sum(1.0 / np.arange(1, m + 1)))
    return min(alpha, level)


def draws_for(tests: int, alpha: float, minimum: int = 9999) -> int:
    """Monte Carlo sign vectors so that the smallest p-value, 1 / (1 + B), is a tenth of the strictest BH
    threshold alpha / tests: fewer would leave a real effect unable to reach it whatever its size."""
    return max(minimum, math.ceil(10 * max(tests, 1) / alpha))


def detectable_change(
    spread: np.ndarray | float,
    n: np.ndarray | int,
    level: float,
    shift: np.ndarray | float = 0.0,
    power: float = POWER,
) -> np.ndarray:
    """Smallest mean change beyond ``shift`` that the head test detects with ``power`` at ``level``.

    The normal approximation of the sign-flip test with Student's t quantiles on the observed spread
    (standard deviation of the per-image changes): ``shift + (t(1 - level/2, n-1) + t(power, n-1)) s / sqrt(n)``.
    Infinite when no change can reach ``level`` at this n: an exact test's smallest p-value is ``2^(1-n)``.
    """
    s = np.asarray(spread, dtype=np.float64)
    n_array = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = stats.t.ppf(1 - level / 2, n_array - 1) + stats.t.ppf(power, n_array - 1)
        value = np.asarray(shift, dtype=np.float64) + factor * s / np.sqrt(n_array)
    exact_floor = np.where(n_array <= EXACT_MAX, 2.0 ** (1 - np.minimum(n_array, 1000)), 0.0)
    value = np.where(exact_floor > level, np.inf, value)
    return np.where((n_array < 2) | ~np.isfinite(s), np.nan, value)


def _null_edit_needed(level: float) -> int:
    """Fewest images (all changed by the edit, none by the null edit) whose exact p, 2^-k, is at most level."""
    return max(1, math.ceil(math.log2(1 / level) - 1e-9))


def presence_needed(n: int, level: float, offtarget: float = 0.0) -> int:
    """Fewest images with the change (and none with the null edit's) that make :func:`presence_p` <= level;
    ``n + 1`` when even all ``n`` are not enough."""
    first = _null_edit_needed(level)
    if first > n:
        return n + 1
    k = np.arange(first, n + 1)
    against_others = stats.binom.sf(k - 1, n, min(max(offtarget, 0.0), 1.0))
    enough = np.flatnonzero(against_others <= level)
    return int(k[enough[0]]) if enough.size else n + 1


def detectable_share(n: int, level: float, offtarget: float = 0.0, power: float = POWER) -> float:
    """Smallest share of images with a change at one place (where the null edits change nothing) that the
    cluster test detects with ``power`` at ``level``: P(Binomial(n, f) >= k) = power for the needed k.
    Infinite when no share can (too few images for ``level``)."""
    if n < 1:
        return math.nan
    k = presence_needed(n, level, offtarget)
    if k > n:
        return math.inf
    return float(stats.beta.ppf(power, k, n - k + 1))  # P(Bin(n, f) >= k) = I_f(k, n - k + 1)


def images_for_share(share: float, level: float, power: float = POWER, limit: int = 100_000) -> int:
    """Fewest images per intervention at which a change in ``share`` of them (at a place where neither the
    null edits nor the other interventions change anything) is detected with ``power`` at ``level``."""
    if not 0 < share <= 1:
        raise ValueError(f"the effect to detect is a share of images in (0, 1], got {share}")
    k = _null_edit_needed(level)
    n = np.arange(k, limit + 1)
    found = np.flatnonzero(stats.binom.sf(k - 1, n, share) >= power)
    if not found.size:
        raise ValueError(f"no n up to {limit} detects a share of {share} at level {level:.2g}")
    return int(n[found[0]])


@dataclass(frozen=True)
class Family:
    """What the run's multiple testing saw: ``tests`` hypotheses about the edits, ``rejections`` of them at
    q <= alpha (the changes the editor makes: the screen), the per-test ``level`` one more would need
    (:func:`detection_level`), and how many of the screened changes real images then ``confirmed`` at
    q <= alpha (:func:`~cfaudit.discover.error_rates.relation_q`)."""

    alpha: float
    method: str
    tests: int
    rejections: int
    level: float
    confirmed: int = 0

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "alpha": self.alpha,
            "fdr": self.method,
            "tests": self.tests,
            "rejections": self.rejections,
            "level": self.level,
            "confirmed": self.confirmed,
        }
