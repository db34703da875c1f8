"""The SCM baseline shipped with the package: the ``small`` preset trained on the demo phantom.

``cfaudit scm edit --model demo`` and ``cfaudit demo`` use it; ``demo_model/README.txt`` says how it was made.
"""

from __future__ import annotations

import os
from pathlib import Path

DEMO_SCM = "cfaudit/scm/demo_model"


def demo_scm_dir() -> Path:
    return Path(__file__).resolve().parent / "demo_model"


def resolve_scm_model(name: str | os.PathLike[str]) -> Path:
    """``demo`` -> the shipped model's folder; anything else is a path."""
    return demo_scm_dir() if str(name) == "demo" else Path(name)
