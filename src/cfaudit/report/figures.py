"""The report's pictures: matplotlib figures and downscaled images, each returned as a PNG ``data:`` URI.

Figures are made with matplotlib's object API (:class:`~matplotlib.figure.Figure`, no pyplot), so building a
report never touches a global backend or leaves figures open. Signed maps use one diverging colour map
(:data:`DIVERGING`: blue where the counterfactual is darker or a quantity falls, white for no change, red where
it is brighter or rises) on a scale symmetric about zero, so that white always means "no change".
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from cfaudit.errors import CfauditError

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

P = ParamSpec("P")
R = TypeVar("R")

DIVERGING = "RdBu_r"
MISSING_COLOUR = "#e5e7eb"
TEXT_COLOUR = "#1f2937"
MUTED_COLOUR = "#6b7280"
FRAME_COLOUR = "#cbd2d9"
DPI = 110
#: Example thumbnails are drawn at this many inches per panel (about 140 px at :data:`DPI`).
PANEL_INCHES = 1.3
_STYLE: dict[RcKeyType, Any] = {
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": TEXT_COLOUR,
    "xtick.color": TEXT_COLOUR,
    "ytick.color": TEXT_COLOUR,
    "text.color": TEXT_COLOUR,
}


def _diverging(missing: str = MISSING_COLOUR) -> Colormap:
    """The diverging colour map; cells without a value (NaN) are drawn in ``missing``."""
    return colormaps[DIVERGING].with_extremes(bad=missing)


def _styled(make: Callable[P, R]) -> Callable[P, R]:
    """Run a figure function under the report's style, leaving matplotlib's global settings untouched."""

    @functools.wraps(make)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(_STYLE):
            return make(*args, **kwargs)

    return wrapper


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    figure.patch.set_facecolor("white")
    return figure


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_uri(figure: Figure) -> str:
    """The figure as an RGB PNG data URI (drawn once by Agg; no alpha channel, which only adds bytes)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    out = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(out, format="PNG", compress_level=6)
    return png_uri(out.getvalue())


def image_file_uri(path: Path, max_side: int = 480) -> str:
    """An image file, shrunk so that its longer side is at most ``max_side`` pixels, as a PNG data URI."""
    try:
        with Image.open(path) as image:
            image.load()
            picture = image.convert("RGB") if image.mode not in ("L", "RGB") else image.copy()
    except (OSError, SyntaxError, ValueError) as error:
        raise CfauditError(f"{path}: cannot read the image ({error}); re-create it or remove it") from None
    scale = max_side / max(picture.size)
    if scale < 1:
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=6)
    return png_uri(out.getvalue())


def _annotate(
    axes, values: np.ndarray, norm: Normalize, bold: np.ndarray | None = None, digits: int = 2
) -> None:
    """Write each cell's value into a heatmap, white on dark cells."""
    rows, cols = values.shape
    for i in range(rows):
        for j in range(cols):
            value = values[i, j]
            if not np.isfinite(value):
                continue
            strength = abs(norm(value) - 0.5) * 2 if np.isfinite(norm(value)) else 0
            axes.text(
                j,
                i,
                f"{value:.{digits}f}".replace("-", "−"),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if strength > 0.6 else TEXT_COLOUR,
                fontweight="bold" if bold is not None and bold[i, j] else "normal",
            )


def _tick(value: float) -> str:
    return f"{value:+.2g}".replace("-", "−")


def _symmetric_limit(*arrays: np.ndarray) -> float:
    values = np.concatenate([np.abs(a[np.isfinite(a)]).ravel() for a in arrays] + [np.zeros(1)])
    limit = float(values.max())
    return limit if limit > 0 else 1.0


# --- the data set ------------------------------------------------------------------------------------------


@_styled
def association_heatmap(matrix: pd.DataFrame) -> str:
    """The phi coefficients between binary labels: the lower triangle of the symmetric matrix, diagonal left out."""
    full = matrix.to_numpy(dtype=float).copy()
    full[np.triu_indices_from(full)] = np.nan
    values = full[1:, :-1]
    rows, columns = list(matrix.index[1:]), list(matrix.columns[:-1])
    size = len(rows)
    limit = _symmetric_limit(values)
    norm = Normalize(-limit, limit)
    figure = _new_figure(1.9 + 0.43 * size, 1.3 + 0.34 * size)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(values), cmap=_diverging("white"), norm=norm)
    axes.set_xticks(range(size), columns, rotation=40, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(size), rows)
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    if size <= 20:
        _annotate(axes, values, norm)
    bar = figure.colorbar(image, ax=axes, shrink=0.7, pad=0.02, aspect=25)
    bar.set_label("phi (correlation of yes/no labels)")
    bar.outline.set_visible(False)
    return figure_uri(figure)


# --- discovery ---------------------------------------------------------------------------------------------


def _column_scales(*frames: pd.DataFrame) -> dict[str, float]:
    """Colour scale per column: one shared scale for quantities in [-1, 1] (probabilities), an own one otherwise."""
    columns = list(frames[0].columns)
    own = {c: _symmetric_limit(*(f[c].to_numpy(dtype=float) for f in frames)) for c in columns}
    shared_columns = [c for c in columns if own[c] <= 1.0]
    shared = _symmetric_limit(*(f[c].to_numpy(dtype=float) for f in frames for c in shared_columns))
    return {c: (shared if c in shared_columns else own[c]) for c in columns}


@_styled
def cochange_heatmaps(
    effect: pd.DataFrame,
    label: pd.DataFrame,
    significant: pd.DataFrame | None = None,
    flagged: Sequence[tuple[str, str]] = (),
) -> str:
    """The co-change matrix (interventions x heads) beside the label-association matrix, on the same axes.

    Both panels share one colour scale per unit, so a cell means the same in both; a column whose values leave
    [-1, 1] (e.g. age in years) gets its own scale and a ``†`` in its label. Bold numbers: the ``significant``
    cells (the caller's choice: q <= alpha where the discovery has q-values, else an interval that excludes zero).
    Black frames: relations flagged by discovery.
    """
    label = label.reindex(index=effect.index, columns=effect.columns)
    scales = _column_scales(effect, label)
    columns = [f"{c} †" if scales[c] > 1.0 else c for c in effect.columns]
    rows, cols = effect.shape
    width = 2.6 + 2 * (0.5 * cols) + 1.0
    height = 1.5 + 0.34 * rows + 0.06 * max(len(c) for c in columns)
    figure = _new_figure(width, height)
    panels = figure.subplots(1, 2, sharey=True)
    norm = Normalize(-1.0, 1.0)
    titles = ("Co-change: what the edit changed", "Labels: what the metadata predicts")
    bold = (
        significant.reindex(index=effect.index, columns=effect.columns).fillna(False).to_numpy(bool)
        if (significant is not None)
        else None
    )
    image = None
    for axes, frame, title in zip(panels, (effect, label), titles, strict=True):
        values = frame.to_numpy(dtype=float)
        scaled = values / np.array([scales[c] for c in frame.columns])[None, :]
        image = axes.imshow(np.ma.masked_invalid(scaled), cmap=_diverging(), norm=norm, aspect="auto")
        axes.set_title(title, loc="left", fontweight="bold")
        axes.set_xticks(range(cols), columns, rotation=40, ha="right", rotation_mode="anchor")
        axes.tick_params(length=0)
        for spine in axes.spines.values():
            spine.set_visible(False)
        if rows * cols <= 600:
            _annotate_scaled(axes, values, scaled, bold if frame is effect else None)
    panels[0].set_yticks(range(rows), list(effect.index))
    for intervention, head in flagged:
        if intervention in effect.index and head in effect.columns:
            i, j = effect.index.get_loc(intervention), effect.columns.get_loc(head)
            panels[0].add_patch(
                Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.8)
            )
    assert image is not None
    shared = next((s for s in scales.values() if s <= 1.0), 1.0)
    bar = figure.colorbar(image, ax=list(panels), shrink=0.8, pad=0.01)
    bar.set_ticks(
        [-1, -0.5, 0, 0.5, 1], labels=[f"{v * shared:+.2f}".replace("-", "−") for v in (-1, -0.5, 0, 0.5, 1)]
    )
    bar.set_label("change in P(head)")
    bar.outline.set_visible(False)
    return figure_uri(figure)


def _annotate_scaled(axes, values: np.ndarray, scaled: np.ndarray, bold: np.ndarray | None) -> None:
    rows, cols = values.shape
    for i in range(rows):
        for j in range(cols):
            if not np.isfinite(values[i, j]):
                continue
            value = values[i, j]
            text = f"{value:+.1f}" if abs(value) >= 10 else f"{value:+.2f}"
            axes.text(
                j,
                i,
                text.replace("-", "−"),
                ha="center",
                va="center",
                fontsize=6.5,
                color="white" if abs(scaled[i, j]) > 0.6 else TEXT_COLOUR,
                fontweight="bold" if bold is not None and bold[i, j] else "normal",
            )


@_styled
def cluster_overlay(picture: np.ndarray, boxes: pd.DataFrame, title: str) -> str:
    """A mean difference map with the change clusters drawn as numbered boxes (normalised 0-1 coordinates)."""
    height, width = picture.shape[:2]
    figure = _new_figure(2.7, 2.95)
    axes = figure.add_subplot()
    axes.imshow(picture, cmap="gray" if picture.ndim == 2 else None, interpolation="antialiased")
    for _, box in boxes.iterrows():
        if not all(np.isfinite(box.get(k, math.nan)) for k in ("x0", "y0", "x1", "y1")):
            if np.isfinite(box.get("x", math.nan)) and np.isfinite(box.get("y", math.nan)):
                axes.plot(
                    box["x"] * width,
                    box["y"] * height,
                    marker="o",
                    markersize=9,
                    mfc="none",
                    mec="black",
                    mew=1.5,
                )
                axes.annotate(
                    str(box["cluster"]),
                    (box["x"] * width, box["y"] * height),
                    xytext=(6, 6),
                    textcoords="offset points",
                    fontsize=8,
                    fontweight="bold",
                )
            continue
        x0, y0, x1, y1 = (float(box[k]) for k in ("x0", "y0", "x1", "y1"))
        axes.add_patch(
            Rectangle(
                (x0 * width, y0 * height),
                (x1 - x0) * width,
                (y1 - y0) * height,
                fill=False,
                edgecolor="black",
                linewidth=1.4,
                linestyle="--",
            )
        )
        axes.text(
            x0 * width + 1,
            y0 * height + 1,
            str(box["cluster"]),
            va="top",
            ha="left",
            fontsize=7.5,
            fontweight="bold",
            color="black",
            bbox={"boxstyle": "square,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
    axes.set_title(title, fontsize=8.5, loc="left")
    axes.set_axis_off()
    return figure_uri(figure)


# --- edits -------------------------------------------------------------------------------------------------


@dataclass
class Example:
    """One edited image: the original (as the model saw it), the counterfactual and the signed difference."""

    image_id: str
    original: np.ndarray
    counterfactual: np.ndarray
    difference: np.ndarray
    original_label: str = "original"


def short_id(image_id: str, length: int = 10) -> str:
    return image_id if len(image_id) <= length else image_id[: length - 1] + "…"


@_styled
def edit_grid(examples: Sequence[Example]) -> tuple[str, float, int]:
    """Columns of original / counterfactual / signed difference, one column per image.

    Returns the PNG data URI, the colour scale and the picture's width in pixels (so that the page can show
    every grid at the same scale, whatever its number of columns).

    Every difference panel uses the same symmetric scale (the largest absolute change shown), so the panels can
    be compared with each other and with the colour bar beside the last one.
    """
    count = len(examples)
    scale = _symmetric_limit(*(e.difference for e in examples))
    norm = Normalize(-scale, scale)
    # Fixed margins in inches (row labels left, ids on top, the colour bar's ticks right), panels square.
    left, top, bottom, right, gap, bar = 0.32, 0.24, 0.06, 0.62, 0.06, 0.1
    width = left + count * PANEL_INCHES + (count - 1) * gap + gap + bar + right
    height = top + 3 * PANEL_INCHES + 2 * gap + bottom
    figure = Figure(figsize=(width, height), dpi=DPI)
    figure.patch.set_facecolor("white")
    grid = figure.add_gridspec(
        3, count + 1, width_ratios=[PANEL_INCHES] * count + [bar], left=left / width,
        right=1 - right / width, bottom=bottom / height, top=1 - top / height,
        wspace=gap / PANEL_INCHES, hspace=gap / PANEL_INCHES,
    )  # fmt: skip
    row_titles = ("original", "counterfactual", "difference")
    image = None
    for j, example in enumerate(examples):
        pictures = (example.original, example.counterfactual, example.difference)
        for i, picture in enumerate(pictures):
            axes = figure.add_subplot(grid[i, j])
            if i < 2:
                axes.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="antialiased")
            else:
                image = axes.imshow(picture, cmap=_diverging(), norm=norm, interpolation="antialiased")
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():  # white means "no change": frame the maps so their edge shows
                spine.set_visible(i == 2)
                spine.set_edgecolor(FRAME_COLOUR)
                spine.set_linewidth(0.6)
            if j == 0:
                axes.set_ylabel(row_titles[i], fontsize=8.5, labelpad=3)
            if i == 0:
                axes.set_title(short_id(example.image_id), fontsize=7.5, color=MUTED_COLOUR, pad=3)
                if example.original_label != "original":
                    axes.text(0.04, 0.04, example.original_label, transform=axes.transAxes, fontsize=6.5,
                              color="white", va="bottom")  # fmt: skip
    assert image is not None
    colour_bar = figure.colorbar(image, cax=figure.add_subplot(grid[2, count]))
    colour_bar.set_label("Δ intensity", fontsize=7.5, labelpad=2)
    colour_bar.ax.tick_params(labelsize=7)
    colour_bar.outline.set_visible(False)
    return figure_uri(figure), scale, round(width * DPI)


@_styled
def mean_map(mean: np.ndarray, count: int) -> str:
    """The mean signed difference over ``count`` images, with its own symmetric colour bar."""
    limit = _symmetric_limit(mean)
    figure = _new_figure(2.35, 2.75)
    axes = figure.add_subplot()
    image = axes.imshow(mean, cmap=_diverging(), norm=Normalize(-limit, limit), interpolation="antialiased")
    axes.set_title(f"mean difference, n = {count}", fontsize=8.5)
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(FRAME_COLOUR)
        spine.set_linewidth(0.6)
    bar = figure.colorbar(image, ax=axes, location="bottom", shrink=0.9, pad=0.03, aspect=18)
    bar.set_ticks([-limit, 0, limit], labels=[_tick(-limit), "0", _tick(limit)])
    bar.set_label("mean Δ intensity", fontsize=7.5)
    bar.ax.tick_params(labelsize=7)
    bar.outline.set_visible(False)
    return figure_uri(figure)
