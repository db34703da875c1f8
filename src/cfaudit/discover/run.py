"""``discover``: make systematic edits and rank what else they change, against controls.

1. **Plan** (:mod:`cfaudit.discover.plan`): each intervention gets up to ``images`` eligible images of the split
   (``"auto"``: as many as detecting ``detect_effect`` needs, within ``edit_budget``); each image is inverted
   once for all of its edits, and also receives the null edit (target = source prompt).
2. **Edit** with :func:`cfaudit.edit.job.run_edit_job` into ``out/edits`` (resumable, inversions cached).
3. **Co-change**: every classifier head on the original, the null edit and each counterfactual. The effect of an
   edit on a head is paired against the same image's null edit (what the editor changes when asked to change
   nothing), with a bootstrap interval, and compared with two more controls: the typical change of that head
   under *other* interventions (the editor's habit of moving it whatever it is asked) and the change the label
   statistics of the data predict (:mod:`cfaudit.discover.label_statistics`). For age, sex and race, whose truth
   every image records, the classifier's own error on real images says how much of what it reads is misreading.
4. **Regions** (:mod:`cfaudit.discover.regions`): changes outside the intervened attribute's expected region are
   grouped across images into change clusters, each against the null edit and the other interventions.
5. **Error rates** (:mod:`cfaudit.discover.error_rates`): q-values over every test of the run, the smallest
   effects the run could have detected (``power.csv``).
6. **Rank** (:mod:`cfaudit.discover.candidates`) and write ``candidates.json/csv``, ``cochange.csv``,
   ``clusters.csv``, ``cluster_members.csv``, ``power.csv``, mean maps, evidence crops and ``discovery.json``.

Discovery reads images, labels and classifier outputs only; a phantom's ground truth is never read here.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit import __version__, atomic_io
from cfaudit.data.images import load_image, resize_and_crop
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.records import DataIndex
from cfaudit.discover.candidates import CandidateSettings, rank_candidates
from cfaudit.discover.cochange import cochange_table
from cfaudit.discover.error_rates import apply_error_rates, power_table
from cfaudit.discover.evidence import write_cluster_evidence, write_mean_maps
from cfaudit.discover.heads import HEAD_COLUMNS, head_columns
from cfaudit.discover.label_statistics import LabelStatistics, classifier_error
from cfaudit.discover.plan import (
    build_plan,
    default_interventions,
    family_size,
    images_per_intervention,
    regional_interventions,
)
from cfaudit.discover.regions import RegionAtlas, RegionSettings, find_clusters, local_detail, to_grid
from cfaudit.discover.significance import Family, draws_for
from cfaudit.edit.interventions import Intervention
from cfaudit.edit.job import IDENTITY_FILE, JobSettings, items_from_index, run_edit_job, safe_name
from cfaudit.errors import CfauditError

FORMAT = "cfaudit-discovery"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DiscoverySettings:
    """What a discovery edits and how it decides; every field is recorded in ``discovery.json``."""

    split: str = "test"
    #: Eligible images per intervention, or ``"auto"``: as many as detecting ``detect_effect`` needs.
    images: int | str = 16
    #: For ``images="auto"``: the effect to detect with 80% power, as a share of the edited images that show a
    #: change at one place where neither the null edits nor the other interventions change anything (the
    #: change-cluster test; head changes are reported after the run, as ``detectable``).
    detect_effect: float = 0.3
    #: For ``images="auto"``: at most this many edits in all (None: no limit but the eligible images).
    edit_budget: int | None = None
    #: Label statistics come from this split (the data the model was fitted on).
    label_split: str = "train"
    #: The data association (classifier outputs and local image detail of real images) comes from this split,
    #: which the classifier was not fitted on.
    data_split: str = "val"
    #: At most this many images of the data split are read (a seeded sample): a real validation split can hold
    #: tens of thousands of images, and the data association needs a few hundred.
    data_images: int = 2000
    prompt_mode: str = "full"
    bootstrap: int = 1000
    #: Random sign vectors of a sign-flip test with more than 16 images (fewer: all of them); raised as the
    #: number of tests needs (:func:`~cfaudit.discover.significance.draws_for`).
    permutations: int = 9999
    seed: int = 0
    candidates: CandidateSettings = field(default_factory=CandidateSettings)
    regions: RegionSettings = field(default_factory=RegionSettings)

    def __post_init__(self) -> None:
        if self.images != "auto" and not (isinstance(self.images, int) and self.images >= 1):
            raise CfauditError(f"--images must be a number of at least 1 or 'auto', got {self.images!r}")
        if not 0 < self.detect_effect <= 1:
            raise CfauditError(
                f"--detect-effect is a share of images in (0, 1] (0.3: 30% of them), got {self.detect_effect}"
            )
        if self.edit_budget is not None and (self.images != "auto" or self.edit_budget < 1):
            raise CfauditError("--edit-budget (at least 1) goes with --images auto")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DiscoveryResult:
    out: Path
    candidates: pd.DataFrame
    cochange: pd.DataFrame
    clusters: pd.DataFrame
    seconds: float
    #: Per intervention, the smallest effects the run could have detected (``power.csv``).
    power: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: The run's family of tests (q-values, the level one more relation would need).
    family: Family | None = None

    @property
    def flagged(self) -> pd.DataFrame:
        return self.candidates[self.candidates["flagged"]]

    def top(self, k: int = 3) -> pd.DataFrame:
        return self.candidates.head(k)


def discover(
    editor: Any,
    index: DataIndex | str | os.PathLike[str],
    classifier: Any,
    out: str | os.PathLike[str],
    interventions: Sequence[Intervention] | None = None,
    settings: DiscoverySettings | None = None,
    job_settings: JobSettings | None = None,
    *,
    model_id: str = "",
    atlas: RegionAtlas | None = None,
    policy: LabelPolicy = DEFAULT_POLICY,
    progress: Progress | None = None,
) -> DiscoveryResult:
    """Run a discovery with ``editor`` (a :class:`~cfaudit.edit.editor.CounterfactualEditor`) and ``classifier``
    (an :class:`~cfaudit.evaluate.classifiers.AttributeClassifier`, or anything with ``predict(images)``)."""
    started = time.perf_counter()
    settings = settings or DiscoverySettings()
    out = Path(out)
    index_file = None if isinstance(index, DataIndex) else Path(index)
    index = index if isinstance(index, DataIndex) else DataIndex.read(index)
    atlas = atlas or RegionAtlas.load()
    interventions = list(interventions) if interventions else default_interventions()
    job_settings = job_settings or JobSettings()
    job_settings = JobSettings(
        inversion=job_settings.inversion,
        edit=job_settings.edit,
        prompt_mode=settings.prompt_mode,
        batch_size=job_settings.batch_size,
        seed=settings.seed,
        identity_check=True,  # the null edit is a control
    )

    # 1. Plan (the controls' splits are checked first: an empty one would only fail after the edits)
    _needed_split(index, settings.label_split, "label")
    _needed_split(index, settings.data_split, "data")
    items = items_from_index(index, settings.split, policy=policy)
    tests = family_size(interventions, atlas)
    per_intervention, eligible = images_per_intervention(
        items, interventions, settings.images, settings.detect_effect, settings.candidates.alpha / tests,
        settings.edit_budget, policy,
    )  # fmt: skip
    plan = build_plan(items, interventions, per_intervention, settings.seed, policy)
    if not plan.items:
        raise CfauditError(
            f"no image of split {settings.split!r} is eligible for any intervention; choose another --split"
        )
    _tell(progress, "plan", plan.n_edits, len(plan.items))

    # 2. Edits (resumable: a re-run skips the images already done)
    done = [0]

    def image_done(_: str) -> None:
        done[0] += 1
        _tell(progress, "edit", done[0], len(plan.items))

    run_edit_job(
        editor, plan.items, [], out / "edits", job_settings, model_id=model_id, on_image_done=image_done
    )
    edits = pd.read_csv(out / "edits" / "edits.csv")

    # 3. Classifier outputs on originals, null edits and counterfactuals
    scores = _score_images(classifier, edits, out / "edits", progress)
    labels = LabelStatistics(index.split(settings.label_split).table, policy)
    data_index = index.split(settings.data_split)
    if len(data_index) > settings.data_images:
        keep = np.sort(
            np.random.default_rng(settings.seed).choice(len(data_index), settings.data_images, replace=False)
        )
        data_index = DataIndex(
            data_index.table.iloc[keep].reset_index(drop=True), data_index.root, data_index.meta
        )
    real = real_image_controls(classifier, data_index, policy)
    records = {item.image_id: item.record for item in plan.items}
    cochange = cochange_table(
        scores, edits, interventions, labels, real.data, records, policy, settings.bootstrap, settings.seed,
        bias=real.bias, draws=draws_for(tests, settings.candidates.alpha, settings.permutations),
    )  # fmt: skip

    # 4. Change clusters outside each intervention's expected region
    maps = _load_maps(edits, out / "edits", settings.regions.grid)
    details = np.stack(
        [local_detail(to_grid(image, settings.regions.grid), settings.regions) for image in real.images]
    )
    clusters, members = find_clusters(
        edits,
        maps,
        interventions,
        atlas,
        settings.regions,
        scores,
        (data_index.table, details),
        records,
        policy,
    )
    mean_maps = write_mean_maps(edits, out / "edits", out / "maps", interventions)
    evidence = write_cluster_evidence(members, edits, out / "edits", out / "crops", settings.regions.grid)
    if not clusters.empty:
        clusters["evidence"] = [
            evidence.get((i, c), "")
            for i, c in zip(clusters["intervention"], clusters["cluster"], strict=True)
        ]
        clusters["mean_map"] = [mean_maps.get(i, "") for i in clusters["intervention"]]

    # 5. Error rates: q-values over every test of the run, and what the run could have detected
    cochange, clusters, family = apply_error_rates(
        cochange, clusters, settings.candidates.alpha, settings.candidates.fdr
    )
    regional = regional_interventions(interventions, atlas)
    n_images = {name: len(images) for name, images in plan.images_by_intervention.items() if images}
    requested = per_intervention if isinstance(per_intervention, dict) else None
    power = power_table(cochange, family, n_images, regional, requested, eligible)

    # 6. Rank and write
    candidates = rank_candidates(cochange, clusters, settings.candidates, regional)
    _write_outputs(
        out,
        candidates,
        cochange,
        clusters,
        members,
        power,
        family,
        settings,
        interventions,
        plan,
        index_file,
        model_id,
        classifier,
        atlas,
    )
    _tell(progress, "done", 1, 1)
    return DiscoveryResult(out, candidates, cochange, clusters, time.perf_counter() - started, power, family)


@dataclass
class RealImages:
    """What a discovery reads from real images of the data split: the images (at the working size), the
    classifier's outputs as conditional means (``data``: the data association) and its error against the
    recorded truth (``bias``: the classifier's bias, :func:`~cfaudit.discover.label_statistics.classifier_error`)."""

    images: list[np.ndarray]
    data: LabelStatistics
    bias: LabelStatistics


def real_image_controls(classifier: Any, data_index: DataIndex, policy: LabelPolicy) -> RealImages:
    """Read the data split's images and what the classifier says about them."""
    size = _working_size(classifier)
    images = [_read_at_most(path, size) for path in data_index.image_paths()]
    heads = head_columns(classifier.predict(images))
    predicted = np.stack([heads[c] for c in HEAD_COLUMNS], axis=1)
    return RealImages(
        images,
        LabelStatistics(data_index.table, policy, values=predicted),
        classifier_error(data_index.table, predicted, policy),
    )


def _needed_split(index: DataIndex, name: str, role: str) -> pd.DataFrame:
    """The rows of a split a control needs; an empty one is an error that says which option picks another."""
    table = index.split(name).table
    if table.empty:
        raise CfauditError(
            f"the index has no images in split {name!r}, which the {role} statistics of a discovery read; "
            f"choose another with --{role}-split (e.g. all)"
        )
    return table


def _tell(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def _working_size(classifier: Any) -> int:
    """Real images (a MIMIC JPEG is ~3000 px) are read at this size: the classifier's input, at least 256."""
    config = getattr(classifier, "config", None)
    return max(256, int(getattr(config, "size", 0) or 0))


def _read_at_most(path: Any, size: int) -> np.ndarray:
    """A real image, square (centre crop, as every model here sees it) and no larger than ``size``."""
    image = load_image(path)
    if image.shape[0] != image.shape[1] or min(image.shape) > size:
        image = resize_and_crop(image, min(size, *image.shape))
    return image


def _score_images(
    classifier: Any, edits: pd.DataFrame, folder: Path, progress: Progress | None
) -> dict[str, Any]:
    """Head columns for the originals and null edits (per image) and the counterfactuals (per edit row)."""
    images = list(dict.fromkeys(edits["image_id"]))
    first = edits.drop_duplicates("image_id").set_index("image_id")
    size = _working_size(classifier)
    originals = [_read_at_most(first.loc[i, "original"], size) for i in images]
    nulls = [load_image(folder / "images" / safe_name(i) / IDENTITY_FILE) for i in images]
    counterfactuals = [load_image(folder / p) for p in edits["counterfactual"]]
    _tell(progress, "score", 0, 1)
    result = {
        "images": images,
        "original": head_columns(classifier.predict(originals)),
        "null": head_columns(classifier.predict(nulls)),
        "counterfactual": head_columns(classifier.predict(counterfactuals)),
    }
    _tell(progress, "score", 1, 1)
    return result


def _load_maps(edits: pd.DataFrame, folder: Path, grid: int) -> dict[str, Any]:
    """Grid-sized signed maps: per edit row (counterfactual - null edit) and per image (null edit - reconstruction)."""
    from cfaudit.discover.regions import to_grid
    from cfaudit.edit.difference import load_difference

    null_maps: dict[str, np.ndarray] = {}
    for image_id, group in edits.groupby("image_id", sort=False):
        reconstruction = load_image(folder / group["reconstruction"].iloc[0])
        null = load_image(folder / "images" / safe_name(str(image_id)) / IDENTITY_FILE)
        null_maps[str(image_id)] = to_grid(null - reconstruction, grid)
    edit_maps = []
    for _, row in edits.iterrows():
        difference = load_difference(folder / row["difference"])  # counterfactual - reconstruction
        edit_maps.append(to_grid(difference, grid) - null_maps[str(row["image_id"])])
    return {"edit": edit_maps, "null": null_maps}


def _write_outputs(
    out: Path,
    candidates: pd.DataFrame,
    cochange: pd.DataFrame,
    clusters: pd.DataFrame,
    members: pd.DataFrame,
    power: pd.DataFrame,
    family: Family,
    settings: DiscoverySettings,
    interventions: Sequence[Intervention],
    plan: Any,
    index_file: Path | None,
    model_id: str,
    classifier: Any,
    atlas: RegionAtlas,
) -> None:
    from cfaudit.digests import file_sha256

    atomic_io.write_csv(out / "cochange.csv", cochange)
    atomic_io.write_csv(out / "clusters.csv", clusters)
    atomic_io.write_csv(out / "cluster_members.csv", members)
    atomic_io.write_csv(out / "candidates.csv", candidates)
    atomic_io.write_csv(out / "power.csv", power)
    records = json.loads(candidates.to_json(orient="records"))
    atomic_io.write_json(out / "candidates.json", records)
    classifier_folder = getattr(classifier, "folder", None)
    atomic_io.write_json(
        out / "discovery.json",
        {
            "format": FORMAT,
            "version": 1,
            "cfaudit": __version__,
            "model": model_id,
            "index": str(index_file.resolve()) if index_file else None,
            "index_sha256": file_sha256(index_file) if index_file else None,
            "classifier": str(classifier_folder) if classifier_folder else type(classifier).__name__,
            "split": settings.split,
            "settings": settings.to_dict(),
            "regions": atlas.source,
            "interventions": [str(i) for i in interventions],
            "images_per_intervention": {k: len(v) for k, v in plan.images_by_intervention.items()},
            "margin": settings.candidates.margin,
            "region_margin": settings.candidates.region_margin,
            "alpha": settings.candidates.alpha,
            "error_rates": family.to_dict(),
            "power": json.loads(power.to_json(orient="records")),
            "heads": list(HEAD_COLUMNS),
            "flagged": int(candidates["flagged"].sum()) if not candidates.empty else 0,
        },
    )
