"""Tiny data and models for the SCM tests (no phantom needed): built in a fraction of a second."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cfaudit.data.images import save_image
from cfaudit.data.records import INDEX_COLUMNS, DataIndex, empty_label_row

#: A 16-pixel HVAE with three levels (16, 8, 4) and a latent at the two coarsest.
TINY_MODEL = {
    "resolution": 16,
    "channels": 1,
    "widths": [8, 8, 8],
    "encoder_blocks": [0, 1, 1],
    "stochastic_blocks": [0, 1, 1],
    "decoder_blocks": [1, 0, 0],
    "latent_channels": [0, 2, 2],
    "bottleneck": 0.5,
}


def make_index(folder: Path, n: int = 12, size: int = 16, seed: int = 0) -> Path:
    """``n`` grayscale PNGs (a disc, wider for men, brighter with age) with an index over train/val/test."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rows = []
    races = ["White", "Black", "Asian", "Other", "Unknown"]
    for i in range(n):
        male = i % 2 == 0
        age = 30 + (i * 7) % 60
        radius = 0.35 if male else 0.22
        disc = ((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < radius**2).astype(np.float32)
        image = disc * (0.4 + age / 200) + rng.random((size, size)).astype(np.float32) * 0.1
        save_image(image, folder / "images" / f"img{i}.png")
        labels = empty_label_row()
        labels["Pleural Effusion"] = float(age > 60 and i % 3 != 0)
        labels["No Finding"] = 1.0 - labels["Pleural Effusion"]
        split = "test" if i % 4 == 3 else "val" if i % 4 == 2 else "train"
        rows.append({"image_id": f"img{i}", "path": f"images/img{i}.png", "subject_id": f"s{i}",
                     "study_id": f"st{i}", "view": "PA", "age": float(age), "sex": "Male" if male else "Female",
                     "race": races[i % len(races)], **labels, "split": split})  # fmt: skip
    index = DataIndex(pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), folder)
    index.write(folder / "index.csv")
    return folder / "index.csv"


def tiny_model(seed: int = 0):
    """An untrained CausalImageModel with the default graph and the tiny HVAE, mechanisms fitted on ``make_index``'s
    kind of records (so they are not all at their initial values)."""
    import torch

    from cfaudit.scm.graph import IMAGE, default_graph
    from cfaudit.scm.hvae import HierarchicalVAE
    from cfaudit.scm.mechanisms import GraphMechanisms
    from cfaudit.scm.model import CausalImageModel

    torch.manual_seed(seed)
    graph = default_graph()
    mechanisms = GraphMechanisms(graph, hidden=4, components=2)
    with torch.no_grad():
        mechanisms.mechanism("age").center.fill_(60.0)
        mechanisms.mechanism("age").scale.fill_(15.0)
        effusion = mechanisms.mechanism("Pleural Effusion")
        effusion.head.linear.weight.fill_(2.0)  # older -> more effusion
    hvae = HierarchicalVAE(**TINY_MODEL, parent_dim=graph.parent_dim(IMAGE))
    with torch.no_grad():  # the decoder's parent inputs start non-zero so parents change the image
        for name, param in hvae.named_parameters():
            if "condition.linear.weight" in name:
                param.normal_(0, 0.5)
    return CausalImageModel(graph, mechanisms, hvae)
