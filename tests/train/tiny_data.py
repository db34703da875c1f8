"""A tiny data set made on the fly for the training and CLI tests (no phantom needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cfaudit.data.images import save_image
from cfaudit.data.records import INDEX_COLUMNS, DataIndex, empty_label_row


def make_index(folder: Path, n: int = 6, size: int = 32, seed: int = 0) -> Path:
    """``n`` small grayscale PNGs (a bright disc whose width follows a Cardiomegaly label) and their index.csv."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        big = i % 2
        radius = 0.35 if big else 0.18
        disc = ((xx - 0.5) ** 2 + (yy - 0.55) ** 2 < radius**2).astype(np.float32)
        image = disc * 0.8 + rng.random((size, size)).astype(np.float32) * 0.1
        save_image(image, folder / "images" / f"img{i}.png")
        labels = empty_label_row()
        labels["Cardiomegaly"] = float(big)
        labels["No Finding"] = float(1 - big)
        rows.append({"image_id": f"img{i}", "path": f"images/img{i}.png", "subject_id": f"s{i}", "study_id": f"st{i}",
                     "view": "PA", "age": 40 + i, "sex": "Female" if i % 3 else "Male", "race": "White",
                     **labels, "split": "train"})  # fmt: skip
    index = DataIndex(pd.DataFrame(rows, columns=list(INDEX_COLUMNS)), folder)
    index.write(folder / "index.csv")
    return folder / "index.csv"
