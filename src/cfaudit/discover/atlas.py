"""The expected regions of attributes: :class:`RegionAtlas`, read from the shipped ``discover/regions.yaml``
or a file of the same form (boxes in image units, and which boxes each attribute may change)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from cfaudit.config_files import load_yaml_text
from cfaudit.errors import CfauditError

DEFAULT_REGIONS = "regions.yaml"


@dataclass(frozen=True)
class RegionAtlas:
    """Expected regions per attribute, as unions of boxes in image units (see ``discover/regions.yaml``)."""

    boxes: dict[str, tuple[float, float, float, float]]
    attributes: dict[str, tuple[str, ...]]
    source: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> RegionAtlas:
        if path is None:
            text = resources.files("cfaudit.discover").joinpath(DEFAULT_REGIONS).read_text(encoding="utf-8")
            origin = f"cfaudit/discover/{DEFAULT_REGIONS}"
        else:
            file = Path(path)
            if not file.is_file():
                raise CfauditError(f"{file}: no such regions file")
            text, origin = file.read_text(encoding="utf-8"), str(file)
        try:
            data = load_yaml_text(text) or {}
        except yaml.YAMLError as error:
            raise CfauditError(f"{origin}: not valid YAML ({error})") from None
        if not isinstance(data, dict) or set(data) - {"boxes", "attributes"}:
            raise CfauditError(f"{origin}: expected the keys 'boxes' and 'attributes' only")
        boxes: dict[str, tuple[float, float, float, float]] = {}
        for name, box in (data.get("boxes") or {}).items():
            if not (
                isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
            ):
                raise CfauditError(f"{origin}: box {name!r} must be [x0, y0, x1, y1] in 0..1, got {box!r}")
            x0, y0, x1, y1 = (float(v) for v in box)
            if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
                raise CfauditError(
                    f"{origin}: box {name!r} = {box} must satisfy 0 <= x0 < x1 <= 1, 0 <= y0 < y1 <= 1"
                )
            boxes[str(name)] = (x0, y0, x1, y1)
        attributes: dict[str, tuple[str, ...]] = {}
        for name, regions in (data.get("attributes") or {}).items():
            regions = [regions] if isinstance(regions, str) else regions
            unknown = [r for r in regions if r not in boxes]
            if unknown:
                raise CfauditError(
                    f"{origin}: attribute {name!r} names unknown box(es) {', '.join(map(str, unknown))}; "
                    f"defined: {', '.join(boxes)}"
                )
            attributes[str(name)] = tuple(regions)
        return cls(boxes, attributes, origin)

    def is_global(self, attributes: Iterable[str]) -> bool:
        """True when any attribute may change the whole image (unlisted, or mapped to a full-image box)."""
        for attribute in attributes:
            regions = self.attributes.get(attribute)
            if not regions or any(self.boxes[r] == (0.0, 0.0, 1.0, 1.0) for r in regions):
                return True
        return False

    def mask(self, attributes: Iterable[str], size: int) -> np.ndarray:
        """Boolean ``size x size`` mask of the expected region of ``attributes`` (all True when global)."""
        attributes = list(attributes)
        if self.is_global(attributes):
            return np.ones((size, size), dtype=bool)
        out = np.zeros((size, size), dtype=bool)
        for attribute in attributes:
            for region in self.attributes[attribute]:
                x0, y0, x1, y1 = self.boxes[region]
                out[
                    math.floor(y0 * size) : math.ceil(y1 * size), math.floor(x0 * size) : math.ceil(x1 * size)
                ] = True
        return out
