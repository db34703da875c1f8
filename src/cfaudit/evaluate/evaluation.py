"""The paper's Table 2 and the soundness axioms, from the outputs of editing jobs (``cfaudit evaluate``).

:func:`evaluate_edits` reads one or more edit folders and writes the tables. In order:

1. **Read** each folder: an editing job (``edits.csv`` + ``job.json`` of ``cfaudit edit`` or ``cfaudit scm edit``)
   or any folder of pairs (``pairs.csv`` with ``original``, ``counterfactual``, ``intervention``). Every edit gets
   its method, its paper column (``do(sex)``, ``do(disease)`` for any of the 14 findings, ``do(race)``,
   ``do(age)``, or e.g. ``do(sex, age)`` for an edit of several attributes) and, where known, the original's
   record (from ``--index`` by image id, else read back from the job's source caption).
2. **Score** every edit at one stated resolution (``size``; default: the smallest counterfactual's, so that no
   method is compared at a size it reaches only by upsampling): LPIPS (AlexNet, v0.1 heads), L1 on the 0-255 scale,
   the attribute classifier's outputs on original, counterfactual and reconstruction, and from them the
   counterfactual prediction gain (CPG) of each intervened attribute, absolute (the paper) and signed towards
   the target.
3. **Summarise** per method x column (Table 2) and per method x intervention (the axioms of Monteiro et al.,
   2023: effectiveness, minimality, identity), each with a percentile bootstrap interval and the count.
   An edit whose intervention leaves the record as it was (``do(sex=Female)`` of a woman) is a *null edit*: it
   is left out of Table 2 and of effectiveness and minimality, and reported as an identity measure instead.
4. **Model axioms**: when a job's model can be loaded, composition (the null edit applied 1 and 10 times) and
   reversibility (the stored counterfactual edited back to the original value) on the first images.
5. **Realism** (with an index): FD and KID of each method's counterfactuals and reconstructions against real
   images of the same split (:mod:`cfaudit.evaluate.realism`).
6. **Write** ``table2.csv``, ``table2.md``, ``table2.png``, ``axioms.csv``, ``scores.csv``, ``realism.csv``
   (when measured) and ``evaluation.json`` (provenance), each atomically.

The steps live in their own modules: reading (:mod:`cfaudit.evaluate.reading`), scoring
(:mod:`cfaudit.evaluate.scoring`), summaries, markdown and plot (:mod:`cfaudit.evaluate.summaries`), model axioms
(:mod:`cfaudit.evaluate.axioms`); this module runs them and writes the provenance.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cfaudit import __version__, atomic_io
from cfaudit.assets import shipped_name
from cfaudit.data.edit_folder import JOB_JSON, SCM_METHOD
from cfaudit.data.records import DataIndex
from cfaudit.devices import resolve_device
from cfaudit.digests import file_sha256
from cfaudit.errors import CfauditError
from cfaudit.evaluate import realism as realism_measures
from cfaudit.evaluate.axioms import Warn, model_axiom_rows
from cfaudit.evaluate.reading import (
    EditFolder,
    common_size,
    index_age_range,
    label_methods,
    load_records,
    read_edit_folder,
)
from cfaudit.evaluate.scoring import edit_scores, score_rows
from cfaudit.evaluate.summaries import (
    AXIOM_COLUMNS,
    axiom_rows,
    dose_notes,
    format_markdown,
    per_edit,
    plot_table2,
    table2_rows,
)
from cfaudit.progress import Progress

# --- 5. provenance -----------------------------------------------------------------------------------------


def _sha256(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


def classifier_provenance(classifier: Any) -> dict[str, Any]:
    folder = getattr(classifier, "folder", None)
    record = getattr(classifier, "record", None) or {}
    info: dict[str, Any] = {"name": classifier_label(classifier)}
    if folder is not None:
        folder = Path(folder)
        info.update(folder=str(folder.resolve()), record_sha256=_sha256(folder / "classifier.json"),
                    weights_sha256=_sha256(folder / "model.safetensors"))  # fmt: skip
    if record:
        info.update(config=record.get("config"), index=record.get("index"),
                    test_metrics_present=bool((record.get("metrics") or {}).get("test")))  # fmt: skip
    return info


def classifier_label(classifier: Any) -> str:
    """The classifier as table2.csv names it: its folder (a shipped one as ``cfaudit/<path>``) or its type."""
    folder = getattr(classifier, "folder", None)
    return shipped_name(folder) if folder is not None else type(classifier).__name__


def classifier_overlap(classifier: Any, image_ids: Iterable[str]) -> int | None:
    """How many edited image ids are in the train/val split the classifier learned from (None: unknown)."""
    index = (getattr(classifier, "record", None) or {}).get("index") or {}
    path = Path(str(index.get("path") or ""))
    if not path.is_file() or _sha256(path) != index.get("sha256"):
        return None
    table = pd.read_csv(path, usecols=["image_id", "split"], dtype=str)
    seen = set(table.loc[table["split"].isin(["train", "val"]), "image_id"])
    return len(set(image_ids) & seen)


# --- the whole evaluation ------------------------------------------------------------------------------------


@dataclass
class EvaluationResult:
    out: Path
    paths: dict[str, Path]
    table: pd.DataFrame
    axioms: pd.DataFrame
    scores: pd.DataFrame
    markdown: str
    warnings: list[str] = field(default_factory=list)


def evaluate_edits(
    edit_dirs: Sequence[str | Path],
    classifier: Any,
    out: str | Path,
    *,
    size: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    axiom_images: int = 8,
    model_axioms: bool | None = None,
    include_null_edits: bool = False,
    index: str | Path | None = None,
    device: str | None = None,
    lpips_model: Any = None,
    realism: bool | None = None,
    realism_features: str | Path = "classifier",
    samples: Sequence[str | Path] = (),
    real_images: int = 500,
    command: str | None = None,
    progress: Progress | None = None,
    warn: Warn | None = None,
) -> EvaluationResult:
    """Score edit folders into Table 2 and the axioms; write every output file into ``out``.

    ``classifier``: a classifier folder (``cfaudit classifiers train``) or an object with ``predict(images)``.
    ``model_axioms``: ``None`` measures composition and reversibility where a job's model loads and notes why
    not elsewhere; ``True`` makes a model that cannot be loaded an error; ``False`` skips them.
    ``index``: the index the edited images come from (exact records); without it, records are read back from
    the jobs' source captions.
    ``realism``: FD and KID against up to ``real_images`` real images of the edited images' split (and of each
    folder in ``samples``), in ``realism_features`` (``"classifier"`` or torchxrayvision weights); ``None``: on
    when an index is given (see :func:`cfaudit.evaluate.realism.plan_realism`).
    """
    started = time.perf_counter()
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        if warn is not None:
            warn(message)

    def report(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    if not edit_dirs:
        raise CfauditError("no edits given; add --edits DIR (the --out folder of `cfaudit edit`)")
    if size is not None and size < 16:
        raise CfauditError(f"--size must be at least 16 pixels, got {size}")
    if n_boot < 0 or axiom_images < 1:
        raise CfauditError("--bootstrap must be >= 0 and --axiom-images >= 1")
    device = device or str(resolve_device())
    out = Path(out)

    # 1. Read the folders, label the methods, find the originals' records
    folders = [read_edit_folder(d) for d in edit_dirs]
    label_methods(folders)
    rows = pd.concat([f.rows for f in folders], ignore_index=True)
    if size is None:
        size = common_size(rows, note)
    data = DataIndex.read(index) if index is not None else None  # read once: records and the data's ages
    records = load_records(rows, data)
    unknown = sum(r is None for r in records)
    if unknown:
        note(f"{unknown} edit(s) have no known record (no --index row, caption not in the template): they count "
             "as changing their attribute and are left out of the model axioms")  # fmt: skip

    # 2. Score every edit
    if isinstance(classifier, (str, Path)):
        from cfaudit.evaluate.classifiers import load_classifier

        classifier = load_classifier(classifier, device)
    realism_plan = realism_measures.plan_realism(realism, classifier, index=index, features=realism_features,
                                                 samples=samples, max_real=real_images, device=device, warn=note)  # fmt: skip
    overlap = classifier_overlap(classifier, rows["image_id"])
    if overlap:
        note(f"{overlap} edited image(s) are in the classifier's train/val split: their CPG and effectiveness "
             "are optimistic; edit test images")  # fmt: skip
    parts = []
    for label in rows["label"].unique():
        selected = rows["label"] == label
        mine = rows[selected].reset_index(drop=True)
        done = [0]

        def step(count: int, label: str = label, total: int = len(mine), done: list[int] = done) -> None:
            done[0] += count
            report(f"scoring {label}", done[0], total)

        scored = score_rows(mine, classifier, size, device=device, lpips_model=lpips_model, progress=step)
        mine_records = [r for r, s in zip(records, selected, strict=True) if s]
        parts.append(edit_scores(mine, scored, mine_records))
    scores = pd.concat(parts, ignore_index=True)
    scored_edits = scores if include_null_edits else scores[scores["changes_record"]]
    null_edits = 0 if include_null_edits else len(per_edit(scores[~scores["changes_record"]]))
    if scored_edits.empty:
        raise CfauditError("every edit is a null edit (its intervention leaves the record unchanged); "
                           "nothing to score: use --include-null-edits")  # fmt: skip

    # 3. Table 2 and the axioms from the scores
    name = classifier_label(classifier)
    table = table2_rows(scored_edits, size, name, n_boot, seed)
    axiom_list = axiom_rows(scores if not include_null_edits else scores.assign(changes_record=True), size,
                            n_boot, seed, age_range=index_age_range(data))  # fmt: skip
    for line in dose_notes(axiom_list):
        note(line)

    # 4. Model axioms
    record_of = {(f, int(line)): r for f, line, r in zip(rows["folder"], rows["line"], records, strict=True)}
    descriptions: dict[str, str] = {}
    for k, edit_folder in enumerate(folders):
        label = edit_folder.rows["label"].iloc[0]
        descriptions.setdefault(label, _describe(edit_folder))
        if model_axioms is False:
            continue
        report("model axioms", k, len(folders))
        axiom_list += model_axiom_rows(edit_folder, scores, record_of, size=size, axiom_images=axiom_images,
                                       n_boot=n_boot, seed=seed, device=device, required=model_axioms is True,
                                       warn=note)  # fmt: skip
        report("model axioms", k + 1, len(folders))
    axioms = pd.DataFrame(axiom_list, columns=list(AXIOM_COLUMNS))

    # 5. Realism
    realism_rows = realism_measures.realism_table(realism_plan, folders, n_boot=n_boot, seed=seed, warn=note,
                                                  progress=report)  # fmt: skip

    # 6. Write
    markdown = format_markdown(table, axioms, descriptions, size=size, n_boot=n_boot, classifier_name=name,
                               null_edits=null_edits)  # fmt: skip
    markdown += realism_measures.realism_markdown(realism_rows, realism_plan, n_boot)
    paths = {key: out / filename for key, filename in (
        ("table2_csv", "table2.csv"), ("table2_md", "table2.md"), ("table2_png", "table2.png"),
        ("axioms_csv", "axioms.csv"), ("scores_csv", "scores.csv"), ("evaluation_json", "evaluation.json"))}  # fmt: skip
    atomic_io.write_csv(paths["table2_csv"], table)
    atomic_io.write_text(paths["table2_md"], markdown)
    atomic_io.write_csv(paths["axioms_csv"], axioms)
    atomic_io.write_csv(paths["scores_csv"], _scores_for_csv(scores))
    plot_table2(table, paths["table2_png"], size)
    if realism_plan.enabled:
        paths["realism_csv"] = out / "realism.csv"
        atomic_io.write_csv(paths["realism_csv"], realism_rows)
    provenance = {
        "cfaudit_version": __version__,
        "command": command if command is not None else " ".join(sys.argv),
        "created_unix": time.time(),
        "seconds": round(time.perf_counter() - started, 2),
        "python": platform.python_version(),
        "edits": [
            {
                "folder": str(f.path.resolve()),
                "kind": f.kind,
                "file": f.source_file.name,
                "rows": len(f.rows),
                "methods": sorted(f.rows["label"].unique()),
                "description": _describe(f),
                "job": f.job,
                "job_sha256": _sha256(f.path / JOB_JSON),
                "edits_sha256": _sha256(f.source_file),
            }
            for f in folders
        ],
        "classifier": {**classifier_provenance(classifier), "edited_images_seen_in_training": overlap},
        "index": None
        if index is None
        else {"path": str(Path(index).resolve()), "sha256": _sha256(Path(index))},
        "size": size,
        "bootstrap": {"resamples": n_boot, "level": 0.95, "seed": seed, "kind": "percentile"},
        "lpips": _lpips_provenance(lpips_model),
        "axiom_images": axiom_images,
        "model_axioms": {None: "auto", True: "required", False: "off"}[model_axioms],
        "include_null_edits": include_null_edits,
        "realism": realism_measures.realism_provenance(realism_plan),
        "null_edits": len(per_edit(scores[~scores["changes_record"]])),
        "records_unknown": unknown,
        "device": device,
        "warnings": warnings,
    }
    atomic_io.write_json(paths["evaluation_json"], provenance)
    return EvaluationResult(out, paths, table, axioms, scores, markdown, warnings)


def _describe(edit_folder: EditFolder) -> str:
    job = edit_folder.job
    if job is None:
        return f"pairs from {edit_folder.source_file.name}"
    if job.get("method") == SCM_METHOD:
        latents = (job.get("settings") or {}).get("latents")
        return f"SCM baseline, model {job.get('model')}, {job.get('resolution')} px, latents {latents}"
    inversion = (job.get("settings") or {}).get("inversion") or {}
    return (f"diffusion editor, model {job.get('model')}, {inversion.get('method')} inversion, "
            f"{inversion.get('steps')} steps")  # fmt: skip


def _lpips_provenance(lpips_model: Any) -> dict[str, Any]:
    if lpips_model is not None:
        return {"model": type(lpips_model).__name__, "weights": "given by the caller"}
    from cfaudit.models.lpips_weights import lpips_status

    status = lpips_status()
    return {"model": "AlexNet v0.1", "weights": status.get("path"), "record": status.get("record")}


def _scores_for_csv(scores: pd.DataFrame) -> pd.DataFrame:
    first = ["method", "column", "intervention", "image_id", "attribute", "target", "factual", "changes_record",
             "lpips", "l1", "cpg", "cpg_signed", "cpg_unit", "head", "before", "after"]  # fmt: skip
    rest = [c for c in scores.columns if c not in first and not c.startswith("kept:")]
    return scores[first + rest + sorted(c for c in scores.columns if c.startswith("kept:"))]
