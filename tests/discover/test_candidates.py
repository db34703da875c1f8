import math

import pandas as pd
import pytest

from cfaudit.discover.candidates import CANDIDATE_COLUMNS, CandidateSettings, rank_candidates
from cfaudit.discover.cochange import COCHANGE_COLUMNS
from cfaudit.discover.regions import CLUSTER_COLUMNS


def head_row(head, delta, low, high, label, data, offtarget=0.0, intervened=False):
    return {
        "intervention": "do(Cardiomegaly=0)", "head": head, "intervened": intervened, "n_images": 20,
        "effect": delta, "null_control": 0.0, "delta": delta, "ci_low": low, "ci_high": high,
        "offtarget_control": offtarget, "label_association": label, "data_association": data, "scale": 1.0,
    }  # fmt: skip


def cluster_row(frequency, low, offtarget, support, sign=-1):
    values = dict.fromkeys(CLUSTER_COLUMNS, 0.0)
    values.update(
        intervention="do(Cardiomegaly=0)", cluster=1, n_images=20, images_with=int(frequency * 20),
        frequency=frequency, ci_low=low, ci_high=min(1.0, frequency + 0.2), null_control=0.0,
        offtarget_control=offtarget, x=0.7, y=0.25, sign=sign, where="upper patient's left chest",
        head="Support Devices", head_change=-0.2, data_support=support, examples="a;b",
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
