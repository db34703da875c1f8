"""The realism distances: Frechet distance and KID between feature sets, and their bootstrap intervals.

What they mean and how their intervals are made: :mod:`cfaudit.evaluate.realism`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cfaudit.errors import CfauditError

KID_SUBSET_SIZE = 100  # images per set in each KID subset (at most; fewer when a set is smaller)
KID_SUBSETS = 100  # subsets averaged (torch-fidelity's and clean-fid's default)
LEVEL = 0.95


def _features(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise CfauditError(f"{name} features have shape {array.shape}; expected (n, d)")
    if not np.isfinite(array).all():
        raise CfauditError(f"{name} features hold NaN or infinite values")
    return array


def _trace_sqrt_product(xa: np.ndarray, xb: np.ndarray, na: float, nb: float) -> float:
    """``tr (C_a C_b)^(1/2)`` for ``C_a = xa^T xa / (na - 1)``, ``C_b = xb^T xb / (nb - 1)``, with no complex
    arithmetic.

    ``C_a C_b`` is not symmetric, but its eigenvalues are real and non-negative: those of the symmetric
    ``C_a^(1/2) C_b C_a^(1/2)``. With more rows than dimensions they are computed in feature space (two
    symmetric eigendecompositions); with fewer (``n < d``: singular covariances), in image space: the non-zero
    eigenvalues are the squared singular values of ``M = xa xb^T / sqrt((na - 1)(nb - 1))``, i.e. the eigenvalues
    of the smaller of ``M M^T`` and ``M^T M``. Round-off negatives are clipped to 0 before the square roots.
    """
    d = xa.shape[1]
    if d <= min(len(xa), len(xb)):
        ca, cb = xa.T @ xa / (na - 1), xb.T @ xb / (nb - 1)
        values, vectors = np.linalg.eigh(ca)
        root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
        product = root @ cb @ root
    else:
        cross = xa @ xb.T / math.sqrt((na - 1) * (nb - 1))
        product = cross @ cross.T if len(xa) <= len(xb) else cross.T @ cross
    eigenvalues = np.linalg.eigvalsh((product + product.T) / 2.0)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def _weighted_frechet(a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> float:
    """FD with frequency weights (row ``i`` counted ``w_i`` times): exactly the FD of the rows repeated, computed
    on the distinct rows (each scaled by ``sqrt(w_i)`` after centring), which keeps a bootstrap resample small."""
    na, nb = float(wa.sum()), float(wb.sum())
    mu_a, mu_b = wa @ a / na, wb @ b / nb
    xa, xb = (a - mu_a) * np.sqrt(wa)[:, None], (b - mu_b) * np.sqrt(wb)[:, None]
    trace_a, trace_b = float((xa**2).sum() / (na - 1)), float((xb**2).sum() / (nb - 1))
    value = float(((mu_a - mu_b) ** 2).sum()) + trace_a + trace_b - 2.0 * _trace_sqrt_product(xa, xb, na, nb)
    return max(value, 0.0)  # >= 0 in exact arithmetic (a squared Wasserstein-2 distance)


def frechet_distance(a: Any, b: Any) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets ``(n_a, d)``, ``(n_b, d)`` (FID's formula).

    ``|mu_a - mu_b|^2 + tr C_a + tr C_b - 2 tr (C_a C_b)^(1/2)``, covariances with ddof 1; the square root's
    trace comes from symmetric eigenvalues (:func:`_trace_sqrt_product`), so there are no imaginary parts to
    drop, and ``n < d`` (singular covariances) is computed exactly in image space rather than through an
    ill-conditioned ``d x d`` square root. Biased upwards at small n (see the module docstring). NaN when a set
    has fewer than 2 rows.
    """
    a, b = _features(a, "first"), _features(b, "second")
    if a.shape[1] != b.shape[1]:
        raise CfauditError(f"feature sets of {a.shape[1]} and {b.shape[1]} dimensions cannot be compared")
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return _weighted_frechet(a, b, np.ones(len(a)), np.ones(len(b)))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel ``k(x, y) = (x.y / d + 1)^3`` between the rows of ``x`` and ``y``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(k_aa: np.ndarray, k_bb: np.ndarray, k_ab: np.ndarray) -> float:
    """The unbiased estimate of MMD^2 from kernel matrices: within-set means over distinct pairs (``i != j``)."""
    m, n = len(k_aa), len(k_bb)
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * k_ab.mean())


def kid(
    a: Any, b: Any, *, subset_size: int = KID_SUBSET_SIZE, subsets: int = KID_SUBSETS, seed: int = 0
) -> float:
    """Kernel Inception Distance (Binkowski et al., 2018) between feature sets ``(n_a, d)`` and ``(n_b, d)``.

    The unbiased MMD^2 estimate (:func:`mmd2_unbiased`, cubic polynomial kernel) on ``subsets`` pairs of random
    subsets of ``m = min(n_a, n_b, subset_size)`` images each (drawn without replacement, seeded), averaged.
    NaN when ``m < 2``.
    """
    a, b = _features(a, "first"), _features(b, "second")
    if a.shape[1] != b.shape[1]:
        raise CfauditError(f"feature sets of {a.shape[1]} and {b.shape[1]} dimensions cannot be compared")
    m = min(len(a), len(b), subset_size)
    if m < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        values.append(
            mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
        )
    return float(np.mean(values))


def _weighted_kernel_sums(
    x: np.ndarray, y: np.ndarray, wx: np.ndarray, wy: np.ndarray, block: int = 512
) -> np.ndarray:
    """``sum_ij wx[r, i] wy[r, j] k(x_i, y_j)`` for every resample ``r``, the kernel built a block of rows at a
    time (memory ``block x n_y``, not ``n_x x n_y``)."""
    total = np.zeros(len(wx))
    for start in range(0, len(x), block):
        kernel = polynomial_kernel(x[start : start + block], y)
        total += ((wx[:, start : start + block] @ kernel) * wy).sum(axis=1)
    return total


def _resampled_kid(a: np.ndarray, b: np.ndarray, counts_a: np.ndarray, counts_b: np.ndarray) -> np.ndarray:
    """The unbiased MMD^2 of each resample (rows of ``counts_*``: how often each image was drawn), the pairs of an
    image with its own copies left out of the within-set means."""

    def within(x: np.ndarray, counts: np.ndarray) -> np.ndarray:
        diagonal = (np.einsum("ij,ij->i", x, x) / x.shape[1] + 1.0) ** 3
        n = counts.sum(axis=1)
        pairs = n * n - (counts**2).sum(axis=1)  # ordered pairs of draws of two different images
        sums = _weighted_kernel_sums(x, x, counts, counts) - (counts**2) @ diagonal
        return np.where(pairs > 0, sums / np.maximum(pairs, 1.0), np.nan)  # every draw one image: NaN

    cross = _weighted_kernel_sums(a, b, counts_a, counts_b) / (counts_a.sum(axis=1) * counts_b.sum(axis=1))
    return within(a, counts_a) + within(b, counts_b) - 2.0 * cross


@dataclass(frozen=True)
class RealismValue:
    """One measure (``FD`` or ``KID``) with its bootstrap interval (NaN without resamples)."""

    metric: str
    value: float
    low: float
    high: float
    n_generated: int
    n_real: int


def realism_intervals(
    generated: Any, real: Any, *, n_boot: int = 1000, seed: int = 0, level: float = LEVEL
) -> dict[str, RealismValue]:
    """FD and KID of ``generated`` vs ``real`` features, each with a percentile bootstrap interval over images.

    Both sets are resampled with replacement (``n_boot`` times, one seeded generator; the same resamples for both
    measures). KID's resamples are scored as described in the module docstring (copies of one image are not
    pairs); FD's interval is bias-centred: the percentile interval of the resampled FDs shifted by their mean
    excess over the estimate.
    """
    generated, real = _features(generated, "generated"), _features(real, "real")
    na, nb = len(generated), len(real)
    fd_value = frechet_distance(generated, real)
    kid_value = kid(generated, real, seed=seed)
    fd_low = fd_high = kid_low = kid_high = math.nan
    if n_boot > 0 and min(na, nb) >= 2:
        rng = np.random.default_rng(seed)
        counts_a = rng.multinomial(na, np.full(na, 1.0 / na), size=n_boot).astype(np.float64)
        counts_b = rng.multinomial(nb, np.full(nb, 1.0 / nb), size=n_boot).astype(np.float64)
        alpha = (1.0 - level) / 2.0
        kid_low, kid_high = (float(q) for q in np.nanquantile(_resampled_kid(generated, real, counts_a, counts_b),
                                                               [alpha, 1.0 - alpha]))  # fmt: skip
        draws = np.array([
            _weighted_frechet(generated[ca > 0], real[cb > 0], ca[ca > 0], cb[cb > 0])
            for ca, cb in zip(counts_a, counts_b, strict=True)
        ])  # fmt: skip
        draws = draws - (draws.mean() - fd_value)
        fd_low, fd_high = (float(q) for q in np.quantile(draws, [alpha, 1.0 - alpha]))
    return {
        "FD": RealismValue("FD", fd_value, fd_low, fd_high, na, nb),
        "KID": RealismValue("KID", kid_value, kid_low, kid_high, na, nb),
    }
