"""Train the SCM: fit the graph mechanisms (seconds), then the conditional HVAE in one visible loop.

:func:`train_scm` reads a split of an index, fits every metadata mechanism by maximum likelihood
(:func:`~cfaudit.scm.mechanisms.fit_mechanisms`; kept in ``OUT/mechanisms.safetensors`` and reused on resume),
loads the images once (8-bit, in memory) and runs the loop: draw a batch, ELBO, backward, clip, skip the update
if the gradient norm spikes, AdamW step, EMA, log, checkpoint. Checkpoints use the diffusion trainer's machinery
(:mod:`cfaudit.train.checkpoint`: safetensors, staged and renamed, RNG state included), so ``--resume latest``
continues the same loss curve. At the end the EMA weights are written with the graph and mechanisms as a
:class:`~cfaudit.scm.model.CausalImageModel` in ``OUT/model``, with validation bits/dim and reconstruction L1.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cfaudit import __version__, atomic_io
from cfaudit.data.records import DataIndex
from cfaudit.devices import resolve_device
from cfaudit.errors import CfauditError
from cfaudit.scm.config import ScmTrainConfig
from cfaudit.scm.graph import IMAGE, CausalGraph
from cfaudit.scm.hvae import HierarchicalVAE, count_parameters
from cfaudit.scm.mechanisms import GraphMechanisms, fit_mechanisms
from cfaudit.scm.model import CausalImageModel
from cfaudit.train import checkpoint as ckpt
from cfaudit.train.latent_cache import file_sha256, load_pixels

log = logging.getLogger("cfaudit")
MECHANISMS_FILE = "mechanisms.safetensors"
MECHANISMS_RECORD = "mechanisms.json"
_NORM_WINDOW = 50  # gradient norms of the last steps, whose median defines a spike


@dataclass
class ScmTrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # bits/dim of each step taken in this call
    skipped: int = 0  # updates skipped (gradient spikes) in the whole run
    seconds: float = 0.0  # wall time of this call's loop
    mechanism_nll: float = float("nan")
    model_dir: Path | None = None
    last_checkpoint: Path | None = None
    evaluation: dict[str, float] = field(default_factory=dict)


def load_images_uint8(index: DataIndex, resolution: int, chunk: int = 256) -> torch.Tensor:
    """Every image of ``index`` at the model resolution as 8-bit ``[N, 1, R, R]`` (the likelihood's 256 bins)."""
    paths = index.image_paths()
    parts = []
    for start in range(0, len(paths), chunk):
        pixels = load_pixels(paths[start : start + chunk], resolution, 1)
        parts.append(torch.round((pixels + 1.0) * 127.5).clamp(0, 255).to(torch.uint8))
    return torch.cat(parts) if parts else torch.zeros((0, 1, resolution, resolution), dtype=torch.uint8)


def to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """8-bit pixels -> float in ``[-1, 1]``."""
    return pixels.float() / 127.5 - 1.0


def prepare_mechanisms(
    out: Path, graph: CausalGraph, values: dict[str, torch.Tensor], config: ScmTrainConfig, index_sha256: str
) -> tuple[GraphMechanisms, float]:
    """The fitted mechanisms of this run: read from ``out`` when fitted before on the same data, else fitted now."""
    from safetensors.torch import load_file, save_file

    mechanisms = GraphMechanisms(graph, hidden=config.mechanism_hidden, components=config.flow_components)
    settings = {
        "graph": graph.to_dict(),
        "index_sha256": index_sha256,
        "split": config.split,
        "label_policy": config.policy().to_dict(),
        "mechanisms": mechanisms.config(),
        "steps": config.mechanism_steps,
        "lr": config.mechanism_lr,
        "seed": config.seed,
    }
    record_path, weights_path = out / MECHANISMS_RECORD, out / MECHANISMS_FILE
    if record_path.is_file() and weights_path.is_file():
        saved = json.loads(record_path.read_text(encoding="utf-8"))
        if saved.get("settings") == json.loads(json.dumps(settings)):
            mechanisms.load_state_dict(load_file(str(weights_path)))
            return mechanisms.eval(), float(saved["nll"])
    losses = fit_mechanisms(
        mechanisms, values, steps=config.mechanism_steps, lr=config.mechanism_lr, seed=config.seed
    )
    with torch.no_grad():
        nll = {name: float(-lp.mean()) for name, lp in mechanisms.log_prob(values).items()}
    with atomic_io.atomic_path(weights_path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in mechanisms.state_dict().items()}, str(tmp))
    atomic_io.write_json(record_path, {"settings": settings, "nll": losses[-1], "nll_per_node": nll})
    return mechanisms.eval(), losses[-1]


def is_spike(norm: float, loss: float, recent_norms: list[float], factor: float) -> bool:
    """Skip this update? Always for a non-finite loss or norm; else when ``norm > factor * median(recent)``."""
    if not (math.isfinite(norm) and math.isfinite(loss)):
        return True
    return factor > 0 and bool(recent_norms) and norm > factor * statistics.median(recent_norms)


class EpochOrder:
    """Rows in a fresh random order every epoch, drawn from one generator (its state is the loop's state)."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows, self.position, self.epoch = n_rows, 0, 0
        self.order: torch.Tensor | None = None  # a permutation of the rows, drawn at each epoch's start

    def next(self, n: int, generator: torch.Generator) -> torch.Tensor:
        rows: list[int] = []
        while len(rows) < n:
            if self.order is None or self.position >= len(self.order):
                self.order, self.position, self.epoch = (
                    torch.randperm(self.n_rows, generator=generator),
                    0,
                    self.epoch + 1,
                )
            take = min(n - len(rows), len(self.order) - self.position)
            rows += self.order[self.position : self.position + take].tolist()
            self.position += take
        return torch.tensor(rows, dtype=torch.long)

    def state(self) -> dict[str, Any]:
        return {"n_rows": self.n_rows, "order": self.order, "position": self.position, "epoch": self.epoch}

    def load(self, state: dict[str, Any]) -> None:
        self.order, self.position, self.epoch = state["order"], int(state["position"]), int(state["epoch"])


def train_scm(
    config: ScmTrainConfig,
    *,
    resume: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> ScmTrainResult:
    """Run (or continue) one SCM training job into ``config.output_dir``.

    ``resume``: ``latest`` or a checkpoint folder. ``stop_after``: leave after that many steps of this call
    (with a checkpoint, as if killed right after it; for time-sliced jobs and the resume test).
    """
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    out = Path(config.output_dir)
    device = resolve_device(config.device)
    if config.threads:
        torch.set_num_threads(config.threads)
    if not config.index:
        raise CfauditError(
            "scm config: `index` is empty; give --index (an index.csv from `cfaudit data index`)"
        )

    # 1. Data: the split's rows, their node values and their pixels
    index = DataIndex.read(config.index)
    index_sha256 = file_sha256(config.index)
    data = index.split(config.split)
    if len(data) < 2:
        raise CfauditError(
            f"{config.index}: split {config.split!r} has {len(data)} row(s); training needs at least 2"
        )
    graph = config.causal_graph()
    values = graph.encode(data.table, config.policy(), origin=config.index)
    resolution = int(config.model["resolution"])
    out.mkdir(parents=True, exist_ok=True)

    # 2. Graph mechanisms (fitted once; seconds)
    mechanisms, mechanism_nll = prepare_mechanisms(out, graph, values, config, index_sha256)
    parents = mechanisms.features(values, graph.image_parents)
    log.info(
        "mechanisms: NLL %.4f nats per row; loading %d images at %d px", mechanism_nll, len(data), resolution
    )
    pixels = load_images_uint8(data, resolution)

    # 3. Image model, optimizer, schedule, EMA
    torch.manual_seed(config.seed)
    hvae = HierarchicalVAE(**config.architecture(parent_dim=graph.parent_dim(IMAGE))).to(device).train()
    params = list(hvae.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2),
                                  weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)  # fmt: skip
    lr_scheduler = get_scheduler(config.lr_schedule, optimizer=optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=config.max_steps)  # fmt: skip
    ema = EMAModel(params, decay=config.ema_decay) if config.use_ema else None
    if ema is not None:
        ema.to(device)

    # 4. State of the loop, fresh or from a checkpoint
    data_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator().manual_seed(config.seed * 1000 + 1)
    order = EpochOrder(len(data))
    state: dict[str, Any] = {"step": 0, "skipped": 0, "norms": []}
    start = ckpt.resolve_resume(out, resume) if resume else None
    if start is not None:
        saved = ckpt.read_state(start)
        if saved["order"]["n_rows"] != len(data) or saved.get("index_sha256") != index_sha256:
            raise CfauditError(f"{start}: trained on another index or split ({saved['order']['n_rows']} rows); "
                               "resume with the same data or start a new --out")  # fmt: skip
        ckpt.load_weights_into(hvae, start, "hvae")
        ckpt.restore_optimisation(saved, optimizer, lr_scheduler, ema, device, data_gen)
        noise_gen.set_state(saved["noise_gen"])
        order.load(saved["order"])
        state.update({k: saved[k] for k in state})
        log.info("resumed from %s at step %d", start, state["step"])

    def save_checkpoint() -> Path:
        training_state = {
            **state,
            "order": order.state(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "data_gen": data_gen.get_state(),
            "noise_gen": noise_gen.get_state(),
            "index_sha256": index_sha256,
        }
        folder = ckpt.write_checkpoint(ckpt.checkpoint_dir(out, state["step"]), models={"hvae": hvae},
                                       lora_state=None, state=training_state,
                                       provenance=_provenance(config, index_sha256, len(data), state["step"]))  # fmt: skip
        ckpt.prune_checkpoints(out, config.keep_checkpoints)
        return folder

    # 5. The loop
    result = ScmTrainResult(step=state["step"], mechanism_nll=mechanism_nll)
    bar = _progress_bar(progress)
    task = bar.add_task("scm", total=config.max_steps, completed=state["step"], loss=float("nan"))
    started = time.perf_counter()
    steps_this_call = 0
    with bar:
        while state["step"] < config.max_steps:
            rows = order.next(config.batch_size, data_gen)
            x = to_unit_range(pixels[rows]).to(device)
            terms = hvae(x, parents[rows].to(device), generator=noise_gen)
            dims = x[0].numel() * math.log(2)
            loss = (terms["nll"] + config.kl_weight * terms["kl"]).mean() / dims
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm or float("inf")))
            settled = state["step"] >= max(_NORM_WINDOW, config.lr_warmup_steps)  # norms move fast in warm-up
            if is_spike(norm, loss.item(), state["norms"] if settled else [], config.skip_factor):
                state["skipped"] += 1  # VDVAE's update skipping: one spike could undo the training so far
                log.info("step %d: update skipped (gradient norm %.1f)", state["step"] + 1, norm)
            else:
                optimizer.step()
                if ema is not None:
                    ema.step(params)
            if math.isfinite(norm):  # skipped norms count too, so a lasting change of scale is accepted
                state["norms"] = [*state["norms"], norm][-_NORM_WINDOW:]
            lr_scheduler.step()
            state["step"] += 1
            steps_this_call += 1
            bits = terms["bits_per_dim"].item()
            result.losses.append(bits)

            # Logging and checkpoints: all visible here
            bar.update(task, completed=state["step"], loss=bits)
            if state["step"] % config.log_every == 0 or state["step"] == config.max_steps:
                log.info("scm step %d/%d: %.4f bits/dim (nll %.1f, kl %.1f nats), grad norm %.1f, %d skipped",
                         state["step"], config.max_steps, bits, terms["nll"].mean().item(), terms["kl"].mean().item(),
                         norm, state["skipped"])  # fmt: skip
            stopping = stop_after is not None and steps_this_call >= stop_after
            if state["step"] % config.checkpoint_every == 0 or state["step"] == config.max_steps or stopping:
                result.last_checkpoint = save_checkpoint()
            if stopping:
                break
    result.seconds = time.perf_counter() - started
    result.step, result.skipped = state["step"], state["skipped"]

    # 6. The final model: EMA weights, with the graph and its mechanisms; scored on validation images
    if state["step"] >= config.max_steps:
        if ema is not None:
            ema.copy_to(params)
        hvae.eval()
        result.evaluation = evaluate_hvae(hvae, index, graph, mechanisms, config)
        summary = {
            "steps": state["step"], "skipped_updates": state["skipped"], "parameters": count_parameters(hvae),
            "seconds_this_call": round(result.seconds, 1), "final_train_bits_per_dim": result.losses[-1] if result.losses else None,
            "mechanism_nll": mechanism_nll, "evaluation": result.evaluation,
        }  # fmt: skip
        model = CausalImageModel(graph, mechanisms, hvae.cpu(), config.policy(),
                                 meta={"training": summary, "provenance": _provenance(config, index_sha256, len(data), state["step"])})  # fmt: skip
        result.model_dir = model.save(out / "model")
    return result


@torch.no_grad()
def evaluate_hvae(
    hvae: HierarchicalVAE,
    index: DataIndex,
    graph: CausalGraph,
    mechanisms: GraphMechanisms,
    config: ScmTrainConfig,
) -> dict[str, float]:
    """Bits/dim (ELBO) and reconstruction L1 (posterior-mean latents, ``[0, 1]`` units) on validation images."""
    if config.eval_images == 0:
        return {}
    split = index.split("val") if (index.table["split"] == "val").any() else None
    if split is None or len(split) == 0:
        return {}
    subset = DataIndex(split.table.head(config.eval_images), split.root, split.meta)
    values = graph.encode(subset.table, config.policy(), origin=config.index)
    device = next(hvae.parameters()).device
    parents = mechanisms.features(values, graph.image_parents).to(device)
    pixels = load_images_uint8(subset, int(hvae.config["resolution"]))
    bits, l1 = [], []
    generator = torch.Generator().manual_seed(config.seed)
    for start in range(0, len(subset), 64):
        x = to_unit_range(pixels[start : start + 64]).to(device)
        pa = parents[start : start + 64]
        # diffusers' ModelMixin subclasses lose nn.Module.__call__ in its type information
        bits.append(hvae(x, pa, generator=generator)["bits_per_dim"].item() * len(x))  # type: ignore[operator]
        l1.append(((hvae.reconstruct(x, pa) - x).abs().flatten(1).mean(dim=1) / 2).sum().item())
    return {
        "images": len(subset),
        "val_bits_per_dim": sum(bits) / len(subset),
        "val_reconstruction_l1": sum(l1) / len(subset),
    }


def _provenance(config: ScmTrainConfig, index_sha256: str, rows: int, step: int) -> dict[str, Any]:
    return {
        "step": step,
        "config": config.to_dict(),
        "data": {"index": config.index, "index_sha256": index_sha256, "split": config.split, "rows": rows},
        "command": " ".join(sys.argv),
        "cfaudit_version": __version__,
        "torch_version": torch.__version__,
    }


def _progress_bar(enabled: bool) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]scm"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]:.4f} bits/dim"),
                    TimeRemainingColumn(), disable=not enabled)  # fmt: skip
