"""How often discovery flags something on data where nothing is planted: the false-flag rate, calibrated.

    python benchmarks/null_calibration.py --out runs/null-calibration \
        --model-seed 101 --model-seed 102 --data-seed 101 --data-seed 102 --data-seed 103 --data-seed 104 \
        --data-seed 105

For every ``--model-seed``: a null phantom (the shipped ``null`` config: findings, devices and demographics drawn
independently, nothing tied to anything) of that seed, and the demo's recipe fitted on it, as ``cfaudit demo
--train`` does: the UNet and its text encoder (on the shipped autoencoder) and the attribute classifier; no SCM,
which discovery does not use. For every ``--data-seed``: a null phantom of that seed, and the demo's discovery on
its test split (the demo's 12 interventions, ``--images auto`` at the demo's detectable effect) with the model
trained on the same seed when there is one, else with the model of the first ``--model-seed`` (a phantom that
model never saw). Writes ``calibration.csv`` (one row per discovery run: flagged candidates, the smallest q,
candidates tested) and ``calibration.json`` (the share of runs with any false flag, with its exact 95% interval,
against alpha). Every step resumes: re-run the same command after an interruption.

The question is the one users ask of a "no relation" data set: does the run flag anything? Everything the tool
flags on a null phantom is false, whether it comes from chance (which the q-values bound) or from the editor's
own quirks (which the controls are for).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from scipy import stats

from cfaudit.atomic_io import write_json
from cfaudit.data.adapters import build_index, write_index
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config
from cfaudit.demo import DEMO_DETECT_EFFECT, DEMO_INTERVENTIONS
from cfaudit.demo_training import train_demo_editor
from cfaudit.discover.api import discover
from cfaudit.discover.candidates import CandidateSettings


def null_phantom(folder: Path, seed: int, n: int, size: int) -> Path:
    """A null phantom of ``seed`` with its index (the demo's size and split); returns the index path."""
    settings = load_config(default_config_path("null")).with_overrides(n=n, size=size)
    phantom = generate_phantom(folder / "phantom", settings, seed=seed, workers=1)
    index = folder / "index.csv"
    if not index.is_file():
        write_index(build_index("phantom", phantom.out, seed=seed), index)
    return index


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model-seed", type=int, action="append", required=True)
    parser.add_argument("--data-seed", type=int, action="append", required=True)
    parser.add_argument("--n", type=int, default=2000, help="images per phantom (the demo's 2,000)")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies training steps (1 = the demo's)")
    parser.add_argument("--alpha", type=float, default=CandidateSettings.alpha)
    args = parser.parse_args()

    models: dict[int, tuple[str, str]] = {}
    for seed in args.model_seed:
        folder = args.out / f"phantom-{seed}"
        index = null_phantom(folder, seed, args.n, args.size)
        started = time.perf_counter()
        models[seed] = train_demo_editor(folder / "models", index, seed, lambda *_: None, args.scale)
        print(
            f"model seed {seed}: fitted ({(time.perf_counter() - started) / 60:.1f} min this call)",
            flush=True,
        )

    rows = []
    for seed in args.data_seed:
        folder = args.out / f"phantom-{seed}"
        index = null_phantom(folder, seed, args.n, args.size)
        model_seed = seed if seed in models else args.model_seed[0]
        model, classifier = models[model_seed]
        started = time.perf_counter()
        found = discover(
            model, index, classifier, folder / f"discovery-model-{model_seed}", list(DEMO_INTERVENTIONS),
            images="auto", detect_effect=DEMO_DETECT_EFFECT, alpha=args.alpha, seed=seed,
        )  # fmt: skip
        table = found.candidates
        flagged = table[table["flagged"]]
        rows.append({
            "data_seed": seed, "model_seed": model_seed, "model_saw_this_phantom": model_seed == seed,
            "candidates": len(table), "tested": int(table["q_value"].notna().sum()),
            "flagged": len(flagged), "any_flag": bool(len(flagged)),
            "smallest_q": float(table["q_value"].min()) if table["q_value"].notna().any() else float("nan"),
            "flags": "; ".join(flagged["description"].str.slice(0, 160)),
            "minutes": round((time.perf_counter() - started) / 60, 1),
        })  # fmt: skip
        print(f"data seed {seed} (model {model_seed}): {len(flagged)} flagged of {len(table)}", flush=True)

    result = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    result.to_csv(args.out / "calibration.csv", index=False)
    runs, false = len(result), int(result["any_flag"].sum())
    interval = stats.binomtest(false, runs).proportion_ci(0.95, method="exact")
    summary = {
        "runs": runs, "runs_with_any_false_flag": false, "share": false / runs,
        "share_ci95": [interval.low, interval.high], "alpha": args.alpha,
        "model_seeds": args.model_seed, "data_seeds": args.data_seed, "n": args.n, "size": args.size,
        "scale": args.scale, "interventions": list(DEMO_INTERVENTIONS), "detect_effect": DEMO_DETECT_EFFECT,
    }  # fmt: skip
    write_json(args.out / "calibration.json", summary)
    print(result.drop(columns="flags").to_string(index=False))
    print(f"\nruns with any false flag: {false} of {runs} ({false / runs:.0%}, exact 95% CI "
          f"[{interval.low:.0%}, {interval.high:.0%}]); alpha {args.alpha}")  # fmt: skip


if __name__ == "__main__":
    main()
