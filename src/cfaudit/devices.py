"""The one place that turns a device name (or none) into a :class:`torch.device`.

No name (``None`` or ``""``) means the GPU when there is one, else the CPU. A name torch does not know is a
:class:`CfauditError` that says what to pass, not a traceback from deep inside a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cfaudit.errors import CfauditError

if TYPE_CHECKING:  # torch is imported when a device is resolved, not when this module is
    import torch


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` as a torch device; ``None`` / ``""``: ``cuda`` when available, else ``cpu``."""
    import torch

    if isinstance(name, torch.device):
        return name
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise CfauditError(
            f"unknown device {name!r}; pass cpu, cuda, cuda:1 ... or nothing (the GPU when there is one)"
        ) from None
