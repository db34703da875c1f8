"""The layering docs/ARCHITECTURE.md states: a package imports only packages to its left, the base modules import
nothing of cfaudit's. Checked on the source text (every import, module- or function-level), so a new upward
import fails here rather than in a review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "cfaudit"
#: Left to right, as docs/ARCHITECTURE.md draws them (demo and demo_training share a layer).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "atomic_io", "digests", "assets", "progress", "devices", "config_files"),
    ("data",),
    ("models",),
    ("train",),
    ("edit",),
    ("scm",),
    ("evaluate",),
    ("discover",),
    ("review",),
    ("report",),
    ("ui",),
    ("demo", "demo_training"),
    ("cli", "__main__"),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _unit(module: str) -> str | None:
    """The layer unit of ``cfaudit.x.y`` (``x``); None for ``cfaudit`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "cfaudit" else None


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}" if node.module == "cfaudit" else node.module
                for alias in node.names
            ]
            found += [(node.lineno, name) for name in names]
    return found


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(SOURCE.rglob("*.py")):
        own = path.relative_to(SOURCE).parts[0].removesuffix(".py")
        if own == "__init__":
            continue  # the package's own __init__ may name anything (a lazy public API)
        for line, module in _imports(path):
            target = _unit(module)
            if target is None or target == own or target == "__init__":
                continue
            if target == "__version__":
                continue
            if RANK[target] > RANK[own]:
                problems.append(
                    f"{path.relative_to(SOURCE.parent)}:{line} imports {module} ({own} is below {target})"
                )
    return problems


def test_every_module_belongs_to_a_layer():
    units = {p.relative_to(SOURCE).parts[0].removesuffix(".py") for p in SOURCE.glob("*")} - {
        "__init__",
        "__pycache__",
    }
    units = {u for u in units if (SOURCE / u).is_dir() or (SOURCE / f"{u}.py").is_file()}
    assert units <= set(RANK), sorted(units - set(RANK))


def test_no_package_imports_one_above_it():
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a data module that imports discover is reported."""
    fake = tmp_path / "cfaudit"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "bad.py").write_text(
        "def f():\n    from cfaudit.discover.plan import x\n", encoding="utf-8"
    )
    monkeypatch.setattr(__import__(__name__, fromlist=["SOURCE"]), "SOURCE", fake)
    assert len(upward_imports()) == 1


#: Issue #14's measure: a module longer than this holds more than one job; split it along its stages.
MAX_LINES = 600


def long_modules(source: Path) -> list[str]:
    """The source files over :data:`MAX_LINES` lines, with their lengths."""
    found = []
    for path in sorted(source.rglob("*.py")):
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > MAX_LINES:
            found.append(f"{path.relative_to(source.parent)}: {count} lines")
    return found


def test_no_module_is_over_600_lines():
    assert long_modules(SOURCE) == []


def test_the_length_check_sees_a_long_module(tmp_path):
    (tmp_path / "cfaudit").mkdir()
    (tmp_path / "cfaudit" / "short.py").write_text("x = 1\n" * MAX_LINES, encoding="utf-8")
    (tmp_path / "cfaudit" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1), encoding="utf-8")
    assert long_modules(tmp_path / "cfaudit") == [f"cfaudit/long.py: {MAX_LINES + 1} lines"]


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
