"""Numbers that score counterfactuals: distances, prediction gain, the soundness axioms, bootstrap intervals.

Conventions (one for every function here):

* **Images** are grayscale ``[0, 1]`` floats, as :func:`cfaudit.data.images.load_image` returns them: one
  ``H x W`` array, an ``N x H x W`` batch, or a list of arrays of any sizes. ``uint8`` arrays are read as
  ``x / 255``. Before two images are compared both are brought to one stated square resolution
  (:data:`COMPARE_SIZE` unless ``size`` is given) with the project's resize-shorter-side-and-centre-crop, so a
  512 px Stable Diffusion edit and a 192 px SCM edit are scored on the same grid.
* **Distances** return one value per image pair (a float64 array); summarise them with :func:`bootstrap_ci`.
* **Classifier outputs** are a mapping head -> array: binary heads give ``P(positive)`` ``(N,)``, categorical
  heads class probabilities ``(N, K)``, regression heads values ``(N,)`` (e.g. age in years). Any callable
  ``images -> mapping`` (see :class:`cfaudit.evaluate.classifiers.AttributeClassifier`) is a :data:`Predictor`.
* **Editors** are callables ``images -> images`` that receive the images as given (at their own resolution; the
  editor resizes for its model) and whose outputs are fed back unchanged when edits are chained. A "null edit"
  is the editor asked to change nothing (reconstruction through inversion), which the axioms of Monteiro et al.
  (2023) use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from cfaudit.data.images import resize_and_crop
from cfaudit.devices import resolve_device
from cfaudit.errors import CfauditError

#: The resolution at which distances are computed unless stated otherwise: the SCM baseline's 192 px, so that
#: neither method's images are upsampled beyond what the other produces (SD's 512 px outputs are shrunk).
COMPARE_SIZE = 192

ImageBatch = Any  # np.ndarray | torch.Tensor | Sequence[np.ndarray]
Predictor = Callable[[np.ndarray], Mapping[str, np.ndarray]]
Editor = Callable[[np.ndarray], ImageBatch]
Distance = Callable[[ImageBatch, ImageBatch], np.ndarray]
HeadKind = Literal["binary", "categorical", "regression"]
REGRESSION_HEADS: tuple[str, ...] = ("age",)


# --- images ------------------------------------------------------------------------------------------------


def _as_unit_array(image: Any, where: str) -> np.ndarray:
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    array = array.astype(np.float32, copy=False)
    if array.ndim == 3 and array.shape[0] == 1:  # (1, H, W) channel-first grayscale
        array = array[0]
    if array.ndim != 2:
        raise CfauditError(f"{where} has shape {array.shape}; expected a 2-D grayscale image")
    if array.size and (np.nanmin(array) < -1e-3 or np.nanmax(array) > 1.0 + 1e-3):
        raise CfauditError(
            f"{where} spans [{np.nanmin(array):.4g}, {np.nanmax(array):.4g}]; images must be in [0, 1] "
            "(divide 8-bit values by 255, or map [-1, 1] with (x + 1) / 2)"
        )
    return array


def image_list(images: ImageBatch, name: str = "images") -> list[np.ndarray]:
    """Split a batch (``(N, H, W)``, ``(N, 1, H, W)``, list of ``H x W``) or one ``H x W`` image into a list."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            images = images[None]
        elif images.ndim == 4 and images.shape[1] == 1:
            images = images[:, 0]
        if images.ndim != 3:
            raise CfauditError(f"{name} has shape {images.shape}; expected (N, H, W), (N, 1, H, W) or (H, W)")
        return [_as_unit_array(image, f"{name}[{i}]") for i, image in enumerate(images)]
    return [_as_unit_array(image, f"{name}[{i}]") for i, image in enumerate(images)]


def to_common_size(images: ImageBatch, size: int = COMPARE_SIZE, name: str = "images") -> np.ndarray:
    """``(N, size, size)`` float32 in ``[0, 1]``: each image resized (shorter side) and centre-cropped to ``size``."""
    out = [
        image if image.shape == (size, size) else resize_and_crop(image, size)
        for image in image_list(images, name)
    ]
    if not out:
        return np.zeros((0, size, size), dtype=np.float32)
    return np.stack(out).astype(np.float32, copy=False)


def _pair(originals: ImageBatch, counterfactuals: ImageBatch, size: int) -> tuple[np.ndarray, np.ndarray]:
    a = to_common_size(originals, size, "originals")
    b = to_common_size(counterfactuals, size, "counterfactuals")
    if len(a) != len(b):
        raise CfauditError(f"{len(a)} original image(s) but {len(b)} counterfactual(s); give them in pairs")
    return a, b


# --- distances ---------------------------------------------------------------------------------------------


def l1_distance(originals: ImageBatch, counterfactuals: ImageBatch, size: int = COMPARE_SIZE) -> np.ndarray:
    """Mean absolute pixel difference per pair on the 0-255 scale, at ``size x size`` pixels."""
    a, b = _pair(originals, counterfactuals, size)
    return (np.abs(a.astype(np.float64) - b.astype(np.float64)) * 255.0).mean(axis=(1, 2))


@functools.lru_cache(maxsize=4)
def _pretrained_lpips(device: str):  # -> LPIPS
    from cfaudit.models.lpips import LPIPS

    return LPIPS.from_pretrained(device=device)


def lpips_distance(
    originals: ImageBatch,
    counterfactuals: ImageBatch,
    size: int = COMPARE_SIZE,
    *,
    model: Any = None,
    device: str | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """LPIPS (AlexNet, v0.1) per pair at ``size x size``; grayscale is repeated to RGB and mapped to ``[-1, 1]``.

    ``model`` defaults to the fetched pretrained network (``cfaudit assets fetch``) on ``device`` (GPU when
    there is one).
    """
    import torch

    a, b = _pair(originals, counterfactuals, size)
    device = str(resolve_device(device))
    model = model if model is not None else _pretrained_lpips(device)
    model_device = next(model.parameters()).device
    scores = []
    with torch.no_grad():
        for start in range(0, len(a), batch_size):
            x = torch.from_numpy(a[start : start + batch_size]).unsqueeze(1).to(model_device) * 2.0 - 1.0
            y = torch.from_numpy(b[start : start + batch_size]).unsqueeze(1).to(model_device) * 2.0 - 1.0
            scores.append(model(x, y).double().cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0)


# --- counterfactual prediction gain ------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionGain:
    """Per-image counterfactual prediction gain of one attribute.

    ``absolute`` is the paper's ``|C_A(x_cf) - C_A(x)|``; ``signed`` (only with a target) is the change towards
    the target value (CounteRGAN's reading: negative when the edit moved the classifier the wrong way).
    """

    absolute: np.ndarray
    signed: np.ndarray | None = None

    @property
    def mean_absolute(self) -> float:
        return float(np.mean(self.absolute))

    @property
    def mean_signed(self) -> float | None:
        return None if self.signed is None else float(np.mean(self.signed))


def _infer_kind(values: np.ndarray, name: str = "") -> HeadKind:
    if values.ndim == 2:
        return "categorical"
    return "regression" if name in REGRESSION_HEADS else "binary"


def _broadcast_target(target: Any, n: int) -> np.ndarray:
    values = np.asarray(target, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(n, float(values))
    if values.shape != (n,):
        raise CfauditError(f"target has shape {values.shape}; expected one value or {n} values")
    return values


def prediction_gain(
    before: np.ndarray, after: np.ndarray, target: Any = None, *, kind: HeadKind | None = None
) -> PredictionGain:
    """CPG from classifier outputs on the originals (``before``) and the counterfactuals (``after``).

    * binary: ``before``/``after`` are ``P(A = 1)``; ``target`` 0 or 1 (per image or one value);
    * categorical: ``(N, K)`` probabilities; ``target`` the class index set by the intervention; without a target
      the absolute gain is the total-variation change ``0.5 * sum_k |after_k - before_k|``;
    * regression: values (e.g. years); signed gain = how much closer the prediction came to the target.
    """
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before.shape != after.shape:
        raise CfauditError(f"predictions before {before.shape} and after {after.shape} differ in shape")
    kind = kind or _infer_kind(before)
    n = before.shape[0]
    if kind == "categorical":
        if before.ndim != 2:
            raise CfauditError(f"categorical predictions need shape (N, K), got {before.shape}")
        if target is None:
            return PredictionGain(0.5 * np.abs(after - before).sum(axis=1))
        index = _broadcast_target(target, n).astype(int)
        if index.min(initial=0) < 0 or index.max(initial=0) >= before.shape[1]:
            raise CfauditError(f"target class index out of range 0..{before.shape[1] - 1}")
        rows = np.arange(n)
        delta = after[rows, index] - before[rows, index]
        return PredictionGain(np.abs(delta), delta)
    if before.ndim != 1:
        raise CfauditError(f"{kind} predictions need shape (N,), got {before.shape}")
    absolute = np.abs(after - before)
    if target is None:
        return PredictionGain(absolute)
    goal = _broadcast_target(target, n)
    if kind == "binary":
        if not np.isin(goal, (0.0, 1.0)).all():
            raise CfauditError("a binary attribute's target must be 0 or 1")
        return PredictionGain(absolute, np.where(goal == 1.0, after - before, before - after))
    return PredictionGain(absolute, np.abs(before - goal) - np.abs(after - goal))


def counterfactual_prediction_gain(
    predict: Predictor,
    originals: ImageBatch,
    counterfactuals: ImageBatch,
    attribute: str,
    target: Any = None,
    *,
    kind: HeadKind | None = None,
) -> PredictionGain:
    """Run a classifier on both image sets and return the CPG of one of its heads."""
    before, after = (
        _predict_head(predict, originals, attribute),
        _predict_head(predict, counterfactuals, attribute),
    )
    return prediction_gain(before, after, target, kind=kind or _infer_kind(before, attribute))


def _predict_head(predict: Predictor, images: ImageBatch, attribute: str) -> np.ndarray:
    outputs = predict(images)
    if attribute not in outputs:
        raise CfauditError(f"the classifier has no head {attribute!r}; it has {', '.join(outputs)}")
    return np.asarray(outputs[attribute], dtype=np.float64)


# --- effectiveness -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Effectiveness:
    """Did the intervened attribute reach its target, and did the other heads keep their decisions?"""

    attribute: str
    hit: np.ndarray  # per image: the counterfactual is classified as the target value
    already: np.ndarray  # per image: the original was already classified as the target value
    kept: dict[str, np.ndarray] = field(default_factory=dict)  # other head -> per image decision unchanged

    @property
    def rate(self) -> float:
        """Share of counterfactuals classified as the target."""
        return float(np.mean(self.hit)) if self.hit.size else float("nan")

    @property
    def flip_rate(self) -> float:
        """Share reaching the target among images not already there (the attribute flipped)."""
        moved = self.hit[~self.already]
        return float(np.mean(moved)) if moved.size else float("nan")

    @property
    def kept_rate(self) -> dict[str, float]:
        return {head: float(np.mean(values)) for head, values in self.kept.items()}


def _decide(values: np.ndarray, kind: HeadKind, threshold: float) -> np.ndarray:
    if kind == "categorical":
        return values.argmax(axis=1).astype(float)
    if kind == "binary":
        return (values >= threshold).astype(float)
    return values


def effectiveness(
    before: Mapping[str, np.ndarray],
    after: Mapping[str, np.ndarray],
    attribute: str,
    target: Any,
    *,
    threshold: float = 0.5,
    regression_tolerance: float = 5.0,
    kinds: Mapping[str, HeadKind] | None = None,
) -> Effectiveness:
    """Effectiveness of an intervention ``do(attribute = target)`` from classifier outputs before and after.

    Binary heads decide at ``threshold``, categorical heads by arg-max; a regression head (age) "stays" when it
    moved by at most ``regression_tolerance``. For a regression attribute, a hit is a prediction within the
    tolerance of the target.
    """
    kinds = dict(kinds or {})
    if attribute not in before or attribute not in after:
        raise CfauditError(f"no predictions for attribute {attribute!r}; heads: {', '.join(before)}")
    heads = {}
    for head in before:
        if head not in after:
            raise CfauditError(f"head {head!r} is missing from the counterfactuals' predictions")
        b, a = np.asarray(before[head], dtype=np.float64), np.asarray(after[head], dtype=np.float64)
        heads[head] = (b, a, kinds.get(head) or _infer_kind(b, head))
    b, a, kind = heads[attribute]
    goal = _broadcast_target(target, b.shape[0])
    if kind == "regression":
        hit, already = np.abs(a - goal) <= regression_tolerance, np.abs(b - goal) <= regression_tolerance
    else:
        hit, already = _decide(a, kind, threshold) == goal, _decide(b, kind, threshold) == goal
    kept = {}
    for head, (b_other, a_other, kind_other) in heads.items():
        if head == attribute:
            continue
        if kind_other == "regression":
            kept[head] = np.abs(a_other - b_other) <= regression_tolerance
        else:
            kept[head] = _decide(a_other, kind_other, threshold) == _decide(b_other, kind_other, threshold)
    return Effectiveness(attribute, hit, already, kept)


# --- the soundness axioms (Monteiro et al., 2023) ----------------------------------------------------------


def _default_distance(size: int) -> Distance:
    return functools.partial(l1_distance, size=size)


def composition(
    null_edit: Editor,
    images: ImageBatch,
    times: Iterable[int] = (1, 10),
    *,
    distance: Distance | None = None,
    size: int = COMPARE_SIZE,
) -> dict[int, np.ndarray]:
    """Composition: apply the null edit ``k`` times and measure the distance to the input, for each ``k``.

    A sound editor returns the image unchanged, so every distance is 0; growth with ``k`` shows drift.
    """
    distance = distance or _default_distance(size)
    wanted = sorted(set(int(k) for k in times))
    if not wanted or wanted[0] < 1:
        raise CfauditError(f"composition needs repeat counts >= 1, got {wanted}")
    current = images
    results = {}
    for k in range(1, wanted[-1] + 1):
        current = null_edit(current)
        if k in wanted:
            results[k] = distance(images, current)
    return results


def reversibility(
    images: ImageBatch,
    forward: Editor | None = None,
    backward: Editor | None = None,
    *,
    reverted: ImageBatch | None = None,
    distance: Distance | None = None,
    size: int = COMPARE_SIZE,
) -> np.ndarray:
    """Reversibility: edit, edit back (``backward(forward(x))``, or precomputed ``reverted``), distance to ``x``."""
    distance = distance or _default_distance(size)
    if reverted is None:
        if forward is None or backward is None:
            raise CfauditError(
                "reversibility needs either both editors (forward, backward) or reverted images"
            )
        reverted = backward(forward(images))
    return distance(images, reverted)


@dataclass(frozen=True)
class Minimality:
    """How far each counterfactual moved (``change``) and how much of that exceeds the editor's own
    reconstruction error (``excess = d(x, x_cf) - d(x, null_edit(x))``): near 0 means the edit changed only
    what reconstruction already costs plus the intervention."""

    change: np.ndarray
    reconstruction: np.ndarray
    excess: np.ndarray


def minimality(
    images: ImageBatch,
    counterfactuals: ImageBatch,
    reconstructions: ImageBatch | None = None,
    *,
    null_edit: Editor | None = None,
    distance: Distance | None = None,
    size: int = COMPARE_SIZE,
) -> Minimality:
    """Minimality of counterfactuals against the null-edit reconstructions (given, or made with ``null_edit``)."""
    distance = distance or _default_distance(size)
    if reconstructions is None:
        if null_edit is None:
            raise CfauditError("minimality needs reconstructions (null-edit outputs) or a null_edit editor")
        reconstructions = null_edit(images)
    change = distance(images, counterfactuals)
    reconstruction = distance(images, reconstructions)
    return Minimality(change, reconstruction, change - reconstruction)


# --- bootstrap confidence intervals ------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval over ``n`` values."""

    estimate: float
    low: float
    high: float
    level: float
    n: int

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"

    def to_dict(self) -> dict[str, float | int]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "n": self.n,
        }


_STATISTICS: dict[str, Callable[..., np.ndarray]] = {"mean": np.mean, "median": np.median}


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    *,
    statistic: str | Callable[..., np.ndarray] = "mean",
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
    chunk: int = 4_000_000,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` (``"mean"``, ``"median"`` or a function taking ``axis``).

    Resampling is vectorised (a ``resamples x n`` index matrix, drawn in chunks of about ``chunk`` cells) and
    seeded, so the same values and seed give the same interval. NaN values are left out; ``n`` counts the rest.
    """
    if not 0.0 < level < 1.0:
        raise CfauditError(f"confidence level must be between 0 and 1, got {level}")
    if resamples < 1:
        raise CfauditError(f"resamples must be positive, got {resamples}")
    function = _STATISTICS[statistic] if isinstance(statistic, str) else statistic
    data = np.asarray(values, dtype=np.float64).ravel()
    data = data[~np.isnan(data)]
    n = data.size
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), level, 0)
    rng = np.random.default_rng(seed)
    per_chunk = max(1, chunk // n)
    stats = []
    for start in range(0, resamples, per_chunk):
        count = min(per_chunk, resamples - start)
        stats.append(np.asarray(function(data[rng.integers(0, n, size=(count, n))], axis=1)))
    draws = np.concatenate(stats)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return Interval(float(function(data)), float(low), float(high), level, int(n))
