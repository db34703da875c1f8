import math

import pandas as pd
import pytest

from cfaudit.discover.candidates import CANDIDATE_COLUMNS, CandidateSettings, rank_candidates
from cfaudit.discover.clusters import CLUSTER_COLUMNS
from cfaudit.discover.cochange import COCHANGE_COLUMNS
from cfaudit.errors import CfauditError


def head_row(head, delta, low, high, label, data, offtarget=0.0, intervened=False, q=0.01, bias=math.nan):
    scale = 50.0 if head == "age" else 1.0
    return {
        "intervention": "do(Cardiomegaly=0)", "head": head, "intervened": intervened, "n_images": 20,
        "effect": delta, "null_control": 0.0, "delta": delta, "ci_low": low, "ci_high": high,
        "offtarget_control": offtarget, "label_association": label, "data_association": data,
        "classifier_bias": bias, "scale": scale, "spread": 0.1, "p_value": q / 2, "q_value": q, "detectable": 0.05,
    }  # fmt: skip


def cluster_row(
    frequency, low, offtarget, support, sign=-1, q=0.01, head="Support Devices", head_change=-0.2
):
    values = dict.fromkeys(CLUSTER_COLUMNS, 0.0)
    values.update(
        intervention="do(Cardiomegaly=0)", cluster=1, n_images=20, images_with=int(frequency * 20),
        frequency=frequency, ci_low=low, ci_high=min(1.0, frequency + 0.2), null_control=0.0,
        offtarget_control=offtarget, x=0.7, y=0.25, sign=sign, where="upper patient's left chest",
        head=head, head_change=head_change, data_support=support, p_value=q / 2, q_value=q, detectable=0.3,
        examples="a;b",
    )  # fmt: skip
    return values


@pytest.mark.parametrize(
    ("row", "status"),
    [
        (head_row("Support Devices", -0.4, -0.5, -0.3, -0.05, -0.3), "hidden"),  # data yes, labels no
        (head_row("Support Devices", -0.4, -0.5, -0.3, -0.3, -0.3), "in labels"),
        (head_row("Support Devices", -0.4, -0.5, -0.3, 0.0, 0.2), "editor quirk"),  # real images disagree
        (head_row("Support Devices", -0.4, -0.5, -0.3, math.nan, math.nan), "edit only"),
        (head_row("Support Devices", -0.4, -0.5, -0.3, -0.05, -0.3, offtarget=0.35), "labels only"),
        (head_row("Edema", -0.02, -0.05, 0.01, -0.25, -0.2), "labels only"),
    ],
)
def test_head_statuses(row, status):
    ranked = rank_candidates(
        pd.DataFrame([row], columns=list(COCHANGE_COLUMNS)),
        pd.DataFrame(columns=list(CLUSTER_COLUMNS)),
        CandidateSettings(),
    )
    if status == "labels only" and row["label_association"] > -0.1:
        assert ranked.empty  # nothing shown and nothing predicted: not a candidate
        return
    assert ranked["status"].tolist() == [status]
    assert ranked["flagged"].tolist() == [status == "hidden"]


def test_intervened_heads_and_weak_changes_are_not_candidates():
    rows = [
        head_row("Cardiomegaly", -0.8, -0.9, -0.7, -1.0, -0.9, intervened=True),
        head_row("Edema", 0.01, -0.02, 0.04, 0.02, 0.0),
    ]
    ranked = rank_candidates(
        pd.DataFrame(rows), pd.DataFrame(columns=list(CLUSTER_COLUMNS)), CandidateSettings()
    )
    assert ranked.empty and list(ranked.columns) == list(CANDIDATE_COLUMNS)


@pytest.mark.parametrize(
    ("cluster", "status"),
    [
        (cluster_row(0.5, 0.3, 0.05, -0.8), "hidden"),
        (cluster_row(0.5, 0.3, 0.05, 0.05), "editor quirk"),  # real images show no such difference there
        (cluster_row(0.5, 0.3, 0.05, 0.8), "editor quirk"),  # ... or the opposite one
        (cluster_row(0.5, 0.3, 0.4, -0.8), "weak"),  # other edits change it as often
        (cluster_row(0.15, 0.05, 0.0, -0.8), "weak"),  # too rare for the margin
    ],
)
def test_region_statuses(cluster, status):
    ranked = rank_candidates(
        pd.DataFrame(columns=list(COCHANGE_COLUMNS)), pd.DataFrame([cluster]), CandidateSettings()
    )
    assert ranked["status"].tolist() == [status] and ranked["kind"].tolist() == ["region"]
    assert "upper patient's left chest" in ranked["description"].iloc[0]


def test_ranking_puts_flagged_first_then_by_excess():
    rows = [
        head_row("Edema", -0.3, -0.4, -0.2, -0.3, -0.3),  # in labels
        head_row("Support Devices", -0.2, -0.3, -0.15, 0.0, -0.2),  # hidden, excess 0.2
        head_row("Lung Opacity", -0.5, -0.6, -0.4, 0.0, -0.5),  # hidden, excess 0.5
    ]
    ranked = rank_candidates(
        pd.DataFrame(rows), pd.DataFrame([cluster_row(0.5, 0.3, 0.05, -0.8)]), CandidateSettings()
    )
    assert ranked["rank"].tolist() == [1, 2, 3, 4]
    assert ranked["target"].tolist() == ["Lung Opacity", "cluster 1", "Support Devices", "Edema"]
    assert ranked["flagged"].tolist() == [True, True, True, False]
    assert rank_candidates(
        pd.DataFrame(rows), pd.DataFrame(columns=list(CLUSTER_COLUMNS)), CandidateSettings(margin=0.6)
    ).empty


@pytest.mark.parametrize("q", [0.0, 0.05, 0.1, 0.1000001, 0.3, math.nan])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_flags_follow_q_at_most_alpha_for_heads_and_clusters(q, alpha):
    ranked = rank_candidates(
        pd.DataFrame([head_row("Support Devices", -0.4, -0.5, -0.3, -0.05, -0.3, q=q)]),
        pd.DataFrame([cluster_row(0.5, 0.3, 0.05, -0.8, q=q)]),
        CandidateSettings(alpha=alpha),
    )
    significant = q <= alpha  # NaN (no test) is never significant
    assert ranked["flagged"].tolist() == [significant, significant]
    assert set(ranked["status"]) == {"hidden" if significant else "not significant"}
    assert ranked["q_value"].isna().all() if math.isnan(q) else (ranked["q_value"] == q).all()
    assert {"p_value", "q_value", "detectable"} <= set(ranked.columns)
    if not significant:
        assert "too few images" in ranked["description"].iloc[0]


def test_q_value_does_not_change_other_statuses_or_the_order_among_them():
    rows = [
        head_row("Edema", -0.3, -0.4, -0.2, -0.3, -0.3, q=0.5),  # in labels
        head_row("Lung Opacity", -0.5, -0.6, -0.4, 0.0, 0.2, q=0.5),  # editor quirk
        head_row("Support Devices", -0.2, -0.3, -0.15, 0.0, -0.2, q=0.5),  # hidden but not significant
    ]
    ranked = rank_candidates(
        pd.DataFrame(rows), pd.DataFrame(columns=list(CLUSTER_COLUMNS)), CandidateSettings()
    )
    assert ranked["status"].tolist() == ["not significant", "in labels", "editor quirk"]
    assert not ranked["flagged"].any()


def age_row(delta, label, data, bias, q=0.001):
    """do(Edema=1) on the age head (years): a fully observed attribute."""
    row = head_row("age", delta, delta - 3.0, delta + 3.0, label, data, q=q, bias=bias)
    row["intervention"] = "do(Edema=1)"
    return row


@pytest.mark.parametrize(
    ("row", "status"),
    [
        # The case: the edit moves predicted age +17.7, the labels +3.4, real images +8.6; the
        # classifier reads edema as +5.2 years on real images with their true ages: a classifier confound
        (age_row(17.7, 3.4, 8.6, 5.2), "classifier confound"),
        (age_row(17.7, 3.4, 8.6, -5.2), "editor quirk"),  # its bias runs the other way: it does not explain
        (age_row(17.7, 3.4, 8.6, 1.0), "editor quirk"),  # a bias below the margin (5 years) does not either
        (age_row(17.7, 3.4, 8.6, math.nan), "editor quirk"),  # never hidden: the truth is recorded
        (age_row(17.7, math.nan, math.nan, math.nan), "edit only"),
        (age_row(17.7, 12.0, 14.0, 2.0), "in labels"),
    ],
)
def test_a_fully_observed_head_is_never_hidden_and_a_misreading_is_a_classifier_confound(row, status):
    ranked = rank_candidates(
        pd.DataFrame([row]), pd.DataFrame(columns=list(CLUSTER_COLUMNS)), CandidateSettings()
    )
    assert ranked["status"].tolist() == [status]
    assert not ranked["flagged"].any()
    assert ranked["classifier_bias"].iloc[0] == row["classifier_bias"] or math.isnan(row["classifier_bias"])
    if status == "classifier confound":
        assert (
            "+5.20 years" in ranked["description"].iloc[0]
            and "classifier confound" in ranked["description"].iloc[0]
        )


def test_the_same_shift_on_a_finding_head_stays_hidden():
    # Findings' labels are not the whole truth (an image can show what its report does not name): no confound rule
    row = head_row("Support Devices", 0.4, 0.3, 0.5, 0.05, 0.3, bias=0.3)
    ranked = rank_candidates(
        pd.DataFrame([row]), pd.DataFrame(columns=list(CLUSTER_COLUMNS)), CandidateSettings()
    )
    assert ranked["status"].tolist() == ["hidden"]


@pytest.mark.parametrize(
    ("head_delta", "head_change", "head_rests", "head_check", "region_rests", "region_check"),
    [
        (-0.4, -0.2, "head and region", "agrees: cluster 1", "head and region", "agrees: Support Devices"),
        (0.4, -0.2, "head", "disagrees: cluster 1", "region", "disagrees: Support Devices"),
        (-0.01, -0.2, None, None, "region", "does not move"),  # the head shows nothing: no head candidate
    ],
)
def test_each_candidate_says_which_level_it_rests_on_and_whether_the_other_agrees(
    head_delta, head_change, head_rests, head_check, region_rests, region_check
):
    low, high = sorted((head_delta - 0.05, head_delta + 0.05))
    head = head_row("Support Devices", head_delta, low, high, 0.0, head_delta)
    ranked = rank_candidates(
        pd.DataFrame([head]), pd.DataFrame([cluster_row(0.5, 0.3, 0.05, -0.8, head_change=head_change)]),
        CandidateSettings(),
    )  # fmt: skip
    by_kind = {row.kind: row for row in ranked.itertuples(index=False)}
    assert by_kind["region"].rests_on == region_rests and region_check in by_kind["region"].cross_check
    if head_rests is None:
        assert "head" not in by_kind
    else:
        assert by_kind["head"].rests_on == head_rests and by_kind["head"].cross_check.startswith(head_check)


def test_a_head_change_of_a_whole_image_attribute_says_regions_were_not_analysed():
    row = head_row("Support Devices", -0.4, -0.5, -0.3, -0.05, -0.3)
    row["intervention"] = "do(sex=Female)"
    ranked = rank_candidates(
        pd.DataFrame([row]), pd.DataFrame(columns=list(CLUSTER_COLUMNS)), CandidateSettings(), regional=set()
    )
    assert ranked["rests_on"].tolist() == ["head"]
    assert ranked["cross_check"].iloc[0].startswith("regions not analysed")
    ranked = rank_candidates(
        pd.DataFrame([row]), pd.DataFrame(columns=list(CLUSTER_COLUMNS)), CandidateSettings(),
        regional={"do(sex=Female)"},
    )  # fmt: skip
    assert ranked["cross_check"].iloc[0] == "no region change named by this head"


@pytest.mark.parametrize(("alpha", "fdr"), [(0.0, "bh"), (1.0, "bh"), (0.1, "holm")])
def test_settings_refuse_an_alpha_outside_0_1_and_an_unknown_fdr_method(alpha, fdr):
    with pytest.raises(CfauditError, match=r"alpha|fdr"):
        CandidateSettings(alpha=alpha, fdr=fdr)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"margin": -0.5}, "--margin must be at least 0 and below 1"),
        ({"margin": 2.0}, "--margin must be at least 0 and below 1"),
        ({"region_margin": -1.0}, "--region-margin must lie in 0..1"),
        ({"data_margin": -0.1}, "data_margin must not be negative"),
        ({"alpha": 0.0}, "--alpha must be above 0 and below 1, got 0.0"),
    ],
)
def test_margins_that_would_let_changes_below_the_controls_count_are_refused(values, message):
    with pytest.raises(CfauditError, match=message):
        CandidateSettings(**values)
