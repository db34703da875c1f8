"""Writing outputs so that a killed job never leaves a half-written file behind.

Every writer goes to a temporary file in the destination folder and renames it into place (an atomic
operation on POSIX file systems), so a reader sees either the old file, the complete new one, or none.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_permissions(root: str | os.PathLike[str]) -> None:
    """Give a staged folder tree the permissions plain ``mkdir`` / ``open`` would (``mkdtemp`` and some library
    writers make them private), so a model folder written for a lab is readable by the lab."""
    mask = _umask()
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o777 & ~mask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a file for writing that appears at ``path`` only once it is completely written."""
    if not any(flag in mode for flag in "wx"):
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not a write mode")
    with atomic_path(path) as tmp, open(tmp, mode.replace("x", "w"), **kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def remove_leftovers(path: str | os.PathLike[str]) -> list[Path]:
    """Remove what writers killed while replacing ``path`` left beside it: staging files or folders
    ``.<name>.*.part`` / ``.<name>.part`` and ``.<name>.old`` (a folder moved aside to swap in its new version).
    Only for a caller that knows no other process is writing ``path`` now. Returns what it removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for entry in sorted(path.parent.glob(f".{glob.escape(path.name)}.*")):
        if entry.name.endswith(".part") or entry.name == f".{path.name}.old":
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def remove_staged_files(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """Remove the staging files (``.<name>.<random>.part``) that writes killed mid-way left in ``folder`` (and,
    with ``recursive``, below it). Only for a caller that knows no other process is writing there now."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.part") if recursive else folder.glob(".*.part")
    removed = [entry for entry in sorted(found) if entry.is_file() and not entry.is_symlink()]
    for entry in removed:
        entry.unlink(missing_ok=True)
    return removed


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def write_csv(path: str | os.PathLike[str], frame: Any, **kwargs: Any) -> None:
    """Write a pandas DataFrame as CSV atomically (``index=False`` unless given)."""
    kwargs.setdefault("index", False)
    with atomic_open(path, "w", encoding="utf-8", newline="") as handle:
        frame.to_csv(handle, **kwargs)
