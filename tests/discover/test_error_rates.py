import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cfaudit.discover.clusters import CLUSTER_COLUMNS
from cfaudit.discover.cochange import COCHANGE_COLUMNS
from cfaudit.discover.error_rates import POWER_COLUMNS, apply_error_rates, power_table, relation_q
from cfaudit.discover.significance import detectable_change, detectable_share, q_values


def cochange(p_values, intervened=(), n=12, intervention="do(Edema=1)"):
    heads = ["Cardiomegaly", "age", "Support Devices", "Edema"][: len(p_values)]
    rows = []
    for head, p in zip(heads, p_values, strict=True):
        rows.append(
            dict.fromkeys(COCHANGE_COLUMNS, math.nan)
            | {"intervention": intervention, "head": head, "intervened": head in intervened, "n_images": n,
               "p_value": p, "spread": 5.0 if head == "age" else 0.1, "offtarget_control": 0.02,
               "scale": 50.0 if head == "age" else 1.0}
        )  # fmt: skip
    return pd.DataFrame(rows, columns=list(COCHANGE_COLUMNS))


def clusters(p_values, n=12, offtarget=0.0):
    rows = [
        dict.fromkeys(CLUSTER_COLUMNS, math.nan)
        | {"intervention": "do(Edema=1)", "cluster": k + 1, "n_images": n, "p_value": p, "offtarget_control": offtarget}
        for k, p in enumerate(p_values)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=list(CLUSTER_COLUMNS))


def test_q_values_span_every_tested_head_and_cluster_but_not_the_targeted_heads():
    heads = cochange([0.001, 0.02, 0.5, 0.0001], intervened=("Edema",))
    found = clusters([0.03, 0.9])
    heads_out, clusters_out, family = apply_error_rates(heads, found, alpha=0.1)
    expected = stats.false_discovery_control([0.001, 0.02, 0.5, 0.03, 0.9])
    assert np.allclose(heads_out["q_value"].iloc[:3], expected[:3]) and math.isnan(
        heads_out["q_value"].iloc[3]
    )
    assert np.allclose(clusters_out["q_value"], expected[3:])
    assert family.tests == 5 and family.rejections == int((expected <= 0.1).sum())
    assert family.level == pytest.approx(0.1 * (family.rejections + 1) / 5)
    assert heads["q_value"].isna().all()  # the inputs are left alone


def test_detectable_effects_are_in_each_rows_unit_at_the_runs_level():
    heads_out, clusters_out, family = apply_error_rates(
        cochange([0.001, 0.02, 0.5]), clusters([0.03], n=20, offtarget=0.1), alpha=0.1
    )
    age = heads_out[heads_out["head"] == "age"].iloc[0]
    assert age["detectable"] == pytest.approx(float(detectable_change(5.0, 12, family.level, shift=0.02)))
    assert clusters_out["detectable"].iloc[0] == pytest.approx(detectable_share(20, family.level, 0.1))


def test_power_table_summarises_each_intervention():
    heads = pd.concat(
        [cochange([0.001, 0.02, 0.5]), cochange([0.4, 0.6], n=3, intervention="do(sex=Female)")]
    )
    heads_out, _, family = apply_error_rates(heads, clusters([]), alpha=0.1)
    table = power_table(
        heads_out, family, {"do(Edema=1)": 12, "do(sex=Female)": 3}, regional={"do(Edema=1)"},
        requested={"do(Edema=1)": 40, "do(sex=Female)": 40}, eligible={"do(Edema=1)": 12, "do(sex=Female)": 3},
    )  # fmt: skip
    assert list(table.columns) == list(POWER_COLUMNS)
    edema, sex = table.iloc[0], table.iloc[1]
    assert edema["detectable_share"] == pytest.approx(detectable_share(12, family.level))
    assert math.isnan(sex["detectable_share"])  # a whole-image attribute: no cluster is looked for
    # At 3 images no sign-flip test reaches the level (2^-2 > level): every head is undetectable
    assert sex["heads_tested"] == 2 and sex["heads_undetectable"] == 2 and math.isinf(sex["detectable_head"])
    assert edema["heads_undetectable"] == 0 and 0 < edema["detectable_head"] < 1
    assert edema["requested"] == 40 and edema["eligible"] == 12


def test_a_relation_is_screened_on_the_edits_and_confirmed_on_real_images_among_the_screened():
    edit_q = np.array([0.001, 0.001, 0.001, 0.5, 0.002])
    data_p = np.array([0.01, 0.6, math.nan, 0.0001, 0.02])
    q = relation_q(edit_q, data_p, alpha=0.1)
    # confirmation family: the 3 screened rows with real images (0.01, 0.6, 0.02) -> BH 0.03, 0.6, 0.03
    assert q.tolist() == pytest.approx([0.03, 0.6, 0.001, 0.5, 0.03])
    # a strong real-image p cannot rescue a change the editor does not make (row 4 keeps its edit q)
    heads = cochange([0.001, 0.001, 0.001])
    heads["data_p"] = [0.002, 0.6, math.nan]  # backed; real images do not show it; no real images
    found = clusters([0.0001, 0.0001])
    found["data_p"] = [0.7, 0.0001]
    heads_q, clusters_q, family = apply_error_rates(heads, found, alpha=0.1)
    assert heads_q["q_value"].iloc[1] >= 0.6 and clusters_q["q_value"].iloc[0] >= 0.7  # never flagged
    assert heads_q["q_value"].iloc[0] <= 0.1 and clusters_q["q_value"].iloc[1] <= 0.1
    assert family.tests == 5 and family.rejections == 5  # the screen: every edit change is real
    older = apply_error_rates(heads.drop(columns="data_p"), found.drop(columns="data_p"), alpha=0.1)
    assert older[0]["q_value"].iloc[0] <= 0.1  # tables without data_p: the edit's q


def test_screen_and_confirm_keeps_false_relations_rare_when_the_editor_has_many_quirks():
    """Null data, an editor with 20 real quirks among 200 tests: the share of runs with any false relation."""
    rng = np.random.default_rng(0)
    runs, false = 2000, 0
    for _ in range(runs):
        edit_p = np.concatenate([rng.uniform(0, 1e-4, 20), rng.uniform(0, 1, 180)])  # quirks are real edits
        q = relation_q(q_values(edit_p), rng.uniform(0, 1, 200), alpha=0.1)  # real images: nothing there
        false += bool(np.any(q <= 0.1))
    assert false / runs <= 0.1 + 3 * math.sqrt(0.09 / runs)
