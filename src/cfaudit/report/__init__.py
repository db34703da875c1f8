"""The audit report: one self-contained HTML file made from the outputs of the other commands.

``cfaudit report --from DIR [--from DIR ...] --out report.html`` (or :func:`build_report`) searches the folders
for a data set (``index.csv``), an evaluation (``table2.csv``), edit jobs (``edits.csv``) and a discovery
(``discovery.json``) (:mod:`~cfaudit.report.collect`), draws their figures with matplotlib
(:mod:`~cfaudit.report.figures`) and lays them out with jinja2 (:mod:`~cfaudit.report.html`). Every picture is
embedded as a PNG data URI and the page loads nothing from anywhere, so the file opens offline and can be mailed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cfaudit.errors import CfauditError

__all__ = ["build_report"]


def build_report(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    title: str | None = None,
    max_examples: int = 6,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the report of everything found under ``sources`` to ``out`` (atomically); return ``out``.

    ``max_examples`` images are shown per intervention (the first ones of each edit job, in its order); the mean
    difference map always uses all of them. ``progress`` is called with a short message before each step.
    """
    from cfaudit import atomic_io
    from cfaudit.report.collect import collect_inputs
    from cfaudit.report.html import render_report, report_command

    # 1. Check the arguments
    if max_examples < 1:
        raise CfauditError(f"--examples must be at least 1 (got {max_examples})")
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise CfauditError(f"--out {out}: the report is an HTML file; give a name ending in .html")
    if out.is_dir():
        raise CfauditError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    source_paths = [Path(s) for s in sources]

    # 2. Find and read the inputs
    if progress is not None:
        progress("reading inputs")
    inputs = collect_inputs(source_paths)
    if inputs.is_empty():
        folders = ", ".join(str(s) for s in source_paths)
        raise CfauditError(
            f"nothing to report in {folders}: no index.csv, table2.csv, edits.csv or discovery.json found "
            "(searched 3 folder levels down); point --from at the outputs of cfaudit data index, evaluate, "
            "edit or discover"
        )

    # 3. Render the page and write it
    command = report_command(source_paths, out, title, max_examples)
    page = render_report(inputs, title=title, max_examples=max_examples, command=command, progress=progress)
    atomic_io.write_text(out, page)
    return out
