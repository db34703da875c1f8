"""Realism of generated images: Frechet distance (FD) and KID against real images of the same split.

``cfaudit evaluate`` (:func:`cfaudit.evaluate.table2.evaluate_edits`) calls :func:`plan_realism` and
:func:`realism_table` and writes ``realism.csv``. For each method, its counterfactuals and, where the edit folder
has them, its reconstructions (the null edit: inversion and decoding without an intervention) are compared with
real images of the split the edited images come from; the reconstruction row shows how much of the gap the
autoencoder (or the inversion) makes on its own. Folders of sampled images (``cfaudit sample --out``) are scored
the same way.

* **Features.** By default the trunk of the project's attribute classifier (``model.backbone``: globally pooled
  features, images prepared exactly as the classifier prepares them); or the penultimate 1024-d pooled features of
  a torchxrayvision DenseNet-121 loaded from a local weight file (:mod:`cfaudit.evaluate.xrv_classifier`). There
  is no Inception network here (not a chest X-ray model, and no weights to fetch), so the numbers are "FID-like":
  comparable between sets scored with the same features and the same n, never with published FIDs.
* **FD** (:func:`frechet_distance`): the FID formula on those features, ``|mu_a - mu_b|^2 + tr(C_a + C_b -
  2 (C_a C_b)^(1/2))``. It is **biased upwards at small n**: the noise of the sample covariances adds a positive
  term that shrinks roughly like 1/n and grows with the feature dimension (with fewer images than dimensions it
  dominates). Compare FDs only at equal ``n_generated`` and ``n_real``; both are reported with every value.
* **KID** (:func:`kid`, Binkowski et al., 2018): the unbiased estimate of the squared MMD with the cubic
  polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets of ``min(n_a, n_b, 100)`` images
  of each set, as the reference implementations do. Its mean over independent draws of one distribution is 0,
  so small negative values occur; they mean "not told apart at this n".
* **Intervals** (:func:`realism_intervals`): 95% bootstrap over images, both sets resampled with replacement by a
  seeded generator. Repeated images in a resample matter here as they do not for a mean:

  - KID: each resample is scored by the unbiased statistic of all its images (the subset average estimates the
    same quantity) with the pairs of an image and its own copies left out of the within-set means, which would
    otherwise count as perfect matches and inflate it. The interval is the plain percentile interval.
  - FD: a resample with repeated images is a smaller, less varied set, so its FD is higher (the small-n bias
    again): with simulated features every resampled FD lay above the estimate and the plain percentile interval
    never held it. The interval reported is the percentile interval of the resampled FDs shifted by their mean
    excess over the estimate (bias-centred). It measures the spread under resampling, not the small-n bias; in
    simulations with Gaussian features it was 2-4 times wider than the spread of FD over fresh sets
    (conservative).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from cfaudit.errors import CfauditError

FEATURES_CLASSIFIER = "classifier"
DEFAULT_MAX_REAL = 500
KID_SUBSET_SIZE = 100  # images per set in each KID subset (at most; fewer when a set is smaller)
KID_SUBSETS = 100  # subsets averaged (torch-fidelity's and clean-fid's default)
LEVEL = 0.95
SETS: tuple[str, ...] = ("counterfactuals", "reconstructions", "samples")
REALISM_COLUMNS: tuple[str, ...] = (
    "method", "set", "metric", "value", "ci_low", "ci_high", "n_generated", "n_real", "split", "features",
)  # fmt: skip
SAMPLE_SUFFIXES: tuple[str, ...] = (".png",)
LOAD_BATCH = 32  # images decoded and passed through the network together
XRV_HINT = (
    "give --realism-features classifier, or torchxrayvision DenseNet-121 weights converted to .safetensors "
    "(see cfaudit.evaluate.xrv_classifier)"
)

Warn = Callable[[str], None]
Progress = Callable[[str, int, int], None]  # (stage, done, total)


# --- feature extractors --------------------------------------------------------------------------------------


class FeatureExtractor(Protocol):
    """``[0, 1]`` grayscale images (a list of ``H x W`` arrays of any sizes) -> features ``(N, d)`` float64."""

    name: str

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray: ...

    def provenance(self) -> dict[str, Any]: ...


def has_trunk(classifier: Any) -> bool:
    """Is ``classifier`` an :class:`~cfaudit.evaluate.classifiers.AttributeClassifier` (a network with a trunk)?"""
    model = getattr(classifier, "model", None)
    return model is not None and hasattr(model, "backbone") and hasattr(classifier, "config")


class ClassifierFeatures:
    """The attribute classifier's trunk: ``classifier.model.backbone`` (globally pooled features).

    Images are prepared exactly as the classifier prepares them (:func:`cfaudit.data.images.to_model_tensor` at
    ``classifier.config.size``), so the features are the ones its heads read.
    """

    def __init__(self, classifier: Any, batch_size: int = 64) -> None:
        if not has_trunk(classifier):
            raise CfauditError(
                f"realism features 'classifier' need an attribute classifier folder (`cfaudit classifiers train`); "
                f"{type(classifier).__name__} has no network trunk: {XRV_HINT}, or --no-realism"
            )
        self.classifier = classifier
        self.size = int(classifier.config.size)
        self.batch_size = batch_size
        backbone = classifier.model.backbone
        self.dim = int(getattr(backbone, "out_features", 0))
        arch = getattr(classifier.model, "arch", type(backbone).__name__)
        self.name = f"classifier trunk ({arch}, {self.size} px, {self.dim}-d)"

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        from cfaudit.data.images import to_model_tensor

        if not len(images):
            return np.zeros((0, self.dim))
        model = self.classifier.model.eval()
        device = next(model.parameters()).device
        batch = torch.stack([to_model_tensor(image, self.size) for image in images])
        with torch.no_grad():
            chunks = [
                model.backbone(batch[i : i + self.batch_size].to(device).float()).cpu()
                for i in range(0, len(batch), self.batch_size)
            ]
        return torch.cat(chunks).flatten(1).double().numpy()

    def provenance(self) -> dict[str, Any]:
        folder = getattr(self.classifier, "folder", None)
        return {"kind": FEATURES_CLASSIFIER, "name": self.name, "dim": self.dim, "size": self.size,
                "classifier": None if folder is None else str(Path(folder).resolve())}  # fmt: skip


class XRVFeatures:
    """A torchxrayvision DenseNet-121's penultimate features: the 1024 globally pooled channels before its
    ``classifier`` layer, on its own input scaling (224 px, ``[-1024, 1024]``; :func:`xrv_input`)."""

    def __init__(self, model: Any, path: Path | None = None, batch_size: int = 16) -> None:
        self.model = model.eval()
        self.path = path
        self.batch_size = batch_size
        self.dim = int(model.out_features)
        self.name = f"xrv DenseNet-121 ({path.name if path else 'in memory'}, {self.dim}-d)"

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> XRVFeatures:
        """Load converted weights with :meth:`XRVClassifier.load` (its checks), keeping the network only."""
        from cfaudit.evaluate.xrv_classifier import XRVClassifier

        path = Path(path)
        if not path.is_file():
            raise CfauditError(f"--realism-features {path}: no such file; {XRV_HINT}")
        try:
            classifier = XRVClassifier.load(path, device=device)
        except CfauditError as error:
            raise CfauditError(f"--realism-features: {error}; {XRV_HINT}") from None
        return cls(classifier.model, path)

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        from cfaudit.evaluate.xrv_classifier import xrv_input
        from cfaudit.models.classifier import DenseNet121

        if not len(images):
            return np.zeros((0, self.dim))
        device = next(self.model.parameters()).device
        inputs = xrv_input(list(images))
        # DenseNet121.forward: features, ReLU, global average pool; XRVDenseNet's classifier layer is not run
        with torch.no_grad():
            chunks = [
                DenseNet121.forward(self.model, inputs[i : i + self.batch_size].to(device)).cpu()
                for i in range(0, len(inputs), self.batch_size)
            ]
        return torch.cat(chunks).double().numpy()

    def provenance(self) -> dict[str, Any]:
        from cfaudit.digests import file_sha256

        path = None if self.path is None else self.path.resolve()
        return {"kind": "xrv-densenet121", "name": self.name, "dim": self.dim, "path": str(path),
                "sha256": None if path is None else file_sha256(path)}  # fmt: skip


def feature_extractor(
    spec: str | Path, classifier: Any = None, device: str | None = None
) -> FeatureExtractor:
    """``"classifier"``: the attribute classifier's trunk; else the path of torchxrayvision DenseNet weights."""
    if str(spec) == FEATURES_CLASSIFIER:
        return ClassifierFeatures(classifier)
    return XRVFeatures.load(spec, device)


def _bad_image(error: CfauditError) -> str:
    """``load_image``'s message without its hint for index jobs (``--on-bad-row``), which does not apply here."""
    from cfaudit.data.images import _BAD_IMAGE_HINT

    return str(error).replace(f"; {_BAD_IMAGE_HINT}", "")


def image_features(
    paths: Sequence[str | Path],
    extractor: FeatureExtractor,
    *,
    what: str,
    fix: str,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Features ``(N, d)`` of image files, decoded ``LOAD_BATCH`` at a time.

    A file that cannot be read is one :class:`CfauditError` naming it, the set it belongs to (``what``) and what
    to do (``fix``).
    """
    from cfaudit.data.images import load_image

    parts = []
    for start in range(0, len(paths), LOAD_BATCH):
        images = []
        for path in paths[start : start + LOAD_BATCH]:
            try:
                images.append(load_image(path))
            except CfauditError as error:
                raise CfauditError(f"{what}: {_bad_image(error)}; {fix}") from None
        parts.append(np.asarray(extractor(images), dtype=np.float64))
        if progress is not None:
            progress(len(images))
    return np.concatenate(parts) if parts else np.zeros((0, 0))


# --- the distances -------------------------------------------------------------------------------------------


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


# --- real images ---------------------------------------------------------------------------------------------


def edited_split(image_ids: Iterable[str], index_table: pd.DataFrame) -> tuple[str | None, dict[str, int]]:
    """The split of the edited images (their index rows' ``split``; the most common one when they span several)
    and the count per split. ``None`` when none of the ids is in the index with a split."""
    split_of = dict(zip(index_table["image_id"].astype(str), index_table["split"].astype(str), strict=True))
    splits = [split_of.get(str(image_id), "") for image_id in image_ids]
    counts = pd.Series([s for s in splits if s]).value_counts()
    found = {str(k): int(v) for k, v in counts.items()}
    if not found:
        return None, {}
    return max(found, key=lambda s: (found[s], s)), found


def real_rows(index_table: pd.DataFrame, split: str, max_real: int, seed: int = 0) -> pd.DataFrame:
    """The real images of ``split``: all its index rows, or ``max_real`` of them when there are more, drawn with
    a seeded generator from the rows sorted by image id (the same choice whatever the index's row order)."""
    rows = index_table[index_table["split"].astype(str) == split].sort_values("image_id", kind="stable")
    if len(rows) > max_real:
        chosen = np.sort(np.random.default_rng(seed).choice(len(rows), max_real, replace=False))
        rows = rows.iloc[chosen]
    return rows.reset_index(drop=True)


@dataclass
class RealImages:
    """The index and the features of its real images per split (each split's features are computed once)."""

    index: Any  # DataIndex
    extractor: FeatureExtractor
    max_real: int = DEFAULT_MAX_REAL
    seed: int = 0
    progress: Progress | None = None
    cache: dict[str, np.ndarray] = field(default_factory=dict)

    def features(self, split: str) -> np.ndarray:
        if split not in self.cache:
            rows = real_rows(self.index.table, split, self.max_real, self.seed)
            paths = [self.index.image_path(row) for _, row in rows.iterrows()]
            self.cache[split] = _features_with_progress(
                paths, self.extractor, f"real images ({split})", self.progress,
                what=f"real image of the index's {split} split",
                fix="fix the index (`cfaudit data index`) or its image root",
            )  # fmt: skip
        return self.cache[split]


def _features_with_progress(
    paths: Sequence[str | Path], extractor: FeatureExtractor, stage: str, progress: Progress | None, *,
    what: str, fix: str,
) -> np.ndarray:  # fmt: skip
    done = [0]

    def step(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(f"realism: {stage}", done[0], len(paths))

    return image_features(paths, extractor, what=what, fix=fix, progress=step)


def _rows(
    method: str, image_set: str, values: dict[str, RealismValue], split: str, features: str
) -> list[dict[str, Any]]:
    return [
        {"method": method, "set": image_set, "metric": v.metric, "value": v.value, "ci_low": v.low,
         "ci_high": v.high, "n_generated": v.n_generated, "n_real": v.n_real, "split": split, "features": features}
        for v in values.values()
    ]  # fmt: skip


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def method_realism(
    rows: pd.DataFrame,
    real: RealImages,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    warn: Warn | None = None,
) -> list[dict[str, Any]]:
    """FD and KID of each method's counterfactuals (every counterfactual file of its rows) and reconstructions
    (where there are any) vs the real images of the edited images' split. ``rows``: as :func:`read_edit_folder`
    reads them, grouped by their ``label`` column (else ``method``)."""
    warn = warn or (lambda message: None)
    label = "label" if "label" in rows.columns else "method"
    out: list[dict[str, Any]] = []
    for method, mine in rows.groupby(label, sort=False):
        split, counts = edited_split(mine["image_id"], real.index.table)
        if split is None:
            warn(f"realism of {method} not measured: none of its edited image ids is in --index with a split")
            continue
        if len(counts) > 1:
            warn(
                f"the images {method} edited span the splits {counts}: realism compares with the {split} split"
            )
        reference = real.features(split)
        sets = [("counterfactuals", _unique(mine["counterfactual"]))]
        if "reconstruction" in mine.columns and _unique(mine["reconstruction"]):
            sets.append(("reconstructions", _unique(mine["reconstruction"])))
        for image_set, paths in sets:
            generated = _features_with_progress(
                paths, real.extractor, f"{method} {image_set}", real.progress,
                what=f"{method}: {image_set[:-1]}", fix="re-run the editing job or remove the row",
            )  # fmt: skip
            if min(len(generated), len(reference)) < 2:
                warn(f"realism of {method} {image_set}: {len(generated)} generated and {len(reference)} real "
                     "image(s); FD and KID need at least 2 of each")  # fmt: skip
            values = realism_intervals(generated, reference, n_boot=n_boot, seed=seed)
            out += _rows(str(method), image_set, values, split, real.extractor.name)
    return out


def edit_folder_realism(
    edit_folder: Any, real: RealImages, *, n_boot: int = 1000, seed: int = 0, warn: Warn | None = None
) -> list[dict[str, Any]]:
    """:func:`method_realism` of one edit folder (a :class:`~cfaudit.evaluate.table2.EditFolder`)."""
    return method_realism(edit_folder.rows, real, n_boot=n_boot, seed=seed, warn=warn)


def sample_images(folder: str | Path) -> list[Path]:
    """The PNG files directly in a samples folder, sorted; a folder without any is a :class:`CfauditError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CfauditError(f"--samples {folder}: no such folder; give the --out folder of `cfaudit sample`")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES)
    if not paths:
        raise CfauditError(
            f"--samples {folder}: no PNG images in it; give the --out folder of `cfaudit sample`"
        )
    return paths


def samples_realism(
    folder: str | Path, real: RealImages, split: str, *, n_boot: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """FD and KID of a folder of sampled PNGs vs the real images of ``split`` (method: the folder's name)."""
    folder = Path(folder)
    paths = sample_images(folder)
    generated = _features_with_progress(
        paths, real.extractor, f"samples {folder.name}", real.progress,
        what=f"sampled image in {folder}", fix="remove it from the folder or sample it again",
    )  # fmt: skip
    values = realism_intervals(generated, real.features(split), n_boot=n_boot, seed=seed)
    return _rows(folder.name, "samples", values, split, real.extractor.name)


# --- in `cfaudit evaluate` -----------------------------------------------------------------------------------


@dataclass
class RealismPlan:
    """What :func:`plan_realism` decided: on (with its features, index and samples) or off (and why)."""

    enabled: bool
    reason: str = ""
    extractor: FeatureExtractor | None = None
    index: Any = None  # DataIndex
    index_path: Path | None = None
    samples: list[Path] = field(default_factory=list)
    max_real: int = DEFAULT_MAX_REAL


def plan_realism(
    realism: bool | None,
    classifier: Any,
    *,
    index: str | Path | None,
    features: str | Path = FEATURES_CLASSIFIER,
    samples: Sequence[str | Path] = (),
    max_real: int = DEFAULT_MAX_REAL,
    device: str | None = None,
    warn: Warn | None = None,
) -> RealismPlan:
    """Check realism's inputs before the long scoring starts, and load its feature extractor.

    ``realism``: ``None`` measures it when an index is given (real images are needed) and the features can be
    made; ``True`` makes a missing index or classifier trunk an error; ``False`` skips it.
    """
    samples = [Path(s) for s in samples]
    if realism is False:
        if samples:
            raise CfauditError("--samples are scored for realism: drop --no-realism, or drop --samples")
        return RealismPlan(False, "off (--no-realism)")
    if index is None:
        if realism or samples:
            raise CfauditError("realism (FD, KID) needs real images: give --index (the index of the edited "
                               "images), or --no-realism")  # fmt: skip
        return RealismPlan(False, "not measured: it needs real images, give --index")
    if max_real < 2:
        raise CfauditError(f"--real-images must be at least 2, got {max_real}")
    for folder in samples:
        sample_images(folder)  # a missing or empty folder fails now, not after the scoring
    if realism is None and str(features) == FEATURES_CLASSIFIER and not has_trunk(classifier):
        message = (f"realism not measured: the classifier {type(classifier).__name__} has no network trunk for "
                   "features; give --realism-features PATH (torchxrayvision DenseNet weights)")  # fmt: skip
        if warn is not None:
            warn(message)
        return RealismPlan(False, message.removeprefix("realism "))
    from cfaudit.data.records import DataIndex

    extractor = feature_extractor(features, classifier, device)
    return RealismPlan(True, "", extractor, DataIndex.read(index), Path(index), samples, max_real)


def realism_table(
    plan: RealismPlan,
    folders: Sequence[Any],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    warn: Warn | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """``realism.csv``'s rows: every method of the edit folders (pooled by label across folders), then each
    samples folder (against the split most edited images come from; ``test`` when none is known)."""
    if not plan.enabled or plan.extractor is None:
        return pd.DataFrame(columns=list(REALISM_COLUMNS))
    real = RealImages(plan.index, plan.extractor, plan.max_real, seed, progress)
    rows = pd.concat([f.rows for f in folders], ignore_index=True) if folders else pd.DataFrame()
    out = method_realism(rows, real, n_boot=n_boot, seed=seed, warn=warn) if len(rows) else []
    if plan.samples:
        split = edited_split(rows["image_id"], plan.index.table)[0] if len(rows) else None
        for folder in plan.samples:
            out += samples_realism(folder, real, split or "test", n_boot=n_boot, seed=seed)
    return pd.DataFrame(out, columns=list(REALISM_COLUMNS))


def _cell(value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.4g}" if math.isnan(low) else f"{value:.4g} [{low:.4g}, {high:.4g}]"


def realism_markdown(table: pd.DataFrame, plan: RealismPlan, n_boot: int) -> str:
    """The section at the end of ``table2.md``: one line when realism is off, else a table per method x set."""
    if not plan.enabled or plan.extractor is None:
        return f"\nRealism (FD, KID): {plan.reason}.\n"
    interval = (f"95% bootstrap interval over images, {n_boot} resamples; FD's is bias-centred"
                if n_boot else "no interval")  # fmt: skip
    lines = [
        "",
        "## Realism: generated vs real images",
        "",
        f"Frechet distance (FD, the FID formula) and KID (unbiased MMD^2, cubic polynomial kernel, averaged over "
        f"{KID_SUBSETS} subsets of min(n, {KID_SUBSET_SIZE}) images) between each set of generated images and up "
        f"to {plan.max_real} real images of the edited images' split, in the features of the "
        f"{plan.extractor.name}. Cells: value [{interval}]. FD is biased upwards at small n: compare it only "
        "at equal n. Reconstructions (the null edit) show the gap the autoencoder or inversion makes alone.",
        "",
        "| method | set | FD | KID | n generated | n real | split |",
        "|---|---|---|---|---|---|---|",
    ]
    if table.empty:
        return "\n".join([*lines, "| (nothing measured: see the warnings) | | | | | | |"]) + "\n"
    for (method, image_set), group in table.groupby(["method", "set"], sort=False):
        cells = {r["metric"]: _cell(r["value"], r["ci_low"], r["ci_high"]) for _, r in group.iterrows()}
        first = group.iloc[0]
        lines.append(f"| {method} | {image_set} | {cells.get('FD', '-')} | {cells.get('KID', '-')} | "
                     f"{int(first['n_generated'])} | {int(first['n_real'])} | {first['split']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def realism_provenance(plan: RealismPlan) -> dict[str, Any]:
    """``evaluation.json``'s ``realism`` entry: on/off, the feature extractor, real-image cap, KID's subsets."""
    if not plan.enabled or plan.extractor is None:
        return {"enabled": False, "reason": plan.reason}
    return {
        "enabled": True,
        "features": plan.extractor.provenance(),
        "real_images": {"max": plan.max_real, "choice": "seeded draw from the split's rows sorted by image id",
                        "index": str(plan.index_path.resolve()) if plan.index_path else None},
        "kid": {"kernel": "(x.y/d + 1)^3", "subset_size": KID_SUBSET_SIZE, "subsets": KID_SUBSETS},
        "fd_interval": "percentile bootstrap, bias-centred",
        "samples": [str(p.resolve()) for p in plan.samples],
    }  # fmt: skip
