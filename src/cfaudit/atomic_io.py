"""Writing outputs so that a killed job never leaves a half-written file behind.

Every writer goes to a temporary file in the destination folder and renames it into place (an atomic
operation on POSIX file systems), so a reader sees either the old file, the complete new one, or none.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cfaudit.errors import CfauditError


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as error:
        raise CfauditError(_cannot_write(path, error)) from None
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp_path, path)
    except BaseException as error:
        tmp_path.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise CfauditError(_cannot_write(path, error)) from None
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


# --- output paths that cannot be written: one clear message, never a traceback ----------------------------------

#: What an errno means for a path a command writes or reads, in a user's words.
_CAUSES = {
    errno.EEXIST: "a file is where a folder is needed",
    errno.ENOTDIR: "a file is where a folder is needed",
    errno.EISDIR: "a folder is where a file is needed",
    errno.EACCES: "no permission to write or read there",
    errno.EPERM: "no permission to write or read there",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.ENAMETOOLONG: "the name is too long",
}
_FULL = (errno.ENOSPC, errno.EDQUOT)


def os_error_message(error: OSError) -> str | None:
    """One line for an :class:`OSError` that escaped a command (most often an output that cannot be written): the
    path, the system's reason, what it means and what to do; the CLI prints it as it prints a
    :class:`~cfaudit.errors.CfauditError`. ``None`` for an error that names no path and no known cause (a bug in
    cfaudit: better shown with its traceback)."""
    path = error.filename2 if error.filename2 is not None else error.filename
    reason = error.strerror or str(error)
    cause = _CAUSES.get(error.errno or 0)
    if error.errno in _FULL:
        action = "free some space, or write the output to another disk"
    else:
        action = "check the path; for an output, choose another (--out, --output-dir) where you can write"
    if path is None:
        return f"{reason}; {action}" if error.errno in _FULL else None
    return f"{os.fsdecode(path)}: {reason}{f' ({cause})' if cause else ''}; {action}"


def _cannot_write(path: Path, error: OSError) -> str:
    """The message for ``path`` that cannot be written because of ``error`` (raised making its folder, staging it or
    renaming it into place)."""
    reason = error.strerror or str(error)
    if error.errno in _FULL:
        return f"{path}: cannot write it ({reason}); free some space, or write the output to another disk"
    if error.errno == errno.EISDIR or path.is_dir():
        cause = "a folder is there; a file is to be written at this path"
    else:
        cause = _CAUSES.get(error.errno or 0, "")
        blocker = _file_in_the_way(path.parent)
        if blocker is not None:
            cause = f"{blocker} is a file, not a folder"
        elif error.errno == errno.ENOENT:
            cause = "its folder cannot be made there"
    return f"{path}: cannot write it ({reason}{f'; {cause}' if cause else ''}); choose another output path"


def _file_in_the_way(folder: Path) -> Path | None:
    """The first existing ancestor of ``folder`` (itself included) when it is not a folder, else ``None``."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def check_output_folder(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Check, before any work is done, that ``path`` is or can become a folder the command can write into; a
    :class:`~cfaudit.errors.CfauditError` naming the path, the problem and ``option`` otherwise.

    Nothing is left behind: folders made to prove that ``path`` can be made are removed again.
    """
    path = Path(path)
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise CfauditError(f"{path}: the folder is not writable; choose another {option}")
        return path
    if path.exists() or path.is_symlink():
        raise CfauditError(
            f"{path} is a file, not a folder; {option} names a folder to write into: choose another "
            f"{option}, or move the file away"
        )
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        raise CfauditError(
            f"{path}: {blocker} is a file, so no folder can be made below it; choose another {option}"
        )
    made = [p for p in (path, *path.parents) if not p.exists()]
    try:
        # exist_ok: the processes of one launch check the same folder at once, and another may have just made it
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CfauditError(
            f"{path}: cannot create this folder ({error.strerror or error}); choose another {option} "
            "(a folder you can write to)"
        ) from None
    finally:
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
    return path


def check_output_file(
    path: str | os.PathLike[str], option: str = "--out", example: str | None = None
) -> Path:
    """Check, before any work is done, that a file can be written at ``path`` (not a folder; its folder is one or
    can be made); a :class:`~cfaudit.errors.CfauditError` naming the path and ``option`` otherwise. ``example``: a
    file name to suggest when ``path`` is a folder."""
    path = Path(path)
    if path.is_dir():
        suggestion = f" (e.g. {path / example})" if example else ""
        raise CfauditError(
            f"{path} is a folder; {option} names the file to write{suggestion}: choose another {option}"
        )
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        raise CfauditError(
            f"{path}: {blocker} is a file, so no folder can be made below it; choose another {option}"
        )
    check_output_folder(path.parent, option)
    return path
