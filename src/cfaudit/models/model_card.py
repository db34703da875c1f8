"""The model card: a ``README.md`` in Hugging Face's convention beside every model folder cfaudit writes.

Its facts come only from records: the folder's ``provenance.json`` (``cfaudit train``), ``vae_provenance.json``
(``cfaudit models train-vae``), the data index when it can be reached and its sha256 is the recorded one (then
Table 1 is computed with :func:`cfaudit.data.stats.table1`), and figures measured on the model, quoted from
metrics files that name where each was measured (:data:`~cfaudit.models.card_facts.METRICS_FILE` beside the
weights, ``--metrics``). A figure that is not recorded is written as "not measured"; nothing is estimated.
Recorded paths pass through :func:`~cfaudit.models.shipped_model.portable`, so a card names no one's machine.

Refreshing a card (``cfaudit models card``) replaces only the text between the
:data:`~cfaudit.models.card_file.BEGIN` and :data:`~cfaudit.models.card_file.END` markers and the front-matter
keys the tool derives from records (:data:`DERIVED_KEYS`, ``base_model`` where the records name one); text
outside the markers, front-matter keys and tags the user added and a license already in the card are kept. A
``README.md`` without markers is kept whole, below the generated part.

The parts: :mod:`~cfaudit.models.card_facts` (gathering the facts), :mod:`~cfaudit.models.card_template` (the
generated text), :mod:`~cfaudit.models.card_file` (front matter, markers, the user's text); this module writes
the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cfaudit import atomic_io
from cfaudit.errors import CfauditError
from cfaudit.models.card_facts import CardFacts, card_folder, gather
from cfaudit.models.card_file import CARD_FILE, compose, split_card
from cfaudit.models.card_template import render

log = logging.getLogger("cfaudit")

TAGS: tuple[str, ...] = ("stable-diffusion", "text-to-image", "chest-x-ray", "counterfactual", "cfaudit")
#: Front-matter keys rewritten from the records on every refresh. ``base_model`` is too where the records name one
#: (a user's is kept where they do not); ``tags`` are merged; a ``license`` already in the card is kept.
DERIVED_KEYS: tuple[str, ...] = ("library_name", "pipeline_tag", "cfaudit")


def front_matter(facts: CardFacts, existing: dict[str, Any]) -> dict[str, Any]:
    """The card's YAML front matter: derived keys from the records, the user's own keys and tags kept."""
    tags = list(TAGS)
    tags += [t for t in existing.get("tags") or [] if isinstance(t, str) and t not in tags]
    derived: dict[str, Any] = {"license": facts.license, "library_name": "diffusers",
                               "pipeline_tag": "text-to-image", "tags": tags}  # fmt: skip
    if facts.base_model:
        derived["base_model"] = facts.base_model
    record: dict[str, Any] = {"preset": facts.preset, "origin": facts.origin}
    if facts.origin == "random":
        record["init"] = facts.init
    derived["cfaudit"] = record
    kept = {k: v for k, v in existing.items() if k not in derived and k not in DERIVED_KEYS}
    return {**derived, **kept}


def write_model_card(
    folder: str | os.PathLike[str],
    *,
    index: str | os.PathLike[str] | None = None,
    metrics: Sequence[str | os.PathLike[str]] = (),
    origin: dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """Write or refresh ``folder/README.md`` (atomically) and return its path.

    ``index``: the data index the model was trained on, when the recorded path does not reach it (checked
    against the recorded sha256). ``metrics``: files of measured figures to quote besides ``metrics.yaml``.
    ``origin`` and ``name``: see :func:`gather`.
    """
    folder = card_folder(folder)
    path = folder / CARD_FILE
    existing = path.read_text(encoding="utf-8") if path.is_file() else None
    front = split_card(existing, path)[0] if existing is not None else {}
    facts = gather(folder, index=index, metrics=metrics, origin=origin, name=name, existing=front)
    atomic_io.write_text(path, compose(existing, front_matter(facts, front), render(facts), path))
    return path


def write_card_quietly(folder: str | os.PathLike[str], **kwargs: Any) -> Path | None:
    """:func:`write_model_card` for the commands that write models: a card that cannot be written (an unreadable
    record) is a warning there, never the loss of a finished training run."""
    try:
        return write_model_card(folder, **kwargs)
    except CfauditError as error:
        log.warning("model card not written: %s", error)
        return None
