"""Step 4 of ``cfaudit evaluate``: the model axioms, composition and reversibility.

When a job's model can be loaded: the null edit applied 1 and 10 times, and the stored counterfactual edited back
to the original value, on the first images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cfaudit.data.edit_folder import SCM_METHOD
from cfaudit.data.images import load_image, resize_and_crop, to_model_tensor
from cfaudit.data.interventions import Intervention
from cfaudit.data.prompts import record_prompt
from cfaudit.errors import CfauditError
from cfaudit.evaluate import metrics
from cfaudit.evaluate.reading import EditFolder, factual_value, paper_column
from cfaudit.evaluate.summaries import per_edit, summarise

COMPOSITION_TIMES: tuple[int, ...] = (1, 10)

Warn = Callable[[str], None]


# --- 4. model axioms: composition and reversibility ---------------------------------------------------------


class ModelUnavailable(Exception):
    """The job's model cannot be loaded (or is not the one that made the edits): the reason, for the note."""


@dataclass(frozen=True)
class _Reversal:
    """Edits to undo: the originals, their counterfactuals under ``intervention``, their records and ids."""

    originals: list[np.ndarray]
    counterfactuals: list[np.ndarray]
    records: list[dict[str, Any]]
    ids: list[str]
    intervention: Intervention


@dataclass
class _ModelEditor:
    """A job's model as two operations on ``[0, 1]`` images: the null edit and the edit back of a reversal."""

    null_edit: Callable[[list[np.ndarray], list[dict[str, Any]], list[str]], np.ndarray]
    edit_back: Callable[[_Reversal], np.ndarray]
    description: str
    resolution: int


def _to_unit(images: Any) -> np.ndarray:
    return ((images[:, 0].float().cpu().numpy() + 1.0) / 2.0).clip(0.0, 1.0)


def _resolve_model_path(model: str, folder: Path) -> str:
    """The job's model as recorded; a relative path that is not there is also tried beside the edit folder."""
    if not model:
        raise ModelUnavailable("job.json records no model")
    path = Path(model).expanduser()
    if not path.is_absolute() and not path.exists() and (folder / path).exists():
        return str(folder / path)
    if model.startswith(("/", ".", "~")) and not path.exists():
        raise ModelUnavailable(f"model {model!r} not found (job.json records it; was it moved?)")
    return model


def _load_job_model(
    job: Mapping[str, Any],
    folder: Path,
    kind: str,
    load: Callable[[str], Any],
    fingerprint: Callable[[Any], str],
) -> Any:
    """The model a job records (``load(location)``), checked against the job's recorded fingerprint.

    ``kind`` names it in the reasons (``model``, ``SCM``); a model that cannot be loaded, or is not the one that
    made the edits, raises :class:`ModelUnavailable`."""
    model_id = str(job.get("model") or "")
    location = _resolve_model_path(model_id, folder)
    try:
        model = load(location)
    except (CfauditError, OSError) as error:
        raise ModelUnavailable(f"{kind} {model_id!r} cannot be loaded ({error})") from None
    recorded = job.get("model_fingerprint")
    if recorded and fingerprint(model) != recorded:
        raise ModelUnavailable(
            f"{kind} {model_id!r} is not the one that made the edits (fingerprint differs)"
        )
    return model


def diffusion_model_editor(job: Mapping[str, Any], folder: Path, device: str) -> _ModelEditor:
    """The diffusion editor of a ``cfaudit edit`` job, with the job's inversion and editing settings."""
    import torch

    from cfaudit.edit.editor import CounterfactualEditor, Target
    from cfaudit.edit.job import JobSettings, edit_target, model_fingerprint

    model = str(job.get("model") or "")
    editor = _load_job_model(
        job,
        folder,
        "model",
        lambda location: CounterfactualEditor.load(location, device=device),
        model_fingerprint,
    )
    settings = JobSettings.from_dict(job.get("settings", {}))

    def run(images: list[np.ndarray], prompts: list[str], targets: list[Target] | None) -> np.ndarray:
        torch.manual_seed(settings.seed)
        x = torch.stack([to_model_tensor(image, editor.resolution) for image in images]).to(editor.device)
        inversions = editor.invert(x, prompts, settings.inversion)
        plans = [[t] for t in targets] if targets is not None else [[] for _ in prompts]
        results = editor.edit(inversions, prompts, plans, settings.edit)
        if targets is None:
            return _to_unit(torch.stack([r.reconstruction for r in results]))
        return _to_unit(torch.stack([r.counterfactuals[0] for r in results]))

    def null_edit(images: list[np.ndarray], records: list[dict[str, Any]], ids: list[str]) -> np.ndarray:
        return run(images, [record_prompt(r) for r in records], None)

    def edit_back(edits: _Reversal) -> np.ndarray:
        changed = [edits.intervention.apply(r) for r in edits.records]
        backs = [_reverse(edits.intervention, r) for r in edits.records]
        targets = settings.guided_targets(
            [edit_target(b, c, settings.prompt_mode) for b, c in zip(backs, changed, strict=True)], backs
        )
        return run(edits.counterfactuals, [record_prompt(c) for c in changed], targets)

    inversion = settings.inversion
    description = f"diffusion editor, model {model}, {inversion.method} inversion, {inversion.steps} steps"
    return _ModelEditor(null_edit, edit_back, description, editor.resolution)


def scm_model_editor(job: Mapping[str, Any], folder: Path, device: str) -> _ModelEditor:
    """The SCM of a ``cfaudit scm edit`` job: abduction, action, prediction with the job's settings."""
    import torch

    from cfaudit.scm.counterfactual import ScmCounterfactuals, image_seed
    from cfaudit.scm.job import model_fingerprint
    from cfaudit.scm.model import CausalImageModel

    model_id = str(job.get("model") or "")
    model = _load_job_model(
        job, folder, "SCM", lambda location: CausalImageModel.load(location, device=device), model_fingerprint
    )
    settings = job.get("settings", {})
    engine = ScmCounterfactuals(model, str(settings.get("latents", "noise")))
    seed = int(settings.get("seed", 0))

    def prepare(images: list[np.ndarray], records: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
        x = torch.stack([to_model_tensor(image, model.resolution) for image in images])
        values = model.graph.encode(
            pd.DataFrame(records), model.label_policy, origin="the edited images' records"
        )
        return x, values

    def null_edit(images: list[np.ndarray], records: list[dict[str, Any]], ids: list[str]) -> np.ndarray:
        x, values = prepare(images, records)
        return _to_unit(engine(x, values, [], [image_seed(seed, i) for i in ids]).identity)

    def edit_back(edits: _Reversal) -> np.ndarray:
        # the forward edit again (its node values, descendants included, are the factual values going back)
        x, values = prepare(edits.originals, edits.records)
        seeds = [image_seed(seed, i) for i in edits.ids]
        forward = engine(x, values, [edits.intervention], seeds)
        back = [_reverse(edits.intervention, r) for r in edits.records]
        out = []
        for b, reverse in enumerate(back):
            row = {k: v[b : b + 1] for k, v in forward.values[0].items()}
            out.append(engine(forward.images[0, b : b + 1], row, [reverse], seeds[b : b + 1]).images[0])
        return _to_unit(torch.cat(out))

    description = f"SCM (HVAE) {model_id}, latents {settings.get('latents')}"
    return _ModelEditor(null_edit, edit_back, description, model.resolution)


def _reverse_or_none(intervention: Intervention, record: Mapping[str, Any]) -> Intervention | None:
    try:
        return _reverse(intervention, record)
    except CfauditError:  # e.g. back to race "Unknown", or a blank finding: nothing to edit back to
        return None


def _reverse(intervention: Intervention, record: Mapping[str, Any]) -> Intervention:
    """The intervention that sets the intervened attributes back to the record's values."""
    values = {}
    for name, _ in intervention.changes:
        value = factual_value(record, name)
        if value is None:
            raise CfauditError(f"{name} is blank in the record; there is no value to edit back to")
        values[name] = value
    return Intervention.from_mapping(values)


def model_editor(edit_folder: EditFolder, device: str) -> _ModelEditor:
    if edit_folder.job is None:
        raise ModelUnavailable("a pairs.csv folder records no model")
    if edit_folder.job.get("method") == SCM_METHOD:
        return scm_model_editor(edit_folder.job, edit_folder.path, device)
    return diffusion_model_editor(edit_folder.job, edit_folder.path, device)


def model_axiom_rows(
    edit_folder: EditFolder,
    scores: pd.DataFrame,
    records: Mapping[tuple[str, int], dict[str, Any] | None],
    *,
    size: int,
    axiom_images: int,
    n_boot: int,
    seed: int,
    device: str,
    required: bool,
    warn: Warn,
) -> list[dict[str, Any]]:
    """Composition and reversibility of one folder's model on its first ``axiom_images`` images.

    The reference image is the original as the model sees it (resized to the model's resolution), so that a
    model working at a lower resolution than the files is not charged for the resolution it drops.
    """
    mine = per_edit(scores[scores["folder"] == str(edit_folder.path)])
    if mine.empty:
        return []
    base = {"method": mine["method"].iloc[0], "edits": edit_folder.path.name}
    rows: list[dict[str, Any]] = []

    def add(column: str, intervention: str, axiom: str, measure: str, values: Any, note: str) -> None:
        s = summarise(values, n_boot, seed)
        rows.append({**base, "column": column, "intervention": intervention, "axiom": axiom, "measure": measure,
                     "mean": s.mean, "ci_low": s.low, "ci_high": s.high, "n": s.n, "unit": unit, "note": note})  # fmt: skip

    unit = f"0-255 at {size} px, against the original at the model's resolution"
    try:
        editor = model_editor(edit_folder, device)
    except ModelUnavailable as error:
        if required:
            raise CfauditError(f"{edit_folder.path}: model axioms requested but {error}") from None
        warn(f"{edit_folder.path}: composition and reversibility not measured: {error}")
        for axiom in ("composition", "reversibility"):
            add("", "", axiom, "", [], f"not measured: {error}")
        return rows

    def known(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        found = [records.get((f, int(n))) for f, n in zip(frame["folder"], frame["line"], strict=True)]
        keep = [r is not None for r in found]
        return frame[keep], [r for r in found if r is not None]

    def as_model_sees(paths: Iterable[str]) -> list[np.ndarray]:
        return [resize_and_crop(load_image(p), editor.resolution) for p in paths]

    # composition: the null edit applied 1 and 10 times to the first images
    firsts, image_records = known(mine.drop_duplicates("image_id"))
    firsts, image_records = firsts.head(axiom_images), image_records[:axiom_images]
    if firsts.empty:
        add(
            "", "null edit", "composition", "", [], "not measured: no image has a known record (give --index)"
        )
    else:
        ids = firsts["image_id"].tolist()

        def null_edit(images: Any) -> np.ndarray:
            return editor.null_edit(metrics.image_list(images), image_records, ids)

        originals = as_model_sees(firsts["original"])
        for k, values in metrics.composition(null_edit, originals, COMPOSITION_TIMES, size=size).items():
            add("", "null edit", "composition", f"L1 after {k} null edit{'s' if k > 1 else ''}", values,
                editor.description)  # fmt: skip
    # reversibility: per intervention, the first edits that changed the record, edited back to its values
    for text in mine["intervention"].unique():
        intervention = Intervention.parse(text)
        group, group_records = known(mine[(mine["intervention"] == text) & mine["changes_record"]])
        reversible = [_reverse_or_none(intervention, r) is not None for r in group_records]
        group = group[reversible].head(axiom_images)
        group_records = [r for r, ok in zip(group_records, reversible, strict=True) if ok][:axiom_images]
        if group.empty:
            add(paper_column(intervention), text, "reversibility", "L1 edited back", [],
                "not measured: no edit with a known record and a value to edit back to")  # fmt: skip
            continue
        originals = as_model_sees(group["original"])
        reverted = editor.edit_back(
            _Reversal(originals, as_model_sees(group["counterfactual"]), group_records,
                      group["image_id"].tolist(), intervention)
        )  # fmt: skip
        add(paper_column(intervention), text, "reversibility", "L1 edited back",
            metrics.reversibility(originals, reverted=reverted, size=size), editor.description)  # fmt: skip
    return rows
