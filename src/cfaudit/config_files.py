"""Strict reading of YAML config files, shared by training, SCM and phantom configs, and of the JSON records
the tool writes (job files, model records, discovery results).

One way to read a file (a missing file, invalid YAML or a document that is not a mapping is a
:class:`CfauditError` naming the file) and one way to refuse an unknown key (the error names the key and the
file, and lists the valid keys). :class:`ConfigFile` puts both on a flat dataclass config.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from cfaudit.errors import CfauditError


def load_yaml_text(text: str) -> Any:
    """``yaml.safe_load``, but a mapping that names a key twice is a ``yaml.YAMLError`` (PyYAML would keep the
    last value in silence, so that a config's first setting of a key would be ignored without a word)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key != "<<" and isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is given twice; keep one", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=UniqueKeys)


def read_yaml(path: str | os.PathLike[str], missing: str = "no such config file") -> Any:
    """The YAML document of ``path`` (``None`` for an empty file); ``missing``: what a missing file is called."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CfauditError(f"{path}: {missing}")
    try:
        return load_yaml_text(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise CfauditError(f"{path}: not valid YAML ({error})") from None


def read_json(
    path: str | os.PathLike[str], hint: str = "", *, missing: str | None = None, expect: type = dict
) -> Any:
    """The JSON document of ``path``, which must be an ``expect`` (a dict: an object; a list). A missing file
    (``missing``: what it is called then, and what to do), a file that is not JSON, or another document is one
    :class:`CfauditError` naming the file, followed by ``hint`` (what to do: "re-run `cfaudit ...`")."""
    path = Path(path)
    then = f"; {hint}" if hint else ""
    if missing is not None and not path.is_file():
        raise CfauditError(f"{path}: {missing}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CfauditError(f"{path}: not valid JSON ({error}){then}") from None
    if not isinstance(data, expect):
        wanted = "an object" if expect is dict else f"a {expect.__name__}"
        raise CfauditError(f"{path}: expected {wanted}, found {type(data).__name__}{then}")
    return data


def read_yaml_mapping(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``key: value`` mapping of a YAML config file (an empty file is an empty mapping)."""
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise CfauditError(f"{path}: a config is a mapping of key: value, got {type(data).__name__}")
    return data


def requirement(config: str) -> Callable[[bool, str], None]:
    """A config's ``need(condition, message)``: unless ``condition`` holds, a :class:`CfauditError`
    ``"<config>: <message>"`` (``config`` names the kind of config, e.g. ``train config``)."""

    def need(condition: bool, message: str) -> None:
        if not condition:
            raise CfauditError(f"{config}: {message}")

    return need


def check_keys(data: Mapping[str, Any], valid: Iterable[str], origin: str, where: str = "") -> None:
    """Refuse keys of ``data`` that are not ``valid``; the error names them (as ``where.key``) and ``origin``."""
    valid = sorted(valid)
    unknown = sorted(str(key) for key in set(data) - set(valid))
    if unknown:
        named = ", ".join(f"{where}.{key}" if where else key for key in unknown)
        raise CfauditError(f"{origin}: unknown key(s) {named}; valid keys: {', '.join(valid)}")


def _checked(origin: str, key: str, kind: str, value: Any) -> Any:
    """``value`` if it fits the field's annotation ``kind`` (an int is accepted for a float); else an error."""
    if value is None and "None" in kind:
        return value
    expected = kind.split("|")[0].split("[")[0].strip()
    if expected == "float" and isinstance(value, str):
        # YAML 1.1 reads 1e-3 (no dot in the mantissa) as a string; it is the number every user means
        with contextlib.suppress(ValueError):
            value = float(value)
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
    }.get(expected, True)
    if not ok:
        words = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
                 "list": "a list", "dict": "a mapping"}  # fmt: skip
        raise CfauditError(f"{origin}: {key} must be {words[expected]}, got {value!r}")
    return float(value) if expected == "float" else value


class ConfigFile:
    """Reading a dataclass config from YAML: unknown keys and wrongly typed values are errors naming the key."""

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "config") -> Any:
        known = {f.name: str(f.type) for f in fields(cls)}  # type: ignore[arg-type]
        check_keys(data, known, origin)
        values = {key: _checked(origin, key, known[key], value) for key, value in data.items()}
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Any:
        """Read a YAML config, then apply ``overrides`` (command-line values); relative paths start at the CWD."""
        data = read_yaml_mapping(path)
        origin = str(Path(path))
        overrides = overrides or {}
        known = {f.name: str(f.type) for f in fields(cls)}  # type: ignore[arg-type]
        # a value given on the command line is checked as such, so that its error does not blame the file
        check_keys(overrides, known, "the command line")
        for key, value in overrides.items():
            _checked("the command line", key, known[key], value)
        data.update(overrides)
        try:
            return cls.from_dict(data, origin=origin)
        except CfauditError as error:
            if str(error).startswith(origin):
                raise
            given = f" with the command line's {', '.join(sorted(overrides))}" if overrides else ""
            raise CfauditError(f"{origin}{given}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]
