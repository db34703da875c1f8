"""Attribute classifiers (judges) side by side: how far the autoencoder alone, and the grain alone, move each one.

    python benchmarks/judge_drift.py --classifier shipped=demo --classifier e15=runs/old-classifier \
        --out runs/judge-drift --images 128

On the test split of a phantom no model saw (``--seed``, the default config at 128 px, the same phantom as
``benchmarks/fidelity.py``), the images are reconstructed once through ``--autoencoder`` (default: the demo
model's, tiny-f4) and drawn again without grain (``PhantomReplay.render(grain=False)``). Per classifier and head:

* ``drift``: mean |output(reconstruction) - output(image)| (race: total variation distance), issue #13's measure;
* ``grain drift``: the same between the image and its grain-free picture, what a perfect autoencoder of the
  picture would cost: the part of ``drift`` that is the judge reading the grain;
* ``age dose``: the age head's change between each image and the same patient drawn with 20 more (fewer) years
  of the phantom's age cues (:meth:`PhantomReplay.aged_anatomy`), over 20 years: 1 reads the truth exactly;
* ``noise-free drift``: the same between the grain-free picture and its own reconstruction, the autoencoder's
  drift against a noise-free render (issue #13's fallback where the grain sets the floor);
* the test AUCs its ``classifier.json`` records (sex, race macro);
* realism in its features (the default features of ``cfaudit evaluate``'s realism): KID against ``--real``
  images of the phantom's other splits, of as many more of them (the same distribution: the level of "not told
  apart"), of those images' grain-free pictures, and of their reconstructions.

Results go to ``OUT/judge_drift.md`` and ``OUT/judge_drift.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fidelity import fresh_phantom, load_vae, reconstruct  # benchmarks/ is the script's folder

from cfaudit.atomic_io import write_json, write_text
from cfaudit.data.images import load_image
from cfaudit.data.phantom.ground_truth import PhantomReplay
from cfaudit.evaluate.classifiers import demo_classifier_dir, load_classifier
from cfaudit.evaluate.fidelity import output_drift
from cfaudit.evaluate.realism_distances import kid
from cfaudit.evaluate.realism_features import ClassifierFeatures

AGE_YEARS = 20
HEADS = ("sex", "race", "Cardiomegaly", "Pleural Effusion", "Support Devices", "Lung Opacity")


def recorded_auc(folder: str) -> dict[str, float | None]:
    path = (demo_classifier_dir() if folder == "demo" else Path(folder)) / "classifier.json"
    test = json.loads(path.read_text()).get("metrics", {}).get("test", {})
    return {"sex": test.get("sex", {}).get("auc"), "race": test.get("race", {}).get("macro_auc")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", action="append", required=True, help="NAME=FOLDER (or demo); repeat")
    parser.add_argument("--autoencoder", default="tiny-f4", help="demo, a model folder or a preset")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=21, help="seed of the fresh phantom")
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--images", type=int, default=128, help="test images")
    parser.add_argument("--real", type=int, default=400, help="real images of the realism reference set")
    parser.add_argument("--realism-images", type=int, default=100, help="images of each compared set")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    root, index = fresh_phantom(args.out, args.seed, args.n)
    test = index.split("test")
    rows = test.table.head(args.images)
    replay = PhantomReplay(root)
    vae = load_vae(args.autoencoder)
    originals = [load_image(test.image_path(row)) for _, row in rows.iterrows()]
    reconstructions = reconstruct(vae, originals, replay.size)
    grain_free = [replay.render(str(i), grain=False) / 255.0 for i in rows["image_id"]]
    grain_free_reconstructions = reconstruct(vae, grain_free, replay.size)
    # the phantom's own age change: each patient drawn again with 20 more (fewer) years of its age cues, where the
    # new age stays within the phantom's (a true counterfactual of the cues, for the judge's age head)
    aged = {}  # years -> (positions of the images kept, their aged pictures)
    for years in (AGE_YEARS, -AGE_YEARS):
        keep = [k for k, age in enumerate(rows["age"]) if 18 <= age + years <= 90]
        ids = [str(rows["image_id"].iloc[k]) for k in keep]
        aged[years] = (keep, [replay.render(i, **replay.aged_anatomy(i, years)) / 255.0 for i in ids])
    # realism sets: real images outside the test split against as many others, drawn without grain, reconstructed
    pool = index.table[index.table["split"] != "test"]
    real = [load_image(index.image_path(row)) for _, row in pool.iloc[: args.real].iterrows()]
    others = pool.iloc[args.real : args.real + args.realism_images]
    sets = {"more real images": [load_image(index.image_path(row)) for _, row in others.iterrows()]}
    sets["their grain-free pictures"] = [
        replay.render(str(i), grain=False) / 255.0 for i in others["image_id"]
    ]
    sets["their reconstructions"] = reconstruct(vae, sets["more real images"], replay.size)

    results: dict[str, dict[str, Any]] = {}
    for spec in args.classifier:
        name, _, folder = spec.partition("=")
        folder = folder or name  # a bare FOLDER names itself
        judge = load_classifier(folder, device="cpu")
        before, clean = judge.predict(originals), judge.predict(grain_free)
        results[name] = {
            "classifier": folder,
            "drift": output_drift(before, judge.predict(reconstructions)),
            "grain_drift": output_drift(before, clean),
            "noise_free_drift": output_drift(clean, judge.predict(grain_free_reconstructions)),
            "test_auc": recorded_auc(folder),
        }
        read = np.asarray(before["age"], dtype=np.float64)  # the originals' ages, read once above
        results[name]["age_dose"] = {
            f"{years:+d}": float(np.mean(np.asarray(judge.predict(pictures)["age"]) - read[keep]) / years)
            for years, (keep, pictures) in aged.items()
        }
        features = ClassifierFeatures(judge)
        reference = features(real)
        results[name]["kid"] = {key: kid(features(images), reference) for key, images in sets.items()}
        print(f"{name}: done", flush=True)

    names = list(results)
    lines = [
        f"{len(originals)} test images of phantom seed {args.seed}; autoencoder {args.autoencoder}",
        "",
        "| | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---|" * len(names),
        "| test AUC sex / race (macro) | "
        + " | ".join(
            " / ".join("-" if v is None else f"{v:.3f}" for v in results[n]["test_auc"].values())
            for n in names
        )
        + " |",
    ]
    for head in HEADS:
        for key, label in (
            ("drift", "drift"),
            ("grain_drift", "... from the grain alone"),
            ("noise_free_drift", "... the grain-free picture through the autoencoder"),
        ):
            cells = [results[n][key].get(head) for n in names]
            lines.append(
                f"| {label}: {head} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |"
            )
    for years in aged:
        cells = [results[n]["age_dose"][f"{years:+d}"] for n in names]
        lines.append(
            f"| age read from the phantom's own {years:+d} years (share of {abs(years)} years; "
            f"{len(aged[years][0])} images) | " + " | ".join(f"{c:.2f}" for c in cells) + " |"
        )
    for key in sets:
        cells = [results[n]["kid"][key] for n in names]
        lines.append(
            f"| KID vs {len(real)} real images: {key} | " + " | ".join(f"{c:.3f}" for c in cells) + " |"
        )
    write_json(
        args.out / "judge_drift.json", {"images": len(originals), "seed": args.seed, "results": results}
    )
    write_text(args.out / "judge_drift.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
