"""Settings of an SCM training run: a preset (``presets/<name>.yaml``), then a YAML file, then the command line.

Every key is a field of :class:`ScmTrainConfig` (the shared :class:`~cfaudit.config_files.ConfigFile` reader
rejects unknown keys and wrongly typed values, naming them). ``model`` holds the
:class:`~cfaudit.scm.hvae.HierarchicalVAE` architecture; ``graph`` (inline) or ``graph_file`` the causal graph
(default: :func:`~cfaudit.scm.graph.default_graph`). The resolved config is saved in every checkpoint and model.

Presets:

``small``
    64 x 64, five levels (64 -> 4), 0.4M parameters: trains on the phantom on 2 CPU cores in minutes.
``mimic192``
    192 x 192, six levels (192 -> 6), about 8M parameters, the size of the published chest X-ray model
    (Ribeiro et al. 2023); a GPU job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfaudit.config_files import ConfigFile, read_yaml_mapping, requirement
from cfaudit.data.labels import LabelPolicy
from cfaudit.errors import CfauditError
from cfaudit.scm.graph import CausalGraph, default_graph
from cfaudit.scm.hvae import check_architecture
from cfaudit.train.config import check_adam, check_loop

PRESETS: tuple[str, ...] = ("small", "mimic192")
MODEL_KEYS: tuple[str, ...] = (
    "resolution", "channels", "widths", "encoder_blocks", "stochastic_blocks", "decoder_blocks",
    "latent_channels", "bottleneck",
)  # fmt: skip


@dataclass
class ScmTrainConfig(ConfigFile):
    """One SCM training run (graph mechanisms, then the conditional HVAE)."""

    preset: str = "small"  #: informational: the preset the values started from
    # What to train, on what
    index: str = ""  #: an ``index.csv`` made by ``cfaudit data index``
    split: str = "train"
    output_dir: str = "runs/scm"
    model: dict[str, Any] = field(default_factory=dict)  #: HierarchicalVAE architecture (MODEL_KEYS)
    graph: dict[str, Any] = field(default_factory=dict)  #: inline causal graph (nodes, edges, image_parents)
    graph_file: str = ""  #: or a YAML file with one; neither: the default graph
    label_policy: dict[str, Any] = field(default_factory=dict)
    # Graph mechanisms (fitted once, in seconds, before the image model)
    mechanism_steps: int = 400
    mechanism_lr: float = 0.02
    mechanism_hidden: int = 16
    flow_components: int = 4
    # Image model optimisation
    max_steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    lr_warmup_steps: int = 100
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 0.01
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 100.0  #: clip the gradient norm to this (0: no clipping)
    #: skip an update whose gradient norm exceeds this many times the median norm of the last 50 steps (VDVAE's
    #: update skipping, relative so that one value suits every preset; 0: off); non-finite ones are always skipped
    skip_factor: float = 10.0
    kl_weight: float = 1.0
    use_ema: bool = True
    ema_decay: float = 0.999
    # Bookkeeping
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    eval_images: int = 256  #: validation images scored at the end (bits/dim, reconstruction L1); 0: none
    device: str = ""  #: ``cpu``, ``cuda``...; empty: cuda when available
    threads: int = 0  #: torch CPU threads; 0: torch's default

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        need = requirement("scm config")
        unknown = sorted(set(self.model) - set(MODEL_KEYS))
        need(not unknown, f"model: unknown key(s) {', '.join(unknown)}; valid: {', '.join(MODEL_KEYS)}")
        need("resolution" in self.model, "model.resolution is missing (start from a preset: --preset small)")
        check_loop(need, self)
        check_adam(need, self)
        need(self.model.get("channels", 1) == 1, "model.channels must be 1 (the images are grayscale)")
        need(self.skip_factor == 0 or self.skip_factor > 1, "skip_factor must be 0 (off) or above 1")
        need(self.kl_weight > 0, "kl_weight must be positive")
        need(0.0 < self.ema_decay < 1.0, f"ema_decay {self.ema_decay} must be in (0, 1)")
        need(self.mechanism_steps >= 1, "mechanism_steps must be at least 1")
        need(self.mechanism_lr > 0, "mechanism_lr must be positive")
        need(self.mechanism_hidden >= 0, "mechanism_hidden must not be negative")
        need(self.flow_components >= 1, "flow_components must be at least 1")
        need(self.eval_images >= 0 and self.threads >= 0, "eval_images and threads must not be negative")
        need(
            not (self.graph and self.graph_file),
            "give the graph inline (graph) or as a file (graph_file), not both",
        )
        LabelPolicy.from_dict(self.label_policy)
        arch = self.architecture(parent_dim=0)
        check_architecture(**arch, origin="scm config: model")

    def architecture(self, parent_dim: int) -> dict[str, Any]:
        """Keyword arguments of :class:`~cfaudit.scm.hvae.HierarchicalVAE` (defaults filled in)."""
        arch: dict[str, Any] = {**_architecture_defaults(), **self.model, "parent_dim": parent_dim}
        for key in ("widths", "encoder_blocks", "stochastic_blocks", "decoder_blocks", "latent_channels"):
            if not isinstance(arch[key], list) or not all(isinstance(v, int) for v in arch[key]):
                raise CfauditError(f"scm config: model.{key} must be a list of integers, got {arch[key]!r}")
        for key in ("resolution", "channels"):
            if not isinstance(arch[key], int) or isinstance(arch[key], bool):
                raise CfauditError(f"scm config: model.{key} must be an integer, got {arch[key]!r}")
        if not isinstance(arch["bottleneck"], (int, float)):
            raise CfauditError(f"scm config: model.bottleneck must be a number, got {arch['bottleneck']!r}")
        return arch

    def causal_graph(self) -> CausalGraph:
        if self.graph:
            return CausalGraph.from_dict(self.graph, origin="scm config: graph")
        if self.graph_file:
            return CausalGraph.from_yaml(self.graph_file)
        return default_graph()

    def policy(self) -> LabelPolicy:
        return LabelPolicy.from_dict(self.label_policy)


def _architecture_defaults() -> dict[str, Any]:
    """The keyword defaults of :class:`~cfaudit.scm.hvae.HierarchicalVAE` (lists, as a YAML file gives them)."""
    import inspect

    from cfaudit.scm.hvae import HierarchicalVAE

    parameters = inspect.signature(HierarchicalVAE.__init__).parameters
    return {k: list(p.default) if isinstance(p.default, tuple) else p.default
            for k, p in parameters.items() if k in MODEL_KEYS}  # fmt: skip


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise CfauditError(f"unknown SCM preset {name!r}; choose one of {', '.join(PRESETS)}")
    return Path(__file__).parent / "presets" / f"{name}.yaml"


def load_config(
    preset: str = "small",
    config_file: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> ScmTrainConfig:
    """The preset's values, updated by ``config_file`` (YAML) and then by ``overrides`` (command line)."""
    data: dict[str, Any] = {}
    for path in (preset_path(preset), *([Path(config_file)] if config_file else [])):
        loaded = read_yaml_mapping(path)
        given = loaded.pop("model", {})
        if not isinstance(given, dict):
            raise CfauditError(f"{path}: model must be a mapping of architecture keys, got {given!r}")
        model = {**data.get("model", {}), **given}
        data.update(loaded)
        data["model"] = model
    data["preset"] = preset
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    data.update(given)
    origin = str(config_file or preset_path(preset))
    try:
        return ScmTrainConfig.from_dict(data, origin=origin)
    except CfauditError as error:
        if config_file is None or str(error).startswith(origin):
            raise
        # a range error names the file its values came from (with the command line's, when it gave some)
        also = f" with the command line's {', '.join(sorted(given))}" if given else ""
        raise CfauditError(f"{origin}{also}: {error}") from None
