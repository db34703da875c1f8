import math

import pandas as pd
import pytest

from cfaudit.data.labels import LabelPolicy, known_label_value, label_value
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError


def frame(**columns):
    rows = len(next(iter(columns.values())))
    data = {f: [math.nan] * rows for f in FINDINGS}
    data.update(columns)
    return pd.DataFrame(data)


def test_default_policy_is_u_zeros_and_blank_negative():
    out = LabelPolicy().binarize(frame(Edema=[1.0, 0.0, -1.0, math.nan]))
    assert out["Edema"].tolist() == [1.0, 0.0, 0.0, 0.0]


def test_u_ones_and_blank_kept_missing():
    out = LabelPolicy(uncertain="positive", blank="blank").binarize(frame(Edema=[-1.0, math.nan]))
    assert out["Edema"].iloc[0] == 1.0 and math.isnan(out["Edema"].iloc[1])


def test_no_finding_made_consistent():
    out = LabelPolicy().binarize(frame(**{"No Finding": [1.0, 1.0], "Edema": [1.0, 0.0]}))
    assert out["No Finding"].tolist() == [0.0, 1.0]


def test_bad_policy_named():
    with pytest.raises(CfauditError, match="uncertain='sometimes'"):
        LabelPolicy(uncertain="sometimes")
    with pytest.raises(CfauditError, match="unknown key"):
        LabelPolicy.from_dict({"uncertainty": "positive"})


def test_label_value_of_one_record_follows_the_policy():
    assert label_value({"Edema": -1.0}, "Edema") == 0.0
    assert label_value({"Edema": -1.0}, "Edema", LabelPolicy(uncertain="positive")) == 1.0
    assert math.isnan(label_value({}, "Edema", LabelPolicy(blank="blank")))
    assert label_value({"Edema": 1.0}, "Edema") == 1.0
    assert known_label_value({}, "Edema", LabelPolicy(blank="blank")) is None
    assert known_label_value({"Edema": -1.0}, "Edema") == 0.0


def test_label_value_agrees_with_binarize_on_no_finding_beside_a_pathology():
    import pandas as pd

    from cfaudit.data.labels import DEFAULT_POLICY, label_value
    from cfaudit.data.vocabulary import FINDINGS

    records = [
        {"No Finding": 1.0, "Cardiomegaly": 1.0},  # inconsistent: a pathology is present
        {"No Finding": 1.0, "Cardiomegaly": 0.0},
        {"No Finding": float("nan"), "Edema": -1.0},
    ]
    table = DEFAULT_POLICY.binarize(
        pd.DataFrame([{f: r.get(f, float("nan")) for f in FINDINGS} for r in records])
    )
    for k, record in enumerate(records):
        for finding in FINDINGS:
            expected, got = table.iloc[k][finding], label_value(record, finding, DEFAULT_POLICY)
            assert (pd.isna(expected) and pd.isna(got)) or expected == got, (k, finding, expected, got)


def test_from_dict_names_its_origin_and_refuses_what_is_not_a_mapping():
    assert LabelPolicy.from_dict(None) == LabelPolicy() == LabelPolicy.from_dict({})
    assert LabelPolicy.from_dict({"uncertain": "positive"}).uncertain == "positive"
    with pytest.raises(CfauditError, match=r"^label policy: uncertain='maybe' is not one of"):
        LabelPolicy.from_dict({"uncertain": "maybe"})
    with pytest.raises(
        CfauditError, match=r'^a\.json: "label_policy": blank=1 is not one of negative, blank'
    ):
        LabelPolicy.from_dict({"blank": 1}, origin='a.json: "label_policy"')
    with pytest.raises(CfauditError, match=r"^a\.json: expected a mapping with the keys uncertain and blank"):
        LabelPolicy.from_dict(["negative"], origin="a.json")  # type: ignore[arg-type]
