"""The SCM editing job, written in ``cfaudit edit``'s layout so ``cfaudit evaluate`` scores both methods alike.

``run_scm_edit_job`` walks the images in batches; per image it writes (through :mod:`cfaudit.data.edit_folder`,
as the diffusion editor does)::

    images/<id>/reconstruction.png           the null intervention (every parent as observed): the input itself
    images/<id>/model_mean.png               the HVAE's own reconstruction (posterior-mean latents, no pixel noise)
    images/<id>/<intervention>.png           the counterfactual (16-bit)
    images/<id>/<intervention>_diff.npy/png  signed difference counterfactual - reconstruction
    rows/<id>.json                           its rows (written last: the image is done)

then ``edits.csv`` (:data:`cfaudit.data.edit_folder.EDIT_COLUMNS`, one row per edit; ``method`` is ``scm-hvae``, the
target prompt is the caption of the counterfactual record, descendants included, and ``unet_evals`` is 0) and
``counterfactual_values.csv`` (per edit, each graph node's factual and counterfactual value). ``job.json`` holds
the settings; re-running the same command resumes, other settings in the same folder are refused.

An image is done when its row file is readable, holds its edits made from the inputs it has now (its file, source
prompt, interventions and the graph's values of its record) and every file the rows name is there; any other image
is redone (:func:`cfaudit.data.edit_folder.unfinished_reason`), with the rest of its batch (batches of
``batch_size`` images in input order, as ``cfaudit edit``'s), so that a resumed job's files are those of one
uninterrupted run. The records and image files are checked before
``job.json`` is written, and a run that fails before any image is done removes the ``job.json`` it wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cfaudit import atomic_io
from cfaudit.data import edit_folder, edit_jobs
from cfaudit.data.images import load_model_tensor, save_image
from cfaudit.data.interventions import Intervention
from cfaudit.data.prompts import DEFAULT_TEMPLATE, PromptTemplate, record_prompt
from cfaudit.errors import CfauditError
from cfaudit.scm.counterfactual import ScmCounterfactuals, image_seed
from cfaudit.scm.hvae import LATENT_MODES
from cfaudit.scm.model import CausalImageModel

VALUES_CSV = "counterfactual_values.csv"


@dataclass(frozen=True)
class ScmEditSettings:
    #: ``noise``: each latent keeps its abducted prior noise; ``fixed``: the latents are reused as abducted
    latents: str = "noise"
    batch_size: int = 8
    seed: int = 0  #: seeds the abduction of the discrete nodes' noise (with each image id)

    def __post_init__(self) -> None:
        if self.latents not in LATENT_MODES:
            raise CfauditError(f"--latents {self.latents!r} is not one of {', '.join(LATENT_MODES)}")
        if self.batch_size < 1:
            raise CfauditError(f"batch size must be at least 1, got {self.batch_size}")


def model_fingerprint(model: CausalImageModel) -> str:
    """A short hash of the graph and every weight of the model."""
    digest = hashlib.sha256(json.dumps(model.graph.to_dict(), sort_keys=True).encode())
    for part in (model.mechanisms, model.hvae):
        for name, tensor in sorted(part.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def run_scm_edit_job(
    model: CausalImageModel,
    items: Sequence[edit_jobs.JobItem],
    interventions: Sequence[Intervention],
    out: str | os.PathLike[str],
    settings: ScmEditSettings | None = None,
    *,
    model_id: str = "",
    on_image_done: Callable[[str], None] | None = None,
    template: PromptTemplate = DEFAULT_TEMPLATE,
) -> edit_jobs.JobReport:
    """Counterfactuals of ``items`` (with their index records) into ``out``: each item under its own plan when it
    has one (as :func:`cfaudit.edit.job.run_edit_job`: the demo gives both methods the same edits), else under
    every one of ``interventions``."""
    settings = settings or ScmEditSettings()
    started = time.perf_counter()
    out = Path(out)
    ids = edit_jobs.check_job_items(items, interventions, "ids")
    plans = {item.image_id: edit_jobs.item_interventions(item, interventions) for item in items}
    planned = list({str(i): i for plan in [interventions, *plans.values()] for i in plan}.values())
    if any(item.record is None for item in items):
        raise CfauditError(
            "the SCM needs each image's record (age, sex, race, findings): edit from an --index"
        )
    relative = [str(i) for i in planned if i.is_relative]
    if relative:
        raise CfauditError(
            f"{', '.join(relative)}: the SCM baseline takes absolute values (e.g. age=80); "
            "relative shifts are supported by `cfaudit edit` only"
        )
    engine = ScmCounterfactuals(model, settings.latents)
    engine.check(planned)  # every attribute must be a node of the graph: fail before any work
    # every record's node values (a value the graph cannot hold fails here, naming the row, before any work)
    factual = factual_values(model, items)
    expected = {
        item.image_id: [
            {**edit_jobs.item_inputs(item, i), "factual_values": values} for i in plans[item.image_id]
        ]
        for item, values in zip(items, factual, strict=True)
    }
    created = edit_folder.new_folders(out, out / edit_folder.IMAGES_FOLDER, out / edit_folder.ROWS_FOLDER)
    record = {"method": edit_folder.SCM_METHOD, "settings": asdict(settings),
              "interventions": [str(i) for i in interventions], "model": model_id,
              "model_fingerprint": model_fingerprint(model), "resolution": model.resolution}  # fmt: skip
    digest = edit_jobs.plan_digest(items)
    if digest is not None:  # only then: a job without plans keeps the job.json it always had (and resumes)
        record["plan_sha256"] = digest
    fresh = edit_folder.check_job_file(out, record, images=len(items))
    with edit_folder.undone_on_failure(out, ids, created, fresh):
        # an image is done when its rows match it now; prepare_resume removed the row file of every other one
        done_before, redone = edit_folder.prepare_resume(out, expected, also=(VALUES_CSV,))
        # seeds are per image, but a batch with any image not done is redone whole, as the diffusion job's
        for batch in edit_folder.batches_to_edit(out, items, settings.batch_size):
            rows = _edit_batch(
                engine, batch, [plans[item.image_id] for item in batch], out, settings, template
            )
            edit_folder.finish_images(out, batch, rows, on_image_done)
    count = edit_folder.write_edits_csv(out, ids)
    write_values_csv(out, ids)
    return edit_jobs.JobReport(
        out / edit_folder.EDITS_CSV, len(items), done_before, count, time.perf_counter() - started,
        images_redone=redone, images_elsewhere=edit_folder.other_images(out, ids),
    )  # fmt: skip


def factual_values(model: CausalImageModel, items: Sequence[edit_jobs.JobItem]) -> list[dict[str, Any]]:
    """Each item's record as the graph's node values (as its rows record them, ``factual_values``)."""
    table = pd.DataFrame([item.record for item in items])
    values = model.graph.encode(table, model.label_policy, origin="index")
    return [model.graph.decode(values, b) for b in range(len(items))]


def write_values_csv(out: Path, image_ids: Sequence[str]) -> Path:
    """``counterfactual_values.csv``: image id, intervention, each node's factual and counterfactual value."""
    rows = []
    for image_id in image_ids:
        for row in edit_folder.read_image_rows(out, image_id) or []:
            entry = {"image_id": row["image_id"], "intervention": row["intervention"]}
            for name, value in row["factual_values"].items():
                entry[name] = value
                entry[f"{name} (counterfactual)"] = row["counterfactual_values"][name]
            entry["changed"] = ";".join(row["changed_nodes"])
            rows.append(entry)
    atomic_io.write_csv(out / VALUES_CSV, pd.DataFrame(rows))
    return out / VALUES_CSV


def _edit_batch(
    engine: ScmCounterfactuals,
    batch: list[edit_jobs.JobItem],
    plans: Sequence[Sequence[Intervention]],
    out: Path,
    settings: ScmEditSettings,
    template: PromptTemplate,
) -> list[list[dict[str, Any]]]:
    """Each item of ``batch`` under its plan. Every intervention of the batch is computed for every image (an
    image's noise is drawn from its own seed, whatever is computed beside it) and each image keeps those of its
    plan."""
    model = engine.model
    began = time.perf_counter()
    interventions = list({str(i): i for plan in plans for i in plan}.values())
    position = {str(intervention): k for k, intervention in enumerate(interventions)}
    # 1. Images at the model's resolution and the records' node values
    images = torch.stack([load_model_tensor(item.path, model.resolution) for item in batch])  # [B, 1, R, R]
    table = pd.DataFrame([item.record for item in batch])
    values = model.graph.encode(table, model.label_policy, origin="index")
    # 2. Abduction, action, prediction for every intervention
    result = engine(
        images, values, interventions, [image_seed(settings.seed, item.image_id) for item in batch]
    )
    means = model.hvae.reconstruct(images.to(model.device), model.image_parents(values)).cpu()
    seconds = (time.perf_counter() - began) / max(sum(len(plan) for plan in plans), 1)
    # 3. Files and rows
    rows = []
    for b, item in enumerate(batch):
        assert item.record is not None  # every item's record was checked on entry
        folder = edit_folder.image_folder(out, item.image_id)
        original = ((images[b, 0].numpy() + 1.0) / 2.0).clip(0, 1)
        reconstruction = ((result.identity[b, 0].numpy() + 1.0) / 2.0).clip(0, 1)
        save_image(reconstruction, folder / edit_folder.RECONSTRUCTION_FILE, bits=16)
        reconstruction_l1 = float(np.abs(reconstruction - original).mean())
        save_image(((means[b, 0].numpy() + 1.0) / 2.0).clip(0, 1), folder / "model_mean.png", bits=16)
        factual = model.graph.decode(values, b)
        image_rows = []
        for intervention in plans[b]:
            k = position[str(intervention)]
            counterfactual = ((result.images[k, b, 0].numpy() + 1.0) / 2.0).clip(0, 1)
            files = edit_folder.write_counterfactual(
                out, folder, intervention.slug, counterfactual, reconstruction, item.path
            )
            changed_values = model.graph.decode(result.values[k], b)
            image_rows.append({
                "image_id": item.image_id,
                "intervention": str(intervention),
                "source_prompt": item.source_prompt,
                "target_prompt": record_prompt({**item.record, **changed_values}, template, model.label_policy),
                "prompt_mode": "full",
                "method": edit_folder.SCM_METHOD,
                "steps": None,
                "guidance_scale": None,
                "seed": settings.seed,
                "unet_evals": 0,
                "seconds": round(seconds, 4),
                "reconstruction_l1": reconstruction_l1,  # 0: the null intervention returns the input exactly
                "identity_l1": None,
                "inversion_cached": False,
                **files,
                # SCM-only fields (kept in rows/, summarised in counterfactual_values.csv)
                "factual_values": factual,
                "counterfactual_values": changed_values,
                "changed_nodes": [n for n in model.graph.names if bool(result.changed[k][n][b])],
            })  # fmt: skip
        rows.append(image_rows)
    return rows
