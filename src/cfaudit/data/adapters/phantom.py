"""The synthetic phantom (``cfaudit phantom --out DIR``): the generic CSV adapter with its column map built in.

The phantom writes ``DIR/metadata.csv`` (image_id, path relative to DIR, subject_id, study_id, ViewPosition,
age, sex M/F, race and the 14 CheXpert findings) beside ``DIR/images/``; ``--root`` is that folder.
"""

from __future__ import annotations

from pathlib import Path

from cfaudit.data.adapters.common import AdapterResult
from cfaudit.data.adapters.generic_csv import ColumnMap, load_csv

PHANTOM_COLUMNS = ColumnMap(
    csv="metadata.csv",
    columns={
        "image_id": "image_id",
        "path": "path",
        "subject_id": "subject_id",
        "study_id": "study_id",
        "view": "ViewPosition",
        "age": "age",
        "sex": "sex",
        "race": "race",
    },
)


def load_phantom(
    root: str | Path, *, on_bad_row: str = "error", check_images: str = "exists"
) -> AdapterResult:
    """Index a phantom folder written by ``cfaudit phantom``."""
    return load_csv(
        root, columns=PHANTOM_COLUMNS, on_bad_row=on_bad_row, check_images=check_images, source="phantom"
    )
