"""The editing job: many images, several interventions each, resumable, cached, split across processes.

``run_edit_job`` walks the images in fixed batches (``batch_size`` images per batch, in input order). For each
batch it

1. loads the images at the model's resolution;
2. takes each image's inversion from the cache (``cache_dir/<key>.safetensors``, keyed by the image's pixels,
   the source prompt, the model's fingerprint and the inversion settings) or inverts the missing ones together
   and stores them;
3. edits every image with every intervention in one batched run (:class:`~cfaudit.edit.editor.CounterfactualEditor`),
   with ``identity_check`` also with its own source prompt, a soundness check reported as ``identity_l1``
   (the null edit itself is kept as ``images/<id>/identity.png``);
4. writes, per image, ``images/<id>/reconstruction.png``, one ``<intervention>.png`` counterfactual per edit,
   its signed difference map (``<intervention>_diff.npy``, exact) and a colour picture of it
   (``<intervention>_diff.png``), all 16-bit / atomic; and then, last, ``rows/<id>.json`` with one row per edit.

The folder's format (file names, the row schema, the row files, ``edits.csv`` and ``job.json``) is
:mod:`cfaudit.data.edit_folder`; this module holds what is the diffusion editor's own.

An image is done when its row file is readable, holds its edits made from the inputs it has now (its file,
source prompt, interventions, target and reference prompts) and every file the rows name is there
(:func:`cfaudit.data.edit_folder.unfinished_reason`); any other image is redone. A killed job restarts at the
first batch with an image not done and redoes that whole batch (so batches, and therefore outputs, are the same
as in an uninterrupted run). ``edits.csv`` is removed while the job is unfinished and rebuilt from the row files
at the end, so it never holds a duplicate or a half row. ``job.json`` records the settings; re-running into the
same folder with other settings is refused. Everything that can be checked without the model (settings, each
image's file and edit prompts) is checked before ``job.json`` is written, and a run that fails before any image
is done removes the ``job.json`` it wrote, so that the corrected command is not refused.

Under ``accelerate launch`` each process takes every ``num_processes``-th batch; the main process merges the rows.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfaudit.data.edit_folder import (
    EDITS_CSV,
    IDENTITY_FILE,
    IMAGES_FOLDER,
    INVERSIONS_FOLDER,
    RECONSTRUCTION_FILE,
    ROWS_FOLDER,
    batches_to_edit,
    check_job_file,
    finish_images,
    image_folder,
    new_folders,
    other_images,
    prepare_resume,
    row_file,
    undone_on_failure,
    write_counterfactual,
    write_edits_csv,
)
from cfaudit.data.edit_jobs import (
    JobItem,
    JobReport,
    check_job_items,
    item_inputs,
    item_interventions,
    plan_digest,
)
from cfaudit.data.images import load_model_tensor, save_image
from cfaudit.data.interventions import (
    DEFAULT_PROMPT_MODE,
    PROMPT_MODES,
    Intervention,
    canonical_attribute,
    caption_record,
)
from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.prompts import DEFAULT_TEMPLATE, PromptTemplate
from cfaudit.edit.attention import AttentionSettings
from cfaudit.edit.editor import CounterfactualEditor, EditSettings, ImageEdits, Target
from cfaudit.edit.inversion import Inversion, InversionSettings, check_guidance
from cfaudit.errors import CfauditError


@dataclass(frozen=True)
class JobSettings:
    """Everything that decides the job's outputs (written to ``job.json``)."""

    inversion: InversionSettings = field(default_factory=InversionSettings)
    edit: EditSettings = field(default_factory=EditSettings)
    prompt_mode: str = DEFAULT_PROMPT_MODE
    batch_size: int = 1
    seed: int = 0
    #: Add an edit whose target is the source prompt to every image and report how far it lands from the
    #: reconstruction (``identity_l1``; ~0 for a sound method). Costs one more target per image.
    identity_check: bool = False
    #: The guidance of the edits that name an attribute (``{"age": 4.0}``) or of one intervention
    #: (``{"do(age=-20)": 2.0}``), where the edit's guidance does not suit it: one scale goes too far for one
    #: attribute at the strength another needs (docs/BENCHMARKS.md, "Age edits"). An intervention's own scale comes
    #: first; an edit naming several attributes with scales takes the smallest; the others take ``edit``'s.
    attribute_guidance: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prompt_mode not in PROMPT_MODES:
            raise CfauditError(
                f"unknown prompt mode {self.prompt_mode!r}; choose one of {', '.join(PROMPT_MODES)}"
            )
        if self.batch_size < 1:
            raise CfauditError(f"batch size must be at least 1, got {self.batch_size}")
        check_guidance(self.edit.guidance_scale)
        scales = {_guidance_key(name): float(scale) for name, scale in self.attribute_guidance.items()}
        for attribute, scale in scales.items():
            check_guidance(scale, f"guidance for {attribute}")
        object.__setattr__(self, "attribute_guidance", scales)
        if self.attribute_guidance and self.inversion.method == "nti":
            raise CfauditError(
                "nti fits its null-text embeddings at one guidance scale; guidance per attribute needs direct, "
                "npi or ddim inversion"
            )
        if self.inversion.method == "nti" and self.inversion.guidance_scale != self.edit.guidance_scale:
            object.__setattr__(
                self,
                "inversion",
                InversionSettings(**{**asdict(self.inversion), "guidance_scale": self.edit.guidance_scale}),
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "inversion": self.inversion.to_dict(),
            "edit": {**asdict(self.edit), "attention": asdict(self.edit.attention)},
            "prompt_mode": self.prompt_mode,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "identity_check": self.identity_check,
            # written only when set, so that the job.json of a job without it stays as it was (and resumes)
            **({"attribute_guidance": dict(self.attribute_guidance)} if self.attribute_guidance else {}),
        }

    def guidance_for(self, intervention: Intervention) -> float:
        """The guidance scale of ``intervention``'s edit (see ``attribute_guidance``)."""
        own = self.attribute_guidance.get(str(intervention))
        if own is not None:
            return float(own)
        named = [self.attribute_guidance[a] for a, _ in intervention.changes if a in self.attribute_guidance]
        return float(min(named)) if named else self.edit.guidance_scale

    def unused_guidance(self, interventions: Sequence[Intervention]) -> list[str]:
        """The ``attribute_guidance`` keys that none of ``interventions`` would take."""
        named = {str(i) for i in interventions}
        attributes = {attribute for i in interventions for attribute, _ in i.changes}
        return [key for key in self.attribute_guidance if key not in named and key not in attributes]

    def guidance_taken_by(self, interventions: Sequence[Intervention]) -> JobSettings:
        """These settings without the ``attribute_guidance`` entries none of ``interventions`` takes (a
        discovery's plan leaves out an intervention with too few eligible images: its entry has no edit to
        guide, which :meth:`check_guidance_used` would refuse)."""
        unused = set(self.unused_guidance(interventions))
        if not unused:
            return self
        kept = {key: scale for key, scale in self.attribute_guidance.items() if key not in unused}
        return replace(self, attribute_guidance=kept)

    def check_guidance_used(self, interventions: Sequence[Intervention]) -> None:
        """Refuse guidance for an attribute or intervention that no edit of ``interventions`` takes: a misspelt
        intervention (``do(age=+2)`` meant as ``do(age=+20)``) would otherwise be recorded in ``job.json`` as if it
        had been applied."""
        unused = self.unused_guidance(interventions)
        if unused:
            edits = ", ".join(sorted({str(i) for i in interventions})) or "none"
            raise CfauditError(
                f"--attribute-guidance for {', '.join(unused)}: no edit of this job takes it (the edits: {edits}); "
                "name an attribute an edit changes or one of these interventions, or drop it"
            )

    def guided_targets(
        self, targets: Sequence[Target], interventions: Sequence[Intervention]
    ) -> list[Target]:
        """``targets`` (one per intervention) with the guidance of their intervention, where it is the
        attribute's own."""
        if not self.attribute_guidance:
            return list(targets)
        return [
            replace(target, guidance_scale=self.guidance_for(intervention))
            for target, intervention in zip(targets, interventions, strict=True)
        ]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSettings:
        edit = dict(data.get("edit", {}))
        attention = AttentionSettings(**edit.pop("attention", {}))
        return cls(
            inversion=InversionSettings.from_dict(data.get("inversion", {})),
            edit=EditSettings(**edit, attention=attention),
            prompt_mode=data.get("prompt_mode", "partial"),  # what jobs did before the key was written
            batch_size=int(data.get("batch_size", 1)),
            seed=int(data.get("seed", 0)),
            identity_check=bool(data.get("identity_check", False)),
            attribute_guidance={str(k): float(v) for k, v in (data.get("attribute_guidance") or {}).items()},
        )


def _guidance_key(name: str) -> str:
    """An ``attribute_guidance`` key as interventions spell it: an attribute (``age``) or an intervention
    (``do(age=-20)``)."""
    text = str(name).strip()
    if text.lower().startswith("do(") or "=" in text:
        return str(Intervention.parse(text))
    return canonical_attribute(text)


def item_from_image(path: str | os.PathLike[str], prompt: str) -> JobItem:
    """A single image file with the caption that describes it."""
    path = Path(path)
    if not path.is_file():
        raise CfauditError(f"{path}: no such image file")
    if not prompt.strip():
        raise CfauditError("--prompt is empty; give the caption that describes the image")
    return JobItem(path.stem, path, prompt.strip())


def ages_beyond_the_data(
    items: Sequence[JobItem], interventions: Sequence[Intervention], ages: Sequence[float]
) -> list[str]:
    """One line per age intervention that takes an image past the ages of ``ages`` (the data set's).

    A model trained on those ages never saw a prompt for an older or younger patient (the phantom's oldest is 90;
    docs/BENCHMARKS.md, "Contrast prompts", shows what such edits look like to its classifier). The edits are
    still made; the lines say which rest on such prompts.
    """
    known = [a for a in (float(x) for x in ages) if not math.isnan(a)]
    if not known:
        return []
    low, high = min(known), max(known)
    lines = []
    for intervention in interventions:
        if "age" not in dict(intervention.changes):
            continue
        beyond = 0
        for item in items:
            try:
                target = float(intervention.resolve(item.record, item.image_id).as_dict()["age"])
            except CfauditError:
                continue  # no age to move: the job says so in its own words
            beyond += not low <= target <= high
        if beyond:
            lines.append(
                f"{intervention} takes {beyond} of {len(items)} image(s) outside the ages of the data "
                f"({low:g}-{high:g} years): a model trained on it never saw such a prompt; do not trust those edits"
            )
    return lines


def edit_targets(
    item: JobItem,
    interventions: Sequence[Intervention],
    mode: str,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    policy: LabelPolicy = DEFAULT_POLICY,
) -> list[Target]:
    """The edit of each intervention for one image: its target prompt, and in ``contrast`` mode the partial prompt
    of the image's current values it is measured against (the record, or the caption read back if none)."""
    record = item.record
    if record is None and (mode in ("full", "contrast") or any(i.is_relative for i in interventions)):
        # contrast prompts name what the caption states and leave the rest unnamed; full ones need it all
        record = caption_record(item.source_prompt, template, complete=mode == "full")
    where = f"image {item.image_id!r}"
    return [edit_target(i.resolve(record, where), record, mode, template, policy) for i in interventions]


def edit_target(
    intervention: Intervention,
    record: Mapping[str, Any] | None,
    mode: str,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    policy: LabelPolicy = DEFAULT_POLICY,
) -> Target:
    """The edit of one (resolved) intervention of a record in prompt ``mode``: the target prompt, with the
    reference prompt as its anchor in ``contrast`` mode."""
    prompt = intervention.target_prompt(record, mode, template, policy)
    if mode != "contrast":
        return Target(prompt)
    if record is None:
        raise CfauditError("contrast prompt mode needs the image's record (or a caption to read it from)")
    return Target(prompt, anchor=intervention.reference_prompt(record, template, policy))


def model_fingerprint(editor: CounterfactualEditor) -> str:
    """A short hash of the model's configs and weights (statistics and a strided sample of every tensor).

    The statistics are summed by numpy, whose pairwise summation does not depend on the number of threads (a
    torch reduction does: a job resumed with another ``OMP_NUM_THREADS`` would otherwise see another model)."""
    digest = hashlib.sha256()
    for part in (editor.unet, editor.vae, editor.text_encoder):
        config = getattr(part, "config", {})
        digest.update(
            json.dumps(
                dict(config) if not hasattr(config, "to_dict") else config.to_dict(),
                sort_keys=True,
                default=str,
            ).encode()
        )
        for name, tensor in part.state_dict().items():
            values = tensor.detach().flatten().cpu().double().numpy()
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            if values.size:
                digest.update(values[:: max(1, values.size // 1024)].tobytes())
                digest.update(np.array([values.sum(), np.square(values).sum()]).tobytes())
    digest.update(json.dumps(dict(editor.scheduler.config), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def inversion_key(image: torch.Tensor, prompt: str, model: str, settings: InversionSettings) -> str:
    """The cache key of one inversion: image pixels, source prompt, model fingerprint and settings."""
    digest = hashlib.sha256()
    digest.update(image.detach().float().cpu().contiguous().numpy().tobytes())
    digest.update(str(tuple(image.shape)).encode())
    digest.update(
        json.dumps({"prompt": prompt, "model": model, "settings": settings.key()}, sort_keys=True).encode()
    )
    return digest.hexdigest()[:32]


def planned_unet_evals(settings: JobSettings, targets: int) -> float:
    """UNet evaluations (forward-equivalents per latent, as ``edits.csv``'s ``unet_evals`` counts them) of
    inverting one image and editing it towards ``targets`` prompts (the null edit of ``identity_check``
    included), without running anything: what a plan will cost.

    Exact for direct inversion with corrected targets (the default), DDIM and NPI; for NTI an upper bound (its
    early stop can end an inner loop sooner), as for direct inversion without target correction (the source's
    conditional pass is counted at every step, not only while attention is injected)."""
    n = settings.inversion.steps or 0
    guided = settings.edit.guidance_scale != 1.0 or any(
        g != 1.0 for g in settings.attribute_guidance.values()
    )
    method = settings.inversion.method
    inversion = n  # one conditional pass per step of the DDIM trajectory
    if (
        method == "nti"
    ):  # per step: a conditional pass, inner Adam steps (forward + backward = 3), a final pass
        inversion += n * (2 + 3 * settings.inversion.inner_steps)
    if method == "direct":
        source = n * (1 + (guided and settings.edit.correct_target)) if targets else 0
    else:
        source = n * (1 + (guided and method != "npi"))
    return float(inversion + source + targets * n * (2 if guided else 1))


def launch_state() -> Any:
    """accelerate's ``PartialState`` of this process: its rank, the number of processes and its device.

    Under ``accelerate launch`` or ``torchrun`` on machines without a GPU (or with ``ACCELERATE_USE_CPU=1``)
    the processes must be told to stay on the CPU to form one job (gloo): without it, each would run alone,
    as rank 0 of 1, and do every batch itself. The state is made once per process, so every caller (device
    choice, batch split) sees the same one."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def _process_state() -> tuple[int, int, Callable[[], None]]:
    """(rank, world size, barrier) from accelerate when launched with it; a single process otherwise."""
    try:
        state = launch_state()
        return state.process_index, state.num_processes, state.wait_for_everyone
    except Exception:  # accelerate missing or not configured: one process
        return 0, 1, lambda: None


def run_edit_job(
    editor: CounterfactualEditor,
    items: Sequence[JobItem],
    interventions: Sequence[Intervention],
    out: str | os.PathLike[str],
    settings: JobSettings | None = None,
    *,
    model_id: str = "",
    cache_dir: str | os.PathLike[str] | None = None,
    on_image_done: Callable[[str], None] | None = None,
    template: PromptTemplate = DEFAULT_TEMPLATE,
    policy: LabelPolicy = DEFAULT_POLICY,
) -> JobReport:
    """Edit ``items`` with every intervention into ``out``; resume where a previous run stopped."""
    settings = settings or JobSettings()
    start = time.perf_counter()
    out = Path(out)
    ids = check_job_items(items, interventions)
    # every image's edits (prompts, relative targets resolved) before anything is written: a bad one fails here
    targets: dict[str, list[Target]] = {}
    planned: dict[str, Intervention] = {}
    for item in items:
        plan = item_interventions(item, interventions)
        planned.update((str(i), i) for i in plan)
        targets[item.image_id] = settings.guided_targets(
            edit_targets(item, plan, settings.prompt_mode, template, policy), plan
        )
    settings.check_guidance_used([*planned.values(), *interventions])
    rank, world, barrier = _process_state()
    fingerprint = model_fingerprint(editor)
    cache = Path(cache_dir) if cache_dir is not None else out / INVERSIONS_FOLDER
    job_record = {
        "settings": settings.to_dict(),
        "interventions": [str(i) for i in interventions],
        "plan_sha256": plan_digest(items),
        "model": model_id,
        "model_fingerprint": fingerprint,
    }
    created = new_folders(out, out / IMAGES_FOLDER, out / ROWS_FOLDER, cache)
    fresh = check_job_file(out, job_record, rank, images=len(items))
    with undone_on_failure(out, ids, created, fresh):
        redone = 0
        if rank == 0:  # the others wait: they must see the row files as this leaves them
            expected = {
                item.image_id: _expected_rows(
                    item, item_interventions(item, interventions), targets[item.image_id]
                )
                for item in items
            }
            redone = prepare_resume(out, expected)[1]
        barrier()
        # prepare_resume removed the row file of every image not done: those left are done
        done_before = sum(row_file(out, image_id).is_file() for image_id in ids)
        for batch in batches_to_edit(out, items, settings.batch_size, rank, world):
            rows = _edit_batch(editor, batch, interventions, targets, out, cache, settings, fingerprint)
            # this process alone writes these images' folders, and has written them all: what a killed write
            # staged there is no one's any more
            finish_images(out, batch, rows, on_image_done, clear_staged=True)
    barrier()
    edits_csv = out / EDITS_CSV
    count = elsewhere = 0
    if rank == 0:
        count = write_edits_csv(out, ids)
        elsewhere = other_images(out, ids)
    return JobReport(
        edits_csv, len(items), done_before, count, time.perf_counter() - start, rank=rank, num_processes=world,
        images_redone=redone, images_elsewhere=elsewhere,
    )  # fmt: skip


def _expected_rows(
    item: JobItem, interventions: Sequence[Intervention], targets: Sequence[Target]
) -> list[dict[str, Any]]:
    """What the rows of a done image hold of its inputs: :func:`~cfaudit.data.edit_jobs.item_inputs`, and each
    edit's target prompt and the prompt it was measured against (they follow from the image's record)."""
    return [
        {
            **item_inputs(item, intervention),
            "target_prompt": target.prompt,
            "reference_prompt": target.anchor or item.source_prompt,
        }
        for intervention, target in zip(interventions, targets, strict=True)
    ]


def _edit_batch(
    editor: CounterfactualEditor,
    batch: list[JobItem],
    interventions: Sequence[Intervention],
    targets_of: Mapping[str, list[Target]],
    out: Path,
    cache: Path,
    settings: JobSettings,
    fingerprint: str,
) -> list[list[dict[str, Any]]]:
    """Invert (or load) and edit one batch of images (``targets_of``: each image's edits, by id); write their
    images; return their rows."""
    torch.manual_seed(settings.seed)
    # 1. Load the images and the prompts
    images = torch.stack([load_model_tensor(item.path, editor.resolution) for item in batch])  # [B, 1, H, W]
    prompts = [item.source_prompt for item in batch]
    plans = [item_interventions(item, interventions) for item in batch]
    targets = [list(targets_of[item.image_id]) for item in batch]
    if settings.identity_check:
        targets = [
            [*image_targets, Target(prompt)] for image_targets, prompt in zip(targets, prompts, strict=True)
        ]
    # 2. Inversions from the cache, the missing ones computed together and stored
    keys = [inversion_key(images[b], prompts[b], fingerprint, settings.inversion) for b in range(len(batch))]
    inversions: list[Inversion | None] = [None] * len(batch)
    for b, key in enumerate(keys):
        path = cache / f"{key}.safetensors"
        if path.is_file():
            try:
                inversions[b] = Inversion.load(path)[0]
            except CfauditError:
                inversions[b] = None  # unreadable: recompute and overwrite
    cached = [inv is not None for inv in inversions]
    missing = [b for b, inv in enumerate(inversions) if inv is None]
    if missing:
        fresh = editor.invert(images[missing], [prompts[b] for b in missing], settings.inversion)
        for b, inversion in zip(missing, fresh, strict=True):
            inversion.save(
                cache / f"{keys[b]}.safetensors", meta={"image_id": batch[b].image_id, "prompt": prompts[b]}
            )
            inversions[b] = Inversion.load(cache / f"{keys[b]}.safetensors")[0]
    # 3. Edit every image with every intervention in one batched run
    results = editor.edit(
        [inv for inv in inversions if inv is not None],
        prompts,
        targets,
        settings.edit,
    )
    # 4. Write the outputs and build the rows
    return [
        _write_outputs(out, item, images[b], results[b], plans[b], settings, cached[b])
        for b, item in enumerate(batch)
    ]


def _write_outputs(
    out: Path,
    item: JobItem,
    original: torch.Tensor,
    result: ImageEdits,
    interventions: Sequence[Intervention],
    settings: JobSettings,
    cached: bool,
) -> list[dict[str, Any]]:
    folder = image_folder(out, item.image_id)
    original01 = ((original[0].float().cpu().numpy() + 1.0) / 2.0).clip(0, 1)
    reconstruction = ((result.reconstruction[0].numpy() + 1.0) / 2.0).clip(0, 1)
    save_image(reconstruction, folder / RECONSTRUCTION_FILE, bits=16)
    reconstruction_l1 = float(np.abs(reconstruction - original01).mean())
    identity_l1: float | None = None
    if settings.identity_check:  # the last target is the source prompt itself
        identity = ((result.counterfactuals[-1, 0].numpy() + 1.0) / 2.0).clip(0, 1)
        identity_l1 = float(np.abs(identity - reconstruction).mean())
        save_image(identity, folder / IDENTITY_FILE, bits=16)
    rows = []
    for k, intervention in enumerate(interventions):
        counterfactual = ((result.counterfactuals[k, 0].numpy() + 1.0) / 2.0).clip(0, 1)
        files = write_counterfactual(
            out, folder, intervention.slug, counterfactual, reconstruction, item.path
        )
        rows.append(
            {
                "image_id": item.image_id,
                "intervention": str(intervention),
                "source_prompt": result.source_prompt,
                "target_prompt": result.target_prompts[k],
                "reference_prompt": result.reference_prompts[k],
                "prompt_mode": settings.prompt_mode,
                "method": settings.inversion.method,
                "steps": settings.inversion.steps,
                "guidance_scale": settings.guidance_for(intervention),
                "seed": settings.seed,
                "unet_evals": round(result.unet_evals[k], 3),
                "seconds": round(result.seconds[k], 4),
                "reconstruction_l1": reconstruction_l1,
                "identity_l1": identity_l1,
                "inversion_cached": cached,
                **files,
            }
        )
    return rows
