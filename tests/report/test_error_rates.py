"""The report shows a discovery's error rates: p, q and detectable effects per candidate, the run's family of tests,
the statuses that are not flags, what the run could have detected; and still renders a discovery made before them."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cfaudit.errors import CfauditError
from cfaudit.report import build_report
from cfaudit.report.collect import collect_inputs
from cfaudit.report.discovery import (
    PREDATES_ERROR_RATES,
    STATUS_MEANINGS,
    cochange_significance,
    power_view,
)
from cfaudit.report.formatting import two_digits
from tests.report.fake_outputs import (
    ERROR_RATE_COLUMNS,
    Workspace,
    candidates_table,
    make_discovery,
    power_table,
)
from tests.report.html_page import Node, parse

NO_FLAG = "A “no flag” below these means too few images, not no relation."


@pytest.fixture(scope="module")
def page(report_path: Path) -> Node:
    return parse(report_path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def old_discovery(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A discovery folder as runs before error rates wrote it: no p, q, detectable, power or error_rates."""
    return make_discovery(
        tmp_path_factory.mktemp("old") / "discovery", workspace.index_csv, error_rates=False
    )


def candidate_rows(section: Node) -> list[Node]:
    return list(section.find("table", cls="cand").find("tbody").iter("tr"))


def meta_of(folder: Path) -> dict:
    return json.loads((folder / "discovery.json").read_text(encoding="utf-8"))


def test_two_digits_formats_p_and_q_values():
    assert [two_digits(v) for v in (0.0039, 0.057, 1.0, 0.12345, 0.0)] == [
        "0.0039",
        "0.057",
        "1",
        "0.12",
        "0",
    ]
    assert two_digits(0.00042) == "4.2×10⁻⁴" and two_digits(1.25e-12) == "1.2×10⁻¹²"
    assert two_digits(math.nan) == two_digits(None) == "–"


# --- the candidates table ----------------------------------------------------------------------------------


def test_candidates_show_p_q_and_detectable_in_their_unit(page: Node):
    expected = candidates_table()
    rows = candidate_rows(page.find("section", id="discovery-1"))
    assert len(rows) == len(expected)
    for row, (_, candidate) in zip(rows, expected.iterrows(), strict=True):
        effect = row.find("td", cls="effect")
        assert effect.find("b", cls="p").text() == two_digits(candidate["p_value"])
        assert effect.find("b", cls="q").text() == two_digits(candidate["q_value"])
    detectable = [row.find("b", cls="detectable").text() for row in rows]
    # rank 1: a probability head; 2: a change cluster (share of images); 3: infinite; 4: probability; 5: age
    assert detectable == ["0.12", "41% of images", "none at this n", "0.15", "3.2 years"]
    assert rows[0].find("b", cls="p").text() == "4.2×10⁻⁴"  # 2 significant digits, small ones in powers of 10


def test_flagged_rows_say_the_level_and_other_statuses_stand_apart(page: Node, workspace: Workspace):
    alpha = meta_of(workspace.discovery)["error_rates"]["alpha"]
    expected = candidates_table()
    rows = candidate_rows(page.find("section", id="discovery-1"))
    for row, (_, candidate) in zip(rows, expected.iterrows(), strict=True):
        badge = row.find("span", cls="flag")
        if candidate["flagged"]:
            assert badge.text() == f"flagged · q ≤ {alpha:g}" and "flagged" in row.classes
        else:
            assert badge is None and "flagged" not in row.classes
            status = row.find("span", cls="status")
            assert status.text() == candidate["status"]
    not_significant, confound = rows[2], rows[4]
    assert {"nsig"} <= not_significant.classes and {"nsig"} <= not_significant.find(
        "span", cls="status"
    ).classes
    assert {"confound"} <= confound.classes and {"confound"} <= confound.find("span", cls="status").classes
    # One line per status in the table says what it means.
    legend = [li.text() for li in page.find("section", id="discovery-1").find("ul", cls="legend").iter("li")]
    statuses = list(dict.fromkeys(expected["status"]))
    assert len(legend) == len(statuses)
    for line, status in zip(legend, statuses, strict=True):
        meaning = STATUS_MEANINGS[status].format(alpha=f"{alpha:g}", q_rule=f", and q ≤ {alpha:g}")
        assert line == ("flagged" if status == "hidden" else status) + " " + meaning


def test_classifier_bias_only_for_age_sex_and_race_and_what_a_status_rests_on(page: Node):
    expected = candidates_table()
    rows = candidate_rows(page.find("section", id="discovery-1"))
    for row, (_, candidate) in zip(rows, expected.iterrows(), strict=True):
        text = row.text()
        if candidate["target"] in ("age", "sex") or candidate["target"].startswith("race"):
            assert f"classifier bias {candidate['classifier_bias']:+.3f} years" in text
        else:
            assert "classifier bias" not in text
        assert f"rests on {candidate['rests_on']}; cross-check: {candidate['cross_check']}" in text


def test_findings_at_the_top_carry_their_q(page: Node):
    expected = candidates_table()
    findings = [li.text() for li in page.find("section", id="summary").find("ul", cls="findings").iter("li")]
    flagged = expected[expected["flagged"]]
    assert len(findings) == len(flagged)
    for finding, q in zip(findings, flagged["q_value"], strict=True):
        assert finding.endswith(f"q = {two_digits(q)}")


# --- the run's family of tests -----------------------------------------------------------------------------


def test_summary_line_counts_flags_among_the_runs_tests(page: Node, workspace: Workspace):
    rates = meta_of(workspace.discovery)["error_rates"]
    flagged = int(candidates_table()["flagged"].sum())
    line = f"{flagged} flagged at q ≤ {rates['alpha']:g} among {rates['tests']} tests (Benjamini-Hochberg)"
    section = page.find("section", id="discovery-1")
    assert section.find("p", cls="summary-line").text() == line
    assert line + "." in page.find("section", id="summary").text()
    assert (
        f"{rates['rejections']} of the {rates['tests']} changes the edits show reach q ≤ {rates['alpha']:g}"
        in section.text()
    )
    assert f"{rates['confirmed']} are confirmed" in section.text()
    assert f"One more relation would need p ≤ {two_digits(rates['level'])}" in section.text()


def test_summary_line_names_benjamini_yekutieli(workspace: Workspace, tmp_path: Path):
    folder = shutil.copytree(
        workspace.discovery, tmp_path / "discovery", ignore=shutil.ignore_patterns("edits")
    )
    meta = meta_of(folder)
    meta["error_rates"].update(fdr="by", alpha=0.05)
    (folder / "discovery.json").write_text(json.dumps(meta), encoding="utf-8")
    page = parse(build_report([folder], tmp_path / "by.html").read_text(encoding="utf-8"))
    line = page.find("section", id="discovery-1").find("p", cls="summary-line").text()
    # The candidates were flagged at 0.1: at 0.05 their q still bears the flag, as q <= 0.05 for both
    assert line == f"2 flagged at q ≤ 0.05 among {meta['error_rates']['tests']} tests (Benjamini-Yekutieli)"
    badges = [b.text() for b in page.find("section", id="discovery-1").iter("span", cls="flag")]
    assert badges[:2] == ["flagged · q ≤ 0.05"] * 2


def test_a_flag_whose_q_is_above_alpha_is_not_marked_with_it(workspace: Workspace, tmp_path: Path):
    folder = shutil.copytree(
        workspace.discovery, tmp_path / "discovery", ignore=shutil.ignore_patterns("edits")
    )
    meta = meta_of(folder)
    meta["error_rates"]["alpha"] = 0.01  # rank 2 (q = 0.023) no longer meets it
    (folder / "discovery.json").write_text(json.dumps(meta), encoding="utf-8")
    page = parse(build_report([folder], tmp_path / "strict.html").read_text(encoding="utf-8"))
    badges = [b.text() for b in page.find("section", id="discovery-1").iter("span", cls="flag")]
    assert badges[:2] == ["flagged · q ≤ 0.01", "flagged"]


def test_heat_map_marks_q_where_there_is_q_and_the_interval_before(workspace: Workspace, old_discovery: Path):
    new = collect_inputs([workspace.discovery]).discoveries[0]
    significant, basis = cochange_significance(new)
    cochange = pd.read_csv(workspace.discovery / "cochange.csv")
    assert basis == "q"
    for _, row in cochange.iterrows():
        assert bool(significant.loc[row["intervention"], row["head"]]) == bool(row["q_value"] <= new.alpha)
    old = collect_inputs([old_discovery]).discoveries[0]
    significant, basis = cochange_significance(old)
    cochange = pd.read_csv(old_discovery / "cochange.csv")
    assert basis == "interval"
    for _, row in cochange.iterrows():
        excludes_zero = row["ci_low"] > 0 or row["ci_high"] < 0
        assert bool(significant.loc[row["intervention"], row["head"]]) == excludes_zero


def test_heat_map_caption_says_what_bold_means(page: Node, workspace: Workspace):
    alpha = meta_of(workspace.discovery)["error_rates"]["alpha"]
    caption = page.find("section", id="discovery-1").find("figcaption").text()
    assert f"Bold numbers: q ≤ {alpha:g}" in caption and "interval excludes zero" not in caption


# --- what the run could detect -----------------------------------------------------------------------------


def power_rows(section: Node) -> tuple[list[str], list[list[str]]]:
    table = section.find("table", cls="power")
    header = [th.text() for th in table.iter("th")]
    return header, [[td.text() for td in tr.iter("td")] for tr in table.find("tbody").iter("tr")]


def test_power_table_says_what_the_run_could_detect(page: Node):
    section = page.find("section", id="discovery-1")
    header, rows = power_rows(section)
    assert header == ["Intervention", "Images", "Requested", "Eligible", "Detectable share",
                      "Detectable head change", "Heads undetectable"]  # fmt: skip
    expected = power_table()
    assert [r[0] for r in rows] == list(expected["intervention"])
    assert [r[1:4] for r in rows] == [
        [str(int(v)) for v in (r.n_images, r.requested, r.eligible)] for r in expected.itertuples()
    ]
    # A share; blank for a whole-image attribute; infinite: too few images
    assert [r[4] for r in rows] == ["55%", "", "too few images"]
    assert [r[5] for r in rows] == ["0.21", "0.18", "too few images"]
    assert [r[6] for r in rows] == [
        f"{int(r.heads_undetectable)} of {int(r.heads_tested)}" for r in expected.itertuples()
    ]
    assert NO_FLAG in section.text()
    assert "smallest share of the images with a change at one place" in section.text()


def test_power_table_without_images_auto_has_no_requested_or_eligible(workspace: Workspace, tmp_path: Path):
    folder = shutil.copytree(
        workspace.discovery, tmp_path / "discovery", ignore=shutil.ignore_patterns("edits")
    )
    power_table().drop(columns=["requested", "eligible"]).to_csv(folder / "power.csv", index=False)
    meta = meta_of(folder)
    meta["settings"]["images"] = 16
    (folder / "discovery.json").write_text(json.dumps(meta), encoding="utf-8")
    view = power_view(collect_inputs([folder]).discoveries[0])
    assert view is not None and not view["auto"]
    page = parse(build_report([folder], tmp_path / "fixed.html").read_text(encoding="utf-8"))
    header, rows = power_rows(page.find("section", id="discovery-1"))
    assert "Requested" not in header and "Eligible" not in header and len(rows[0]) == len(header)


def test_power_from_discovery_json_when_power_csv_is_gone(workspace: Workspace, tmp_path: Path):
    folder = shutil.copytree(
        workspace.discovery, tmp_path / "discovery", ignore=shutil.ignore_patterns("edits")
    )
    (folder / "power.csv").unlink()
    page = parse(build_report([folder], tmp_path / "json.html").read_text(encoding="utf-8"))
    section = page.find("section", id="discovery-1")
    _, rows = power_rows(section)
    # JSON writes both an infinite and a missing value as null: neither is guessed
    assert [r[4] for r in rows] == ["55%", "–", "–"] and [r[5] for r in rows] == ["0.21", "0.18", "–"]
    assert "Read from discovery.json" in section.text() and NO_FLAG in section.text()


# --- a discovery made before error rates -------------------------------------------------------------------


def test_a_discovery_made_before_error_rates_still_renders(old_discovery: Path, tmp_path: Path):
    for name in ("candidates.csv", "cochange.csv", "clusters.csv"):
        assert not set(ERROR_RATE_COLUMNS) & set(pd.read_csv(old_discovery / name).columns)
    assert not (old_discovery / "power.csv").exists() and "error_rates" not in meta_of(old_discovery)
    page = parse(build_report([old_discovery], tmp_path / "old.html").read_text(encoding="utf-8"))
    section = page.find("section", id="discovery-1")
    assert PREDATES_ERROR_RATES in section.text()
    assert "this discovery predates error rates" in section.text()
    rows = candidate_rows(section)
    assert len(rows) == len(candidates_table(error_rates=False))
    for row in rows:
        assert [row.find("b", cls=c).text() for c in ("p", "q", "detectable")] == ["–", "–", "–"]
        assert "q ≤" not in row.text() and "classifier bias" not in row.text()
    # Flags as the run made them, without a level; its statuses' legend without a q-value rule
    assert [b.text() for b in section.iter("span", cls="flag")][:2] == ["flagged", "flagged"]
    legend = section.find("ul", cls="legend").text()
    assert "real images show it" in legend and "q ≤" not in legend
    assert section.find("table", cls="power") is None and section.find("p", cls="summary-line") is None
    assert "interval excludes zero" in section.find("figcaption").text()
    assert "flagged at q ≤" not in page.find("section", id="summary").text()


# --- malformed error rates ---------------------------------------------------------------------------------


def _break_error_rates(folder: Path) -> Path:
    meta = meta_of(folder)
    meta["error_rates"]["alpha"] = "ten percent"
    (folder / "discovery.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder / "discovery.json"


def _break_fdr(folder: Path) -> Path:
    meta = meta_of(folder)
    meta["error_rates"]["fdr"] = "holm"
    (folder / "discovery.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder / "discovery.json"


def _break_power(folder: Path) -> Path:
    power = pd.read_csv(folder / "power.csv")
    power["detectable_share"] = power["detectable_share"].astype(object)
    power.loc[1, "detectable_share"] = "half"
    power.to_csv(folder / "power.csv", index=False)
    return folder / "power.csv"


def _break_q(folder: Path) -> Path:
    table = pd.read_csv(folder / "candidates.csv")
    table["q_value"] = table["q_value"].astype(object)
    table.loc[0, "q_value"] = "small"
    table.to_csv(folder / "candidates.csv", index=False)
    return folder / "candidates.csv"


@pytest.mark.parametrize(
    ("breaker", "message"),
    [
        (_break_error_rates, r"error_rates alpha is 'ten percent', not a number between 0 and 1"),
        (_break_fdr, r"error_rates fdr is 'holm', not one of bh, by"),
        (_break_power, r"line 3: column detectable_share holds 'half', not a number"),
        (_break_q, r"line 2: column q_value holds 'small', not a number"),
    ],
)
def test_malformed_error_rates_are_one_error_naming_the_file(workspace, tmp_path, breaker, message):
    folder = shutil.copytree(workspace.discovery, tmp_path / "copy", ignore=shutil.ignore_patterns("edits"))
    broken = breaker(folder)
    with pytest.raises(CfauditError, match=re.escape(str(broken)) + ".*" + message):
        build_report([folder], tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()
