"""The synthetic phantom (``cfaudit phantom --out DIR``): the generic CSV adapter with its column map built in.

The phantom writes ``DIR/metadata.csv`` (image_id, path relative to DIR, subject_id, study_id, ViewPosition,
age, sex M/F, race and the 14 CheXpert findings) beside ``DIR/images/``; ``--root`` is that folder.
"""

from __future__ import annotations

from pathlib import Path

from cfaudit.data.adapters.common import AdapterResult
from cfaudit.data.adapters.generic_csv import ColumnMap, load_csv
from cfaudit.errors import CfauditError

#: The record ``cfaudit phantom`` writes first and marks complete last (cfaudit.data.phantom.generate.PROVENANCE).
PHANTOM_RECORD = "phantom.json"

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
    _check_phantom_folder(Path(root))
    return load_csv(
        root, columns=PHANTOM_COLUMNS, on_bad_row=on_bad_row, check_images=check_images, source="phantom"
    )


def _check_phantom_folder(root: Path) -> None:
    """A folder that ``cfaudit phantom`` did not write, or did not finish, is named as such (not as a CSV problem)."""
    if not root.is_dir():
        raise CfauditError(
            f"{root}: no such folder; --root must be a folder written by `cfaudit phantom --out`"
        )
    if (root / PHANTOM_COLUMNS.csv).is_file():
        return
    if (root / PHANTOM_RECORD).is_file():
        raise CfauditError(
            f"{root}: not a complete phantom ({PHANTOM_RECORD} is there but no {PHANTOM_COLUMNS.csv}: its generation "
            f"did not finish); re-run the same `cfaudit phantom --out {root}` command, which resumes, then index it"
        )
    raise CfauditError(
        f"{root}: not a phantom folder (no {PHANTOM_COLUMNS.csv}); write one with `cfaudit phantom --out {root}`, "
        "or pass the folder `cfaudit phantom` wrote as --root"
    )
