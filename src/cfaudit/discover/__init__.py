"""Discovery of hidden relations: systematic edits, co-change against controls, change clusters, ranking.

``cfaudit.discover(model=..., index=..., classifier=..., out=..., do=[...])`` runs what ``cfaudit discover``
runs (the package itself is callable; :func:`cfaudit.discover.api.discover`). With models already loaded, use
:func:`run_discovery` (an editor and a classifier object).
"""

import sys
import types
from typing import Any

from cfaudit.discover.api import DiscoveryOptions, discover
from cfaudit.discover.atlas import RegionAtlas
from cfaudit.discover.candidates import CandidateSettings
from cfaudit.discover.clusters import RegionSettings
from cfaudit.discover.plan import build_plan, default_interventions
from cfaudit.discover.run import DiscoveryResult, DiscoverySettings
from cfaudit.discover.run import discover as run_discovery

__all__ = [
    "CandidateSettings",
    "DiscoveryOptions",
    "DiscoveryResult",
    "DiscoverySettings",
    "RegionAtlas",
    "RegionSettings",
    "build_plan",
    "default_interventions",
    "discover",
    "run_discovery",
]


class _CallableModule(types.ModuleType):
    """Lets ``import cfaudit; cfaudit.discover(...)`` mirror the command line."""

    def __call__(self, *args: Any, **kwargs: Any) -> DiscoveryResult | None:
        return discover(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
