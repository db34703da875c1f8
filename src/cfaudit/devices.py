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
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise CfauditError(
            f"unknown device {name!r}; pass cpu, cuda, cuda:1 ... or nothing (the GPU when there is one)"
        ) from None
    if device.type == "cuda":
        # refused here, in one sentence, rather than by torch's assertion deep inside the first model moved there
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
            raise CfauditError(
                f"device {name!r}: torch sees no CUDA GPU here (torch {torch.__version__}, {built}); "
                "pass cpu, or nothing to use the GPU when there is one"
            )
        if device.index is not None and device.index >= count:
            raise CfauditError(f"device {name!r}: torch sees {count} CUDA GPU(s), numbered from cuda:0")
    return device
