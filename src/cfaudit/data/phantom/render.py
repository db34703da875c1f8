"""Drawing a plan: vectorised numpy on a cached coordinate grid, plus PIL for devices.

The image is built as an attenuation map (soft tissue, air in the lungs, heart and mediastinum, bones, findings,
devices) that a film curve turns into brightness; then the faint race-group grating and grain are added. Shapes
are soft-edged signed distances in normalised coordinates, so one plan renders at any size, and the label mask
is read off the same shapes. Smooth random fields (vessels, patchy opacity) are drawn at low resolution and
upsampled by PIL, which is far cheaper than blurring at full size.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from cfaudit.data.phantom.config import DEVICE_KINDS
from cfaudit.data.phantom.devices import DEVICE_ATTENUATION, draw_device
from cfaudit.data.phantom.plan import ImagePlan

#: Bit meanings of the ground-truth label map (``<image_id>_mask.png``, uint16): value & (1 << bit).
MASK_BITS: dict[str, int] = {
    "heart": 0,
    "lungs": 1,
    "effusion": 2,
    "pneumothorax": 3,
    "lung_lesion": 4,
    "airspace_opacity": 5,
    "edema": 6,
    "atelectasis": 7,
    "fracture": 8,
    "pleural_other": 9,
    **{f"device.{kind}": 10 + i for i, kind in enumerate(DEVICE_KINDS)},
}


@dataclass
class Rendered:
    image: np.ndarray  # uint8 (size, size)
    mask: np.ndarray  # uint16 (size, size), bits as in MASK_BITS
    measured: dict[str, Any]  # what the renderer measured on its own shapes (pixels)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    y, x = np.meshgrid(coords, coords, indexing="ij")
    return x, y


def _soft(distance: np.ndarray | float, eps: float) -> np.ndarray:
    """A soft inside indicator from a signed distance (positive inside), ramping over ``eps``."""
    return np.clip(np.asarray(distance, dtype=np.float32) * (1.0 / eps) + 0.5, 0.0, 1.0)


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Unit-variance-ish smooth random field: ``cells`` x ``cells`` Gaussian noise, bicubic upsampled."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))


def _side_sign(side: str) -> float:
    return 1.0 if side == "left" else -1.0


def render(plan: ImagePlan, size: int) -> Rendered:
    """Render a plan to an 8-bit image and its uint16 label mask at ``size`` x ``size`` pixels.

    Smooth anatomy is computed at half resolution for sizes of 192 px and more (then upsampled: X-ray
    anatomy has no detail that needs more, and it quarters the work); devices, the race grating and grain are
    drawn at full resolution.
    """
    a = plan.anatomy
    inner = size // 2 if size >= 192 and size % 2 == 0 else size
    # 1. Anatomy and findings as attenuation, plus their masks, at the inner resolution.
    attenuation, parts = _body_attenuation(plan, inner)
    mask = np.zeros((inner, inner), dtype=np.uint16)
    for name, part in parts.items():
        mask |= part.astype(np.uint16) << np.uint16(MASK_BITS[name])
    if inner != size:
        attenuation = np.asarray(
            Image.fromarray(attenuation, mode="F").resize((size, size), Image.Resampling.BICUBIC)
        )
        mask = mask.repeat(2, axis=0).repeat(2, axis=1)
    # 2. Devices, drawn through the pose at full resolution.
    theta = math.radians(a.rotation)
    cos_t, sin_t = math.cos(theta), math.sin(theta)

    def to_pixels(points: np.ndarray) -> np.ndarray:
        bx, by = points[:, 0], points[:, 1]
        image_x = cos_t * bx - sin_t * by + a.shift_x
        image_y = sin_t * bx + cos_t * by + a.shift_y
        return np.stack([(image_x + 1.0) * size / 2.0 - 0.5, (image_y + 1.0) * size / 2.0 - 0.5], axis=1)

    device_boxes: dict[str, list[int] | None] = {}
    for device in plan.devices:
        layer = draw_device(device, size, to_pixels)
        drawn = layer > 0
        mask |= drawn.astype(np.uint16) << np.uint16(MASK_BITS[f"device.{device.kind}"])
        device_boxes[device.kind] = _bbox(drawn)
        attenuation = attenuation + DEVICE_ATTENUATION[device.kind] * _blur3(layer)
    # 3. Film curve, the faint race-group grating over the body, grain.
    X, Y = _grid(size)
    brightness = 1.0 - np.exp(-2.3 * a.exposure * np.maximum(attenuation, 0.0))
    angle = math.radians(a.texture_angle)
    grating = np.cos(
        (X * math.cos(angle) + Y * math.sin(angle)) * (math.pi * a.texture_frequency) + a.texture_phase
    )
    brightness += (a.texture_amplitude * grating) * np.minimum(brightness * 4.0, 1.0)
    noise_rng = np.random.default_rng(plan.noise_seed)
    brightness += a.noise * noise_rng.standard_normal((size, size), dtype=np.float32)
    image = np.clip(brightness * 255.0 + 0.5, 0, 255).astype(np.uint8)
    # 4. What was measured on the drawn shapes.
    W = a.thorax_half_width
    heart_width = a.heart_ctr * 2.0 * W
    measured = {
        "heart_width_px": float(heart_width * size / 2.0),
        "thorax_width_px": float(2.0 * W * size / 2.0),
        "cardiothoracic_ratio": float(a.heart_ctr),
        "device_bbox": device_boxes,
    }
    return Rendered(image=image, mask=mask, measured=measured)


def _body_attenuation(plan: ImagePlan, size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Attenuation of body, anatomy and findings at ``size``, and the boolean masks of the labelled parts."""
    a = plan.anatomy
    lesions = plan.lesions
    strength = plan.strengths
    eps = 3.0 / size
    X, Y = _grid(size)
    # Body frame: undo the pose (rotation about the centre, then shift).
    theta = math.radians(a.rotation)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    xs, ys = X - a.shift_x, Y - a.shift_y
    x = cos_t * xs + sin_t * ys
    y = cos_t * ys - sin_t * xs
    ax = np.abs(x)
    left = x > 0  # patient's left, image right
    top, cp, W = a.lung_top, a.costophrenic_y, a.thorax_half_width

    # Body outline (neck, shoulders, trunk) and soft-tissue thickness across it.
    shoulder_t = np.clip((y - (top - 0.3)) * (1 / 0.25), 0.0, 1.0)
    trunk = W + 0.13
    body_half = a.neck_half_width + (a.shoulder_half_width - a.neck_half_width) * np.sqrt(shoulder_t)
    body_half = body_half + (trunk - a.shoulder_half_width) * np.clip((y - top) * (1 / 0.6), 0.0, 1.0)
    body = _soft(body_half - ax, eps)
    thickness = np.sqrt(np.clip(1.0 - (x / np.maximum(body_half, 0.05)) ** 4, 0.0, 1.0))
    attenuation = 0.52 * body * thickness

    # Lungs: lateral border widening from the apex, domed apices, diaphragm domes.
    rel = np.clip((y - top) * (1 / (cp - top)), 0.0, 1.0)
    x_lat = W * (0.55 + 0.45 * rel**0.45)
    d_lat = x_lat - ax
    apex_top = top + 2.2 * (ax - 0.42 * W) ** 2
    dome_top = np.where(left, np.float32(a.dome_left), np.float32(a.dome_right))
    dome_c = 0.35 * W
    dome = dome_top + (cp - dome_top) * ((ax - dome_c) * (1 / (W - dome_c))) ** 2
    chest = _soft(d_lat, eps) * _soft(y - apex_top, eps)
    below_dome = _soft(y - dome, eps)
    lung_shape = chest * (1.0 - below_dome)

    # Cardiomediastinal silhouette: upper mediastinum (widened by Enlarged Cardiomediastinum), aortic knob,
    # and the heart, whose borders swell from the mediastinum to their widest at the heart's centre row.
    widening = lesions.get("Enlarged Cardiomediastinum", {}).get("widening", 1.0)
    heart_cy = a.heart_center_y
    med_half = a.mediastinum_half_width * (
        1.0 + (widening - 1.0) * np.clip((heart_cy - 0.15 - y) * 3.0, 0.0, 1.0)
    )
    mid = x - 0.015
    mediastinum = _soft(med_half - np.abs(mid), eps) * _soft(heart_cy + 0.3 - y, eps)
    knob_x = a.mediastinum_half_width * widening + 0.015
    knob = _soft(a.aortic_knob - np.hypot(x - knob_x, (y - (top + 0.3)) * 0.7), eps)
    mediastinum = np.maximum(mediastinum, knob)
    heart_width = a.heart_ctr * 2.0 * W
    right_max, left_max = a.heart_shift * heart_width, (1.0 - a.heart_shift) * heart_width
    heart_top = heart_cy - a.heart_half_height
    t = np.clip((y - heart_top) * (1 / (heart_cy - heart_top)), 0.0, 1.0)
    below = np.clip((y - heart_cy) * (1 / 0.22), 0.0, 1.0)
    taper = np.sqrt(np.clip(1.0 - below * below, 0.0, 1.0))
    med0 = a.mediastinum_half_width
    right_border = (med0 + (right_max - med0) * np.sin(t * (math.pi / 2)) ** 0.6) * taper
    left_border = (med0 + (left_max - med0) * t**1.3) * taper
    heart = _soft(np.minimum(right_border + mid, left_border - mid), eps) * _soft(y - heart_top, eps)
    lungs = lung_shape * (1.0 - mediastinum) * (1.0 - heart)

    attenuation += 0.2 * body * below_dome * thickness
    attenuation -= 0.36 * lungs * thickness
    attenuation += (0.17 * heart + 0.13 * mediastinum * (1.0 - heart)) * (1.0 - below_dome)
    trachea = _soft(0.028 - np.abs(x - 0.01), eps) * _soft(top + 0.38 - y, eps * 4) * body
    attenuation -= 0.16 * trachea
    bubble = _soft(0.07 - np.hypot((x - 0.45 * W) * 0.8, y - (a.dome_left + 0.1)), eps * 3)
    attenuation -= 0.12 * bubble * body

    # Vessels: wavy lines radiating from each hilum, fading towards the periphery.
    hilum_x, hilum_y = 0.2, top + 0.55
    field = _smooth_field(np.random.default_rng(a.vessel_seed), size, 12)
    radius = np.hypot(ax - hilum_x, y - hilum_y)
    angle = np.arctan2(y - hilum_y, ax - hilum_x)
    rays = np.clip(1.0 - np.abs(np.sin(angle * 8.0 + field * 0.5)) * 2.2, 0.0, 1.0)
    vessels = rays * np.exp(-radius * 2.5) * lungs
    ptx = np.zeros_like(x)
    if "Pneumothorax" in lesions:  # a lucent rim at apex and lateral wall, no markings, a thin pleural line
        spec = lesions["Pneumothorax"]
        side_mask = left if spec["side"] == "left" else ~left
        depth = spec["depth"] * strength["Pneumothorax"] * np.clip((cp - y) * (1 / (cp - top)), 0.25, 1.0)
        ptx = lungs * side_mask * _soft(depth - d_lat, eps)
        line = lungs * side_mask * _soft(0.006 - np.abs(d_lat - depth), eps * 0.7) * (y < cp - 0.1)
        vessels = vessels * (1.0 - ptx)
        attenuation += -0.12 * ptx + 0.1 * line
    attenuation += 0.16 * vessels

    # Bones: spine, posterior ribs and fainter anterior ribs, clavicles, scapulae (AP), breast shadows.
    bone = a.bone_density
    spine = _soft(0.055 - np.abs(x - 0.01), eps) * body
    attenuation += 0.1 * bone * spine * (0.8 + 0.2 * np.cos(y * (2 * math.pi / 0.11)))
    rib_region = (
        _soft(x_lat + 0.06 - ax, eps * 2)
        * _soft(y - (apex_top - 0.04), eps * 6)
        * _soft(cp + 0.12 - y, eps * 4)
    )
    rib_region *= _soft(ax - 0.05, eps)
    rib_u = (y - top - 0.9 * ax * ax + 0.25 * ax) * (1.0 / a.rib_spacing) + a.rib_phase
    gap = np.zeros_like(x)
    if "Fracture" in lesions:  # one rib broken: a gap and a step between its two ends
        spec = lesions["Fracture"]
        fx = abs(spec["x"])
        rib_y = top + 0.9 * fx * fx - 0.25 * fx + (spec["rib"] - a.rib_phase) * a.rib_spacing
        near = np.exp(-(((y - rib_y) / a.rib_spacing) ** 2) * 4.0) * (x * _side_sign(spec["side"]) > 0)
        rib_u = rib_u + 0.18 * strength["Fracture"] * near * _soft(ax - fx, eps)
        gap = near * _soft(0.014 - np.abs(ax - fx), eps * 0.5) * strength["Fracture"]
    ribs = np.clip((np.cos(rib_u * (2 * math.pi)) - 0.4) * (1 / 0.6), 0.0, 1.0) ** 0.5
    front_u = (y - top + 0.35 * ax) * (1.0 / (a.rib_spacing * 1.25)) + a.rib_phase * 0.7
    front = np.clip((np.cos(front_u * (2 * math.pi)) - 0.5) * (1 / 0.5), 0.0, 1.0) * _soft(
        0.75 * W - ax, eps * 8
    )
    attenuation += bone * rib_region * (0.085 * ribs * (1.0 - gap) + 0.035 * front)
    clav_y = top + 0.21 - 0.42 * (ax - 0.07) + 0.3 * (ax - 0.07) ** 2
    clavicle = _soft(0.03 - np.abs(y - clav_y), eps) * _soft(ax - 0.06, eps) * _soft(0.7 * W - ax, eps * 4)
    attenuation += 0.2 * bone * clavicle
    if a.scapula > 0:
        scap_edge = 0.6 * W + 0.18 * (y - top)
        scapula = (
            _soft(ax - scap_edge, eps) * _soft(top + 0.6 - y, eps * 6) * _soft(y - (top - 0.1), eps) * body
        )
        attenuation += 0.07 * a.scapula * scapula
    if a.breast > 0:
        bx = (ax - 0.52 * W) * (1 / 0.36)
        by = (y - (cp - 0.05)) * (1 / 0.27)
        breast = _soft((1.0 - np.sqrt(bx * bx + by * by)) * 0.27, eps * 2) * np.clip(
            (y - (cp - 0.3)) * 4.0, 0.0, 1.0
        )
        attenuation += 0.1 * a.breast * breast * body

    # Findings.
    effusion = np.zeros_like(x)
    if "Pleural Effusion" in lesions:  # basal opacity with a meniscus climbing the lateral wall
        spec = lesions["Pleural Effusion"]
        k = strength["Pleural Effusion"]
        hemithorax = chest * _soft(np.abs(mid) - med_half, eps) * (1.0 - heart)
        lateral = np.clip((ax - 0.1) * (1 / (W - 0.1)), 0.0, 1.0)
        for side in spec["sides"]:
            level = cp - spec["height"][side] * k * (cp - top)
            surface = level - 0.2 * lateral * lateral
            side_mask = left if side == "left" else ~left
            region = hemithorax * side_mask * _soft(y - surface, eps * 3)
            effusion = np.maximum(effusion, region * (0.45 + 0.55 * np.clip((y - surface) * 6.0, 0.0, 1.0)))
        attenuation += 0.45 * k * effusion * (1.0 - below_dome)
    opacity = np.zeros_like(x)
    for finding in ("Lung Opacity", "Consolidation", "Pneumonia"):
        if finding in lesions:  # patchy airspace opacity around a centre
            spec = lesions[finding]
            cx, cy = spec["center"]
            patchy = _smooth_field(np.random.default_rng(spec["seed"]), size, 14)
            falloff = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) * (1 / spec["radius"] ** 2)))
            patch = np.clip(falloff * (1.0 + spec["patchiness"] * patchy) - 0.35, 0.0, 1.0) * lungs
            opacity = np.maximum(opacity, patch * spec["density"] * 2.0 * strength[finding])
    attenuation += 0.3 * opacity
    edema = np.zeros_like(x)
    if "Edema" in lesions:  # bilateral perihilar haze
        spec = lesions["Edema"]
        haze_field = _smooth_field(np.random.default_rng(spec["seed"]), size, 16)
        haze = np.exp(-(((ax - 0.2) ** 2 + (y - (top + 0.6)) ** 2) * (1 / spec["spread"] ** 2)))
        edema = haze * (0.75 + 0.25 * haze_field) * lungs * strength["Edema"]
        attenuation += 0.2 * edema
    atelectasis = np.zeros_like(x)
    if "Atelectasis" in lesions:  # a plate-like linear band at a base
        spec = lesions["Atelectasis"]
        (cx, cy), tilt = spec["center"], math.radians(spec["angle"])
        along = (x - cx) * math.cos(tilt) + (y - cy) * math.sin(tilt)
        across = (y - cy) * math.cos(tilt) - (x - cx) * math.sin(tilt)
        atelectasis = (
            _soft(0.014 - np.abs(across), eps) * _soft(spec["length"] / 2 - np.abs(along), eps) * lungs
        )
        attenuation += 0.22 * atelectasis * strength["Atelectasis"]
    nodule = np.zeros_like(x)
    if "Lung Lesion" in lesions:  # a round nodule
        spec = lesions["Lung Lesion"]
        cx, cy = spec["center"]
        nodule = _soft(spec["radius"] - np.hypot(x - cx, y - cy), eps * 2) * lung_shape
        attenuation += 0.3 * nodule * strength["Lung Lesion"]
    pleural = np.zeros_like(x)
    if "Pleural Other" in lesions:  # pleural thickening along the upper lateral wall
        spec = lesions["Pleural Other"]
        side_mask = left if spec["side"] == "left" else ~left
        pleural = _soft(spec["thickness"] - d_lat, eps) * _soft(d_lat + 0.01, eps) * side_mask
        pleural = pleural * _soft(y - top, eps) * _soft(top + 0.55 - y, eps * 6)
        attenuation += 0.2 * pleural * strength["Pleural Other"]

    parts = {
        "heart": heart > 0.5,
        "lungs": lungs > 0.5,
        "effusion": effusion > 0.3,
        "pneumothorax": ptx > 0.5,
        "lung_lesion": nodule > 0.5,
        "airspace_opacity": opacity > 0.2,
        "edema": edema > 0.3,
        "atelectasis": atelectasis > 0.5,
        "fracture": gap > 0.3,
        "pleural_other": pleural > 0.5,
    }
    return attenuation.astype(np.float32, copy=False), parts


def _blur3(layer: np.ndarray) -> np.ndarray:
    """A separable [1 2 1]/4 blur: softens PIL's aliased strokes without moving them."""
    out = layer.copy()
    out[1:-1, :] = 0.25 * layer[:-2, :] + 0.5 * layer[1:-1, :] + 0.25 * layer[2:, :]
    tmp = out.copy()
    out[:, 1:-1] = 0.25 * tmp[:, :-2] + 0.5 * tmp[:, 1:-1] + 0.25 * tmp[:, 2:]
    return out


def _bbox(mask: np.ndarray) -> list[int] | None:
    """``[x0, y0, x1, y1]`` (inclusive pixel bounds) of a boolean mask, or None when empty."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return [int(x0), int(y0), int(x1), int(y1)]
