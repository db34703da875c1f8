"""How a discovery's analysis scales with the number of edits: time and peak memory on a synthetic edit folder.

    python benchmarks/discovery_scale.py --edits 100000 --out runs/scale          # generate, then analyse
    python benchmarks/discovery_scale.py --edits 10000 30000 100000 --out runs/scale   # the memory slope

For each size the script writes a synthetic discovery folder without any model:

- ``index.csv``: a test split of ``edits / interventions`` images with random labels, a train split of labels
  only (the label statistics) and a val split of 200 real 16 x 16 PNGs (the data association);
- ``edits/``: ``edits.csv`` with one row per (image, intervention) for 20 interventions, and per image its
  reconstruction and null edit, per edit its counterfactual and signed difference map (``.npy``), all at 16 x 16
  px: the analysis reads the difference maps at its grid (16 here, 64 by default), so tiny maps exercise every
  step of the cluster analysis at a small fraction of the disk. A difference map is noise below the change
  threshold, plus, in 30% of the edits of each regional intervention, a compact change at a place of its own and,
  in 5% of all edits, one at a random place (clusters of noise, as a real editor makes);
- the classifier's head scores of every original, null edit and counterfactual (seeded random values; the
  regional interventions move one head by +0.2 with their change), given to the analysis as a scoring
  classifier would have returned them: the images are not scored (that is the classifier's time, not the
  analysis's, and it reads :data:`~cfaudit.discover.run.SCORE_CHUNK` images at a time).

Then, in a fresh process (so that the generator's memory is not counted), it runs
:func:`cfaudit.discover.run.analyse` (co-change, regions, error rates, ranking, every output written) and
prints its wall time, the process's peak resident memory (``resource.getrusage``) and the resident memory
before the analysis, as one JSON line per size; with ``--tracemalloc``, also the peak of Python-level
allocations (numpy's included), which slows the run about 2x.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit.data.edit_folder import (
    EDIT_COLUMNS,
    EDITS_CSV,
    IDENTITY_FILE,
    IMAGES_FOLDER,
    RECONSTRUCTION_FILE,
)
from cfaudit.data.edit_jobs import JobItem
from cfaudit.data.images import save_image
from cfaudit.data.interventions import Intervention
from cfaudit.data.records import DataIndex
from cfaudit.data.vocabulary import FINDINGS, RACES
from cfaudit.discover.atlas import RegionAtlas
from cfaudit.discover.clusters import RegionSettings
from cfaudit.discover.heads import HEAD_COLUMNS
from cfaudit.discover.plan import DiscoveryPlan
from cfaudit.discover.run import DiscoverySettings, analyse

SIZE = 16
INTERVENTIONS = (
    "Cardiomegaly=0", "Cardiomegaly=1", "Pleural Effusion=1", "Pleural Effusion=0", "Pneumothorax=1",
    "Pneumothorax=0", "Support Devices=1", "Support Devices=0", "Atelectasis=1", "Atelectasis=0",
    "Consolidation=1", "Edema=1", "Edema=0", "Lung Opacity=1", "Fracture=1", "Lung Lesion=1",
    "sex=Female", "sex=Male", "age=+20", "age=-20",
)  # fmt: skip
DATA_IMAGES = 200
TRAIN_ROWS = 2000


def _records(rng: np.random.Generator, n: int, split: str, start: int) -> list[dict[str, Any]]:
    records = []
    for k in range(n):
        record: dict[str, Any] = {
            "image_id": f"{split}{start + k:07d}",
            "path": f"images/{split}{start + k:07d}.png",
            "subject_id": start + k,
            "age": float(rng.integers(30, 70)),
            "sex": "Male" if rng.random() < 0.5 else "Female",
            "race": RACES[int(rng.integers(0, len(RACES)))],
            "split": split,
        }
        for finding in FINDINGS:
            record[finding] = 1.0 if rng.random() < 0.3 else (0.0 if rng.random() < 0.5 else np.nan)
        records.append(record)
    return records


def _blob(x: float, y: float, amplitude: float) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    return (amplitude * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 0.05**2))).astype(np.float32)


def generate(folder: Path, edits: int, seed: int = 0) -> None:
    """Write the synthetic index, edit folder and head scores of ``edits`` edits into ``folder``."""
    rng = np.random.default_rng(seed)
    interventions = [Intervention.parse(i) for i in INTERVENTIONS]
    n_images = -(-edits // len(interventions))
    test = _records(rng, n_images, "test", 0)
    table = pd.DataFrame(
        test + _records(rng, TRAIN_ROWS, "train", n_images) + _records(rng, DATA_IMAGES, "val", 10**6)
    )
    for record in table[table["split"] == "val"].itertuples():
        save_image(rng.random((SIZE, SIZE)) * 0.2 + 0.4, folder / record.path)
    table.to_csv(folder / "index.csv", index=False)
    atlas = RegionAtlas.load()
    places = {str(i): (0.25 + 0.5 * rng.random(), 0.25 + 0.5 * rng.random()) for i in interventions}
    rows, scores = [], {"original": [], "null": [], "counterfactual": []}
    out = folder / "edits"
    count = 0
    for record in test:
        image_id = record["image_id"]
        image_folder = out / IMAGES_FOLDER / image_id
        reconstruction = (0.4 + 0.2 * rng.random((SIZE, SIZE))).astype(np.float32)
        save_image(reconstruction, image_folder / RECONSTRUCTION_FILE, bits=16)
        save_image(reconstruction + rng.normal(0, 0.002, (SIZE, SIZE)), image_folder / IDENTITY_FILE, bits=16)
        original = rng.random(len(HEAD_COLUMNS))
        scores["original"].append(original)
        scores["null"].append(original + rng.normal(0, 0.01, len(HEAD_COLUMNS)))
        for intervention in interventions:
            if count == edits:
                break
            count += 1
            name = str(intervention)
            difference = rng.normal(0, 0.005, (SIZE, SIZE)).astype(np.float32)
            moved = scores["null"][-1] + rng.normal(0, 0.05, len(HEAD_COLUMNS))
            regional = not atlas.is_global(tuple(n for n, _ in intervention.changes))
            if regional and rng.random() < 0.3:
                x, y = places[name]
                difference += _blob(x + rng.normal(0, 0.02), y + rng.normal(0, 0.02), -0.3)
                moved[HEAD_COLUMNS.index("Support Devices")] += 0.2
            if rng.random() < 0.05:
                difference += _blob(0.15 + 0.7 * rng.random(), 0.15 + 0.7 * rng.random(), 0.3)
            slug = intervention.slug
            image_folder.mkdir(parents=True, exist_ok=True)  # the editor's .npy: float32, never pickled
            np.save(image_folder / f"{slug}_diff.npy", difference, allow_pickle=False)
            save_image(np.clip(reconstruction + difference, 0, 1), image_folder / f"{slug}.png", bits=16)
            scores["counterfactual"].append(moved)
            rows.append(
                {
                    "image_id": image_id, "intervention": name, "source_prompt": "", "target_prompt": "",
                    "prompt_mode": "full", "method": "direct", "steps": 20, "guidance_scale": 7.5, "seed": seed,
                    "unet_evals": 100.0, "seconds": 0.0, "reconstruction_l1": 0.0, "identity_l1": 0.0,
                    "edit_l1": float(np.abs(difference).mean()), "diff_scale": 1.0, "inversion_cached": False,
                    "original": str(folder / "index.csv"), "counterfactual": f"{IMAGES_FOLDER}/{image_id}/{slug}.png",
                    "reconstruction": f"{IMAGES_FOLDER}/{image_id}/{RECONSTRUCTION_FILE}",
                    "difference": f"{IMAGES_FOLDER}/{image_id}/{slug}_diff.npy",
                    "difference_png": f"{IMAGES_FOLDER}/{image_id}/{slug}_diff.png",
                }
            )  # fmt: skip
    pd.DataFrame(rows, columns=list(EDIT_COLUMNS)).to_csv(out / EDITS_CSV, index=False)
    images = [r["image_id"] for r in test]
    np.savez(
        folder / "scores.npz",
        images=np.array(images),
        **{kind: np.array(values) for kind, values in scores.items()},
    )


class SyntheticClassifier:
    """Head outputs of real images from their mean intensity (the val split's data association)."""

    def predict(self, images: list[np.ndarray]) -> dict[str, np.ndarray]:
        means = np.array([float(np.mean(image)) for image in images])
        outputs = {
            finding: np.clip(means + 0.1 * k / len(FINDINGS), 0, 1) for k, finding in enumerate(FINDINGS)
        }
        outputs["sex"] = np.clip(means, 0, 1)
        outputs["age"] = 40.0 + 40.0 * means
        outputs["race"] = np.full((len(images), len(RACES)), 1.0 / len(RACES))
        return outputs


def run_analysis(folder: Path, trace: bool) -> dict[str, Any]:
    """Analyse the synthetic folder; time, peak resident memory and (``trace``) traced allocations."""
    table = pd.read_csv(folder / "index.csv")
    index = DataIndex(table, folder)
    edits = pd.read_csv(folder / "edits" / EDITS_CSV, usecols=["image_id", "intervention"])
    interventions = [Intervention.parse(i) for i in INTERVENTIONS]
    by_name = {str(i): i for i in interventions}
    records = table[table["split"] == "test"].set_index("image_id", drop=False).to_dict("index")
    planned: dict[str, list[Intervention]] = {}
    by_intervention: dict[str, list[str]] = {str(i): [] for i in interventions}
    for image_id, name in edits.itertuples(index=False):
        planned.setdefault(image_id, []).append(by_name[name])
        by_intervention[name].append(image_id)
    plan = DiscoveryPlan(
        [JobItem(i, Path(), "", records[i], tuple(v)) for i, v in planned.items()], by_intervention
    )
    loaded = np.load(folder / "scores.npz")
    scores = {
        "images": [str(i) for i in loaded["images"]],
        **{
            kind: {head: loaded[kind][:, k].copy() for k, head in enumerate(HEAD_COLUMNS)}
            for kind in ("original", "null", "counterfactual")
        },
    }
    del edits, loaded, planned
    settings = DiscoverySettings(
        images=max(len(v) for v in by_intervention.values()), regions=RegionSettings(grid=SIZE)
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    result = analyse(
        folder, SyntheticClassifier(), plan, interventions, index, settings, RegionAtlas.load(),
        scores=scores,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    return {
        "edits": int(sum(len(v) for v in by_intervention.values())),
        "images": len(plan.items),
        "analysis_seconds": round(seconds, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_analysis_mib": round(rss_before, 1),
        "traced_peak_mib": None if traced is None else round(traced, 1),
        "candidates": len(result.candidates),
        "clusters": len(result.clusters),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, nargs="+", default=[100_000])
    parser.add_argument("--out", type=Path, default=Path("runs/discovery-scale"))
    parser.add_argument("--tracemalloc", action="store_true", help="Also trace Python allocations (slower).")
    parser.add_argument("--analyse", type=Path, help=argparse.SUPPRESS)  # the child process's entry
    args = parser.parse_args()
    if args.analyse is not None:
        print(json.dumps(run_analysis(args.analyse, args.tracemalloc)))
        return
    for edits in args.edits:
        folder = args.out / f"edits-{edits}"
        if not (folder / "scores.npz").is_file():
            start = time.perf_counter()
            generate(folder, edits)
            print(
                f"generated {edits} edits in {time.perf_counter() - start:.0f} s: {folder}", file=sys.stderr
            )
        child = [sys.executable, __file__, "--analyse", str(folder)]
        child += ["--tracemalloc"] if args.tracemalloc else []
        result = subprocess.run(child, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(result.stderr[-3000:])
        print(result.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
