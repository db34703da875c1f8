"""Realism of generated images: Frechet distance (FD) and KID against real images of the same split.

``cfaudit evaluate`` (:func:`cfaudit.evaluate.evaluation.evaluate_edits`) calls :func:`plan_realism` and
:func:`realism_table` and writes ``realism.csv``. For each method, its counterfactuals and, where the edit folder
has them, its reconstructions (the null edit: inversion and decoding without an intervention) are compared with
real images of the split the edited images come from; the reconstruction row shows how much of the gap the
autoencoder (or the inversion) makes on its own. Folders of sampled images (``cfaudit sample --out``) are scored
the same way.

* **Features.** By default the trunk of the project's attribute classifier (``model.backbone``: globally pooled
  features, images prepared exactly as the classifier prepares them); or the penultimate 1024-d pooled features of
  a torchxrayvision DenseNet-121 loaded from a local weight file (:mod:`cfaudit.evaluate.xrv_classifier`). There
  is no Inception network here (not a chest X-ray model, and no weights to fetch), so the numbers are "FID-like":
  comparable between sets scored with the same features and the same n, never with published FIDs.
* **FD** (:func:`~cfaudit.evaluate.realism_distances.frechet_distance`): the FID formula on those features,
  ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))``. It is **biased upwards at small n**: the noise of the sample
  covariances adds a positive term that shrinks roughly like 1/n and grows with the feature dimension (with fewer
  images than dimensions it dominates). Compare FDs only at equal ``n_generated`` and ``n_real``; both are reported
  with every value.
* **KID** (:func:`~cfaudit.evaluate.realism_distances.kid`, Binkowski et al., 2018): the unbiased estimate of the
  squared MMD with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over random subsets of
  ``min(n_a, n_b, 100)`` images of each set, as the reference implementations do. Its mean over independent draws
  of one distribution is 0, so small negative values occur; they mean "not told apart at this n".
* **Intervals** (:func:`~cfaudit.evaluate.realism_distances.realism_intervals`): 95% bootstrap over images, both
  sets resampled with replacement by a seeded generator. Repeated images in a resample matter here as they do not
  for a mean:

  - KID: each resample is scored by the unbiased statistic of all its images (the subset average estimates the
    same quantity) with the pairs of an image and its own copies left out of the within-set means, which would
    otherwise count as perfect matches and inflate it. The interval is the plain percentile interval.
  - FD: a resample with repeated images is a smaller, less varied set, so its FD is higher (the small-n bias
    again): with simulated features every resampled FD lay above the estimate and the plain percentile interval
    never held it. The interval reported is the percentile interval of the resampled FDs shifted by their mean
    excess over the estimate (bias-centred). It measures the spread under resampling, not the small-n bias; in
    simulations with Gaussian features it was 2-4 times wider than the spread of FD over fresh sets
    (conservative).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit.errors import CfauditError
from cfaudit.evaluate.realism_distances import KID_SUBSET_SIZE, KID_SUBSETS, RealismValue, realism_intervals
from cfaudit.evaluate.realism_features import (
    FEATURES_CLASSIFIER,
    FeatureExtractor,
    Warn,
    feature_extractor,
    has_trunk,
    image_features,
)
from cfaudit.progress import Progress

DEFAULT_MAX_REAL = 500
SETS: tuple[str, ...] = ("counterfactuals", "reconstructions", "samples")
REALISM_COLUMNS: tuple[str, ...] = (
    "method", "set", "metric", "value", "ci_low", "ci_high", "n_generated", "n_real", "split", "features",
)  # fmt: skip
SAMPLE_SUFFIXES: tuple[str, ...] = (".png",)


# --- real images ---------------------------------------------------------------------------------------------


def edited_split(image_ids: Iterable[str], index_table: pd.DataFrame) -> tuple[str | None, dict[str, int]]:
    """The split of the edited images (their index rows' ``split``; the most common one when they span several)
    and the count per split. ``None`` when none of the ids is in the index with a split."""
    split_of = dict(zip(index_table["image_id"].astype(str), index_table["split"].astype(str), strict=True))
    splits = [split_of.get(str(image_id), "") for image_id in image_ids]
    counts = pd.Series([s for s in splits if s]).value_counts()
    found = {str(k): int(v) for k, v in counts.items()}
    if not found:
        return None, {}
    return max(found, key=lambda s: (found[s], s)), found


def real_rows(index_table: pd.DataFrame, split: str, max_real: int, seed: int = 0) -> pd.DataFrame:
    """The real images of ``split``: all its index rows, or ``max_real`` of them when there are more, drawn with
    a seeded generator from the rows sorted by image id (the same choice whatever the index's row order)."""
    rows = index_table[index_table["split"].astype(str) == split].sort_values("image_id", kind="stable")
    if len(rows) > max_real:
        chosen = np.sort(np.random.default_rng(seed).choice(len(rows), max_real, replace=False))
        rows = rows.iloc[chosen]
    return rows.reset_index(drop=True)


@dataclass
class RealImages:
    """The index and the features of its real images per split (each split's features are computed once)."""

    index: Any  # DataIndex
    extractor: FeatureExtractor
    max_real: int = DEFAULT_MAX_REAL
    seed: int = 0
    progress: Progress | None = None
    cache: dict[str, np.ndarray] = field(default_factory=dict)

    def features(self, split: str) -> np.ndarray:
        if split not in self.cache:
            rows = real_rows(self.index.table, split, self.max_real, self.seed)
            paths = [self.index.image_path(row) for _, row in rows.iterrows()]
            self.cache[split] = _features_with_progress(
                paths, self.extractor, f"real images ({split})", self.progress,
                what=f"real image of the index's {split} split",
                fix="fix the index (`cfaudit data index`) or its image root",
            )  # fmt: skip
        return self.cache[split]


def _features_with_progress(
    paths: Sequence[str | Path], extractor: FeatureExtractor, stage: str, progress: Progress | None, *,
    what: str, fix: str,
) -> np.ndarray:  # fmt: skip
    done = [0]

    def step(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(f"realism: {stage}", done[0], len(paths))

    return image_features(paths, extractor, what=what, fix=fix, progress=step)


def _rows(
    method: str, image_set: str, values: dict[str, RealismValue], split: str, features: str
) -> list[dict[str, Any]]:
    return [
        {"method": method, "set": image_set, "metric": v.metric, "value": v.value, "ci_low": v.low,
         "ci_high": v.high, "n_generated": v.n_generated, "n_real": v.n_real, "split": split, "features": features}
        for v in values.values()
    ]  # fmt: skip


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def method_realism(
    rows: pd.DataFrame,
    real: RealImages,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    warn: Warn | None = None,
) -> list[dict[str, Any]]:
    """FD and KID of each method's counterfactuals (every counterfactual file of its rows) and reconstructions
    (where there are any) vs the real images of the edited images' split. ``rows``: as :func:`read_edit_folder`
    reads them, grouped by their ``label`` column (else ``method``)."""
    warn = warn or (lambda message: None)
    label = "label" if "label" in rows.columns else "method"
    out: list[dict[str, Any]] = []
    for method, mine in rows.groupby(label, sort=False):
        split, counts = edited_split(mine["image_id"], real.index.table)
        if split is None:
            warn(f"realism of {method} not measured: none of its edited image ids is in --index with a split")
            continue
        if len(counts) > 1:
            warn(
                f"the images {method} edited span the splits {counts}: realism compares with the {split} split"
            )
        reference = real.features(split)
        sets = [("counterfactuals", _unique(mine["counterfactual"]))]
        if "reconstruction" in mine.columns and _unique(mine["reconstruction"]):
            sets.append(("reconstructions", _unique(mine["reconstruction"])))
        for image_set, paths in sets:
            generated = _features_with_progress(
                paths, real.extractor, f"{method} {image_set}", real.progress,
                what=f"{method}: {image_set[:-1]}", fix="re-run the editing job or remove the row",
            )  # fmt: skip
            if min(len(generated), len(reference)) < 2:
                warn(f"realism of {method} {image_set}: {len(generated)} generated and {len(reference)} real "
                     "image(s); FD and KID need at least 2 of each")  # fmt: skip
            values = realism_intervals(generated, reference, n_boot=n_boot, seed=seed)
            out += _rows(str(method), image_set, values, split, real.extractor.name)
    return out


def edit_folder_realism(
    edit_folder: Any, real: RealImages, *, n_boot: int = 1000, seed: int = 0, warn: Warn | None = None
) -> list[dict[str, Any]]:
    """:func:`method_realism` of one edit folder (a :class:`~cfaudit.evaluate.reading.EditFolder`)."""
    return method_realism(edit_folder.rows, real, n_boot=n_boot, seed=seed, warn=warn)


def sample_images(folder: str | Path) -> list[Path]:
    """The PNG files directly in a samples folder, sorted; a folder without any is a :class:`CfauditError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CfauditError(f"--samples {folder}: no such folder; give the --out folder of `cfaudit sample`")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES)
    if not paths:
        raise CfauditError(
            f"--samples {folder}: no PNG images in it; give the --out folder of `cfaudit sample`"
        )
    return paths


def samples_realism(
    folder: str | Path, real: RealImages, split: str, *, n_boot: int = 1000, seed: int = 0
) -> list[dict[str, Any]]:
    """FD and KID of a folder of sampled PNGs vs the real images of ``split`` (method: the folder's name)."""
    folder = Path(folder)
    paths = sample_images(folder)
    generated = _features_with_progress(
        paths, real.extractor, f"samples {folder.name}", real.progress,
        what=f"sampled image in {folder}", fix="remove it from the folder or sample it again",
    )  # fmt: skip
    values = realism_intervals(generated, real.features(split), n_boot=n_boot, seed=seed)
    return _rows(folder.name, "samples", values, split, real.extractor.name)


# --- in `cfaudit evaluate` -----------------------------------------------------------------------------------


@dataclass
class RealismPlan:
    """What :func:`plan_realism` decided: on (with its features, index and samples) or off (and why)."""

    enabled: bool
    reason: str = ""
    extractor: FeatureExtractor | None = None
    index: Any = None  # DataIndex
    index_path: Path | None = None
    samples: list[Path] = field(default_factory=list)
    max_real: int = DEFAULT_MAX_REAL


def plan_realism(
    realism: bool | None,
    classifier: Any,
    *,
    index: str | Path | None,
    features: str | Path = FEATURES_CLASSIFIER,
    samples: Sequence[str | Path] = (),
    max_real: int = DEFAULT_MAX_REAL,
    device: str | None = None,
    warn: Warn | None = None,
) -> RealismPlan:
    """Check realism's inputs before the long scoring starts, and load its feature extractor.

    ``realism``: ``None`` measures it when an index is given (real images are needed) and the features can be
    made; ``True`` makes a missing index or classifier trunk an error; ``False`` skips it.
    """
    sample_folders = [Path(s) for s in samples]
    if realism is False:
        if sample_folders:
            raise CfauditError("--samples are scored for realism: drop --no-realism, or drop --samples")
        return RealismPlan(False, "off (--no-realism)")
    if index is None:
        if realism or sample_folders:
            raise CfauditError("realism (FD, KID) needs real images: give --index (the index of the edited "
                               "images), or --no-realism")  # fmt: skip
        return RealismPlan(False, "not measured: it needs real images, give --index")
    if max_real < 2:
        raise CfauditError(f"--real-images must be at least 2, got {max_real}")
    for folder in sample_folders:
        sample_images(folder)  # a missing or empty folder fails now, not after the scoring
    if realism is None and str(features) == FEATURES_CLASSIFIER and not has_trunk(classifier):
        message = (f"realism not measured: the classifier {type(classifier).__name__} has no network trunk for "
                   "features; give --realism-features PATH (torchxrayvision DenseNet weights)")  # fmt: skip
        if warn is not None:
            warn(message)
        return RealismPlan(False, message.removeprefix("realism "))
    from cfaudit.data.records import DataIndex

    extractor = feature_extractor(features, classifier, device)
    return RealismPlan(True, "", extractor, DataIndex.read(index), Path(index), sample_folders, max_real)


def realism_table(
    plan: RealismPlan,
    folders: Sequence[Any],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    warn: Warn | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """``realism.csv``'s rows: every method of the edit folders (pooled by label across folders), then each
    samples folder (against the split most edited images come from; ``test`` when none is known)."""
    if not plan.enabled or plan.extractor is None:
        return pd.DataFrame(columns=list(REALISM_COLUMNS))
    real = RealImages(plan.index, plan.extractor, plan.max_real, seed, progress)
    rows = pd.concat([f.rows for f in folders], ignore_index=True) if folders else pd.DataFrame()
    out = method_realism(rows, real, n_boot=n_boot, seed=seed, warn=warn) if len(rows) else []
    if plan.samples:
        split = edited_split(rows["image_id"], plan.index.table)[0] if len(rows) else None
        for folder in plan.samples:
            out += samples_realism(folder, real, split or "test", n_boot=n_boot, seed=seed)
    return pd.DataFrame(out, columns=list(REALISM_COLUMNS))


def _cell(value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.4g}" if math.isnan(low) else f"{value:.4g} [{low:.4g}, {high:.4g}]"


def realism_markdown(table: pd.DataFrame, plan: RealismPlan, n_boot: int) -> str:
    """The section at the end of ``table2.md``: one line when realism is off, else a table per method x set."""
    if not plan.enabled or plan.extractor is None:
        return f"\nRealism (FD, KID): {plan.reason}.\n"
    interval = (f"95% bootstrap interval over images, {n_boot} resamples; FD's is bias-centred"
                if n_boot else "no interval")  # fmt: skip
    lines = [
        "",
        "## Realism: generated vs real images",
        "",
        f"Frechet distance (FD, the FID formula) and KID (unbiased MMD^2, cubic polynomial kernel, averaged over "
        f"{KID_SUBSETS} subsets of min(n, {KID_SUBSET_SIZE}) images) between each set of generated images and up "
        f"to {plan.max_real} real images of the edited images' split, in the features of the "
        f"{plan.extractor.name}. Cells: value [{interval}]. FD is biased upwards at small n: compare it only "
        "at equal n. Reconstructions (the null edit) show the gap the autoencoder or inversion makes alone.",
        "",
        "| method | set | FD | KID | n generated | n real | split |",
        "|---|---|---|---|---|---|---|",
    ]
    if table.empty:
        return "\n".join([*lines, "| (nothing measured: see the warnings) | | | | | | |"]) + "\n"
    for (method, image_set), group in table.groupby(["method", "set"], sort=False):
        cells = {r["metric"]: _cell(r["value"], r["ci_low"], r["ci_high"]) for _, r in group.iterrows()}
        first = group.iloc[0]
        lines.append(f"| {method} | {image_set} | {cells.get('FD', '-')} | {cells.get('KID', '-')} | "
                     f"{int(first['n_generated'])} | {int(first['n_real'])} | {first['split']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def realism_provenance(plan: RealismPlan) -> dict[str, Any]:
    """``evaluation.json``'s ``realism`` entry: on/off, the feature extractor, real-image cap, KID's subsets."""
    if not plan.enabled or plan.extractor is None:
        return {"enabled": False, "reason": plan.reason}
    return {
        "enabled": True,
        "features": plan.extractor.provenance(),
        "real_images": {"max": plan.max_real, "choice": "seeded draw from the split's rows sorted by image id",
                        "index": str(plan.index_path.resolve()) if plan.index_path else None},
        "kid": {"kernel": "(x.y/d + 1)^3", "subset_size": KID_SUBSET_SIZE, "subsets": KID_SUBSETS},
        "fd_interval": "percentile bootstrap, bias-centred",
        "samples": [str(p.resolve()) for p in plan.samples],
    }  # fmt: skip
