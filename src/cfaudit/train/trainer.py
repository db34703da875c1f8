"""Fine-tune a Stable Diffusion UNet on captioned images: one loop, top to bottom.

:func:`train` sets up (model, captions, cached latents, optimizer) and then runs the loop that is all of training:
draw a batch, noise it, predict, step, log, sample, checkpoint (the loss itself:
:mod:`cfaudit.train.objective`). It runs unchanged on a laptop CPU, one GPU or
under ``accelerate launch`` on many (Accelerator handles devices, mixed precision and gradient all-reduce).

Randomness is explicit so that a resumed run continues the same loss curve: the data order comes from one
generator shared by all processes, the noise / timesteps / caption dropout / latent samples from a generator per
process; both live on the CPU and are saved in every checkpoint.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cfaudit import __version__, atomic_io
from cfaudit.errors import CfauditError
from cfaudit.models.components import PipelineComponents
from cfaudit.models.model_card import write_card_quietly
from cfaudit.models.text_encoding import encode_ids, tokenize
from cfaudit.train import checkpoint as ckpt
from cfaudit.train.config import TrainConfig, require_filled
from cfaudit.train.draws import (
    finding_repeats,
    negative_rates,
    next_rows,
    sampled_caption_ids,
    timestep_sampling_weights,
)
from cfaudit.train.latent_cache import LatentCache, cache_key, file_sha256, load_or_encode, vae_fingerprint
from cfaudit.train.objective import (
    Anchor,
    anchored_rows,
    diffusion_loss,
    frozen_copy,
    snr_shifted_schedule,
    teacher_prediction,
)
from cfaudit.train.text_cache import build_text_cache

if TYPE_CHECKING:
    from cfaudit.data.prompts import Findings

log = logging.getLogger("cfaudit")
_SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TrainingData:
    """What the loop draws from: cached latents and tokenised captions, row-aligned."""

    latents: LatentCache
    input_ids: torch.Tensor  # [N, 77]
    captions: list[str]
    records: list[dict[str, Any]]  # the index rows (varied captions are built from them per step)
    empty_ids: torch.Tensor  # [77] the empty prompt (caption dropout)
    index_path: str
    index_sha256: str
    #: each record's findings under the label policy (:func:`cfaudit.data.prompts.records_findings`), worked out once
    findings: list[Findings] = field(default_factory=list)


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # one per optimizer step taken in this call
    step_seconds: list[float] = field(
        default_factory=list
    )  # wall time of each step (no logging / checkpoints)
    images_per_second: float = 0.0
    model_dir: Path | None = None
    last_checkpoint: Path | None = None
    main_process: bool = True  # False on the other processes of a distributed launch (they print nothing)


def prepare_data(config: TrainConfig, components: PipelineComponents, progress: Any = None) -> TrainingData:
    """Read the index, caption every row with the config's template and label policy, and cache the latents."""
    from cfaudit.assets import cache_dir
    from cfaudit.data.labels import LabelPolicy
    from cfaudit.data.prompts import PromptTemplate, record_prompt, records_findings
    from cfaudit.data.records import DataIndex

    require_filled(config, "train config", ["index"])
    index = DataIndex.read(config.index).split(config.split)
    if len(index) == 0:
        raise CfauditError(f"{config.index}: split {config.split!r} has no rows; nothing to train on")
    template = PromptTemplate.from_dict(config.prompt_template)
    policy = LabelPolicy.from_dict(config.label_policy)
    records = [row.to_dict() for _, row in index.table.iterrows()]
    findings = records_findings(records, policy)
    captions = [
        record_prompt(row, template, policy, found) for row, found in zip(records, findings, strict=True)
    ]
    input_ids = tokenize(components.tokenizer, captions)
    empty_ids = tokenize(components.tokenizer, [""], warn=False)[0]
    paths = index.image_paths()
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise CfauditError(
            f"{config.index}: {len(missing)} image(s) missing, first {missing[0]}; check the index root"
        )
    index_hash = file_sha256(config.index)
    key = cache_key(vae_fingerprint(components.vae, components.meta.get("folder")), index_hash, config.split,
                    config.resolution, paths)  # fmt: skip
    folder = Path(config.latent_cache_dir) if config.latent_cache_dir else cache_dir() / "latents"
    if config.cache_latents:
        latents = load_or_encode(components.vae, paths, config.resolution, folder, key,
                                 batch_size=config.encode_batch_size, progress=progress)  # fmt: skip
    else:
        from cfaudit.train.latent_cache import encode_images

        latents = encode_images(components.vae, paths, config.resolution, batch_size=config.encode_batch_size)
    return TrainingData(
        latents,
        input_ids,
        captions,
        records,
        empty_ids,
        str(Path(config.index).resolve()),
        index_hash,
        findings,
    )


def trainable_unet_parameters(unet: torch.nn.Module, patterns: list[str]) -> list[torch.nn.Parameter]:
    """The UNet parameters whose names match one of ``patterns`` (``fnmatch``), or all of them for no patterns.

    A pattern that matches nothing is an error naming it and a few real names: a typo would otherwise freeze a
    block that the run was meant to train."""
    named = list(unet.named_parameters())
    if not patterns:
        return [parameter for _, parameter in named]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name, _ in named):
            blocks = sorted({".".join(name.split(".")[:2]) if name.startswith(("down_blocks", "up_blocks"))
                             else name.split(".")[0] for name, _ in named})  # fmt: skip
            raise CfauditError(
                f"unet_trainable: {pattern!r} matches no UNet parameter; names start with {', '.join(blocks)} "
                "(patterns are fnmatch, e.g. 'up_blocks.2.*')"
            )
    return [parameter for name, parameter in named if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def _trainable(config: TrainConfig, components: PipelineComponents) -> list[dict[str, Any]]:
    """Switch on gradients for what trains and return the optimizer's parameter groups."""
    unet, text_encoder = components.unet, components.text_encoder
    if config.lora_rank:
        from peft import LoraConfig

        # peft annotates lora_alpha as int but takes any number (the scale is lora_alpha / r)
        unet.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank,  # type: ignore[arg-type]
                                    init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"]))  # fmt: skip
        groups = [{"params": [p for p in unet.parameters() if p.requires_grad], "lr": config.learning_rate}]
    else:
        chosen = trainable_unet_parameters(unet, config.unet_trainable)
        unet.requires_grad_(False)
        for parameter in chosen:
            parameter.requires_grad_(True)
        groups = [{"params": chosen, "lr": config.learning_rate}]
    unet.train()
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    if config.train_text_encoder:
        text_encoder.requires_grad_(True)
        text_encoder.train()
        if config.gradient_checkpointing:
            text_encoder.gradient_checkpointing_enable()
        groups.append(
            {"params": list(text_encoder.parameters()), "lr": config.text_encoder_lr or config.learning_rate}
        )
    return groups


def _provenance(
    config: TrainConfig, components: PipelineComponents, data: TrainingData, step: int, seconds: float = 0.0
) -> dict[str, Any]:
    return {
        "step": step,
        "wall_seconds": round(seconds, 1),  # of the loop in this call (a resumed run: since the resume)
        "config": config.to_dict(),
        "data": {"index": data.index_path, "index_sha256": data.index_sha256, "split": config.split, "rows": len(data.captions)},
        "base_model": {"source": components.source, "folder": components.meta.get("folder"),
                       **({"trained": earlier} if (earlier := _base_record(components, "provenance.json")) else {})},
        "command": " ".join(sys.argv),
        "cfaudit_version": __version__,
        "torch_version": torch.__version__,
    }  # fmt: skip


def _base_record(components: PipelineComponents, name: str) -> dict[str, Any]:
    """A record the base model's folder holds (``provenance.json``: how it was trained, when it is an earlier
    phase; ``vae_provenance.json``: its autoencoder's, carried on since the VAE is frozen), or ``{}``."""
    folder = components.meta.get("folder")
    path = Path(folder) / name if folder else None
    if path is None or not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def train(
    config: TrainConfig,
    *,
    resume: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    threads: Callable[[], int] | None = None,
) -> TrainResult:
    """Run (or continue) one fine-tuning job; returns the losses of the steps taken in this call.

    ``resume``: ``latest`` or a checkpoint folder. ``stop_after``: leave after that many steps in this call
    (as if killed right after a checkpoint; for time-sliced jobs and the resume test). ``threads``: asked before
    each step how many CPU threads to compute with (a job sharing the cores with another takes them back when
    the other ends; ``cfaudit demo --train``).
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from cfaudit.models.loading import load_components

    require_filled(config, "train config", ["model", "index", "output_dir"])
    atomic_io.check_output_folder(config.output_dir, "output_dir")
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise CfauditError(
            "train config: mixed_precision fp16 needs a CUDA GPU, and torch sees none here; use no (or bf16)"
        )
    out = Path(config.output_dir)
    # accelerate keeps one state per process; a second run in the same process (notebooks, tests) may need
    # another precision. Reset it, keeping the process group (PartialState) of a distributed launch.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.mixed_precision, torch.float32)
    device = accelerator.device

    # 1. Model: trained parts stay fp32 (autocast does the rest); frozen parts move in the compute dtype.
    components = load_components(config.model)
    if config.resolution % components.vae_scale_factor:
        raise CfauditError(
            f"train config: resolution {config.resolution} must be a multiple of {components.vae_scale_factor}"
        )
    trainable_unet_parameters(
        components.unet, config.unet_trainable
    )  # a typo fails before the data are encoded
    # The starting model, frozen, for the rows that keep its predictions (taken before anything trains)
    teacher = frozen_copy(config, components, device, weight_dtype) if config.preserve_weight > 0 else None
    noise_scheduler = components.noise_scheduler
    prediction_type = config.prediction_type or components.prediction_type
    noise_scheduler.register_to_config(prediction_type=prediction_type)
    components.vae.to(device)

    # 2. Data: captions and latents, encoded once (main process first; the others then read the cache)
    with accelerator.main_process_first():
        data = prepare_data(config, components)
    if weight_dtype != torch.float32:
        components.vae.to(dtype=weight_dtype)
    torch.manual_seed(config.seed)

    # 3. What trains, the optimizer, the schedule, EMA
    groups = _trainable(config, components)
    unet, text_encoder = components.unet, components.text_encoder
    text_encoder.to(device)
    if not config.train_text_encoder and weight_dtype != torch.float32:
        text_encoder.to(dtype=weight_dtype)
    text_cache = None
    varied = config.caption_partial > 0 or teacher is not None
    if not config.train_text_encoder and config.cache_text and not varied:
        text_cache = build_text_cache(
            text_encoder, data.input_ids, data.empty_ids, budget_mb=config.text_cache_mb
        )
    optimizer = torch.optim.AdamW(groups, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)  # fmt: skip
    # accelerate steps a prepared schedule once per process: count in process-steps, as diffusers' scripts do
    lr_scheduler = get_scheduler(config.lr_schedule, optimizer=optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=config.max_steps * accelerator.num_processes)  # fmt: skip
    ema = None
    if config.use_ema:
        ema = EMAModel(
            unet.parameters(), decay=config.ema_decay, model_cls=type(unet), model_config=unet.config
        )
    if config.train_text_encoder:
        unet, text_encoder, optimizer, lr_scheduler = accelerator.prepare(
            unet, text_encoder, optimizer, lr_scheduler
        )
    else:
        unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    if ema is not None:
        ema.to(device)
    trained = [p for group in groups for p in group["params"]]

    # 4. State of the loop, fresh or from a checkpoint
    data_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 1 + accelerator.process_index)
    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "position": 0,
        "order": None,
        "n_rows": len(data.captions),
    }
    start_checkpoint = ckpt.resolve_resume(out, resume) if resume else None
    if resume and accelerator.is_main_process:  # what a killed run left half written or half deleted
        ckpt.tidy_for_resume(out, config.keep_checkpoints, start_checkpoint)
        atomic_io.remove_leftovers(out / "model")
    if start_checkpoint is not None:
        saved = ckpt.read_state(start_checkpoint)
        if saved["n_rows"] != state["n_rows"]:
            raise CfauditError(f"{start_checkpoint}: trained on {saved['n_rows']} rows, the index now has {state['n_rows']}; "
                               "resume with the same data or start a new output_dir")  # fmt: skip
        if config.lora_rank:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(accelerator.unwrap_model(unet), ckpt.read_lora_state(start_checkpoint))
        else:
            ckpt.load_weights_into(accelerator.unwrap_model(unet), start_checkpoint, "unet")
        if config.train_text_encoder:
            ckpt.load_weights_into(accelerator.unwrap_model(text_encoder), start_checkpoint, "text_encoder")
        ckpt.restore_optimisation(saved, optimizer, lr_scheduler, ema, device, data_gen)
        noise_states = saved["noise_gen"]  # one row per process of the run that saved it
        if noise_states.shape[0] == accelerator.num_processes:
            noise_gen.set_state(noise_states[accelerator.process_index].clone())  # a view crashes set_state
        else:
            log.warning("resuming on %d processes a run saved on %d: noise draws restart from the seed",
                        accelerator.num_processes, noise_states.shape[0])  # fmt: skip
            noise_gen.manual_seed(config.seed * 1000 + 1 + accelerator.process_index + 7919 * saved["step"])
        state.update({k: saved[k] for k in ("step", "epoch", "position", "order")})
        log.info("resumed from %s at step %d", start_checkpoint, state["step"])
    if config.sample_every:
        (out / "samples").mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers("train")

    def save_checkpoint() -> Path | None:
        # every process's noise generator, gathered (collective: all processes call this)
        noise_states = accelerator.gather(noise_gen.get_state().unsqueeze(0).to(device)).cpu()
        if not accelerator.is_main_process:
            return None
        models = {} if config.lora_rank else {"unet": accelerator.unwrap_model(unet)}
        if config.train_text_encoder:
            models["text_encoder"] = accelerator.unwrap_model(text_encoder)
        lora = None
        if config.lora_rank:
            from peft import get_peft_model_state_dict

            lora = get_peft_model_state_dict(accelerator.unwrap_model(unet))
        training_state = {
            **{k: state[k] for k in ("step", "epoch", "position", "order", "n_rows")},
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "data_gen": data_gen.get_state(),
            "noise_gen": noise_states,
        }
        folder = ckpt.write_checkpoint(ckpt.checkpoint_dir(out, state["step"]), models=models, lora_state=lora,
                                       state=training_state, provenance=_provenance(config, components, data, state["step"],
                                                                         time.perf_counter() - started))  # fmt: skip
        ckpt.prune_checkpoints(out, config.keep_checkpoints)
        return folder

    def sample_grid() -> None:
        from cfaudit.models.sampling import sample_images

        if not accelerator.is_main_process:
            return
        view = PipelineComponents(accelerator.unwrap_model(unet), components.vae, accelerator.unwrap_model(text_encoder),
                                  components.tokenizer, noise_scheduler, components.source, components.meta)  # fmt: skip
        if ema is not None:
            ema.store(view.unet.parameters())
            ema.copy_to(view.unet.parameters())
        view.unet.eval()
        view.text_encoder.eval()
        seeds = list(range(len(config.sample_prompts)))
        with accelerator.autocast():
            images = sample_images(
                view, config.sample_prompts, seeds, steps=config.sample_steps, guidance=config.sample_guidance
            )
        view.unet.train()
        if config.train_text_encoder:
            view.text_encoder.train()
        if ema is not None:
            ema.restore(view.unet.parameters())
        path = out / "samples" / f"step-{state['step']:07d}.png"
        save_grid(images, path)
        for tracker in accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.writer.add_images("samples", images, state["step"])

    # 5. The loop
    result = TrainResult(step=state["step"], main_process=accelerator.is_main_process)
    per_step = config.batch_size * config.gradient_accumulation_steps * accelerator.num_processes
    scale = components.latent_scale
    steps_this_call = 0
    last_checkpoint: Path | None = None
    bar = _progress_bar(enabled=progress and accelerator.is_main_process)
    task = bar.add_task("train", total=config.max_steps, completed=state["step"], loss=float("nan"), ips=0.0)
    timestep_weights = timestep_sampling_weights(config, noise_scheduler.config.num_train_timesteps)
    training_schedule = snr_shifted_schedule(noise_scheduler, config.snr_shift)
    coarse = (config.coarse_loss_weight, config.coarse_loss_pool) if config.coarse_loss_weight > 0 else None
    repeats = finding_repeats(config, data.records)
    negative = negative_rates(config, data.records, repeats)
    started = time.perf_counter()
    with bar:
        while state["step"] < config.max_steps:
            if threads is not None and (wanted := threads()) != torch.get_num_threads():
                torch.set_num_threads(wanted)
            step_started = time.perf_counter()
            step_loss: float | torch.Tensor = 0.0  # a tensor while the micro-batches add up, then their mean
            for micro in range(config.gradient_accumulation_steps):
                rows = next_rows(state, config.batch_size * accelerator.num_processes, data_gen, repeats)
                rows = rows[accelerator.process_index :: accelerator.num_processes]
                latents = data.latents.sample(rows, noise_gen) * scale
                noise = torch.randn(latents.shape, generator=noise_gen)
                if config.noise_offset:
                    noise += config.noise_offset * torch.randn(
                        (*latents.shape[:2], 1, 1), generator=noise_gen
                    )
                if timestep_weights is None:  # uniform: the stream of draws every earlier run made
                    timesteps = torch.randint(
                        0, noise_scheduler.config.num_train_timesteps, (len(rows),), generator=noise_gen
                    )
                else:
                    timesteps = torch.multinomial(
                        timestep_weights, len(rows), replacement=True, generator=noise_gen
                    )
                ids = data.input_ids[rows]
                anchored = anchored_rows(config, len(rows)) if teacher is not None else 0
                if varied:  # partial captions and named absent findings, drawn per step
                    ids = sampled_caption_ids(config, data.records, components.tokenizer, rows, noise_gen, negative,
                                              torch.arange(len(rows)) < anchored if anchored else None,
                                              data.findings or None)  # fmt: skip
                dropped = torch.rand(len(rows), generator=noise_gen) < config.caption_dropout
                ids[dropped] = data.empty_ids
                latents, noise, timesteps = latents.to(device), noise.to(device), timesteps.to(device)
                sync = micro == config.gradient_accumulation_steps - 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(unet):
                    if text_cache is not None:  # a frozen encoder's states of each caption, encoded once
                        hidden = text_cache.lookup(rows, dropped).to(device)
                    else:
                        with torch.set_grad_enabled(config.train_text_encoder):
                            hidden = encode_ids(text_encoder, ids)
                    anchor = None
                    if teacher is not None and anchored:
                        teacher_says = teacher_prediction(teacher, ids[:anchored], hidden[:anchored])
                        anchor = Anchor(anchored, teacher_says, config.preserve_weight)
                    with accelerator.autocast():
                        loss = diffusion_loss(unet, training_schedule, latents, hidden, noise, timesteps,
                                              prediction_type, config.snr_gamma, coarse, anchor)  # fmt: skip
                    accelerator.backward(loss / config.gradient_accumulation_steps)
                step_loss += loss.detach() / config.gradient_accumulation_steps
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trained, config.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(accelerator.unwrap_model(unet).parameters())
            state["step"] += 1
            steps_this_call += 1
            # the loss of the whole batch: the mean over processes (one number per step, the same on each)
            batch_loss: float = accelerator.reduce(
                torch.as_tensor(step_loss, device=device).float(), "mean"
            ).item()
            result.losses.append(batch_loss)
            result.step_seconds.append(time.perf_counter() - step_started)

            # Logging, samples, checkpoints: all visible here
            elapsed = time.perf_counter() - started
            ips = steps_this_call * per_step / max(elapsed, 1e-9)
            bar.update(task, completed=state["step"], loss=batch_loss, ips=ips)
            if state["step"] % config.log_every == 0 or state["step"] == config.max_steps:
                accelerator.log({"loss": batch_loss, "lr": lr_scheduler.get_last_lr()[0], "images_per_second": ips},
                                step=state["step"])  # fmt: skip
                if not progress and accelerator.is_main_process:
                    log.info(
                        "step %d/%d loss %.4f (%.1f images/s)",
                        state["step"],
                        config.max_steps,
                        batch_loss,
                        ips,
                    )
            if config.sample_every and state["step"] % config.sample_every == 0:
                sample_grid()
            stopping = stop_after is not None and steps_this_call >= stop_after
            if state["step"] % config.checkpoint_every == 0 or state["step"] == config.max_steps or stopping:
                accelerator.wait_for_everyone()
                last_checkpoint = save_checkpoint() or last_checkpoint
            if stopping:
                break

    result.step = state["step"]
    result.images_per_second = steps_this_call * per_step / max(time.perf_counter() - started, 1e-9)
    result.last_checkpoint = last_checkpoint

    # 6. The final model: a whole pipeline folder (EMA weights if kept, LoRA merged into the UNet), its card
    accelerator.wait_for_everyone()
    if state["step"] >= config.max_steps and accelerator.is_main_process:
        final_unet = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.copy_to(final_unet.parameters())
        if config.lora_rank:
            final_unet.fuse_lora()
            final_unet.unload_lora()
        final = PipelineComponents(final_unet, components.vae.float(), accelerator.unwrap_model(text_encoder).float(),
                                   components.tokenizer, noise_scheduler, components.source, components.meta)  # fmt: skip
        records = {
            "provenance.json": _provenance(
                config, components, data, state["step"], time.perf_counter() - started
            )
        }
        if vae_record := _base_record(components, "vae_provenance.json"):
            records["vae_provenance.json"] = vae_record
        result.model_dir = final.save(
            out / "model", dtype=_SAVE_DTYPES[config.save_dtype], extra_json=records
        )
        write_card_quietly(result.model_dir)
    # Every process reaches the teardown of the process group together, as torch's shutdown notes ask: a process
    # tearing down while the main one still writes the model is the suspect in a CI launch that hung at exit.
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def save_grid(images: torch.Tensor, path: Path, columns: int | None = None) -> None:
    """Tile ``[N, 1, H, W]`` images in ``[0, 1]`` into one PNG."""
    from cfaudit.data.images import save_image

    n, _, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = torch.zeros(rows * height, columns * width)
    for i in range(n):
        r, c = divmod(i, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = images[i, 0]
    save_image(grid.numpy(), path)


def _progress_bar(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[ips]:.1f} img/s"),
        TimeRemainingColumn(),
        disable=not enabled,
    )
