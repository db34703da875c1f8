"""The heart probe: does a model draw a larger heart for "with cardiomegaly" than for "with no finding"?

    python benchmarks/heart_probe.py --model shipped=demo --model quick=runs/demo-train/models/unet/model \
        --index runs/phantom/index.csv --out runs/heart

For each model, ``cfaudit.evaluate.prompt_effects.heart_probe_ratios`` (the shipped model's heart test samples the
same way): 16 seeds (``--seeds``), 25 DDIM steps, guidance 5, the model's own resolution, the caption "chest x-ray
of 65-years old white male subject with cardiomegaly" and the same with "no finding", each pair from the same
starting noise. It reports the phantom's cardiothoracic ratio (``cfaudit.data.phantom.measure.heart_width_ratio``)
of each set and how many seeds give the larger heart for cardiomegaly. Cheap (about 25 s per model on 2 cores), so
it can follow a training run phase by phase, before the edit-based measures of ``benchmarks/fidelity.py``.

``--index`` adds the data's own reference: the same ratio on that phantom's images with Cardiomegaly = 1 against
those with No Finding = 1, read at the first model's resolution. A phantom whose effusions hide the heart borders
shows a smaller gap in its own images; the reference says how much of a gap a model could show on it.
Results go to ``OUT/heart_probe.md`` and ``OUT/heart_probe.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from cfaudit.atomic_io import write_json, write_text
from cfaudit.data.images import load_image, resize_and_crop
from cfaudit.data.labels import label_value
from cfaudit.data.phantom.measure import heart_width_ratio
from cfaudit.data.records import DataIndex
from cfaudit.evaluate.prompt_effects import heart_probe_ratios
from cfaudit.models.loading import load_components


def named_model(text: str) -> tuple[str, str]:
    """``--model NAME=FOLDER`` (or just ``FOLDER``, named by itself)."""
    name, _, folder = text.partition("=")
    return (name, folder) if folder else (text, text)


def probe_model(model: str, seeds: list[int]) -> dict[str, Any]:
    components = load_components(model)
    big, small = heart_probe_ratios(components, seeds)
    both = np.isfinite(big) & np.isfinite(small)
    return {
        "resolution": components.resolution,
        "cardiomegaly": float(np.nanmean(big)),
        "no_finding": float(np.nanmean(small)),
        "larger": int((big[both] > small[both]).sum()),
        "pairs": int(both.sum()),
    }


def data_reference(index_csv: Path, resolution: int, images: int) -> dict[str, Any]:
    """The ratio on the phantom's own images: Cardiomegaly = 1 against No Finding = 1 (up to ``images`` each)."""
    index = DataIndex.read(index_csv)
    records = index.table.to_dict(orient="records")

    def ratios(finding: str) -> np.ndarray:
        rows = [k for k, r in enumerate(records) if label_value(r, finding) == 1.0][:images]
        return np.array(
            [heart_width_ratio(resize_and_crop(load_image(index.image_path(k)), resolution)) for k in rows]
        )

    big, small = ratios("Cardiomegaly"), ratios("No Finding")
    return {
        "cardiomegaly": float(np.nanmean(big)),
        "no_finding": float(np.nanmean(small)),
        "images": [int(np.isfinite(big).sum()), int(np.isfinite(small).sum())],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=named_model, required=True, help="NAME=FOLDER")
    parser.add_argument(
        "--index", type=Path, help="a phantom's index.csv: its own images' ratios as reference"
    )
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--reference-images", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    seeds = list(range(args.seeds))
    results = {name: probe_model(folder, seeds) for name, folder in args.model}
    lines = ["| model | cardiomegaly | no finding | larger in |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['cardiomegaly']:.3f} | {r['no_finding']:.3f} | {r['larger']} of {r['pairs']} |"
        )
    record: dict[str, Any] = {"models": dict(args.model), "seeds": args.seeds, "results": results}
    if args.index is not None:
        resolution = next(iter(results.values()))["resolution"]
        reference = data_reference(args.index, resolution, args.reference_images)
        record["reference"] = {"index": str(args.index), **reference}
        lines.append(
            f"| the phantom's own images ({reference['images'][0]} with cardiomegaly, {reference['images'][1]} "
            f"with no finding) | {reference['cardiomegaly']:.3f} | {reference['no_finding']:.3f} | |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "heart_probe.json", record)
    write_text(args.out / "heart_probe.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
