"""The phantom job: sample the population, plan and render every image in a worker pool, write the files.

Output folder (``cfaudit phantom --out DIR``)::

    DIR/images/<image_id>.png           8-bit grayscale radiograph (or .jpg with image.format: jpeg)
    DIR/metadata.csv                    one row per image: ids, ViewPosition, age, sex, race, 14 findings
    DIR/ground_truth/<image_id>.json    every hidden variable of the image (see ground_truth_record)
    DIR/ground_truth/<image_id>_mask.png  uint16 label map, one bit per part (ground_truth/legend.json)
    DIR/ground_truth/summary.csv        one row per image: ground-truth variables, one 0/1 column per device kind
    DIR/phantom.json                    provenance: resolved config, seed, n, size, version, label table + sha256
    DIR/contact_sheet.png               16 captioned examples (normal, findings, each device kind)

Reproducible byte for byte: the population comes from the seed's population stream and each image from its
own stream (seed, image index), so the files are identical whatever the number of workers; only the
``generated_at`` and ``elapsed_s`` fields of ``phantom.json`` change between runs. Files are written atomically;
an image counts as done when its ground-truth JSON (written last) exists, so re-running into the same folder
with the same config resumes, and with a different config it is refused.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from cfaudit import __version__
from cfaudit.atomic_io import atomic_path, write_csv, write_json
from cfaudit.data.contact_sheet import write_contact_sheet
from cfaudit.data.phantom.anatomy import SubjectIdentity
from cfaudit.data.phantom.config import DEVICE_KINDS, PhantomConfig
from cfaudit.data.phantom.label_table import load_label_table
from cfaudit.data.phantom.plan import ImagePlan, plan_image
from cfaudit.data.phantom.png import encode_png
from cfaudit.data.phantom.population import IMAGE_STREAM, Population, sample_population, stream
from cfaudit.data.phantom.render import MASK_BITS, render
from cfaudit.data.vocabulary import FINDINGS, PATHOLOGIES, finding_slug
from cfaudit.errors import CfauditError

PROVENANCE = "phantom.json"
_VOLATILE = ("generated_at", "elapsed_s", "status", "images_rendered_this_run")


@dataclass(frozen=True)
class GenerationResult:
    out: Path
    n: int
    rendered: int  # images drawn by this run (the rest were already there)
    elapsed_s: float


def generate_phantom(
    out: str | os.PathLike[str],
    config: PhantomConfig,
    *,
    seed: int = 0,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> GenerationResult:
    """Generate (or resume) a phantom data set in ``out``; see the module docstring for the files."""
    started = time.perf_counter()
    out = Path(out)
    if workers < 1:
        raise CfauditError(f"--workers must be at least 1 (got {workers})")
    # 1. Resolve inputs and check the folder (resume with the same settings, refuse different ones).
    table = load_label_table(config.label_table)
    provenance = {
        "generator": "cfaudit phantom",
        "cfaudit_version": __version__,
        "seed": seed,
        "n": config.population.n,
        "size": config.image.size,
        "config": config.to_dict(),
        "config_file": config.source,
        "label_table": {"source": table.source, "sha256": table.sha256, "rows": len(table.frame)},
    }
    _check_folder(out, provenance)
    # 2. Sample the population (metadata + subjects).
    extension = "jpg" if config.image.format == "jpeg" else "png"
    population = sample_population(config, table, seed, extension)
    tasks = list(_tasks(population))
    if any(relation.effect_kind == "anatomy" for relation in config.relations):
        # plans are cheap and seeded per image: a shift that leaves an anatomy range fails here, before any file
        for index, record, identity in tasks:
            plan_image(index, record, identity, config, stream(seed, IMAGE_STREAM, index))
    write_json(out / PROVENANCE, {**provenance, "status": "incomplete"})
    # 3. Plan and render every image (skipping finished ones), collecting ground-truth summary rows.
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    rendered = 0
    for row, drew in _run(tasks, out, config, seed, workers):
        rows.append(row)
        rendered += drew
        if progress is not None:
            progress(len(rows), len(tasks))
    # 4. Tables, legend, contact sheet, provenance.
    write_csv(out / "metadata.csv", population.metadata, float_format="%g")
    summary = pd.DataFrame(rows)
    write_csv(out / "ground_truth" / "summary.csv", summary, float_format="%.6g")
    write_json(out / "ground_truth" / "legend.json", legend())
    write_phantom_contact_sheet(out, population.metadata, summary)
    elapsed = time.perf_counter() - started
    write_json(
        out / PROVENANCE,
        {
            **provenance,
            "status": "complete",
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "elapsed_s": round(elapsed, 2),
            "images_rendered_this_run": rendered,
        },
    )
    return GenerationResult(out=out, n=len(rows), rendered=rendered, elapsed_s=elapsed)


def legend() -> dict[str, Any]:
    return {
        "mask_format": "16-bit grayscale PNG; pixel value & (1 << bit) != 0 where the part is present",
        "bits": {name: bit for name, bit in MASK_BITS.items()},
        "coordinates": "landmarks in ground-truth JSON: normalised body frame, x and y in -1..1, y down, "
        "patient's left = +x (image right); *_px fields are pixel coordinates in the saved image",
        "note": "ground truth scores the tool; nothing in training or discovery reads it",
    }


def _check_folder(out: Path, provenance: dict[str, Any]) -> None:
    record = out / PROVENANCE
    if record.is_file():
        try:
            previous = json.loads(record.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise CfauditError(
                f"{record}: not valid JSON; delete the folder or choose another --out"
            ) from None
        for key in ("seed", "n", "size", "config", "label_table", "cfaudit_version"):
            if previous.get(key) != provenance[key]:
                raise CfauditError(
                    f"{out} holds a phantom made with a different {key} ({previous.get(key)!r:.80} vs "
                    f"{provenance[key]!r:.80}); choose another --out or delete the folder to start again"
                )
    elif out.exists() and any(out.iterdir()):
        raise CfauditError(
            f"{out} exists, is not empty and holds no {PROVENANCE}; choose an empty or new --out"
        )


def _tasks(population: Population) -> Iterator[tuple[int, dict[str, Any], SubjectIdentity]]:
    records = population.metadata.to_dict(orient="records")
    hidden = population.hidden
    for index, record in enumerate(records):
        record["true_race"] = hidden.at[index, "true_race"]
        yield index, record, population.identities[int(hidden.at[index, "subject_index"])]


# --- the work of one image (runs in the pool's workers) ---

_WORKER: dict[str, Any] = {}


def _init_worker(out: str, config: PhantomConfig, seed: int) -> None:
    _WORKER.update(out=Path(out), config=config, seed=seed)


def _work(task: tuple[int, dict[str, Any], SubjectIdentity]) -> tuple[dict[str, Any], bool]:
    index, record, identity = task
    out, config, seed = _WORKER["out"], _WORKER["config"], _WORKER["seed"]
    plan = plan_image(index, record, identity, config, stream(seed, IMAGE_STREAM, index))
    json_path = out / "ground_truth" / f"{plan.image_id}.json"
    if json_path.is_file() and (out / record["path"]).is_file():
        return summary_row(plan, record, config.image.size), False
    size = config.image.size
    result = render(plan, size)
    image_path = out / record["path"]
    level = config.image.png_compress_level
    with atomic_path(image_path) as tmp:
        if config.image.format == "jpeg":
            Image.fromarray(result.image).save(tmp, format="JPEG", quality=config.image.jpeg_quality)
        else:
            tmp.write_bytes(encode_png(result.image, level))
    with atomic_path(out / "ground_truth" / f"{plan.image_id}_mask.png") as tmp:
        tmp.write_bytes(encode_png(result.mask, level))
    with atomic_path(json_path) as tmp:
        tmp.write_text(
            json.dumps(ground_truth_record(plan, record, result.measured, size), sort_keys=True) + "\n"
        )
    return summary_row(plan, record, size), True


def _run(
    tasks: list[tuple[int, dict[str, Any], SubjectIdentity]],
    out: Path,
    config: PhantomConfig,
    seed: int,
    workers: int,
) -> Iterator[tuple[dict[str, Any], bool]]:
    if workers == 1 or len(tasks) < 2:
        _init_worker(str(out), config, seed)
        try:
            yield from map(_work, tasks)
        finally:
            _WORKER.clear()
        return
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    chunk = max(1, min(64, len(tasks) // (workers * 8)))
    with context.Pool(workers, initializer=_init_worker, initargs=(str(out), config, seed)) as pool:
        yield from pool.imap(_work, tasks, chunksize=chunk)


# --- ground truth ---


def ground_truth_record(
    plan: ImagePlan, record: dict[str, Any], measured: dict[str, Any], size: int
) -> dict[str, Any]:
    """The per-image ground-truth JSON: ids, metadata, true race, anatomy, findings as drawn, devices."""
    anatomy = plan.anatomy.as_dict()
    devices = []
    for device in plan.devices:
        entry = device.as_dict()
        entry["bbox_px"] = measured["device_bbox"].get(device.kind)
        devices.append(entry)
    effusion = plan.lesions.get("Pleural Effusion", {"sides": [], "height": {}})
    return {
        "image_id": plan.image_id,
        "index": plan.index,
        "subject_id": record["subject_id"],
        "study_id": record["study_id"],
        "image_size": size,
        "metadata": {
            "ViewPosition": record["ViewPosition"],
            "age": int(record["age"]),
            "sex": record["sex"],
            "race": record["race"],
            "findings": {f: (None if pd.isna(record[f]) else int(record[f])) for f in FINDINGS},
        },
        "true_race": plan.true_race,
        "race_texture": {
            "frequency_cycles_per_width": anatomy["texture_frequency"],
            "angle_deg": anatomy["texture_angle"],
            "amplitude": anatomy["texture_amplitude"],
        },
        "cardiothoracic_ratio": measured["cardiothoracic_ratio"],
        "heart_width_px": measured["heart_width_px"],
        "thorax_width_px": measured["thorax_width_px"],
        "effusion": {"sides": effusion["sides"], "height_fraction": effusion["height"]},
        "rendered_strength": plan.strengths,
        "lesions": plan.lesions,
        "devices": devices,
        "device_probability_given_support_devices": plan.device_probability,
        "anatomy": anatomy,
        "noise_seed": plan.noise_seed,
    }


def summary_row(plan: ImagePlan, record: dict[str, Any], size: int) -> dict[str, Any]:
    """One row of ground_truth/summary.csv (everything here comes from the plan, so resuming can rebuild it)."""
    a = plan.anatomy
    effusion = plan.lesions.get("Pleural Effusion", {"sides": [], "height": {}})
    kinds = plan.device_kinds()
    row: dict[str, Any] = {
        "image_id": plan.image_id,
        "subject_id": record["subject_id"],
        "study_id": record["study_id"],
        "sex": record["sex"],
        "age": int(record["age"]),
        "view": record["ViewPosition"],
        "race": record["race"],
        "true_race": plan.true_race,
        "cardiothoracic_ratio": a.heart_ctr,
        "heart_width_px": a.heart_ctr * a.thorax_half_width * size,
        "thorax_width_px": a.thorax_half_width * size,
        "effusion_right": int("right" in effusion["sides"]),
        "effusion_left": int("left" in effusion["sides"]),
        "effusion_height_right": effusion["height"].get("right", 0.0),
        "effusion_height_left": effusion["height"].get("left", 0.0),
        "support_devices_drawn": int(bool(kinds)),
        "n_devices": len(kinds),
    }
    for kind in DEVICE_KINDS:
        row[f"device_{kind}"] = int(kind in kinds)
    for kind in DEVICE_KINDS:
        if kind in plan.device_probability:
            row[f"p_device_{kind}"] = plan.device_probability[kind]
    for finding in PATHOLOGIES:
        row[f"strength_{finding_slug(finding)}"] = plan.strengths[finding]
    for name in ("thorax_half_width", "lung_top", "costophrenic_y", "mediastinum_half_width", "aortic_knob",
                 "bone_density", "breast", "scapula", "texture_frequency", "texture_angle", "rotation", "exposure"):  # fmt: skip
        row[f"anatomy_{name}"] = getattr(a, name)
    return row


# --- contact sheet ---

_ABBREVIATIONS = {
    "Enlarged Cardiomediastinum": "ECM", "Cardiomegaly": "CM", "Lung Opacity": "Opac", "Lung Lesion": "Lesion",
    "Edema": "Edema", "Consolidation": "Consol", "Pneumonia": "Pneum", "Atelectasis": "Atel",
    "Pneumothorax": "PTX", "Pleural Effusion": "PE", "Pleural Other": "PlOth", "Fracture": "Fx",
    "Support Devices": "SD",
}  # fmt: skip


def caption(record: dict[str, Any], devices: list[str]) -> str:
    """``M 63 AP White`` / ``CM PE SD`` / ``[pacemaker]``: metadata, positive findings, hidden devices."""
    positives = [_ABBREVIATIONS[f] for f in PATHOLOGIES if record[f] == 1.0] or ["No Finding"]
    lines = [
        f"{record['sex']} {int(record['age'])} {record['ViewPosition']} {record['race']}",
        " ".join(positives),
    ]
    if devices:
        lines.append("[" + ", ".join(devices) + "]")
    return "\n".join(lines)


def pick_contact_sheet(metadata: pd.DataFrame, summary: pd.DataFrame, count: int = 16) -> list[int]:
    """Row positions showing normal images, cardiomegaly, effusion and each device kind, then other findings."""
    chosen: list[int] = []

    def take(mask: np.ndarray | pd.Series, k: int = 1) -> None:
        for position in np.flatnonzero(np.asarray(mask, dtype=bool)):
            if k == 0 or len(chosen) >= count:
                return
            if int(position) not in chosen:
                chosen.append(int(position))
                k -= 1

    no_device = summary["n_devices"].to_numpy() == 0
    take((metadata["No Finding"] == 1.0).to_numpy() & no_device, 3)
    take((metadata["Cardiomegaly"] == 1.0).to_numpy() & no_device, 2)
    take((metadata["Pleural Effusion"] == 1.0).to_numpy() & no_device, 2)
    for kind in DEVICE_KINDS:
        take(summary[f"device_{kind}"].to_numpy() == 1)
    for finding in (
        "Pneumothorax",
        "Edema",
        "Consolidation",
        "Lung Lesion",
        "Enlarged Cardiomediastinum",
        "Fracture",
    ):
        take((metadata[finding] == 1.0).to_numpy())
    take(np.ones(len(metadata), dtype=bool), count)
    return chosen[:count]


def write_phantom_contact_sheet(
    out: Path, metadata: pd.DataFrame, summary: pd.DataFrame, tile: int = 256
) -> Path:
    picked = pick_contact_sheet(metadata, summary)
    records = metadata.to_dict(orient="records")
    paths = [out / records[i]["path"] for i in picked]
    captions = [
        caption(records[i], [kind for kind in DEVICE_KINDS if summary.at[i, f"device_{kind}"] == 1])
        for i in picked
    ]
    target = out / "contact_sheet.png"
    write_contact_sheet(paths, captions, target, columns=4, tile=tile)
    return target


def read_provenance(out: str | os.PathLike[str]) -> dict[str, Any]:
    """``phantom.json`` of a generated folder (for readers of the phantom: adapters, tests, benchmarks)."""
    path = Path(out) / PROVENANCE
    if not path.is_file():
        raise CfauditError(f"{path}: not found; is {out} a folder written by `cfaudit phantom`?")
    return json.loads(path.read_text(encoding="utf-8"))


def stable_provenance(out: str | os.PathLike[str]) -> dict[str, Any]:
    """``phantom.json`` without the fields that change from run to run (time stamps)."""
    return {k: v for k, v in read_provenance(out).items() if k not in _VOLATILE}


__all__ = ["GenerationResult", "generate_phantom", "ground_truth_record", "legend", "summary_row"]
