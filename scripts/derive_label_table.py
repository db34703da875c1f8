"""Derive the phantom's label table from CheXpert's training labels, as shipped inside torchxrayvision.

Source: the ``torchxrayvision`` wheel on PyPI (Apache-2.0; mlmed/torchxrayvision) carries CheXpert-v1.0-small's
``train.csv`` as ``torchxrayvision/data/chexpert_train.csv.gz`` (223,414 rows: Path, Sex, Age, Frontal/Lateral,
AP/PA and the 14 findings with states 1 / 0 / -1 / blank). CheXpert itself is by Irvin et al. (2019), Stanford ML
Group. Only label statistics are used; no image and no patient identifier is kept.

Output: ``src/cfaudit/data/phantom/chexpert_label_table.csv.gz``, an AGGREGATED table: one row per distinct
combination of (sex, age_bin, view, 14 finding states) among frontal AP/PA images with a known sex and an adult
age, with its ``count``. Age bins are 5-year bins written ``lo-hi`` (inclusive), clipped to the ages present
(18..90; CheXpert writes every age over 90 as 90). The phantom samples a row by count and an integer age
uniformly within its bin. Rows are sorted and the gzip header carries no time stamp, so re-running gives the
same bytes.

Re-run (downloads ~29 MB with pip, never installs torchxrayvision or its dependencies)::

    python scripts/derive_label_table.py                 # pip download --no-deps torchxrayvision into a temp dir
    python scripts/derive_label_table.py --wheel /tmp/torchxrayvision-1.5.7-py3-none-any.whl

Version used for the shipped table: torchxrayvision 1.5.7.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from cfaudit.assets import pip_download
from cfaudit.atomic_io import atomic_path
from cfaudit.data.vocabulary import FINDINGS

MEMBER = "torchxrayvision/data/chexpert_train.csv.gz"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/cfaudit/data/phantom/chexpert_label_table.csv.gz"
MIN_AGE, MAX_AGE, BIN_YEARS = 18, 90, 5
_SEX = {"Male": "M", "Female": "F"}


def read_chexpert(wheel: Path) -> pd.DataFrame:
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(MEMBER)
    return pd.read_csv(io.BytesIO(raw), compression="gzip")


def aggregate(table: pd.DataFrame) -> pd.DataFrame:
    """Frontal AP/PA adults with a known sex, counted by (sex, age_bin, view, 14 finding states)."""
    keep = (
        (table["Frontal/Lateral"] == "Frontal")
        & table["AP/PA"].isin(["AP", "PA"])
        & table["Sex"].isin(list(_SEX))
        & table["Age"].between(MIN_AGE, MAX_AGE)
    )
    table = table[keep]
    age = table["Age"].astype(int).to_numpy()
    low = np.maximum(age // BIN_YEARS * BIN_YEARS, MIN_AGE)
    high = np.minimum(age // BIN_YEARS * BIN_YEARS + BIN_YEARS - 1, MAX_AGE)
    out = pd.DataFrame(
        {
            "sex": table["Sex"].map(_SEX).to_numpy(),
            "age_bin": [f"{lo}-{hi}" for lo, hi in zip(low, high, strict=True)],
            "view": table["AP/PA"].to_numpy(),
        }
    )
    for finding in FINDINGS:
        out[finding] = table[finding].to_numpy()
    # Blank states become a sortable sentinel while grouping, then blank again.
    keys = ["sex", "age_bin", "view", *FINDINGS]
    filled = out.fillna({finding: -9.0 for finding in FINDINGS})
    counts = filled.groupby(keys, sort=True).size().reset_index(name="count")
    for finding in FINDINGS:
        counts[finding] = counts[finding].replace(-9.0, np.nan).astype("Int64")
    return counts


def write_table(counts: pd.DataFrame, out: Path) -> str:
    """Write gzip CSV with a zero gzip time stamp (reproducible bytes); return its sha256."""
    # gzip.compress writes no file name and (mtime=0) no time stamp into the header: reproducible bytes.
    data = gzip.compress(counts.to_csv(index=False).encode("utf-8"), compresslevel=9, mtime=0)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--wheel", type=Path, help="a downloaded torchxrayvision wheel (else pip downloads one)"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="txrv-") as scratch:
        wheel = args.wheel or pip_download("torchxrayvision", Path(scratch), binary=True)
        source = read_chexpert(wheel)
        counts = aggregate(source)
        digest = write_table(counts, args.out)
    print(
        f"{wheel.name}: {len(source)} rows -> {int(counts['count'].sum())} frontal AP/PA adult images in "
        f"{len(counts)} combinations; wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
