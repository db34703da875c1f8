"""The attributes a discovery watches ("heads"): one column per classifier output, in one unit each.

Binary heads are probabilities (``sex`` is P(male), each finding P(present)), race is split into one
probability per group (``race:White``...), age is in years. :data:`HEAD_SCALE` converts a change into the
common unit in which margins are stated: probability for every head; for age, 50 years count as 1.0, so the
default margin of 0.1 is 5 years, about the error of an age regressor on chest X-rays (and of the phantom's
classifier), below which an age change is not told from noise.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cfaudit.data.vocabulary import FINDINGS, RACES

HEAD_COLUMNS: tuple[str, ...] = ("sex", *(f"race:{race}" for race in RACES), "age", *FINDINGS)
HEAD_SCALE: dict[str, float] = {column: (50.0 if column == "age" else 1.0) for column in HEAD_COLUMNS}
#: Heads whose truth an index records for every image (metadata, not read from a report). For them the label
#: statistics hold the whole data relation, so real images that differ beyond the labels can only mean that
#: the classifier reads one attribute as another (a classifier confound), never a hidden relation.
FULLY_OBSERVED: frozenset[str] = frozenset(
    c for c in HEAD_COLUMNS if c in ("sex", "age") or c.startswith("race:")
)


def head_columns(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Classifier outputs (``AttributeClassifier.predict``) -> one float array per :data:`HEAD_COLUMNS` entry."""
    columns: dict[str, np.ndarray] = {}
    for column in HEAD_COLUMNS:
        if column.startswith("race:"):
            race = np.asarray(outputs["race"], dtype=np.float64)
            columns[column] = race[:, RACES.index(column.split(":", 1)[1])]
        else:
            columns[column] = np.asarray(outputs[column], dtype=np.float64)
    return columns


def intervened_heads(attributes: tuple[str, ...]) -> set[str]:
    """The head columns an intervention on ``attributes`` targets directly (not co-changes).

    Any finding change also moves "No Finding" by definition, so it counts as targeted too.
    """
    heads: set[str] = set()
    for attribute in attributes:
        if attribute == "race":
            heads |= {c for c in HEAD_COLUMNS if c.startswith("race:")}
        else:
            heads.add(attribute)
        if attribute in FINDINGS:
            heads.add("No Finding")
    return heads
