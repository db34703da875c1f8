"""Data-set adapters: MIMIC-CXR-JPG, CheXpert, your own CSV, the phantom -> one normalised index.

:data:`ADAPTERS` maps a source name to its loader (one file each); :func:`build_index` runs one, assigns the
patient-level split and returns a :class:`~cfaudit.data.records.DataIndex` whose ``meta`` records the source
files, options, the rows skipped and why, the split and the label policy; :func:`write_index` writes
``index.csv``, ``index.json`` and ``splits.csv`` atomically.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cfaudit import atomic_io
from cfaudit.data.adapters.chexpert import load_chexpert
from cfaudit.data.adapters.common import AdapterResult, LoadSummary
from cfaudit.data.adapters.generic_csv import ColumnMap, load_csv
from cfaudit.data.adapters.mimic import load_mimic
from cfaudit.data.adapters.phantom import load_phantom
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.records import DataIndex, sidecar_path
from cfaudit.data.splits import (
    DEFAULT_FRACTIONS,
    SPLITS_FILE_NAME,
    apply_image_splits,
    apply_subject_splits,
    check_fractions,
    random_subject_splits,
    read_splits,
    split_counts,
    subject_splits,
    write_splits,
)
from cfaudit.errors import CfauditError

__all__ = [
    "ADAPTERS",
    "SOURCES",
    "AdapterResult",
    "ColumnMap",
    "LoadSummary",
    "build_index",
    "check_index_output",
    "load_source",
    "write_index",
]

ADAPTERS: dict[str, Callable[..., AdapterResult]] = {
    "mimic": load_mimic,
    "chexpert": load_chexpert,
    "csv": load_csv,
    "phantom": load_phantom,
}
SOURCES: tuple[str, ...] = tuple(ADAPTERS)
SPLIT_SOURCES: tuple[str, ...] = ("random", "official")


def load_source(source: str, root: str | os.PathLike[str], **options: Any) -> AdapterResult:
    """Run the adapter for ``source``; options it does not take are an error unless they are ``None``."""
    if source not in ADAPTERS:
        raise CfauditError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    adapter = ADAPTERS[source]
    accepted = set(inspect.signature(adapter).parameters) - {"root", "source"}
    unused = sorted(k for k, v in options.items() if k not in accepted and v is not None)
    if unused:
        raise CfauditError(
            f"the {source} source does not take {_flags(unused)}; it takes {_flags(sorted(accepted))}"
        )
    return adapter(Path(root), **{k: v for k, v in options.items() if k in accepted and v is not None})


def _flags(names: Sequence[str]) -> str:
    """Adapter parameter names as the command line spells them: ``on_bad_row`` -> ``--on-bad-row``."""
    return ", ".join("--" + name.replace("_", "-") for name in names)


def build_index(
    source: str,
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    splits: str | os.PathLike[str] | None = None,
    split_source: str = "random",
    label_policy: LabelPolicy = DEFAULT_POLICY,
    **options: Any,
) -> DataIndex:
    """Read a data set with its adapter and assign splits: a saved split file, the official one, or random.

    ``options`` go to the adapter (``mimic_iv``, ``columns``, ``demographics``, ``on_bad_row``, ``check_images``).
    """
    # 1. Check the split options before the (possibly long) read.
    fractions = check_fractions(fractions)
    if split_source not in SPLIT_SOURCES:
        raise CfauditError(f"--split-source {split_source!r} is not one of {', '.join(SPLIT_SOURCES)}")
    if splits is not None and split_source != "random":
        raise CfauditError("--splits FILE and --split-source official exclude each other; choose one")
    saved = read_splits(splits) if splits is not None else None

    # 2. Records.
    result = load_source(source, root, **options)
    table = result.table
    if table.empty:
        reasons = (
            "; ".join(f"{k}: {v['count']}" for k, v in result.summary.skipped.items())
            or "the source is empty"
        )
        raise CfauditError(f"{source} source at {root}: no rows kept ({reasons}); nothing to index")

    # 3. Splits.
    split_meta: dict[str, Any] = {"method": "random", "seed": seed, "fractions": list(fractions)}
    if saved is not None:
        table, unused = apply_subject_splits(table, saved, str(splits))
        split_meta = {"method": "file", "file": str(Path(splits).resolve()), "unused_subjects": unused}  # type: ignore[arg-type]
        if unused:
            result.summary.warnings.append(
                f"{unused} subject(s) in {splits} are not in this data (after filtering); they were ignored"
            )
    elif split_source == "official":
        if result.official_split is None:
            raise CfauditError(
                f"the {source} source has no official split file here; use --split-source random or --splits FILE"
            )
        table = apply_image_splits(table, result.official_split, f"{source} official split")
        split_meta = {"method": "official"}
    else:
        assigned = random_subject_splits(table["subject_id"], seed=seed, fractions=fractions)
        table = table.assign(split=table["subject_id"].map(assigned))
    split_meta["counts"] = split_counts(table)

    meta = {
        "source": source,
        "provenance": result.provenance,
        "summary": result.summary.to_dict(),
        "split": split_meta,
        "label_policy": label_policy.to_dict(),
    }
    return DataIndex(table, result.root, meta)


def check_index_output(out: str | os.PathLike[str]) -> Path:
    """Check, before anything is read or written, that ``out`` (index.csv), its index.json and the splits.csv
    beside it can be written: none of them is a folder, and their folder is one or can be made."""
    out = atomic_io.check_output_file(out, "--out", example="index.csv")
    for sibling in (sidecar_path(out), out.parent / SPLITS_FILE_NAME):
        if sibling.is_dir():
            raise CfauditError(
                f"{sibling} is a folder; `cfaudit data index` writes {sibling.name} beside --out {out}: "
                "move that folder away or choose another --out"
            )
    return out


def write_index(index: DataIndex, out: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``splits.csv`` beside ``out``, then ``out`` (index.csv) and its ``index.json``; return the paths."""
    out = check_index_output(out)
    splits_path = out.parent / SPLITS_FILE_NAME
    per_subject = subject_splits(index.table)
    # A split file applied from this very place is kept as shipped (it may name more subjects than the data).
    if index.meta.get("split", {}).get("file") != str(splits_path.resolve()):
        write_splits(splits_path, per_subject)
    index.meta["splits_file"] = SPLITS_FILE_NAME
    index.write(out)
    return {"index": out, "meta": out.with_suffix(".json"), "splits": splits_path}
