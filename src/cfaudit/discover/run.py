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
4. **Regions** (:mod:`cfaudit.discover.clusters`): changes outside the intervened attribute's expected region are
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit import __version__, atomic_io
from cfaudit.data.difference import load_difference
from cfaudit.data.edit_folder import EDITS_CSV, IDENTITY_FILE, image_folder
from cfaudit.data.edit_jobs import items_from_index
from cfaudit.data.images import load_image, resize_and_crop
from cfaudit.data.interventions import Intervention
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.records import DataIndex
from cfaudit.discover.atlas import RegionAtlas
from cfaudit.discover.candidates import CandidateSettings, rank_candidates
from cfaudit.discover.clusters import (
    EditComponents,
    RegionSettings,
    clusters_of,
    local_detail,
    to_grid,
)
from cfaudit.discover.cochange import cochange_table
from cfaudit.discover.error_rates import apply_error_rates, power_table
from cfaudit.discover.evidence import write_cluster_evidence, write_mean_maps
from cfaudit.discover.heads import HEAD_COLUMNS, head_columns
from cfaudit.discover.label_statistics import LabelStatistics, classifier_error
from cfaudit.discover.plan import (
    DiscoveryPlan,
    build_plan,
    default_interventions,
    family_size,
    images_per_intervention,
    regional_interventions,
)
from cfaudit.discover.region_control import (
    BLANK_LEVEL,
    EXPLAINED_SHARE,
    MAX_REGION_AREA,
    blank_region,
    controlled_interventions,
    region_key,
    region_mask,
    region_only_scores,
)
from cfaudit.discover.significance import Family, draws_for
from cfaudit.edit.job import JobSettings, run_edit_job
from cfaudit.errors import CfauditError
from cfaudit.progress import Progress

FORMAT = "cfaudit-discovery"


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
) -> DiscoveryResult | None:
    """Run a discovery with ``editor`` (a :class:`~cfaudit.edit.editor.CounterfactualEditor`) and ``classifier``
    (an :class:`~cfaudit.evaluate.classifiers.AttributeClassifier`, or anything with ``predict(images)``).

    Under ``accelerate launch`` / ``torchrun`` every process makes its share of the edits (the edit job splits
    its batches by rank, into one shared folder); the main process then analyses them, once, and returns the
    result. The other processes return ``None`` as soon as the edits are done."""
    started = time.perf_counter()
    settings = settings or DiscoverySettings()
    out = Path(out)
    index_file = None if isinstance(index, DataIndex) else Path(index)
    index = index if isinstance(index, DataIndex) else DataIndex.read(index)
    atlas = atlas or RegionAtlas.load()
    interventions = list(interventions) if interventions else default_interventions()
    job_settings = discovery_job_settings(job_settings or JobSettings(), settings)
    job_settings.check_guidance_used(interventions)

    # 1. Plan (the controls' splits are checked first: an empty one would only fail after the edits)
    plan, per_intervention, eligible = plan_discovery(index, interventions, settings, atlas, policy)
    job_settings = job_settings.guidance_taken_by(
        [i for item in plan.items for i in item.interventions or ()]
    )
    _tell(progress, "plan", plan.n_edits, len(plan.items))

    # 2. Edits (resumable: a re-run skips the images already done)
    done = [0]

    def image_done(_: str) -> None:
        done[0] += 1
        _tell(progress, "edit", done[0], len(plan.items))

    report = run_edit_job(
        editor, plan.items, [], out / "edits", job_settings, model_id=model_id, on_image_done=image_done
    )
    if report.rank != 0:
        return None  # the main process analyses, once every process's edits are in (after the job's barrier)

    # 3.-6. The analysis
    return analyse(
        out, classifier, plan, interventions, index, settings, atlas,
        per_intervention=per_intervention, eligible=eligible, index_file=index_file, model_id=model_id,
        policy=policy, progress=progress, started=started,
    )  # fmt: skip


def analyse(
    out: Path,
    classifier: Any,
    plan: DiscoveryPlan,
    interventions: Sequence[Intervention],
    index: DataIndex,
    settings: DiscoverySettings,
    atlas: RegionAtlas,
    *,
    per_intervention: int | dict[str, int] | None = None,
    eligible: dict[str, int] | None = None,
    index_file: Path | None = None,
    model_id: str = "",
    policy: LabelPolicy = DEFAULT_POLICY,
    progress: Progress | None = None,
    scores: dict[str, Any] | None = None,
    started: float | None = None,
) -> DiscoveryResult:
    """Steps 3 to 6 of a discovery on the finished edits in ``out/edits`` (``scores``: the classifier's head
    columns of the edits, when already known; otherwise the classifier reads the images).

    The analysis streams: images and difference maps are read a chunk or one map at a time, and what it keeps
    per edit is the edit's row, its head scores and its change components (:data:`PER_EDIT_MEMORY`)."""
    started = time.perf_counter() if started is None else started
    edits = pd.read_csv(out / "edits" / EDITS_CSV)

    # 3. Classifier outputs on originals, null edits and counterfactuals
    if scores is None:
        scores = _score_images(classifier, edits, out / "edits", progress)
    # ... and on each edit of a regional intervention with its change kept to the expected region only
    scores = {**scores, "region_only": region_only_scores(
        classifier, edits, out / "edits", interventions, atlas, SCORE_CHUNK,
        lambda done, total: _tell(progress, "region control", done, total),
    )}  # fmt: skip
    labels = LabelStatistics(index.split(settings.label_split).table, policy)
    data_index = index.split(settings.data_split)
    if len(data_index) > settings.data_images:
        keep = np.sort(
            np.random.default_rng(settings.seed).choice(len(data_index), settings.data_images, replace=False)
        )
        data_index = DataIndex(
            data_index.table.iloc[keep].reset_index(drop=True), data_index.root, data_index.meta
        )
    real = real_image_controls(classifier, data_index, policy, settings.regions, interventions, atlas)
    records: dict[str, Mapping[str, Any]] = {}
    for item in plan.items:
        assert item.record is not None  # the plan picks only images with a record
        records[item.image_id] = item.record
    tests = family_size(interventions, atlas)
    cochange = cochange_table(
        scores, edits, interventions, labels, real.data, records, policy, settings.bootstrap, settings.seed,
        bias=real.bias, draws=draws_for(tests, settings.candidates.alpha, settings.permutations),
        outside=real.outside,
    )  # fmt: skip

    # 4. Change clusters outside each intervention's expected region
    found = _collect_components(edits, out / "edits", interventions, atlas, settings.regions)
    clusters, members = clusters_of(
        edits, found, interventions, atlas, settings.regions, scores, (data_index.table, real.details, real.grids),
        records, policy,
    )  # fmt: skip
    del found
    # the analysis is the only writer of these (one process): what a killed analysis staged there goes
    atomic_io.remove_staged_files(out)
    for folder in (out / "maps", out / "crops"):
        atomic_io.remove_staged_files(folder, recursive=True)
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


#: Images the classifier reads at once (a multiple of its own batch of 64, so that chunks do not change its
#: batches and therefore its outputs): the analysis never holds more images than this.
SCORE_CHUNK = 1024
#: What the analysis keeps per edit (peak resident memory grew 1.1 KB per edit from 10,000 to 100,000 synthetic
#: edits, ``benchmarks/discovery_scale.py``):
#: the edit's row of ``edits.csv``, its head scores and its change components. Images and difference maps are
#: read a chunk (:data:`SCORE_CHUNK`) or one map at a time and never kept.
PER_EDIT_MEMORY = "about 1 KB"


def discovery_job_settings(job_settings: JobSettings, settings: DiscoverySettings) -> JobSettings:
    """The edit job of a discovery: the given inversion and edit settings, the discovery's prompt mode and
    seed, and the null edit of every image (a control)."""
    return JobSettings(
        inversion=job_settings.inversion,
        edit=job_settings.edit,
        prompt_mode=settings.prompt_mode,
        batch_size=job_settings.batch_size,
        seed=settings.seed,
        identity_check=True,
        attribute_guidance=job_settings.attribute_guidance,
    )


def plan_discovery(
    index: DataIndex,
    interventions: Sequence[Intervention],
    settings: DiscoverySettings,
    atlas: RegionAtlas,
    policy: LabelPolicy = DEFAULT_POLICY,
) -> tuple[DiscoveryPlan, int | dict[str, int], dict[str, int] | None]:
    """Step 1 of a discovery: the plan, the images asked for per intervention and (``images="auto"``) the
    eligible counts. Reads the index only; the controls' splits are checked first (an empty one would only
    fail after the edits)."""
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
    return plan, per_intervention, eligible


@dataclass
class RealImages:
    """What a discovery reads from real images of the data split: their local detail at the region grid
    (``details``), the classifier's outputs as conditional means (``data``: the data association) and its error
    against the recorded truth (``bias``: the classifier's bias,
    :func:`~cfaudit.discover.label_statistics.classifier_error`). The images themselves are not kept."""

    details: np.ndarray
    data: LabelStatistics
    bias: LabelStatistics
    #: The same images at the grid without the high-pass (the raw side of the real-image test of a cluster).
    grids: np.ndarray | None = None
    #: Per intervention whose expected region is tested (:mod:`~cfaudit.discover.region_control`): the
    #: classifier's outputs on the same images with that region blanked, as conditional means.
    outside: dict[str, LabelStatistics] = field(default_factory=dict)


def real_image_controls(
    classifier: Any,
    data_index: DataIndex,
    policy: LabelPolicy,
    regions: RegionSettings | None = None,
    interventions: Sequence[Intervention] = (),
    atlas: RegionAtlas | None = None,
) -> RealImages:
    """Read the data split's images (:data:`SCORE_CHUNK` at a time) and what the classifier says about them; with
    ``interventions`` and ``atlas``, also with each tested intervention's expected region blanked."""
    regions = regions or RegionSettings()
    size = _working_size(classifier)
    paths = list(data_index.image_paths())
    tested: dict[tuple[str, ...], Intervention] = {}  # one reading per region: do(A=0) and do(A=1) share it
    names = controlled_interventions(interventions, atlas) if atlas is not None else []
    for intervention in interventions:
        if str(intervention) in names:
            tested.setdefault(region_key(intervention), intervention)
    outputs: list[dict[str, np.ndarray]] = []
    blanked: dict[tuple[str, ...], list[dict[str, np.ndarray]]] = {key: [] for key in tested}
    details: list[np.ndarray] = []
    grids: list[np.ndarray] = []
    for start in range(0, len(paths), SCORE_CHUNK):
        images = [_read_at_most(path, size) for path in paths[start : start + SCORE_CHUNK]]
        outputs.append(head_columns(classifier.predict(images)))
        for key, intervention in tested.items():
            assert atlas is not None  # tested is empty without one
            masked = [blank_region(i, region_mask(intervention, atlas, i.shape[0])) for i in images]
            blanked[key].append(head_columns(classifier.predict(masked)))
        for image in images:
            grids.append(to_grid(image, regions.grid))
            details.append(local_detail(grids[-1], regions))
    heads = _concatenate(outputs)
    predicted = np.stack([heads[c] for c in HEAD_COLUMNS], axis=1)
    outside = {}
    for intervention in interventions:
        key = region_key(intervention)
        if key in tested:
            heads = _concatenate(blanked[key])
            values = np.stack([heads[c] for c in HEAD_COLUMNS], axis=1)
            outside[str(intervention)] = LabelStatistics(data_index.table, policy, values=values)
    empty = np.zeros((0, regions.grid, regions.grid), dtype=np.float32)
    return RealImages(
        np.stack(details) if details else empty,
        LabelStatistics(data_index.table, policy, values=predicted),
        classifier_error(data_index.table, predicted, policy),
        np.stack(grids) if grids else empty,
        outside,
    )


def _concatenate(chunks: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Head columns of chunks of images, joined (no chunk: empty columns)."""
    if not chunks:
        return {column: np.zeros(0) for column in HEAD_COLUMNS}
    return {column: np.concatenate([chunk[column] for chunk in chunks]) for column in HEAD_COLUMNS}


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
    """Head columns for the originals and null edits (per image) and the counterfactuals (per edit row), the
    images read :data:`SCORE_CHUNK` at a time."""
    images = list(dict.fromkeys(edits["image_id"]))
    first = edits.drop_duplicates("image_id").set_index("image_id")
    size = _working_size(classifier)
    originals = [first.loc[i, "original"] for i in images]
    nulls = [image_folder(folder, i) / IDENTITY_FILE for i in images]
    counterfactuals = [folder / p for p in edits["counterfactual"]]
    total = len(originals) + len(nulls) + len(counterfactuals)
    done = [0]

    def score(paths: Sequence[Any], read: Callable[[Any], np.ndarray]) -> dict[str, np.ndarray]:
        chunks = []
        for start in range(0, len(paths), SCORE_CHUNK):
            chunk = paths[start : start + SCORE_CHUNK]
            chunks.append(head_columns(classifier.predict([read(path) for path in chunk])))
            done[0] += len(chunk)
            _tell(progress, "score", done[0], total)
        return _concatenate(chunks)

    _tell(progress, "score", 0, total)
    return {
        "images": images,
        "original": score(originals, lambda path: _read_at_most(path, size)),
        "null": score(nulls, load_image),
        "counterfactual": score(counterfactuals, load_image),
    }


def _collect_components(
    edits: pd.DataFrame,
    folder: Path,
    interventions: Sequence[Intervention],
    atlas: RegionAtlas,
    settings: RegionSettings,
) -> EditComponents:
    """The change components of every edit, one difference map at a time: per image its null edit -
    reconstruction, per edit row counterfactual - null edit (both at the grid). Only the current image's null
    map is held."""
    found = EditComponents(interventions, atlas, settings)
    grid = settings.grid
    current, null_map = None, np.zeros((grid, grid), dtype=np.float32)
    for row in edits[["image_id", "intervention", "reconstruction", "difference"]].itertuples(index=False):
        image_id = str(row.image_id)
        if image_id != current:
            reconstruction = load_image(folder / row.reconstruction)
            null = load_image(image_folder(folder, image_id) / IDENTITY_FILE)
            current, null_map = image_id, to_grid(null - reconstruction, grid)
            if image_id not in found.null:
                found.add_null(image_id, null_map)
        difference = load_difference(folder / row.difference)  # counterfactual - reconstruction
        found.add_edit(str(row.intervention), image_id, to_grid(difference, grid) - null_map)
    return found


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
            "region_control": {
                "max_region_area": MAX_REGION_AREA,
                "explained_share": EXPLAINED_SHARE,
                "blank_level": BLANK_LEVEL,
                "tested": sorted(controlled_interventions(interventions, atlas)),
            },
            "alpha": settings.candidates.alpha,
            "error_rates": family.to_dict(),
            "power": json.loads(power.to_json(orient="records")),
            "heads": list(HEAD_COLUMNS),
            "flagged": int(candidates["flagged"].sum()) if not candidates.empty else 0,
        },
    )
