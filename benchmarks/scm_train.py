"""The SCM baseline on the phantom, end to end: training time, reconstruction, and counterfactual quality.

Stages (each is skipped when its output is already in --work, so an interrupted run continues):

1. a phantom (default config: age raises pleural effusion) of --n images at --size px, and its index;
2. ``cfaudit scm train`` with the ``small`` preset for --steps steps (wall time measured);
3. an attribute classifier (``cfaudit.train.classifier``, resnet-small at --size px) on train/val;
4. ``cfaudit scm edit`` of --test-images test images with do(sex=Female), do(sex=Male), do(age=85), do(age=30),
   once per latent mode (``noise``: latents keep their abducted prior noise; ``fixed``: latents kept);
5. scores: the classifier's sex decision on the counterfactual whose sex was flipped (effectiveness; chance is
   the share of unedited images it already assigns to the other sex), its age and effusion outputs after
   do(age=85) vs do(age=30), the graph's effusion rate under those interventions, the phantom's own effusion
   measure, edit sizes, the null intervention's error (must be 0) and the HVAE's reconstruction L1.

    nice -n 10 python benchmarks/scm_train.py --work runs/scm-bench --threads 1
    python benchmarks/scm_train.py --work /tmp/scm-quick --n 600 --steps 100 --test-images 40   # smoke run

Prints a Markdown table for docs/BENCHMARKS.md and writes --work/results.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def stage_data(work: Path, n: int, size: int, seed: int) -> Path:
    from cfaudit.data.adapters import build_index, write_index
    from cfaudit.data.phantom import default_config_path, generate_phantom, load_config

    index = work / "phantom" / "index.csv"
    if not index.is_file():
        settings = load_config(default_config_path("default")).with_overrides(n=n, size=size)
        generate_phantom(work / "phantom", settings, seed=seed, workers=1)
        write_index(build_index("phantom", work / "phantom", seed=seed), index)
    return index


def stage_scm(work: Path, index: Path, steps: int, threads: int, seed: int) -> dict:
    from cfaudit.scm.config import load_config
    from cfaudit.scm.model import CausalImageModel
    from cfaudit.scm.train import train_scm

    run = work / "scm"
    if not (run / "model" / "scm.json").is_file():
        config = load_config("small", None, {"index": str(index), "output_dir": str(run), "max_steps": steps,
                                             "threads": threads, "seed": seed, "device": "cpu"})  # fmt: skip
        started = time.perf_counter()
        result = train_scm(config, resume="latest", progress=False)
        timing = {"loop_seconds_last_call": result.seconds, "wall_seconds_last_call": time.perf_counter() - started,
                  "steps": result.step}  # fmt: skip
        (run / "benchmark_timing.json").write_text(json.dumps(timing))
    model = CausalImageModel.load(run)
    timing = (
        json.loads((run / "benchmark_timing.json").read_text())
        if (run / "benchmark_timing.json").is_file()
        else {}
    )
    return {**model.meta["training"], "timing": timing}


def stage_classifier(work: Path, index: Path, size: int, epochs: int) -> Path:
    from cfaudit.train.classifier import ClassifierConfig, train_classifier

    folder = work / "classifier"
    if not (folder / "classifier.json").is_file():
        train_classifier(
            index, folder, ClassifierConfig(size=size, epochs=epochs, patience=4), device="cpu", log=print
        )
    return folder


def stage_edits(work: Path, index: Path, limit: int, latents: str) -> Path:
    from cfaudit.data.edit_jobs import items_from_index
    from cfaudit.data.interventions import parse_interventions
    from cfaudit.data.records import DataIndex
    from cfaudit.scm.job import ScmEditSettings, run_scm_edit_job
    from cfaudit.scm.model import CausalImageModel

    out = work / f"edits-{latents}"
    model = CausalImageModel.load(work / "scm")
    items = items_from_index(DataIndex.read(index), "test", limit, policy=model.label_policy)
    interventions = parse_interventions(["sex=Female", "sex=Male", "age=85", "age=30"])
    run_scm_edit_job(model, items, interventions, out, ScmEditSettings(latents=latents, batch_size=16))
    return out


def score(edits_dir: Path, classifier_dir: Path) -> dict:
    from cfaudit.data.edit_folder import EDITS_CSV
    from cfaudit.data.images import load_image
    from cfaudit.data.phantom import effusion_score
    from cfaudit.evaluate.classifiers import AttributeClassifier
    from cfaudit.evaluate.metrics import effectiveness
    from cfaudit.scm.job import VALUES_CSV

    classifier = AttributeClassifier.load(classifier_dir, device="cpu")
    edits = pd.read_csv(edits_dir / EDITS_CSV)
    values = pd.read_csv(edits_dir / VALUES_CSV)

    def images(column: str, intervention: str) -> list[np.ndarray]:
        rows = edits[edits["intervention"] == intervention]
        return [load_image(edits_dir / path) for path in rows[column]]

    first = edits["intervention"].iloc[0]
    originals = images("reconstruction", first)
    before = classifier.predict(originals)
    ids = edits[edits["intervention"] == first]["image_id"].tolist()
    sex = values[values["intervention"] == first].set_index("image_id").loc[ids, "sex"].to_numpy()
    # do(sex = the other sex) for every image: the Female counterfactual of men, the Male one of women
    female, male = (
        classifier.predict(images("counterfactual", "do(sex=Female)")),
        classifier.predict(images("counterfactual", "do(sex=Male)")),
    )
    flipped = {head: np.where(sex == "Male", female[head].T, male[head].T).T for head in female}
    target = np.where(sex == "Male", 0.0, 1.0)  # the sex head is P(Male)
    result = effectiveness(before, flipped, "sex", target, kinds=classifier.head_kinds)
    recorded_correct = float(np.mean((before["sex"] >= 0.5) == (sex == "Male")))
    old, young = (
        classifier.predict(images("counterfactual", "do(age=85)")),
        classifier.predict(images("counterfactual", "do(age=30)")),
    )
    graph_old = values[values["intervention"] == "do(age=85)"]["Pleural Effusion (counterfactual)"].mean()
    graph_young = values[values["intervention"] == "do(age=30)"]["Pleural Effusion (counterfactual)"].mean()
    measure_old = np.mean([effusion_score(i) for i in images("counterfactual", "do(age=85)")])
    measure_young = np.mean([effusion_score(i) for i in images("counterfactual", "do(age=30)")])
    return {
        "images": len(ids),
        "classifier_sex_accuracy_on_originals": recorded_correct,
        "sex_effectiveness": result.rate,
        "sex_flip_rate": result.flip_rate,
        "sex_chance": float(np.mean(result.already)),
        "kept_age_within_5y": result.kept_rate.get("age"),
        "age_pred_do85": float(np.mean(old["age"])),
        "age_pred_do30": float(np.mean(young["age"])),
        "age_pred_original": float(np.mean(before["age"])),
        "effusion_clf_do85": float(np.mean(old["Pleural Effusion"])),
        "effusion_clf_do30": float(np.mean(young["Pleural Effusion"])),
        "effusion_graph_do85": float(graph_old),
        "effusion_graph_do30": float(graph_young),
        "effusion_measure_do85": float(measure_old),
        "effusion_measure_do30": float(measure_young),
        "edit_l1": {
            i: float(edits[edits["intervention"] == i]["edit_l1"].mean())
            for i in edits["intervention"].unique()
        },
        "null_l1_max": float(edits["reconstruction_l1"].max()),
        "seconds_per_edit": float(edits["seconds"].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/scm-bench"))
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--classifier-epochs", type=int, default=10)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)

    index = stage_data(args.work, args.n, args.size, args.seed)
    training = stage_scm(args.work, index, args.steps, args.threads, args.seed)
    classifier = stage_classifier(args.work, index, args.size, args.classifier_epochs)
    scores = {latents: score(stage_edits(args.work, index, args.test_images, latents), classifier)
              for latents in ("noise", "fixed")}  # fmt: skip
    results = {"machine": platform.processor() or platform.machine(), "threads": args.threads, "args": {k: str(v) for k, v in vars(args).items()},
               "training": training, "scores": scores}  # fmt: skip
    (args.work / "results.json").write_text(json.dumps(results, indent=2, default=str))

    evaluation = training.get("evaluation", {})
    print(f"\ntraining: {training['steps']} steps, {training['parameters']:,} parameters, "
          f"{training['timing'].get('loop_seconds_last_call', float('nan')):.0f} s, {training['skipped_updates']} updates skipped; "
          f"val {evaluation.get('val_bits_per_dim', float('nan')):.3f} bits/dim, "
          f"HVAE reconstruction L1 {evaluation.get('val_reconstruction_l1', float('nan')):.4f}\n")  # fmt: skip
    print("| latents | sex effectiveness | chance | age pred. do(85) / do(30) | effusion: graph do(85) / do(30) | "
          "classifier | phantom measure | edit L1 sex / age | null L1 | s / edit |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for latents, s in scores.items():
        l1 = s["edit_l1"]
        print(f"| {latents} | {s['sex_effectiveness']:.2f} | {s['sex_chance']:.2f} | {s['age_pred_do85']:.1f} / {s['age_pred_do30']:.1f} | "
              f"{s['effusion_graph_do85']:.2f} / {s['effusion_graph_do30']:.2f} | {s['effusion_clf_do85']:.2f} / {s['effusion_clf_do30']:.2f} | "
              f"{s['effusion_measure_do85']:.3f} / {s['effusion_measure_do30']:.3f} | "
              f"{(l1['do(sex=Female)'] + l1['do(sex=Male)']) / 2:.4f} / {(l1['do(age=85)'] + l1['do(age=30)']) / 2:.4f} | "
              f"{s['null_l1_max']:.1g} | {s['seconds_per_edit']:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
