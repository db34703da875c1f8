"""Where an edit changed the image: expected regions, change components, and recurring change clusters.

For one intervention, each image's signed difference map (counterfactual - null edit) is brought to a common
``grid`` (area averaging), thresholded at ``max(threshold, noise_k * robust sigma)``, and split into connected
components of one sign outside the intervention's expected region (:class:`RegionAtlas`). Components of many
images are grouped by position and sign into **change clusters** (greedy, nearest centre within ``radius``):
a cluster present in a large share of the edited images, and not in the controls, is something the edit
changes that the intervention did not name.

Each cluster is tested against its controls over images (:func:`presence`,
:func:`~cfaudit.discover.significance.presence_p`): its place is found from the edits themselves, so whether an
image's edit changes that place is judged at the centre of the *other* images' members (leave one out), which
keeps an image from voting for the place where it is then counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cfaudit.discover.atlas import RegionAtlas
from cfaudit.discover.real_images import data_support
from cfaudit.discover.significance import presence_p
from cfaudit.errors import CfauditError


@dataclass(frozen=True)
class RegionSettings:
    grid: int = 64
    #: Smallest change counted, in image intensity units (0..1): 0.08 is ~20 gray levels of 255.
    threshold: float = 0.08
    #: ... or this many robust standard deviations of the map, whichever is larger.
    noise_k: float = 4.0
    #: Smallest component, as a share of the image's area.
    min_area: float = 0.001
    #: Components whose centres lie within this distance (image units) join one cluster.
    radius: float = 0.12
    #: Clusters in fewer images than this are not reported.
    min_images: int = 3
    #: Diffuse changes (a whole lung field brightening) do not count: a change must also stand out from the
    #: median of a window of this width (share of the image side), which keeps compact, object-like changes
    #: up to about half the window across. 0: off.
    highpass: float = 0.25
    #: Components centred this close to the image's edge (share of the side) are ignored: collimation edges
    #: and the autoencoder's border artefacts change with any edit.
    border: float = 0.04


@dataclass
class Component:
    image_id: str
    sign: int
    x: float
    y: float
    area: float
    mass: float
    box: tuple[float, float, float, float]
    pixels: np.ndarray = field(repr=False)  # flat indices into the grid


@dataclass
class Cluster:
    sign: int
    members: list[Component] = field(default_factory=list)

    @property
    def x(self) -> float:
        return float(np.average([m.x for m in self.members], weights=[m.mass for m in self.members]))

    @property
    def y(self) -> float:
        return float(np.average([m.y for m in self.members], weights=[m.mass for m in self.members]))

    @property
    def images(self) -> list[str]:
        return sorted({m.image_id for m in self.members})

    def box(self) -> tuple[float, float, float, float]:
        boxes = np.array([m.box for m in self.members])
        return (
            float(np.percentile(boxes[:, 0], 10)),
            float(np.percentile(boxes[:, 1], 10)),
            float(np.percentile(boxes[:, 2], 90)),
            float(np.percentile(boxes[:, 3], 90)),
        )


def to_grid(difference: np.ndarray, grid: int) -> np.ndarray:
    """Area-average a square map to ``grid x grid`` (nearest-size crop when not divisible)."""
    size = difference.shape[0]
    if difference.ndim != 2 or difference.shape[0] != difference.shape[1]:
        raise CfauditError(f"difference maps must be square 2-D arrays, got shape {difference.shape}")
    if size == grid:
        return difference.astype(np.float32)
    if size % grid == 0:
        k = size // grid
        return difference.reshape(grid, k, grid, k).mean(axis=(1, 3)).astype(np.float32)
    from PIL import Image

    return np.asarray(
        Image.fromarray(difference.astype(np.float32)).resize((grid, grid), Image.Resampling.BOX),
        dtype=np.float32,
    )


def local_detail(array: np.ndarray, settings: RegionSettings) -> np.ndarray:
    """``array`` minus its local background (a median over a window of ``settings.highpass`` of the side).

    A median ignores objects smaller than about half its window, so a compact change keeps its full size and
    leaves no halo around it, while diffuse shading (a lung field brightening) is removed."""
    if settings.highpass <= 0:
        return array
    from scipy import ndimage

    window = max(3, round(settings.highpass * array.shape[0]) | 1)
    return array - ndimage.median_filter(array, size=window, mode="nearest")


def components(
    image_id: str, difference: np.ndarray, settings: RegionSettings, outside: np.ndarray | None = None
) -> list[Component]:
    """Connected same-sign components of a grid-sized signed map where the change exceeds the threshold both
    in the map and in its :func:`local_detail`."""
    from scipy import ndimage

    grid = settings.grid
    d = difference
    detail = local_detail(difference, settings)
    sigma = 1.4826 * float(np.median(np.abs(detail - np.median(detail))))
    threshold = max(settings.threshold, settings.noise_k * sigma)
    found: list[Component] = []
    structure = np.ones((3, 3), dtype=bool)
    for sign in (1, -1):
        # Large in the map itself (no high-pass halo around a strong change counts) and stands out from its
        # surroundings (diffuse shading does not count).
        mask = ((sign * d) >= threshold) & ((sign * detail) >= threshold)
        if outside is not None:
            mask &= outside
        labels, count = ndimage.label(mask, structure=structure)
        for k in range(1, count + 1):
            pixels = np.flatnonzero(labels == k)
            area = pixels.size / (grid * grid)
            if area < settings.min_area:
                continue
            rows, cols = np.divmod(pixels, grid)
            weights = np.abs(d.flat[pixels])
            cx = float(np.average(cols + 0.5, weights=weights) / grid)
            cy = float(np.average(rows + 0.5, weights=weights) / grid)
            if min(cx, cy, 1 - cx, 1 - cy) < settings.border:
                continue
            found.append(
                Component(
                    image_id=image_id,
                    sign=sign,
                    x=cx,
                    y=cy,
                    area=float(area),
                    mass=float(weights.sum() / (grid * grid)),
                    box=(
                        cols.min() / grid,
                        rows.min() / grid,
                        (cols.max() + 1) / grid,
                        (rows.max() + 1) / grid,
                    ),
                    pixels=pixels,
                )
            )
    return found


def cluster_components(parts: Sequence[Component], radius: float) -> list[Cluster]:
    """Greedy grouping by position and sign: largest changes first, each joins the nearest centre within
    ``radius`` (centres are mass-weighted means of their members) or starts a cluster."""
    clusters: list[Cluster] = []
    centres: list[tuple[float, float, float]] = []  # x * mass, y * mass, mass sums
    for part in sorted(parts, key=lambda c: -c.mass):
        best, best_distance = None, radius
        for k, cluster in enumerate(clusters):
            if cluster.sign != part.sign:
                continue
            sx, sy, sm = centres[k]
            distance = math.hypot(sx / sm - part.x, sy / sm - part.y)
            if distance <= best_distance:
                best, best_distance = k, distance
        if best is None:
            clusters.append(Cluster(part.sign, [part]))
            centres.append((part.x * part.mass, part.y * part.mass, part.mass))
        else:
            clusters[best].members.append(part)
            sx, sy, sm = centres[best]
            centres[best] = (sx + part.x * part.mass, sy + part.y * part.mass, sm + part.mass)
    return clusters


def share_near(
    parts_by_image: Mapping[str, Sequence[Component]], x: float, y: float, sign: int, radius: float
) -> float:
    """Share of the images whose map has a same-sign component centred within ``radius`` of ``(x, y)``."""
    if not parts_by_image:
        return math.nan
    hits = sum(
        any(p.sign == sign and math.hypot(p.x - x, p.y - y) <= radius for p in parts)
        for parts in parts_by_image.values()
    )
    return hits / len(parts_by_image)


def presence(
    cluster: Cluster,
    image_ids: Sequence[str],
    edit_parts: Mapping[str, Sequence[Component]],
    null_parts: Mapping[str, Sequence[Component]],
    radius: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per image, whether its edit (first array) and its null edit (second) have a component of the cluster's
    sign within ``radius`` of the mass-weighted centre of the cluster's members in the *other* images.

    The leave-one-out centres come from the members' totals less each image's own share: one pass over the
    members and one over the images, however large the cluster."""
    edit = np.zeros(len(image_ids), dtype=bool)
    null = np.zeros(len(image_ids), dtype=bool)
    own: dict[str, list[float]] = {}  # per image: its members' sum of x * mass, y * mass and mass
    for m in cluster.members:
        sums = own.setdefault(m.image_id, [0.0, 0.0, 0.0])
        sums[0] += m.x * m.mass
        sums[1] += m.y * m.mass
        sums[2] += m.mass
    total_x = sum(s[0] for s in own.values())
    total_y = sum(s[1] for s in own.values())
    total_mass = sum(s[2] for s in own.values())
    for k, image_id in enumerate(image_ids):
        mine = own.get(image_id, (0.0, 0.0, 0.0))
        if len(own) - (image_id in own) == 0:
            continue
        mass = total_mass - mine[2]
        x = (total_x - mine[0]) / mass
        y = (total_y - mine[1]) / mass

        def near(parts: Sequence[Component], x: float = x, y: float = y) -> bool:
            return any(p.sign == cluster.sign and math.hypot(p.x - x, p.y - y) <= radius for p in parts)

        edit[k] = near(edit_parts.get(image_id, ()))
        null[k] = near(null_parts.get(image_id, ()))
    return edit, null


def member_mask(cluster: Cluster, image_id: str, grid: int) -> np.ndarray:
    """Boolean grid mask of this cluster's components in one image."""
    mask = np.zeros(grid * grid, dtype=bool)
    for member in cluster.members:
        if member.image_id == image_id:
            mask[member.pixels] = True
    return mask.reshape(grid, grid)


def describe_position(x: float, y: float) -> str:
    """Plain words for a position in image units (the patient's left is the image's right)."""
    vertical = "upper" if y < 0.4 else ("lower" if y > 0.65 else "middle")
    horizontal = "central" if abs(x - 0.5) < 0.12 else "patient's left" if x > 0.5 else "patient's right"
    return f"{vertical} {horizontal} chest" if horizontal != "central" else f"{vertical} central chest"


def cluster_summary(cluster: Cluster) -> dict[str, Any]:
    x0, y0, x1, y1 = cluster.box()
    return {
        "x": round(cluster.x, 4),
        "y": round(cluster.y, 4),
        "x0": round(x0, 4),
        "y0": round(y0, 4),
        "x1": round(x1, 4),
        "y1": round(y1, 4),
        "sign": cluster.sign,
        "area": round(float(np.mean([m.area for m in cluster.members])), 5),
        "where": describe_position(cluster.x, cluster.y),
    }


CLUSTER_COLUMNS: tuple[str, ...] = (
    "intervention", "cluster", "n_images", "images_with", "frequency", "ci_low", "ci_high", "null_control",
    "offtarget_control", "x", "y", "x0", "y0", "x1", "y1", "sign", "area", "where", "head", "head_change", "data_support", "p_value", "data_p", "q_value", "detectable", "examples",
)  # fmt: skip
MEMBER_COLUMNS: tuple[str, ...] = (
    "intervention", "cluster", "image_id", "x", "y", "area", "sign", "mass", "grid", "pixels",
)  # fmt: skip


class EditComponents:
    """The change components of every edit, collected one map at a time so that no map is kept.

    ``anywhere[intervention][image_id]``: components anywhere in the image (centres only: the off-target control
    of the other interventions' clusters); ``outside[intervention][image_id]``: those outside the expected region
    of each intervention whose regions are analysed (with their pixels: the clusters' members);
    ``null[image_id]``: the image's null-edit components. Memory grows with the components found, not with the
    maps: a few small records per edit."""

    def __init__(self, interventions: Sequence[Any], atlas: RegionAtlas, settings: RegionSettings) -> None:
        self.settings = settings
        self.anywhere: dict[str, dict[str, list[Component]]] = {str(i): {} for i in interventions}
        self.outside: dict[str, dict[str, list[Component]]] = {}
        self._masks: dict[str, np.ndarray] = {}
        for intervention in interventions:
            attributes = tuple(n for n, _ in intervention.changes)
            if not atlas.is_global(attributes):
                self._masks[str(intervention)] = ~atlas.mask(attributes, settings.grid)
                self.outside[str(intervention)] = {}
        self.null: dict[str, list[Component]] = {}

    def add_null(self, image_id: str, difference: np.ndarray) -> None:
        """One image's grid map of null edit - reconstruction."""
        self.null[image_id] = components(image_id, difference, self.settings)

    def add_edit(self, intervention: str, image_id: str, difference: np.ndarray) -> None:
        """One edit's grid map of counterfactual - null edit (interventions not collected are ignored)."""
        if intervention not in self.anywhere:
            return
        self.anywhere[intervention][image_id] = [
            _centre_only(c) for c in components(image_id, difference, self.settings)
        ]
        if intervention in self._masks:
            self.outside[intervention][image_id] = components(
                image_id, difference, self.settings, self._masks[intervention]
            )


_NO_PIXELS = np.zeros(0, dtype=np.int64)


def _centre_only(component: Component) -> Component:
    return Component(
        component.image_id, component.sign, component.x, component.y, component.area, component.mass,
        component.box, _NO_PIXELS,
    )  # fmt: skip


def collect_components(
    edits: Any,
    maps: Mapping[str, Any],
    interventions: Sequence[Any],
    atlas: RegionAtlas,
    settings: RegionSettings,
) -> EditComponents:
    """:class:`EditComponents` of maps held in memory (``maps["edit"]`` per row of ``edits``, ``maps["null"]``
    per image)."""
    found = EditComponents(interventions, atlas, settings)
    for image_id, difference in maps["null"].items():
        found.add_null(str(image_id), difference)
    names = edits["intervention"].to_numpy()
    image_ids = edits["image_id"].astype(str).to_numpy()
    for r in range(len(edits)):
        found.add_edit(str(names[r]), image_ids[r], maps["edit"][r])
    return found


def clusters_of(
    edits: Any,
    found: EditComponents,
    interventions: Sequence[Any],
    atlas: RegionAtlas,
    settings: RegionSettings,
    scores: Mapping[str, Any] | None = None,
    data: tuple[Any, ...] | None = None,
    records: Mapping[str, Mapping[str, Any]] | None = None,
    policy: Any = None,
) -> tuple[Any, Any]:
    """Change clusters of every intervention (outside its expected region) with their controls.

    ``found`` holds the components of every edit (:func:`collect_components`, from one grid map per row of
    ``edits``: counterfactual - null edit, and one per image: null edit - reconstruction). ``data`` is
    ``(table, details)`` or ``(table, details, grids)``: the records of real images of a held-out split, their
    :func:`local_detail` at the grid (and the grid images), from which
    :func:`~cfaudit.discover.real_images.data_support` says whether real images with the target attribute differ
    in the cluster's footprint, in the cluster's direction, from those with the source attribute, and with what
    p-value. Returns the cluster table and the member table.
    """
    import pandas as pd

    from cfaudit.discover.heads import HEAD_COLUMNS, intervened_heads
    from cfaudit.evaluate.metrics import bootstrap_ci

    grid = settings.grid
    names = edits["intervention"].to_numpy()
    image_ids = edits["image_id"].astype(str).to_numpy()
    # Every family's components anywhere in the image: the off-target control of the others' clusters
    centres = {name: _Centres(parts) for name, parts in found.anywhere.items() if parts}
    null_parts = found.null
    position = {image_id: k for k, image_id in enumerate(scores["images"])} if scores else {}

    cluster_rows: list[dict[str, Any]] = []
    member_rows: list[dict[str, Any]] = []
    for intervention in interventions:
        name = str(intervention)
        rows = np.flatnonzero(names == name)
        attributes = tuple(n for n, _ in intervention.changes)
        if rows.size == 0 or atlas.is_global(attributes):
            continue
        parts_by_image = found.outside[name]
        parts = [p for found_parts in parts_by_image.values() for p in found_parts]
        clustered = [
            c for c in cluster_components(parts, settings.radius) if len(c.images) >= settings.min_images
        ]
        clustered.sort(key=lambda c: (-len(c.images), -sum(m.mass for m in c.members)))
        family_images = [image_ids[r] for r in rows]
        deltas = _head_deltas(scores, position, rows, image_ids, intervened_heads(attributes), HEAD_COLUMNS)
        family_nulls = _Centres({i: null_parts.get(i, []) for i in family_images})
        for k, cluster in enumerate(clustered, start=1):
            members_of = set(cluster.images)
            present = np.array([i in members_of for i in family_images], dtype=float)
            interval = bootstrap_ci(present, resamples=1000, seed=k)
            others = [
                other_centres.share(cluster.x, cluster.y, cluster.sign, settings.radius)
                for other, other_centres in centres.items()
                if other != name
            ]
            offtarget = float(np.median(others)) if others else math.nan
            changed, null_changed = presence(
                cluster, family_images, parts_by_image, null_parts, settings.radius
            )
            support, support_p = (
                data_support(cluster, intervention, data, [records[i] for i in family_images], grid, policy)
                if data is not None and records is not None
                else (math.nan, math.nan)
            )
            head, head_change = _name_cluster(deltas, present)
            cluster_rows.append(
                {
                    "intervention": name,
                    "cluster": k,
                    "n_images": len(family_images),
                    "images_with": len(members_of),
                    "frequency": interval.estimate,
                    "ci_low": interval.low,
                    "ci_high": interval.high,
                    "null_control": family_nulls.share(cluster.x, cluster.y, cluster.sign, settings.radius),
                    "offtarget_control": offtarget,
                    **cluster_summary(cluster),
                    "head": head,
                    "head_change": head_change,
                    "data_support": round(support, 4) if not math.isnan(support) else math.nan,
                    "p_value": presence_p(changed, null_changed, offtarget),
                    "data_p": support_p,
                    "q_value": math.nan,  # set once the run's whole family is known
                    "detectable": math.nan,
                    "examples": ";".join(
                        dict.fromkeys(m.image_id for m in sorted(cluster.members, key=lambda m: -m.mass))
                    ),
                }
            )
            for member in cluster.members:
                member_rows.append(
                    {
                        "intervention": name,
                        "cluster": k,
                        "image_id": member.image_id,
                        "x": round(member.x, 4),
                        "y": round(member.y, 4),
                        "area": round(member.area, 5),
                        "sign": member.sign,
                        "mass": round(member.mass, 6),
                        "grid": grid,
                        "pixels": " ".join(map(str, member.pixels.tolist())),
                    }
                )
    return (
        pd.DataFrame(cluster_rows, columns=list(CLUSTER_COLUMNS)),
        pd.DataFrame(member_rows, columns=list(MEMBER_COLUMNS)),
    )


class _Centres:
    """The component centres of a set of images as arrays: :func:`share_near` without a loop per call."""

    def __init__(self, parts_by_image: Mapping[str, Sequence[Component]]) -> None:
        self.images = len(parts_by_image)
        owner, x, y, sign = [], [], [], []
        for k, parts in enumerate(parts_by_image.values()):
            for p in parts:
                owner.append(k)
                x.append(p.x)
                y.append(p.y)
                sign.append(p.sign)
        self.owner = np.array(owner, dtype=np.int64)
        self.x, self.y = np.array(x, dtype=np.float64), np.array(y, dtype=np.float64)
        self.sign = np.array(sign, dtype=np.int64)

    def share(self, x: float, y: float, sign: int, radius: float) -> float:
        """Share of the images with a same-sign component centred within ``radius`` of ``(x, y)``."""
        if not self.images:
            return math.nan
        near = (self.sign == sign) & (np.hypot(self.x - x, self.y - y) <= radius)
        return np.unique(self.owner[near]).size / self.images


def _head_deltas(
    scores: Mapping[str, Any] | None,
    position: Mapping[str, int],
    rows: np.ndarray,
    image_ids: np.ndarray,
    targeted: set[str],
    heads: Sequence[str],
) -> dict[str, np.ndarray]:
    """Per head that may name a cluster, the change of each of an intervention's edits beyond its null edit."""
    if not scores:
        return {}
    null_rows = [position[i] for i in image_ids[rows]]
    return {
        head: scores["counterfactual"][head][rows] - scores["null"][head][null_rows]
        for head in heads
        if not (head in targeted or head == "age" or head.startswith("race:"))
        # name by a probability head: age and race move with everything an edit does
    }


def _name_cluster(deltas: Mapping[str, np.ndarray], present: np.ndarray) -> tuple[str, float]:
    """The classifier head that moves most differently in images with the cluster than in those without
    (all images of the intervention when every one has it): a name for what the cluster is. ``deltas``:
    :func:`_head_deltas`."""
    if not deltas:
        return "", math.nan
    best, best_change = "", 0.0
    for head, delta in deltas.items():
        with_cluster = delta[present == 1]
        without = delta[present == 0]
        change = float(with_cluster.mean() - (without.mean() if without.size else 0.0))
        spread = with_cluster.var(ddof=1) / with_cluster.size if with_cluster.size > 1 else math.inf
        spread += without.var(ddof=1) / without.size if without.size > 1 else 0.0
        if abs(change) < 3.0 * math.sqrt(spread):  # not told from noise (Welch's t below 3)
            continue
        if abs(change) > abs(best_change):
            best, best_change = head, change
    if abs(best_change) < 0.1:  # no head moves with it: leave it unnamed rather than name it by noise
        return "", math.nan
    return best, round(best_change, 4)
