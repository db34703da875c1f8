"""The expected-region control: does a head move when only the intervened attribute's own region is edited?

A classifier head that moves under an intervention it does not target is evidence of a relation only if the head
reads something *else* that the edit changed. A weak head may instead read the intervened attribute itself: on
the phantom, a lung-opacity head that has learnt "less lung field visible" moves when ``do(Cardiomegaly=0)``
shrinks the heart, and since the same classifier reads real images, real images "show" that move too, beyond
what the labels predict. The label and real-image controls cannot tell this from a hidden relation.

This control can, on both sides of the evidence. On the edits: for every edit of an intervention whose expected
region (:class:`~cfaudit.discover.atlas.RegionAtlas`) is a small part of the image, it scores a composite: the
edit's null edit with the counterfactual's pixels pasted inside that region only. ``region_control`` is the mean
of ``C(composite) - C(null edit)``: the move the head makes from the intended change alone. When it carries most
of the edit's move (:data:`EXPLAINED_SHARE`, same sign), the head reads the intervened attribute's own change, and
the candidate is a ``classifier confound``, whatever the real images say. On the real images: the classifier
reads each real image once more with that region blanked (:func:`blank_region`: a flat gray patch), and
``data_outside`` is the data association of those readings. Real images support a relation only if it survives
there, outside the intervened attribute's own region (as a change cluster is only looked for outside it); when the
association beyond the labels is gone, real images "show" the relation only through the attribute itself: a
``classifier confound`` too. A relation carried by something outside the region (the pacemaker that leaves with a
large heart) is not touched by either: pasting or blanking the heart alone does not move it.

Where the expected region covers most of the image (:data:`MAX_REGION_AREA`; the lungs, a global attribute) the
composite is the counterfactual itself and says nothing, so it is not made (NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit.data.edit_folder import IDENTITY_FILE, image_folder
from cfaudit.data.images import load_image
from cfaudit.data.interventions import Intervention
from cfaudit.discover.atlas import RegionAtlas
from cfaudit.discover.heads import HEAD_COLUMNS, head_columns

#: Expected regions larger than this share of the image are not tested (the composite would be most of the
#: counterfactual). The heart's box covers 0.36 of the image and the lung bases' 0.48; the lungs' 0.85.
MAX_REGION_AREA = 0.5
#: A head's move is the intervened attribute's when the region-only composite moves it the same way by at least
#: this share of the edit's own move beyond the null edit.
EXPLAINED_SHARE = 0.5


#: The grid at which an expected region's share of the image is measured (the decision must not depend on the
#: size of the images a run happens to read).
_AREA_GRID = 64


def region_mask(intervention: Intervention, atlas: RegionAtlas, size: int) -> np.ndarray:
    """The ``size x size`` mask of ``intervention``'s expected region."""
    return atlas.mask(tuple(name for name, _ in intervention.changes), size)


def controlled_interventions(interventions: Sequence[Intervention], atlas: RegionAtlas) -> list[str]:
    """The interventions (by name) the control is made for: their expected region is not the whole image and
    covers at most :data:`MAX_REGION_AREA` of it."""
    return [
        str(i)
        for i in interventions
        if not atlas.is_global(tuple(name for name, _ in i.changes))
        and region_mask(i, atlas, _AREA_GRID).mean() <= MAX_REGION_AREA
    ]


def region_only_scores(
    classifier: Any,
    edits: pd.DataFrame,
    folder: Path,
    interventions: Sequence[Intervention],
    atlas: RegionAtlas,
    chunk: int,
    tell: Callable[[int, int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Head columns (one value per row of ``edits``; NaN where the intervention is not tested) of each edit's
    region-only composite, ``chunk`` images at a time."""
    scores = {head: np.full(len(edits), np.nan) for head in HEAD_COLUMNS}
    controlled = set(controlled_interventions(interventions, atlas))
    tested = {str(i): i for i in interventions if str(i) in controlled}
    names = edits["intervention"].astype(str).to_numpy()
    todo = [k for k in range(len(edits)) if names[k] in tested]
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        images = []
        for k in part:
            row = edits.iloc[k]
            counterfactual = load_image(folder / row["counterfactual"])
            null = load_image(image_folder(folder, str(row["image_id"])) / IDENTITY_FILE)
            mask = region_mask(tested[names[k]], atlas, counterfactual.shape[0])
            images.append(np.where(mask, counterfactual, null))
        heads = head_columns(classifier.predict(images))
        for head in HEAD_COLUMNS:
            scores[head][part] = heads[head]
        if tell is not None:
            tell(start + len(part), len(todo))
    return scores


def region_key(intervention: Intervention) -> tuple[str, ...]:
    """The attributes whose expected region an intervention's control blanks (interventions on the same
    attributes share one reading of the real images)."""
    return tuple(sorted(name for name, _ in intervention.changes))


#: The gray level a blanked region is filled with: the same flat patch in every image, so that nothing of what the
#: region showed, and nothing of the rest of the image, reaches a head through it.
BLANK_LEVEL = 0.5


def blank_region(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with ``mask`` filled by :data:`BLANK_LEVEL`."""
    return np.where(mask, np.float32(BLANK_LEVEL), image).astype(image.dtype, copy=False)


def explains(region_control: float, delta: float) -> bool:
    """The region-only move carries the edit's move: same sign, at least :data:`EXPLAINED_SHARE` of it."""
    if not (np.isfinite(region_control) and np.isfinite(delta)) or delta == 0:
        return False
    return region_control * delta > 0 and abs(region_control) >= EXPLAINED_SHARE * abs(delta)
