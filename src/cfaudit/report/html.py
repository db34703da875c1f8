"""Rendering: turn the collected inputs into the sections of the page and fill the jinja2 template.

Each ``*_section`` function takes one input (a data set, an evaluation, a discovery, an edit job) and returns a
plain dict for the template: formatted table cells and figure data URIs, nothing the template has to compute.
:func:`render_report` puts them in reading order (summary, data, evaluation, discovery, expert review, edits) and renders
``templates/report.html.j2``, which is loaded through :mod:`importlib.resources` so that it is found both in a
source checkout and in an installed wheel.

The sections are built in :mod:`~cfaudit.report.tables` (data set, Table 2), :mod:`~cfaudit.report.discovery`,
:mod:`~cfaudit.report.expert_review` and :mod:`~cfaudit.report.edits`, with the small helpers of
:mod:`~cfaudit.report.formatting`.
"""

from __future__ import annotations

import importlib.resources
import json
import shlex
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from cfaudit import __version__
from cfaudit.assets import shipped_name
from cfaudit.report.collect import ReportInputs
from cfaudit.report.discovery import discovery_section
from cfaudit.report.edits import Say, edit_job_section
from cfaudit.report.expert_review import review_section
from cfaudit.report.tables import dataset_section, evaluation_section

TEMPLATE = "report.html.j2"
#: How many flagged candidates the summary at the top lists.
SUMMARY_FINDINGS = 5


def key_findings(discoveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    findings = []
    for section in discoveries:
        for candidate in section["candidates"]:
            if candidate["flagged"]:
                findings.append({**candidate, "section": section["id"]})
    return findings[:SUMMARY_FINDINGS]


def model_name(value: str) -> str:
    """A model as the report names it: one shipped inside the installed package as ``cfaudit/<path>`` (as
    ``cfaudit.scm.shipped.DEMO_SCM`` does), so that the page names no folder of the machine it was made on."""
    return shipped_name(value)


def provenance(inputs: ReportInputs) -> dict[str, Any]:
    """What the report was made from: folders, what each held, the models and data named in the inputs."""
    models: list[str] = []
    data: list[str] = [str(d.index_csv) for d in inputs.datasets]
    for job in inputs.edit_jobs:
        if job.job.get("model"):
            models.append(str(job.job["model"]))
    for discovery in inputs.discoveries:
        if discovery.meta.get("model"):
            models.append(str(discovery.meta["model"]))
        if isinstance(discovery.meta.get("index"), str):
            data.append(discovery.meta["index"])
    for evaluation in inputs.evaluations:
        for key in ("model", "models"):
            value = evaluation.meta.get(key)
            if isinstance(value, str):
                models.append(value)
            elif isinstance(value, list | dict):
                models += [str(v) for v in value]
    return {
        "sources": [str(s) for s in inputs.sources],
        "datasets": [str(d.index_csv) for d in inputs.datasets],
        "evaluations": [str(e.folder) for e in inputs.evaluations],
        "edit_jobs": [str(j.folder) for j in inputs.edit_jobs],
        "discoveries": [str(d.folder) for d in inputs.discoveries],
        "reviews": [str(r.queue.path) for r in inputs.reviews],
        "models": list(dict.fromkeys(model_name(m) for m in models)),
        "data": list(dict.fromkeys(data)),
        "cfaudit_version": __version__,
    }


def report_command(sources: Sequence[Path], out: Path, title: str | None, max_examples: int) -> str:
    """The command line that makes this report (written in its footer)."""
    words = ["cfaudit", "report"]
    for source in sources:
        words += ["--from", str(source)]
    words += ["--out", str(out)]
    if title:
        words += ["--title", title]
    words += ["--examples", str(max_examples)]
    return shlex.join(words)


def load_template() -> jinja2.Template:
    text = (
        importlib.resources.files("cfaudit.report")
        .joinpath("templates")
        .joinpath(TEMPLATE)
        .read_text(encoding="utf-8")
    )
    environment = jinja2.Environment(
        autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined
    )
    return environment.from_string(text)


def render_report(
    inputs: ReportInputs,
    *,
    title: str | None = None,
    max_examples: int = 6,
    command: str = "",
    generated: datetime | None = None,
    progress: Say | None = None,
) -> str:
    """The whole page as one HTML string (every picture embedded)."""
    notes = list(inputs.notes)
    generated = generated or datetime.now().astimezone()

    def step(message: str) -> None:
        if progress is not None:
            progress(message)

    step("data set")
    datasets = [dataset_section(d, i + 1) for i, d in enumerate(inputs.datasets)]
    step("evaluation")
    evaluations = [evaluation_section(e, i + 1) for i, e in enumerate(inputs.evaluations)]
    step("discovery")
    discoveries = [discovery_section(d, i + 1, notes) for i, d in enumerate(inputs.discoveries)]
    step("expert review")
    reviews = [review_section(r, i + 1, notes) for i, r in enumerate(inputs.reviews)]
    edit_jobs = [
        edit_job_section(j, i + 1, max_examples, notes, progress) for i, j in enumerate(inputs.edit_jobs)
    ]
    absent = []
    if not datasets:
        absent.append(("Data set", "no index.csv found; add the folder with the index to --from"))
    if not evaluations:
        absent.append(
            ("Counterfactual quality", "no table2.csv found; run `cfaudit evaluate` and add its folder")
        )
    if not discoveries:
        absent.append(
            ("Hidden relations", "no discovery.json found; run `cfaudit discover` and add its folder")
        )
    if not reviews:
        absent.append(
            (
                "Expert review",
                "no review queue found; make one with `cfaudit review queue` and rate it in the browser",
            )
        )
    if not edit_jobs:
        absent.append(
            ("Counterfactual examples", "no edits.csv found; run `cfaudit edit` and add its folder")
        )
    # (anchor, title, [(anchor, name) of each section when a group has several])
    toc: list[tuple[str, str, list[tuple[str, str]]]] = [("summary", "Summary", [])]
    for group_title, sections in (
        ("Data set", datasets), ("Counterfactual quality", evaluations), ("Hidden relations", discoveries),
        ("Expert review", reviews), ("Counterfactual examples", edit_jobs),
    ):  # fmt: skip
        if len(sections) == 1:
            toc.append((sections[0]["id"], group_title, []))
        elif sections:
            toc.append((sections[0]["id"], group_title, [(s["id"], s["name"]) for s in sections]))
    record = provenance(inputs)
    record.update({"command": command, "generated": generated.isoformat(timespec="seconds"), "title": title})
    step("page")
    page = load_template().render(
        title=title or "Counterfactual audit report",
        generated=generated.strftime("%Y-%m-%d %H:%M %Z").strip(),
        version=__version__,
        command=command,
        provenance=record,
        provenance_text=json.dumps(record, indent=1, default=str),
        # In a <script> block nothing is escaped by HTML rules: write "<" as its JSON escape so that no value can
        # end the block.
        provenance_json=Markup(json.dumps(record, default=str).replace("<", "\\u003c")),
        datasets=datasets,
        evaluations=evaluations,
        discoveries=discoveries,
        reviews=reviews,
        edit_jobs=edit_jobs,
        findings=key_findings(discoveries),
        absent=absent,
        notes=list(dict.fromkeys(notes)),
        toc=toc,
        max_examples=max_examples,
    )
    return page
