"""Small formatting helpers of the report's sections: numbers, intervals, shares, slugs, metadata lines."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfaudit.errors import CfauditError


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and math.isfinite(float(value))


def number(value: Any, signed: bool = False) -> str:
    """A figure for a table: 3 decimals below 10, fewer above; ``–`` for missing values."""
    if not is_number(value):
        return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    value = float(value)
    digits = 3 if abs(value) < 10 else 2 if abs(value) < 100 else 1
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text.replace("-", "−")


def interval(mean: Any, low: Any, high: Any, signed: bool = False) -> str:
    text = number(mean, signed)
    if is_number(low) and is_number(high):
        text += f" [{number(low, signed)}, {number(high, signed)}]"
    return text


def two_digits(value: Any) -> str:
    """A p- or q-value to 2 significant digits (``0.0039``; ``1.2×10⁻⁵`` below 0.001); ``–`` when missing."""
    if not is_number(value):
        return "–"
    value = float(value)
    if value == 0 or value >= 1e-3:
        return f"{value:.2g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    superscript = str(int(exponent)).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{mantissa}×10{superscript}"


def count(value: Any) -> str:
    return f"{int(value)}" if is_number(value) else "–"


def percent(value: Any) -> str:
    return f"{100 * float(value):.0f}%" if is_number(value) else "–"


def in_order(values: pd.Series) -> list[str]:
    """The distinct values as strings, in the order they first appear."""
    return list(dict.fromkeys(values.astype(str)))


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "item"


def intervention_slugs(intervention: str) -> list[str]:
    """File-name slugs an intervention may have been saved under (the editor's, then a plain one)."""
    slugs = []
    try:
        from cfaudit.data.interventions import Intervention

        slugs.append(Intervention.parse(intervention).slug)
    except CfauditError:
        pass
    body = re.fullmatch(r"\s*do\s*\((.*)\)\s*", intervention)
    plain = (body.group(1) if body else intervention).lower()
    slugs += [
        re.sub(r"[^a-z0-9_\-]+", "-", plain.replace("=", "-").replace(" ", "-")).strip("-"),
        slugify(plain),
    ]
    return list(dict.fromkeys(slugs))


def meta_items(meta: dict[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
    """(key, short text) for the given keys of a provenance dict that are present (nested dicts as k=v lists)."""
    items = []
    for key in keys:
        value = meta.get(key)
        if value is None or value == "" or value == {} or value == []:
            continue
        if isinstance(value, dict):
            text = ", ".join(f"{k}={_short(v)}" for k, v in value.items() if not isinstance(v, dict | list))
        elif isinstance(value, list):
            text = ", ".join(_short(v) for v in value)
        else:
            text = _short(value)
        items.append((key.replace("_", " "), text))
    return items


def _short(value: Any, limit: int = 160) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
