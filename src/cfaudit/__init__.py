"""cfaudit: counterfactual audits of chest X-ray data sets with fine-tuned text-to-image diffusion models.

``cfaudit.discover(...)`` mirrors ``cfaudit discover`` (imported on first use, so ``import cfaudit`` stays light).
"""

from typing import Any

#: The one place of cfaudit's version: pyproject.toml reads it from here (``[tool.setuptools.dynamic]``).
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "discover":
        import importlib

        return importlib.import_module("cfaudit.discover")
    raise AttributeError(f"module 'cfaudit' has no attribute {name!r}")
