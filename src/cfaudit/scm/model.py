"""A trained SCM on disk and in memory: the causal graph, its mechanisms and the image HVAE, saved together.

Folder layout (``cfaudit scm train`` writes it to ``OUT/model``)::

    scm.json                 format, graph, label policy, mechanism settings, training summary
    mechanisms.safetensors   the graph mechanisms' weights
    hvae/                    the HierarchicalVAE (diffusers ``save_pretrained``: config.json + safetensors)

Nothing is unpickled when a model is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cfaudit import __version__, atomic_io
from cfaudit.config_files import read_json
from cfaudit.data.labels import LabelPolicy
from cfaudit.errors import CfauditError
from cfaudit.scm.graph import IMAGE, CausalGraph
from cfaudit.scm.hvae import HierarchicalVAE
from cfaudit.scm.mechanisms import GraphMechanisms

FORMAT = "cfaudit-scm"
FORMAT_VERSION = 1
RECORD = "scm.json"
MECHANISMS = "mechanisms.safetensors"
HVAE = "hvae"


class CausalImageModel:
    """Graph + mechanisms + image mechanism; the image's parents are the graph's ``image_parents``."""

    def __init__(
        self,
        graph: CausalGraph,
        mechanisms: GraphMechanisms,
        hvae: HierarchicalVAE,
        label_policy: LabelPolicy | None = None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        expected = graph.parent_dim(IMAGE)
        if int(hvae.config["parent_dim"]) != expected:
            raise CfauditError(
                f"the image model takes {hvae.config['parent_dim']} parent features but the graph gives {expected}; "
                "the model and graph do not belong together"
            )
        self.graph = graph
        self.mechanisms = mechanisms.eval()
        self.hvae = hvae.eval()
        self.label_policy = label_policy or LabelPolicy()
        self.meta = dict(meta or {})

    @property
    def resolution(self) -> int:
        return int(self.hvae.config.resolution)

    @property
    def device(self) -> torch.device:
        return next(self.hvae.parameters()).device

    def image_parents(self, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """Features of the image's parents ``[N, P]`` on the model's device."""
        return self.mechanisms.features(values, self.graph.image_parents).to(self.device)

    def to(self, device: str | torch.device) -> CausalImageModel:
        self.hvae.to(device)
        return self

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the model folder (atomically file by file; ``scm.json`` last marks it complete)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_io.atomic_path(folder / MECHANISMS) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.mechanisms.state_dict().items()}
            save_file(state, str(tmp))
        self.hvae.save_pretrained(str(folder / HVAE), safe_serialization=True)
        record = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "cfaudit_version": __version__,
            "graph": self.graph.to_dict(),
            "mechanisms": self.mechanisms.config(),
            "label_policy": self.label_policy.to_dict(),
            "meta": self.meta,
        }
        atomic_io.write_json(folder / RECORD, record)
        return folder

    @classmethod
    def load(
        cls, folder: str | os.PathLike[str], device: str | torch.device | None = None
    ) -> CausalImageModel:
        """Load a model folder, the ``model/`` folder inside a training run's output, or ``demo`` (shipped)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from cfaudit.scm.shipped import resolve_scm_model

        folder = resolve_scm_model(folder)
        if not (folder / RECORD).is_file() and (folder / "model" / RECORD).is_file():
            folder = folder / "model"
        record_path = folder / RECORD
        if not record_path.is_file():
            raise CfauditError(
                f"{folder}: no {RECORD}; give the folder written by `cfaudit scm train --out DIR` (or DIR/model)"
            )
        record = read_json(record_path, "train the model again")
        if record.get("format") != FORMAT:
            raise CfauditError(f"{record_path}: not a cfaudit SCM (format {record.get('format')!r})")
        graph = CausalGraph.from_dict(record["graph"], origin=str(record_path))
        mechanisms = GraphMechanisms(graph, **record.get("mechanisms", {}))
        try:
            mechanisms.load_state_dict(load_file(str(folder / MECHANISMS)))
        except (SafetensorError, RuntimeError, FileNotFoundError) as error:
            raise CfauditError(
                f"{folder / MECHANISMS}: missing or does not fit the graph ({error})"
            ) from None
        if not (folder / HVAE / "config.json").is_file():
            raise CfauditError(f"{folder / HVAE}: missing config.json; the model folder is incomplete")
        hvae = HierarchicalVAE.from_pretrained(str(folder / HVAE))
        model = cls(
            graph, mechanisms, hvae, LabelPolicy.from_dict(record.get("label_policy")), record.get("meta")
        )
        if device is not None:
            model.to(device)
        return model
