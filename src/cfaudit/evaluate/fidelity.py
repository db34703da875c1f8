"""How much of an image survives a model's autoencoder: the measures behind "the model keeps what an expert sees".

An editor can only keep what its autoencoder keeps: with direct inversion the null edit *is* the autoencoder's
reconstruction, and every counterfactual is decoded by it. So before a counterfactual is scored, its model's
reconstructions are compared with the originals:

* ``l1``: mean absolute difference on the 0-255 scale, at the model's resolution;
* ``lpips``: LPIPS (AlexNet v0.1) at ``lpips_size`` (default 192, Table 2's size);
* ``contrast_kept``: per labelled structure (on the phantom: each device kind, from its ground-truth mask), the
  share of its contrast against its surroundings that the reconstruction keeps: the mean inside the mask minus
  the mean of a thin ring around it, reconstruction over original, summed over images (a thin line that blurs away
  keeps ~0, one drawn as sharply as before keeps 1);
* ``drift``: per classifier head, the mean absolute change of the attribute classifier's output between original
  and reconstruction: what the autoencoder alone does to the CPG columns of Table 2;
* ``grain_drift``: with ``reference`` images, the same change between each original and its grain-free picture:
  what a perfect autoencoder of the picture would cost, i.e. how much of ``drift`` is the judge reading the grain;
* ``reference_drift``: with the grain-free pictures' own reconstructions, the change between each grain-free
  picture and its reconstruction: the autoencoder's drift measured against a noise-free render, where the grain
  the autoencoder cannot carry does not count.

The phantom's grain is independent noise that no autoencoder with fewer latent numbers than pixels can carry, so a
perfect reconstruction of its noise-free picture still differs from the grainy image (L1 5.0, LPIPS 0.23 at
192 px on the demo phantom); ``reference`` images (the phantom drawn without grain) measure against the picture
itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from cfaudit.evaluate.metrics import l1_distance, lpips_distance

#: Ring around a structure's mask for its contrast: pixels between these dilations of the mask.
RING_INNER, RING_OUTER = 1, 3
#: A mask needs this many pixels for its contrast to count.
MIN_MASK_PIXELS = 3


@dataclass
class Fidelity:
    """Reconstruction fidelity of one model on one set of images (see the module docstring)."""

    n: int
    l1: float
    lpips: float
    lpips_size: int
    l1_reference: float | None = None
    lpips_reference: float | None = None
    contrast_kept: dict[str, float] = field(default_factory=dict)
    contrast_n: dict[str, int] = field(default_factory=dict)
    drift: dict[str, float] = field(default_factory=dict)
    grain_drift: dict[str, float] = field(default_factory=dict)
    reference_drift: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``image`` inside ``mask`` minus its mean in a thin ring around it."""
    grown = ndimage.binary_dilation(mask, iterations=RING_OUTER)
    ring = grown & ~ndimage.binary_dilation(mask, iterations=RING_INNER)
    return float(image[mask].mean() - image[ring].mean())


def contrast_kept(
    originals: Sequence[np.ndarray],
    reconstructions: Sequence[np.ndarray],
    masks: Sequence[Mapping[str, np.ndarray]],
) -> tuple[dict[str, float], dict[str, int]]:
    """Per structure name: the share of its contrast kept (summed over images) and the number of images with it.

    Images are arrays of one scale (e.g. 0..1) and the masks' size.
    """
    sums: dict[str, list[float]] = {}
    for original, reconstruction, parts in zip(originals, reconstructions, masks, strict=True):
        original = np.asarray(original, dtype=np.float64)
        reconstruction = np.asarray(reconstruction, dtype=np.float64)
        for name, mask in parts.items():
            if mask.sum() < MIN_MASK_PIXELS:
                continue
            before, after = contrast(original, mask), contrast(reconstruction, mask)
            totals = sums.setdefault(name, [0.0, 0.0, 0])
            totals[0] += before
            totals[1] += after
            totals[2] += 1
    kept = {name: (t[1] / t[0] if t[0] else float("nan")) for name, t in sums.items()}
    counts = {name: int(t[2]) for name, t in sums.items()}
    return kept, counts


def classifier_drift(classifier: Any, originals: Any, reconstructions: Any) -> dict[str, float]:
    """Per classifier head: mean |output(reconstruction) - output(original)| (probabilities; years for age; for race the total variation distance)."""
    return output_drift(classifier.predict(originals), classifier.predict(reconstructions))


def output_drift(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, float]:
    """:func:`classifier_drift` of two sets of classifier outputs already computed (one set of originals read
    once, compared with several others)."""
    drift: dict[str, float] = {}
    for head, values in before.items():
        change = np.abs(np.asarray(after[head]) - np.asarray(values))
        if change.ndim == 2:  # a categorical head (race): the total variation distance of the two
            change = 0.5 * change.sum(axis=1)
        drift[head] = float(np.nanmean(change))
    return drift


def measure_fidelity(
    originals: Sequence[np.ndarray],
    reconstructions: Sequence[np.ndarray],
    *,
    references: Sequence[np.ndarray] | None = None,
    reference_reconstructions: Sequence[np.ndarray] | None = None,
    masks: Sequence[Mapping[str, np.ndarray]] | None = None,
    classifier: Any = None,
    lpips_size: int = 192,
    lpips_device: str | None = None,
) -> Fidelity:
    """All measures for ``[0, 1]`` image arrays of one size (``references``: the same pictures without grain;
    ``reference_reconstructions``: those pictures through the same autoencoder)."""
    if reference_reconstructions is not None and references is None:
        raise ValueError("reference_reconstructions are the references' reconstructions: pass references too")
    size = int(np.asarray(originals[0]).shape[-1])
    fidelity = Fidelity(
        n=len(originals),
        l1=float(l1_distance(originals, reconstructions, size).mean()),
        lpips=float(lpips_distance(originals, reconstructions, lpips_size, device=lpips_device).mean()),
        lpips_size=lpips_size,
    )
    if references is not None:
        fidelity.l1_reference = float(l1_distance(references, reconstructions, size).mean())
        fidelity.lpips_reference = float(
            lpips_distance(references, reconstructions, lpips_size, device=lpips_device).mean()
        )
    if masks is not None:
        fidelity.contrast_kept, fidelity.contrast_n = contrast_kept(originals, reconstructions, masks)
    if classifier is not None:
        before = classifier.predict(list(originals))
        fidelity.drift = output_drift(before, classifier.predict(list(reconstructions)))
        if references is not None:
            clean = classifier.predict(list(references))
            fidelity.grain_drift = output_drift(before, clean)
            if reference_reconstructions is not None:
                fidelity.reference_drift = output_drift(
                    clean, classifier.predict(list(reference_reconstructions))
                )
    return fidelity
