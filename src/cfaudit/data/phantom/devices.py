"""Support devices: where each kind goes (sampled) and how it is drawn (PIL lines and shapes, one layer per kind).

Each kind has its own look and place, as on real radiographs:

* ``pacemaker``: a bright rounded-rectangle generator below the clavicle (usually on the patient's left) with
  one or two leads curving through the superior vena cava into the right atrium and ventricle;
* ``chest_tube``: a thick tube with a lucent lumen entering the lateral chest wall low and running up to the apex;
* ``central_line``: a thin line from the neck or subclavian region down to the superior vena cava;
* ``endotracheal_tube``: a wide faint tube in the trachea with a radiopaque stripe, tip above the carina;
* ``nasogastric_tube``: a thin line down the oesophagus, through the diaphragm, curling in the stomach;
* ``ecg_leads``: round monitoring electrodes on the chest with thin wires to the edge of the image.

Geometry is sampled once (in normalised body coordinates, see :mod:`cfaudit.data.phantom.anatomy`) so that the
ground truth records it before anything is drawn; drawing maps it through the image's pose to pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from cfaudit.data.phantom.anatomy import Anatomy
from cfaudit.data.phantom.config import DEVICE_KINDS

Point = tuple[float, float]

#: Attenuation added by a fully drawn device pixel (metal brightest, plastic tubes fainter).
DEVICE_ATTENUATION: dict[str, float] = {
    "pacemaker": 1.6,
    "chest_tube": 0.55,
    "central_line": 0.6,
    "endotracheal_tube": 0.6,
    "nasogastric_tube": 0.6,
    "ecg_leads": 1.0,
}


@dataclass(frozen=True)
class Stroke:
    """One drawn element: a polyline (``width`` in normalised units) or a filled shape, at a gray level 0..1."""

    shape: str  # "line", "box" (rounded rectangle: points = two corners) or "ring" (points = centre, radius)
    points: tuple[Point, ...]
    width: float
    level: float = 1.0


@dataclass(frozen=True)
class Device:
    kind: str
    side: str  # "left" / "right" (patient's side) or "midline"
    landmarks: dict[
        str, Point
    ]  # named key points (tip, generator centre, entry...) in normalised body coordinates
    strokes: tuple[Stroke, ...] = field(repr=False)

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "side": self.side,
            "landmarks": {name: [round(x, 4), round(y, 4)] for name, (x, y) in self.landmarks.items()},
        }


def curve(points: list[Point], n: int = 24) -> tuple[Point, ...]:
    """``n`` points along the Bézier curve whose control points are ``points`` (Bernstein form)."""
    control = np.asarray(points, dtype=float)
    degree = len(control) - 1
    t = np.linspace(0.0, 1.0, n)[:, None]
    basis = np.hstack([math.comb(degree, k) * t**k * (1 - t) ** (degree - k) for k in range(degree + 1)])
    return tuple((float(x), float(y)) for x, y in basis @ control)


def sample_device(kind: str, anatomy: Anatomy, rng: np.random.Generator, *, pacemaker_left: float) -> Device:
    """Place one device of ``kind`` on this anatomy."""
    a = anatomy
    w = a.thorax_half_width
    top, cp = a.lung_top, a.costophrenic_y
    jitter = lambda scale: float(rng.normal(0.0, scale))  # noqa: E731
    if kind == "pacemaker":
        sign = 1.0 if rng.random() < pacemaker_left else -1.0
        cx, cy = sign * (0.5 * w + jitter(0.04)), top + 0.24 + jitter(0.03)
        half_w, half_h = 0.085 * (1 + jitter(0.08)), 0.06 * (1 + jitter(0.08))
        svc = (-0.07 + jitter(0.01), top + 0.5)
        atrium = (-0.09 + jitter(0.02), a.heart_center_y - 0.12)
        ventricle = (0.5 * a.heart_ctr * w + jitter(0.03), a.heart_center_y + 0.12 + jitter(0.02))
        start = (cx - sign * half_w * 0.8, cy - half_h * 0.5)
        loop = (cx - sign * 0.02, cy + half_h + 0.07)
        lead_v = curve([start, loop, (cx - sign * 0.2, top + 0.12), svc, (svc[0], atrium[1]), ventricle], 40)
        lead_a = curve(
            [start, (cx - sign * 0.22, top + 0.14), svc, (atrium[0] - 0.03, atrium[1] - 0.1), atrium], 32
        )
        strokes = [
            Stroke("line", lead_v, 0.012),
            Stroke("line", lead_a, 0.012),
            Stroke("box", ((cx - half_w, cy - half_h), (cx + half_w, cy + half_h)), 0.02),
            Stroke(
                "box",
                ((cx - half_w * 0.55, cy - half_h * 0.5), (cx + half_w * 0.2, cy + half_h * 0.45)),
                0.01,
                0.8,
            ),
        ]
        landmarks = {"generator": (cx, cy), "lead_tip_ventricle": ventricle, "lead_tip_atrium": atrium}
        side = "left" if sign > 0 else "right"
    elif kind == "chest_tube":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        entry = (sign * (w + 0.1), cp - 0.22 + jitter(0.05))
        tip = (sign * (0.45 * w + jitter(0.05)), top + 0.14 + jitter(0.04))
        path = curve([entry, (sign * (0.8 * w), cp - 0.3), (sign * (0.85 * w), top + 0.3), tip], 32)
        strokes = [Stroke("line", path, 0.04), Stroke("line", path, 0.013, 0.35)]
        landmarks = {"entry": entry, "tip": tip}
        side = "left" if sign > 0 else "right"
    elif kind == "central_line":
        sign = -1.0 if rng.random() < 0.7 else 1.0
        entry = (sign * (0.55 + jitter(0.05)), top - 0.1 + jitter(0.03))
        tip = (-0.06 + jitter(0.015), top + 0.58 + jitter(0.04))
        path = curve([entry, (sign * 0.2, top + 0.0), (-0.06, top + 0.2), tip], 32)
        strokes = [Stroke("line", path, 0.014)]
        landmarks = {"entry": entry, "tip": tip}
        side = "left" if sign > 0 else "right"
    elif kind == "endotracheal_tube":
        x0 = jitter(0.01)
        tip = (x0 + jitter(0.01), top + 0.26 + jitter(0.04))
        path = curve([(x0, -1.05), (x0 + 0.01, (top - 1.05) / 2), tip], 16)
        walls = [tuple((x + dx, y) for x, y in path) for dx in (-0.026, 0.026)]
        stripe = tuple((x - 0.012, y) for x, y in path)
        strokes = [
            Stroke("line", walls[0], 0.012, 0.6),
            Stroke("line", walls[1], 0.012, 0.6),
            Stroke("line", stripe, 0.01),
        ]
        landmarks = {"tip": tip}
        side = "midline"
    elif kind == "nasogastric_tube":
        x0 = 0.03 + jitter(0.01)
        stomach = (0.32 * w / 0.72 + jitter(0.04), a.dome_left + 0.22 + jitter(0.03))
        path = curve(
            [(x0, -1.05), (x0 + 0.02, top + 0.3), (0.06, a.dome_left), (0.2, a.dome_left + 0.12), stomach], 40
        )
        curl = curve(
            [stomach, (stomach[0] + 0.1, stomach[1] + 0.08), (stomach[0] + 0.02, stomach[1] + 0.12)], 12
        )
        strokes = [Stroke("line", path + curl, 0.014)]
        landmarks = {"tip": curl[-1], "stomach": stomach}
        side = "midline"
    elif kind == "ecg_leads":
        spots = [(-0.6 * w, top + 0.02), (0.6 * w, top + 0.02), (0.62 * w, cp - 0.02), (-0.62 * w, cp - 0.02)]
        count = int(rng.integers(3, 5))
        strokes = []
        landmarks = {}
        for i, (sx, sy) in enumerate(spots[:count]):
            centre = (sx + jitter(0.04), sy + jitter(0.04))
            out_x = math.copysign(1.1, centre[0])
            wire = curve(
                [
                    centre,
                    (centre[0] + 0.2 * math.copysign(1, centre[0]), centre[1] - 0.25),
                    (out_x, centre[1] - 0.5),
                ],
                20,
            )
            strokes += [Stroke("line", wire, 0.008, 0.8), Stroke("ring", (centre, (0.035, 0.0)), 0.012)]
            landmarks[f"electrode_{i + 1}"] = centre
        side = "midline"
    else:  # pragma: no cover - config validation keeps kinds to DEVICE_KINDS
        raise ValueError(f"unknown device kind {kind!r}")
    return Device(kind, side, landmarks, tuple(strokes))


def draw_device(device: Device, size: int, to_pixels: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Draw one device's strokes into a float32 layer (0..1) of ``size`` x ``size``.

    ``to_pixels`` maps an array of normalised body points (N, 2) to pixel coordinates (N, 2).
    """
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    scale = size / 2.0
    for stroke in device.strokes:
        level = round(255 * stroke.level)
        width = max(1, round(stroke.width * scale))
        if stroke.shape == "line":
            pixels = to_pixels(np.asarray(stroke.points, dtype=float))
            draw.line([tuple(p) for p in pixels.tolist()], fill=level, width=width, joint="curve")
        elif stroke.shape == "box":
            corners = to_pixels(np.asarray(stroke.points, dtype=float))
            (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
            radius = max(1, round(0.25 * min(x1 - x0, y1 - y0)))
            draw.rounded_rectangle((x0, y0, x1, y1), radius=radius, fill=level)
        elif stroke.shape == "ring":
            (centre, (radius, _)) = stroke.points
            cx, cy = to_pixels(np.asarray([centre], dtype=float))[0]
            r = max(1.5, radius * scale)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=level, width=width)
            dot = max(1.0, r * 0.3)
            draw.ellipse((cx - dot, cy - dot, cx + dot, cy + dot), fill=level)
    return np.asarray(layer, dtype=np.float32) * (1.0 / 255.0)


__all__ = ["DEVICE_ATTENUATION", "DEVICE_KINDS", "Device", "Stroke", "draw_device", "sample_device"]
