"""The paper's Table 1 for any index: sex, pleural effusion and race shares and sample counts per split.

One row per split (train, val, test) and ``all``; every figure is a percentage of that split's images
(rows of the index, not subjects):

* ``Sex M %`` / ``Sex F %``: share of images of male / female subjects (they sum to 100).
* ``Pleural Effusion %``: share of images positive under the label policy (default: uncertain -> negative,
  blank -> negative, so the denominator is every image of the split). With ``blank="blank"`` or
  ``uncertain="blank"`` the images whose label becomes missing leave the denominator.
* ``Race A %`` / ``Race W %`` / ``Race B %``: Asian / White / Black share of *all* images of the split, so with
  Other and Unknown races they need not sum to 100 (as in the paper's table).
* ``Samples``: images; ``Subjects``: distinct subjects.

A split without images gets NaN percentages and 0 counts.
"""

from __future__ import annotations

import math

import pandas as pd

from cfaudit.data.labels import DEFAULT_POLICY, LabelPolicy
from cfaudit.data.records import SPLITS, DataIndex
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError

TABLE1_COLUMNS: tuple[str, ...] = (
    "Sex M %",
    "Sex F %",
    "Pleural Effusion %",
    "Race A %",
    "Race W %",
    "Race B %",
    "Samples",
    "Subjects",
)
FORMATS: tuple[str, ...] = ("table", "csv", "markdown")
_SPLIT_TITLES = {"train": "Train", "val": "Validation", "test": "Test", "all": "All"}


def _percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole else math.nan


def table1(
    index: DataIndex | pd.DataFrame, policy: LabelPolicy = DEFAULT_POLICY, finding: str = "Pleural Effusion"
) -> pd.DataFrame:
    """Table 1 (see the module docstring) as a DataFrame indexed by split: train, val, test, all.

    ``finding`` picks the finding column reported (the paper reports Pleural Effusion); the column keeps the
    name ``Pleural Effusion %`` only for that finding, else ``<finding> %``.
    """
    table = index.table if isinstance(index, DataIndex) else index
    if finding not in FINDINGS:
        raise CfauditError(f"unknown finding {finding!r}; choose one of {', '.join(FINDINGS)}")
    labels = policy.binarize(table.loc[:, list(FINDINGS)])[finding]
    rows = []
    for name in (*SPLITS, "all"):
        mask = (table["split"] == name) if name != "all" else pd.Series(True, index=table.index)
        part = table[mask]
        n = len(part)
        positive = labels[mask]
        known = int(positive.notna().sum())
        rows.append(
            {
                "Sex M %": _percent((part["sex"] == "Male").sum(), n),
                "Sex F %": _percent((part["sex"] == "Female").sum(), n),
                f"{finding} %": _percent((positive == 1.0).sum(), known),
                "Race A %": _percent((part["race"] == "Asian").sum(), n),
                "Race W %": _percent((part["race"] == "White").sum(), n),
                "Race B %": _percent((part["race"] == "Black").sum(), n),
                "Samples": n,
                "Subjects": int(part["subject_id"].nunique()),
            }
        )
    frame = pd.DataFrame(rows, index=pd.Index([*SPLITS, "all"], name="split"))
    frame["Samples"] = frame["Samples"].astype(int)
    frame["Subjects"] = frame["Subjects"].astype(int)
    return frame


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def paper_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and rows in the paper's layout (``53.8 / 46.2`` cells), for tables in text."""
    finding_column = next(c for c in frame.columns if c.endswith(" %") and not c.startswith(("Sex", "Race")))
    short = "PE" if finding_column == "Pleural Effusion %" else finding_column[:-2]
    header = ["Split", "Sex [%] [M/F]", f"{short} [%]", "Race [%] [A/W/B]", "[#] Samples", "[#] Subjects"]
    rows = []
    for split, row in frame.iterrows():
        rows.append(
            [
                _SPLIT_TITLES.get(str(split), str(split)),
                f"{_number(row['Sex M %'])} / {_number(row['Sex F %'])}",
                _number(row[finding_column]),
                " / ".join(_number(row[c]) for c in ("Race A %", "Race W %", "Race B %")),
                str(int(row["Samples"])),
                str(int(row["Subjects"])),
            ]
        )
    return header, rows


def format_table1(frame: pd.DataFrame, fmt: str) -> str:
    """``csv`` (numbers, 3 decimals) or ``markdown`` (the paper's layout) text of a :func:`table1` frame."""
    if fmt == "csv":
        return frame.to_csv(float_format="%.3f", lineterminator="\n")
    if fmt == "markdown":
        header, rows = paper_rows(frame)
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        return "\n".join(lines) + "\n"
    raise CfauditError(f"--format {fmt!r} is not one of csv, markdown (or table on the command line)")
