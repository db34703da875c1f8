"""Tests for cfaudit.report (collect, figures, html) and `cfaudit report`, on fake outputs of every step."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cfaudit.cli.report import register
from cfaudit.data.stats import paper_rows, table1
from cfaudit.errors import CfauditError
from cfaudit.report import build_report, figures
from cfaudit.report.collect import collect_inputs, find_markers, read_edit_job
from cfaudit.report.discovery import cochange_figure
from cfaudit.report.edits import edit_groups, mean_difference
from cfaudit.report.tables import table2_view
from tests.report.fake_outputs import HEADS, Workspace, candidates_table
from tests.report.html_page import Node, parse


@pytest.fixture(scope="module")
def page(report_path: Path) -> Node:
    return parse(report_path.read_text(encoding="utf-8"))


def decode_png(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    image.load()
    return image


def rows_of(table: Node) -> list[list[str]]:
    return [[cell.text() for cell in row.iter("td")] for row in table.find("tbody").iter("tr")]


# --- the whole report --------------------------------------------------------------------------------------


def test_one_folder_gives_every_section_and_the_page_is_self_contained(report_path: Path, page: Node):
    html = report_path.read_text(encoding="utf-8")
    ids = {node.attrs["id"] for node in page.iter() if "id" in node.attrs}
    assert {
        "summary",
        "data-1",
        "evaluation-1",
        "discovery-1",
        "edits-1",
        "edits-2",
        "edits-3",
        "provenance",
    } <= ids
    assert page.find("h1").text() == "Phantom audit"
    # Every link of the table of contents points at a section of the page.
    toc_targets = [a.attrs["href"] for a in page.find("nav").iter("a")]
    assert toc_targets and all(t.startswith("#") and t[1:] in ids for t in toc_targets)
    # Everything embedded: no attribute loads anything from a file or the network.
    images = list(page.iter("img"))
    # association + table2.png + co-change + 2 evidence + 1 cluster map + (grid + mean) x (3 + 2 + 1) edit groups
    assert len(images) == 1 + 1 + 1 + 2 + 1 + 2 * 6
    for image in images:
        picture = decode_png(image.attrs["src"])
        assert picture.width > 0 and picture.height > 0 and image.attrs.get("alt")
    for node in page.iter():
        for name in ("src", "href", "action", "data"):
            value = node.attrs.get(name)
            assert value is None or value.startswith(("data:", "#")), (node.tag, name, value[:60])
    assert not re.search(r"https?://|url\(", html)
    assert page.find("script", id="cfaudit-provenance").attrs["type"] == "application/json"


def test_header_and_footer_record_provenance_and_command(report_path: Path, page: Node, workspace: Workspace):
    record = json.loads(page.find("script", id="cfaudit-provenance").text())
    assert record["sources"] == [str(workspace.root)]
    assert record["datasets"] == [str(workspace.index_csv)]
    assert record["models"] == ["demo"] and record["cfaudit_version"]
    assert sorted(record["edit_jobs"]) == sorted(str(p) for p in (workspace.edits, workspace.scm_edits,
                                                                   workspace.discovery / "edits"))  # fmt: skip
    command = page.find("footer").find("pre").text()
    assert command == record["command"]
    assert (
        command
        == f"cfaudit report --from {workspace.root} --out {report_path} --title 'Phantom audit' --examples 6"
    )
    assert "How to read this report" in page.find("section", id="summary").text()


def test_table1_is_the_data_layers_table(page: Node, workspace: Workspace):
    from cfaudit.data.records import DataIndex

    header, expected = paper_rows(table1(DataIndex.read(workspace.index_csv)))
    section = page.find("section", id="data-1")
    table = section.find("table")
    assert [th.text() for th in table.iter("th")] == header
    assert rows_of(table) == expected


def test_label_associations_are_phi_and_leave_rare_labels_out(workspace: Workspace):
    dataset = collect_inputs([workspace.index_csv]).datasets[0]
    matrix, left_out = dataset.label_associations(min_count=5)
    labels = dataset.binary_labels()
    for name in matrix.columns:
        assert min((labels[name] == 1).sum(), (labels[name] == 0).sum()) >= 5
    for name in left_out:
        assert min((labels[name] == 1).sum(), (labels[name] == 0).sum()) < 5
    a, b = matrix.columns[0], matrix.columns[1]  # Female and Age >= 65 vary in any phantom
    x, y = labels[a], labels[b]
    n11, n10 = ((x == 1) & (y == 1)).sum(), ((x == 1) & (y == 0)).sum()
    n01, n00 = ((x == 0) & (y == 1)).sum(), ((x == 0) & (y == 0)).sum()
    phi = (n11 * n00 - n10 * n01) / np.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
    assert matrix.loc[a, b] == pytest.approx(phi)
    assert set(matrix.columns) | set(left_out) == set(labels.columns)


# --- Table 2 -----------------------------------------------------------------------------------------------


def test_table2_layout_marks_the_better_method_where_the_metric_says_which_is_better():
    rows = []
    for method, lpips, cpg, n in (("ours", 0.11, 0.81, 24), ("scm", 0.15, 0.73, 24)):
        rows += [
            {"method": method, "column": "do(sex)", "metric": "LPIPS", "mean": lpips, "ci_low": lpips - 0.01,
             "ci_high": lpips + 0.01, "n": n},
            {"method": method, "column": "do(sex)", "metric": "CPG", "mean": cpg, "ci_low": None, "ci_high": None,
             "n": n},
            {"method": method, "column": "do(sex)", "metric": "CPG (signed)", "mean": -cpg, "ci_low": -cpg - 0.1,
             "ci_high": -cpg + 0.1, "n": n},
            {"method": method, "column": "do(age)", "metric": "LPIPS", "mean": lpips, "ci_low": None,
             "ci_high": None, "n": n + (method == "scm")},
        ]  # fmt: skip
    view = table2_view(pd.DataFrame(rows))
    assert view["columns"] == ["do(sex)", "do(age)"]
    assert view["n"] == ["n = 24", ""]  # constant n goes to the header, a varying one into the cells
    lpips, cpg, signed = view["groups"]
    assert (lpips["metric"], lpips["arrow"], cpg["arrow"], signed["arrow"]) == ("LPIPS", "↓", "↑", "")
    ours, scm = lpips["rows"]
    assert ours["cells"][0] == {"text": "0.110 [0.100, 0.120]", "n": "", "best": True}
    assert scm["cells"][0]["best"] is False and scm["cells"][1]["n"] == "n = 25"
    assert [r["cells"][0]["best"] for r in cpg["rows"]] == [True, False]  # higher CPG is better
    assert cpg["rows"][0]["cells"][0]["text"] == "0.810"  # no interval given
    assert not any(r["cells"][0]["best"] for r in signed["rows"])
    assert signed["rows"][0]["cells"][0]["text"] == "−0.810 [−0.910, −0.710]"


def test_table2_and_axioms_in_the_page(page: Node, workspace: Workspace):
    section = page.find("section", id="evaluation-1")
    table2 = pd.read_csv(workspace.evaluation / "table2.csv")
    t2 = section.find("table", cls="t2")
    headers = [th.text() for th in t2.iter("th")]
    assert headers[:2] == ["Metric", "Method"] and headers[2].startswith("do(sex)")
    best = [td.text() for td in t2.iter("td", cls="best")]
    lpips_ours = table2[
        (table2.method == "ours") & (table2.metric == "LPIPS") & (table2.column == "do(sex)")
    ].iloc[0]
    assert f"{lpips_ours['mean']:.3f} [{lpips_ours['ci_low']:.3f}, {lpips_ours['ci_high']:.3f}]" in best
    axioms = next(t for t in section.iter("table") if "t2" not in t.classes)
    assert [th.text() for th in axioms.iter("th")] == list(
        pd.read_csv(workspace.evaluation / "axioms.csv").columns
    )
    assert rows_of(axioms)[0] == ["ours", "do(sex)", "composition", "0.050", "0.040", "0.060", "6"]
    assert "LPIPS ours" in section.find("details").text()  # table2.md


# --- discovery ---------------------------------------------------------------------------------------------


def test_candidates_are_ranked_flagged_ones_highlighted_with_evidence(page: Node):
    section = page.find("section", id="discovery-1")
    table = section.find("table", cls="cand")
    rows = list(table.find("tbody").iter("tr"))
    expected = candidates_table()
    assert [r.find("td").text() for r in rows] == [str(r) for r in expected["rank"]]
    assert ["flagged" in r.classes for r in rows] == list(expected["flagged"])
    first = rows[0].text()
    assert "do(Cardiomegaly=0) → Support Devices" in first and "−0.310 [−0.400, −0.220]" in first
    assert "null −0.020" in first and "labels −0.080" in first
    evidence = [r.find("td", cls="evidence").find("img") for r in rows]
    assert [e is not None for e in evidence] == [True, True, False, False, False]
    assert decode_png(evidence[0].attrs["src"]).size == (160, 48)  # small montages are not enlarged
    # The summary at the top lists exactly the flagged relations.
    findings = [li.text() for li in page.find("section", id="summary").find("ul", cls="findings").iter("li")]
    assert len(findings) == 2 and "Removing cardiomegaly also removes support devices." in findings[0]


def test_forest_axis_is_shared_per_unit():
    table = candidates_table()
    from cfaudit.report.discovery import _forest_limits

    limits = _forest_limits(table)
    assert limits[0] == limits[2] == limits[3] == 0.5  # heads in probability units share one axis
    assert limits[1] == 0.2  # the region row, in intensity units
    assert limits[4] == 5  # the age head (years) gets its own


def test_cochange_matrix_pivots_interventions_by_heads(workspace: Workspace, monkeypatch):
    discovery = collect_inputs([workspace.discovery]).discoveries[0]
    seen = {}

    def capture(effect, label, significant, flagged):
        seen.update(effect=effect, label=label, significant=significant, flagged=flagged)
        return "data:image/png;base64,"

    draw = figures.cochange_heatmaps
    monkeypatch.setattr(figures, "cochange_heatmaps", capture)
    cochange_figure(discovery)
    cochange = pd.read_csv(workspace.discovery / "cochange.csv")
    alpha = json.loads((workspace.discovery / "discovery.json").read_text())["error_rates"]["alpha"]
    assert list(seen["effect"].columns) == list(HEADS)
    assert list(seen["effect"].index) == ["do(Cardiomegaly=0)", "do(sex=Female)", "do(age=80)"]
    by_interval = []
    for _, row in cochange.iterrows():
        assert seen["effect"].loc[row["intervention"], row["head"]] == pytest.approx(row["effect"])
        # Significant: q <= alpha (a head the intervention targets has no q: never), not the interval
        significant = bool(row["q_value"] <= alpha)
        assert bool(seen["significant"].loc[row["intervention"], row["head"]]) == significant
        by_interval.append(significant == (row["ci_low"] > 0 or row["ci_high"] < 0))
    assert not all(by_interval)  # the fake data tell the two rules apart
    assert seen["label"]["age"].isna().all()
    assert seen["flagged"] == [("do(Cardiomegaly=0)", "Support Devices")]  # flagged heads only, not regions
    real = draw(seen["effect"], seen["label"], seen["significant"], seen["flagged"])
    assert decode_png(real).width > 400


# --- edits -------------------------------------------------------------------------------------------------


def test_edit_groups_show_a_few_images_and_average_all(workspace: Workspace):
    job = read_edit_job(workspace.edits / "edits.csv")
    notes: list[str] = []
    groups = edit_groups(job, "edits-1", 2, notes, None)
    assert [g["intervention"] for g in groups] == ["do(Cardiomegaly=0)", "do(sex=Female)"]
    assert all(g["shown"] == 2 and g["images"] == 8 for g in groups) and notes == []
    rows = job.edits[job.edits["intervention"] == "do(sex=Female)"]
    expected = np.mean([np.load(workspace.edits / p) for p in rows["difference"]], axis=0)
    np.testing.assert_allclose(mean_difference(job, rows, expected.shape), expected, atol=1e-6)
    grid = decode_png(groups[0]["grid_uri"])
    assert (
        grid.height > grid.width
    )  # two columns (images) of three rows (original, counterfactual, difference)


def test_edit_grid_uses_one_symmetric_scale_for_the_examples():
    rng = np.random.default_rng(0)
    examples = [
        figures.Example(f"img{i}", rng.random((32, 32)), rng.random((32, 32)), rng.normal(0, 0.1, (32, 32)))
        for i in range(3)
    ]
    uri, scale, width = figures.edit_grid(examples)
    assert decode_png(uri).width == width
    assert scale == pytest.approx(max(np.abs(e.difference).max() for e in examples))
    assert decode_png(uri).mode == "RGB"


def test_missing_original_falls_back_to_the_reconstruction(workspace: Workspace, tmp_path: Path):
    job_dir = shutil.copytree(workspace.scm_edits, tmp_path / "job")
    edits = pd.read_csv(job_dir / "edits.csv")
    edits["original"] = str(tmp_path / "moved.png")
    edits.to_csv(job_dir / "edits.csv", index=False)
    notes: list[str] = []
    groups = edit_groups(read_edit_job(job_dir / "edits.csv"), "e", 2, notes, None)
    assert len(groups) == 1 and any("showing the reconstruction instead" in n for n in notes)


# --- absent and malformed inputs ---------------------------------------------------------------------------


def test_absent_inputs_leave_their_section_out_with_a_note(workspace: Workspace, tmp_path: Path):
    out = build_report([workspace.index_csv], tmp_path / "data-only.html")
    page = parse(out.read_text(encoding="utf-8"))
    ids = {node.attrs["id"] for node in page.iter() if "id" in node.attrs}
    assert "data-1" in ids and not ids & {"evaluation-1", "discovery-1", "edits-1"}
    absent = page.find("ul", cls="absent").text()
    for name in ("Counterfactual quality", "Hidden relations", "Counterfactual examples"):
        assert f"{name} left out" in absent
    # A discovery without its co-change table and with a lost evidence picture still renders, with notes.
    discovery = shutil.copytree(workspace.discovery, tmp_path / "discovery")
    (discovery / "cochange.csv").unlink()
    (discovery / "evidence" / "rank2.png").unlink()
    shutil.rmtree(discovery / "edits")
    page = parse(build_report([discovery], tmp_path / "partial.html").read_text(encoding="utf-8"))
    section = page.find("section", id="discovery-1")
    assert "cochange.csv not found" in section.text() and section.find("table", cls="cand") is not None
    assert "evidence evidence/rank2.png of rank 2 is missing" in page.find("div", cls="notes").text()
    # The discovery's provenance names the index: the data set section comes from it.
    assert page.find("section", id="data-1") is not None
    # Without discovery.json, candidates.csv still marks the folder as a discovery, with a note.
    (discovery / "discovery.json").unlink()
    page = parse(build_report([discovery], tmp_path / "no-meta.html").read_text(encoding="utf-8"))
    assert page.find("section", id="discovery-1").find("table", cls="cand") is not None
    assert "no discovery.json; the discovery's provenance is unknown" in page.find("div", cls="notes").text()


def _break_table2(folder: Path) -> Path:
    pd.read_csv(folder / "table2.csv").drop(columns="metric").to_csv(folder / "table2.csv", index=False)
    return folder / "table2.csv"


def _break_candidates(folder: Path) -> Path:
    table = pd.read_csv(folder / "candidates.csv")
    table["effect"] = table["effect"].astype(object)
    table.loc[2, "effect"] = "strong"
    table.to_csv(folder / "candidates.csv", index=False)
    return folder / "candidates.csv"


def _break_discovery_json(folder: Path) -> Path:
    (folder / "discovery.json").write_text("{not json", encoding="utf-8")
    return folder / "discovery.json"


def _break_counterfactual(folder: Path) -> Path:
    edits = pd.read_csv(folder / "edits.csv")
    (folder / edits["counterfactual"].iloc[0]).unlink()
    return folder / "edits.csv"


def _repeat_an_edit(folder: Path) -> Path:
    lines = (folder / "edits.csv").read_text(encoding="utf-8").splitlines()
    (folder / "edits.csv").write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")
    return folder / "edits.csv"


def _unknown_attribute(folder: Path) -> Path:
    edits = pd.read_csv(folder / "edits.csv")
    edits.loc[0, "intervention"] = "do(colour=red)"
    edits.to_csv(folder / "edits.csv", index=False)
    return folder / "edits.csv"


@pytest.mark.parametrize(
    ("source", "breaker", "message"),
    [
        ("evaluation", _break_table2, r"missing column\(s\) metric"),
        ("edits", _repeat_an_edit, r"line \d+: repeats the edit of line 2 \(.*\); re-run"),
        ("edits", _unknown_attribute, r"line 2: .*unknown attribute 'colour'"),
        ("discovery", _break_candidates, r"line 4: column effect holds 'strong', not a number"),
        ("discovery", _break_discovery_json, r"not valid JSON"),
        ("scm_edits", _break_counterfactual, r"line 2: counterfactual .* is missing"),
    ],
)
def test_malformed_inputs_are_one_error_naming_the_file(workspace, tmp_path, source, breaker, message):
    folder = shutil.copytree(getattr(workspace, source), tmp_path / "copy")
    broken = breaker(folder)
    with pytest.raises(CfauditError, match=re.escape(str(broken)) + ".*" + message):
        build_report([folder], tmp_path / "report.html", max_examples=1)
    assert not (tmp_path / "report.html").exists()


def test_bad_arguments(workspace: Workspace, tmp_path: Path):
    with pytest.raises(CfauditError, match=r"ending in \.html"):
        build_report([workspace.evaluation], tmp_path / "report.pdf")
    with pytest.raises(CfauditError, match="--examples must be at least 1"):
        build_report([workspace.evaluation], tmp_path / "report.html", max_examples=0)
    with pytest.raises(CfauditError, match="no such folder"):
        build_report([tmp_path / "nowhere"], tmp_path / "report.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CfauditError, match=r"nothing to report in .*empty"):
        build_report([tmp_path / "empty"], tmp_path / "report.html")


def test_search_depth_and_skipped_folders(tmp_path: Path):
    for relative in ("a/index.csv", "a/b/table2.csv", "a/b/c/d/edits.csv", "a/b/c/d/e/edits.csv",
                     "a/images/x/edits.csv", "a/.hidden/discovery.json", "a/discovery.json"):  # fmt: skip
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("", encoding="utf-8")
    found = {p.relative_to(tmp_path).as_posix() for p in find_markers(tmp_path / "a")}
    assert found == {"a/index.csv", "a/discovery.json", "a/b/table2.csv", "a/b/c/d/edits.csv"}


# --- the command -------------------------------------------------------------------------------------------


def test_command_writes_the_report(workspace: Workspace, tmp_path: Path):
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps "report" a subcommand
    out = tmp_path / "out" / "r.html"
    result = CliRunner().invoke(
        app, ["report", "--from", str(workspace.scm_edits), "--from", str(workspace.evaluation), "--out", str(out),
              "--examples", "1", "--title", "Two inputs"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert str(out) in " ".join(result.output.split()) and out.is_file()
    page = parse(out.read_text(encoding="utf-8"))
    assert page.find("h1").text() == "Two inputs"
    assert page.find("section", id="evaluation-1") and page.find("section", id="edits-1")
    assert "1 of 4 images" in page.find("section", id="edits-1").text()
    failed = CliRunner().invoke(app, ["report", "--from", str(tmp_path / "none"), "--out", str(out)])
    assert isinstance(failed.exception, CfauditError)


def test_report_stays_small(report_path: Path, page: Node):
    # Pictures of one intervention (6 examples and the mean map) stay far below 1 MB, so ~10 interventions x 6
    # examples make a report well under 10 MB.
    for article in page.iter("article", cls="edit"):
        sizes = [len(base64.b64decode(img.attrs["src"].split(",", 1)[1])) for img in article.iter("img")]
        assert len(sizes) == 2 and sum(sizes) < 450_000
    assert report_path.stat().st_size < 4e6


def test_a_discoverys_edits_show_only_its_flagged_and_top_interventions(workspace: Workspace, monkeypatch):
    import cfaudit.report.edits as edits

    job = next(j for j in collect_inputs([workspace.root]).edit_jobs if j.part_of is not None)
    notes: list[str] = []
    monkeypatch.setattr(edits, "DISCOVERY_EXAMPLE_INTERVENTIONS", 1)  # rank 1 and the flagged ones
    shown = {g["intervention"] for g in edit_groups(job, "d", 2, notes, None)}
    assert shown == {
        "do(Cardiomegaly=0)"
    }  # ranks 1-2 (both flagged) are Cardiomegaly; age and sex are not shown
    assert any("2 more are in the folder" in note for note in notes)
    monkeypatch.setattr(edits, "DISCOVERY_EXAMPLE_INTERVENTIONS", 5)
    assert {g["intervention"] for g in edit_groups(job, "d", 2, [], None)} == {
        "do(Cardiomegaly=0)", "do(sex=Female)", "do(age=80)",
    }  # fmt: skip


def test_a_shipped_model_is_named_inside_the_package_not_by_a_machine_path(tmp_path: Path) -> None:
    from cfaudit.report.html import model_name
    from cfaudit.scm.shipped import DEMO_SCM, demo_scm_dir

    assert model_name(str(demo_scm_dir())) == DEMO_SCM
    assert model_name("demo") == "demo"
    assert model_name(str(tmp_path / "my-model")) == str(tmp_path / "my-model")
