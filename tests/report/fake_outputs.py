"""Small, fake but well-formed outputs of every cfaudit step, for testing the report without running them.

A phantom of 40 images at 64 px with its index is real (``generate_phantom`` + ``build_index``); the edit jobs,
the evaluation and the discovery are written in the documented formats with made-up numbers and simple
synthetic "edits" (a darker heart region, a brighter band), so every figure has something to show.

The discovery carries error rates (p- and q-values, detectable effects, ``power.csv``, ``error_rates`` in
``discovery.json``) as ``cfaudit discover`` writes them now; ``make_discovery(..., error_rates=False)`` writes
one as older runs did, without them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import stats

from cfaudit.data.adapters import build_index, write_index
from cfaudit.data.difference import colour_map, save_difference, signed_difference
from cfaudit.data.edit_folder import EDIT_COLUMNS, safe_name
from cfaudit.data.images import load_image, save_image
from cfaudit.data.phantom import generate_phantom, load_config
from cfaudit.data.records import DataIndex

SIZE = 64
INTERVENTIONS = ("do(Cardiomegaly=0)", "do(sex=Female)")
SLUGS = {"do(Cardiomegaly=0)": "cardiomegaly-0", "do(sex=Female)": "sex-female", "do(age=80)": "age-80"}
SLUGS.update(
    {
        f"do({f}=1)": f"{f.lower().replace(' ', '-')}-1"
        for f in (
            "Edema",
            "Pneumonia",
            "Fracture",
            "Atelectasis",
            "Lung Opacity",
            "Pleural Effusion",
            "Support Devices",
        )
    }
)
HEADS = ("Cardiomegaly", "Support Devices", "Pleural Effusion", "sex", "age")
METRICS = ("LPIPS", "L1", "CPG", "CPG (signed)")
COLUMNS = ("do(sex)", "do(disease)", "do(race)", "do(age)")
#: The false discovery rate of the fake discovery, and how its q-values are adjusted.
ALPHA = 0.1
FDR = "bh"
#: Columns a discovery made before error rates lacks (candidates, co-change and cluster tables).
ERROR_RATE_COLUMNS = (
    "p_value", "q_value", "detectable", "classifier_bias", "rests_on", "cross_check", "spread", "intervened",
)  # fmt: skip


@dataclass
class Workspace:
    """Paths of the fake outputs (``root`` holds them all, as ``cfaudit demo --out`` would)."""

    root: Path
    index_csv: Path
    edits: Path
    scm_edits: Path
    evaluation: Path
    discovery: Path


def make_phantom_index(root: Path, n: int = 40, seed: int = 1, size: int = SIZE) -> Path:
    generate_phantom(root / "phantom", load_config().with_overrides(n=n, size=size), seed=seed)
    index = build_index("phantom", root / "phantom", seed=0)
    write_index(index, root / "index.csv")
    return root / "index.csv"


def _perturb(image: np.ndarray, intervention: str, strength: float) -> np.ndarray:
    """A visible, intervention-specific synthetic change: a darker heart blob, a brighter band, a wide haze."""
    height, width = image.shape
    y, x = np.mgrid[0:height, 0:width] / np.array([height - 1, width - 1])[:, None, None]
    if "Cardiomegaly" in intervention:
        change = -strength * np.exp(-(((x - 0.55) / 0.12) ** 2 + ((y - 0.62) / 0.1) ** 2))
        change += (
            0.6 * strength * np.exp(-(((x - 0.72) / 0.05) ** 2 + ((y - 0.3) / 0.05) ** 2))
        )  # "pacemaker"
    elif "sex" in intervention:
        change = strength * 0.8 * np.exp(-(((y - 0.45) / 0.08) ** 2)) * (np.abs(x - 0.5) > 0.2)
    else:
        change = -strength * 0.5 * np.exp(-(((y - 0.8) / 0.1) ** 2))
    return np.clip(image + change, 0.0, 1.0).astype(np.float32)


def make_edit_job(
    out: Path,
    index_csv: Path,
    interventions: tuple[str, ...] = INTERVENTIONS,
    images: int = 8,
    method: str = "direct",
    seed: int = 0,
) -> Path:
    """An edit job folder in the layout of ``cfaudit edit``: images/<id>/..., edits.csv, job.json."""
    rng = np.random.default_rng(seed)
    index = DataIndex.read(index_csv)
    rows = []
    for position in range(images):
        record = index.table.iloc[position]
        image_id = str(record["image_id"])
        original_path = index.image_path(position)
        original = load_image(original_path)
        folder = out / "images" / safe_name(image_id)
        reconstruction = np.clip(original + rng.normal(0, 0.01, original.shape), 0, 1).astype(np.float32)
        save_image(reconstruction, folder / "reconstruction.png", bits=16)
        for intervention in interventions:
            slug = SLUGS[intervention]
            counterfactual = _perturb(reconstruction, intervention, 0.12 + 0.04 * rng.random())
            save_image(counterfactual, folder / f"{slug}.png", bits=16)
            difference = signed_difference(counterfactual, reconstruction)
            scale = save_difference(difference, folder / f"{slug}_diff.npy", folder / f"{slug}_diff.png")
            relative = folder.relative_to(out)
            rows.append(
                {
                    "image_id": image_id, "intervention": intervention, "source_prompt": "Chest X-ray of subject",
                    "target_prompt": f"Chest X-ray of subject ({intervention})", "prompt_mode": "partial",
                    "method": method, "steps": 20, "guidance_scale": 7.5, "seed": 0, "unet_evals": 40.0,
                    "seconds": 0.5, "reconstruction_l1": 0.01, "identity_l1": None,
                    "edit_l1": float(np.abs(difference).mean()), "diff_scale": scale, "inversion_cached": False,
                    "original": str(original_path.resolve()), "counterfactual": str(relative / f"{slug}.png"),
                    "reconstruction": str(relative / "reconstruction.png"),
                    "difference": str(relative / f"{slug}_diff.npy"),
                    "difference_png": str(relative / f"{slug}_diff.png"),
                }
            )  # fmt: skip
    pd.DataFrame(rows, columns=list(EDIT_COLUMNS)).to_csv(out / "edits.csv", index=False)
    job = {"model": "demo", "model_fingerprint": "0123456789abcdef", "interventions": list(interventions),
           "settings": {"inversion": {"method": method, "steps": 20, "guidance_scale": 7.5},
                        "prompt_mode": "partial", "seed": 0}}  # fmt: skip
    (out / "job.json").write_text(json.dumps(job, indent=2), encoding="utf-8")
    return out


def make_evaluation(out: Path, seed: int = 0) -> Path:
    """``table2.csv`` (long format), ``axioms.csv``, ``table2.md`` and ``table2.png`` of two methods."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for method, offset in (("ours", 0.0), ("scm-hvae", 0.03)):
        for metric in METRICS:
            for column in COLUMNS:
                mean = {"LPIPS": 0.1, "L1": 15.0, "CPG": 0.8, "CPG (signed)": 0.6}[metric] + offset
                mean += 0.01 * rng.random()
                rows.append({"method": method, "column": column, "metric": metric, "mean": mean,
                             "ci_low": mean - 0.02, "ci_high": mean + 0.02, "n": 6, "size": 192,
                             "classifier": "classifier"})  # fmt: skip
    pd.DataFrame(rows).to_csv(out / "table2.csv", index=False)
    axioms = [{"method": "ours", "column": c, "axiom": a, "value": 0.05, "ci_low": 0.04, "ci_high": 0.06, "n": 6}
              for c in COLUMNS[:2] for a in ("composition", "reversibility")]  # fmt: skip
    pd.DataFrame(axioms).to_csv(out / "axioms.csv", index=False)
    (out / "table2.md").write_text("| | do(sex) |\n|---|---|\n| LPIPS ours | 0.10 |\n", encoding="utf-8")
    Image.fromarray(np.full((40, 80, 3), 200, np.uint8)).save(out / "table2.png")
    return out


def candidates_table(error_rates: bool = True) -> pd.DataFrame:
    """Five candidates, ranks 1..5, two flagged; one region candidate with an evidence montage.

    With ``error_rates``, also the columns of a discovery that computes them: statuses (``hidden`` twice, then
    ``not significant``, ``in labels``, ``classifier confound``), p, q, the detectable effect in each row's unit
    (rank 3's: none at this n), the classifier bias of the age head, what each status rests on."""
    rows = [
        (1, "do(Cardiomegaly=0)", "head", "Support Devices", "Removing cardiomegaly also removes support devices.",
         -0.31, -0.40, -0.22, -0.02, 0.01, -0.08, 0.21, True, 8, 0.75, None, None, "evidence/rank1.png"),
        (2, "do(Cardiomegaly=0)", "region", "cluster 1", "A bright spot under the left clavicle fades.",
         -0.09, -0.12, -0.06, -0.01, 0.00, None, 0.08, True, 8, 0.62, 0.72, 0.3, "evidence/rank2.png"),
        (3, "do(age=80)", "head", "Pleural Effusion", "Older patients get more effusion.",
         0.12, 0.05, 0.19, 0.02, 0.03, 0.10, 0.02, False, 8, 0.4, None, None, ""),
        (4, "do(sex=Female)", "head", "Cardiomegaly", "Heart size moves with sex.",
         0.04, -0.02, 0.10, 0.03, 0.01, 0.05, -0.01, False, 8, 0.2, None, None, ""),
        (5, "do(sex=Female)", "head", "age", "The apparent age moves by a few years.",
         2.5, 0.5, 4.5, 0.3, 0.2, 0.0, 2.2, False, 8, 0.5, None, None, ""),
    ]  # fmt: skip
    columns = ["rank", "intervention", "kind", "target", "description", "effect", "ci_low", "ci_high",
               "null_control", "offtarget_control", "label_association", "excess", "flagged", "n_images",
               "frequency", "x", "y", "evidence"]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns)
    table["examples"] = "img-a;img-b"
    if not error_rates:  # the statuses of older runs, flagged by the margins alone
        table["status"] = ["hidden", "hidden", "editor quirk", "in labels", "editor quirk"]
        return table
    table["status"] = ["hidden", "hidden", "not significant", "in labels", "classifier confound"]
    table["p_value"] = [0.00042, 0.0031, 0.019, 0.21, 0.0007]
    table["q_value"] = [0.0063, 0.023, 0.14, 0.52, 0.0079]
    table["detectable"] = [0.12, 0.41, np.inf, 0.15, 3.2]  # probability; share of images; none; ...; years
    # Only the age head has a classifier bias (years: the classifier reads women older)
    table["classifier_bias"] = [np.nan, np.nan, np.nan, np.nan, 2.1]
    table["rests_on"] = ["head and region", "head and region", "head", "head", "head"]
    table["cross_check"] = [
        "agrees: cluster 1", "agrees: Support Devices moves -0.31", "no region change named by this head",
        "regions not analysed (whole-image attribute)", "regions not analysed (whole-image attribute)",
    ]  # fmt: skip
    return table


def power_table() -> pd.DataFrame:
    """What the fake run could detect (``power.csv``): a regional intervention, a whole-image one (no share) and
    one with too few images (its share and head change infinite), chosen with ``--images auto``."""
    return pd.DataFrame(
        [
            ("do(Cardiomegaly=0)", 6, 24, 31, 0.05, 0.55, 0.21, 4, 0),
            ("do(sex=Female)", 6, 24, 24, 0.05, np.nan, 0.18, 4, 1),
            ("do(age=80)", 2, 24, 2, 0.05, np.inf, np.inf, 4, 4),
        ],
        columns=["intervention", "n_images", "requested", "eligible", "level", "detectable_share",
                 "detectable_head", "heads_tested", "heads_undetectable"],
    )  # fmt: skip


def make_discovery(out: Path, index_csv: Path, seed: int = 0, error_rates: bool = True) -> Path:
    """discovery.json, candidates.csv (rows shuffled: the report must sort by rank), cochange.csv, clusters.csv,
    maps/<slug>_mean.png, evidence PNGs and the edit job in edits/; with ``error_rates``, also power.csv, the
    run's error rates and power in discovery.json, and p, q and detectable columns in the tables."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    interventions = ("do(Cardiomegaly=0)", "do(sex=Female)", "do(age=80)")
    make_edit_job(out / "edits", index_csv, interventions, images=6, seed=seed + 1)
    meta = {"model": "demo", "index": str(index_csv), "classifier": "classifier", "split": "test",
            "interventions": list(interventions), "margin": 0.05, "settings": {"n": 6, "bootstrap": 200}}  # fmt: skip
    candidates = candidates_table(error_rates)
    candidates.sample(frac=1.0, random_state=seed).to_csv(out / "candidates.csv", index=False)
    (out / "evidence").mkdir(exist_ok=True)
    for name in ("rank1.png", "rank2.png"):
        montage = (rng.random((48, 160)) * 255).astype(np.uint8)
        Image.fromarray(montage).save(out / "evidence" / name)
    cochange = []
    for intervention in interventions:
        for head in HEADS:
            effect = float(rng.normal(0, 0.1)) if head != "age" else float(rng.normal(0, 3))
            label = float(rng.normal(0, 0.05)) if head != "age" else np.nan
            cochange.append({"intervention": intervention, "head": head, "effect": effect, "ci_low": effect - 0.05,
                             "ci_high": effect + 0.05, "null_control": 0.01, "label_association": label,
                             "n_images": 6})  # fmt: skip
    cochange = pd.DataFrame(cochange)
    clusters = pd.DataFrame(
        [{"intervention": "do(Cardiomegaly=0)", "cluster": 1, "frequency": 0.62, "n_images": 6, "x": 0.72,
          "y": 0.3, "x0": 0.65, "y0": 0.23, "x1": 0.79, "y1": 0.37, "sign": "darker", "area": 0.02,
          "head": "Support Devices", "evidence": "evidence/rank2.png"}]
    )  # fmt: skip
    if error_rates:
        cochange, clusters = _with_error_rates(cochange, clusters, rng)
        flagged = int(candidates["flagged"].sum())
        tests = int(cochange["q_value"].notna().sum()) + len(clusters)
        rejections = int((cochange["q_value"] <= ALPHA).sum() + (clusters["q_value"] <= ALPHA).sum())
        level = ALPHA * (rejections + 1) / tests  # the p one more relation would need (BH)
        power = power_table().assign(level=level)
        power.to_csv(out / "power.csv", index=False)
        meta.update(
            alpha=ALPHA,
            error_rates={
                "alpha": ALPHA, "fdr": FDR, "tests": tests, "rejections": rejections, "level": level,
                "confirmed": flagged,
            },
            power=json.loads(power.to_json(orient="records")),  # as cfaudit discover writes it: inf as null
            flagged=flagged,
        )  # fmt: skip
        meta["settings"]["images"] = "auto"
    (out / "discovery.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    cochange.to_csv(out / "cochange.csv", index=False)
    clusters.to_csv(out / "clusters.csv", index=False)
    (out / "maps").mkdir(exist_ok=True)
    mean = np.load(next((out / "edits" / "images").rglob("cardiomegaly-0_diff.npy")))
    Image.fromarray(colour_map(mean)[0]).save(out / "maps" / "cardiomegaly-0_mean.png")
    return out


def _with_error_rates(
    cochange: pd.DataFrame, clusters: pd.DataFrame, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The columns cfaudit discover adds: p-values (a head an intervention targets is not tested), q-values
    (Benjamini-Hochberg over every test: heads and clusters together), detectable effects, classifier bias."""
    cochange, clusters = cochange.copy(), clusters.copy()
    targets = {"do(Cardiomegaly=0)": "Cardiomegaly", "do(sex=Female)": "sex", "do(age=80)": "age"}
    cochange["intervened"] = [
        targets[i] == h for i, h in zip(cochange["intervention"], cochange["head"], strict=True)
    ]
    # Small p-values for large effects, large ones for small: q <= alpha and an interval excluding 0 disagree
    # in places, so a figure's choice between them shows.
    strength = cochange["effect"].abs() / cochange["head"].map(lambda h: 30.0 if h == "age" else 1.0)
    cochange["p_value"] = np.where(
        cochange["intervened"], np.nan, np.exp(-60 * strength) * rng.uniform(0.5, 1, len(cochange))
    )
    cochange["spread"] = np.where(cochange["head"] == "age", 2.5, 0.08)
    cochange["classifier_bias"] = np.where(
        cochange["head"].isin(["sex", "age"]), rng.normal(0, 0.05, len(cochange)), np.nan
    )
    clusters["p_value"] = 0.004
    p = np.concatenate([cochange["p_value"].dropna().to_numpy(), clusters["p_value"].to_numpy()])
    q = stats.false_discovery_control(p, method=FDR)
    cochange.loc[cochange["p_value"].notna(), "q_value"] = q[: cochange["p_value"].notna().sum()]
    clusters["q_value"] = q[cochange["p_value"].notna().sum() :]
    cochange["detectable"] = np.where(cochange["intervened"], np.nan, 3.6 * cochange["spread"] / np.sqrt(6))
    clusters["detectable"] = 0.55
    return cochange, clusters


def make_workspace(root: Path) -> Workspace:
    """All of it under ``root``, as the demo lays it out."""
    index_csv = make_phantom_index(root)
    edits = make_edit_job(root / "edits", index_csv)
    scm_edits = make_edit_job(root / "scm-edits", index_csv, ("do(sex=Female)",), images=4, method="scm-hvae")
    evaluation = make_evaluation(root / "evaluation")
    discovery = make_discovery(root / "discovery", index_csv)
    return Workspace(root, index_csv, edits, scm_edits, evaluation, discovery)
