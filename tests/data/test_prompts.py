import math

import pytest

from cfaudit.data.labels import LabelPolicy
from cfaudit.data.prompts import (
    CAPTION_STATEMENTS,
    PromptTemplate,
    parse_attribute_value,
    partial_prompt,
    record_findings,
    record_prompt,
    records_findings,
    subset_caption,
)
from cfaudit.data.vocabulary import FINDINGS
from cfaudit.errors import CfauditError


def record(**labels):
    base = {"age": 63.4, "race": "White", "sex": "M"}
    return {**base, **labels}


def test_paper_template_exact():
    text = record_prompt(record(**{"Support Devices": 1, "Cardiomegaly": 1, "Pleural Effusion": 1}))
    assert text == (
        "Chest X-ray of 63-years old white male subject with cardiomegaly, pleural effusion and support devices"
    )


def test_no_finding_wording_and_unnamed_race():
    assert (
        record_prompt({"age": 30, "race": "Other", "sex": "F"})
        == "Chest X-ray of 30-years old female subject with no finding"
    )
    assert record_prompt({"age": 30, "race": "Unknown", "sex": "F", "No Finding": 1}).endswith(
        "with no finding"
    )


def test_findings_follow_chexpert_order_whatever_the_record_order():
    a = record_prompt(record(**{"Support Devices": 1, "Edema": 1, "Cardiomegaly": 1}))
    b = record_prompt(record(Cardiomegaly=1, Edema=1, **{"Support Devices": 1}))
    assert a == b and a.endswith("with cardiomegaly, edema and support devices")


def test_uncertain_follows_policy():
    rec = record(**{"Pleural Effusion": -1.0, "Edema": math.nan})
    assert record_prompt(rec).endswith("with no finding")
    assert record_prompt(rec, policy=LabelPolicy(uncertain="positive")).endswith("with pleural effusion")


def test_partial_prompts_name_only_the_change():
    assert partial_prompt({"age": 80}) == "Chest X-ray of 80-years old subject"
    assert partial_prompt({"Cardiomegaly": 0}) == "Chest X-ray of subject with no cardiomegaly"
    assert partial_prompt({"sex": "female"}) == "Chest X-ray of female subject"
    assert partial_prompt({"pleural_effusion": "present", "edema": "absent"}) == (
        "Chest X-ray of subject with pleural effusion and no edema"
    )


def test_custom_template_round_trips():
    template = PromptTemplate.from_dict(
        {"prefix": "Frontal radiograph of", "lowercase": False, "named_races": ["white"]}
    )
    assert PromptTemplate.from_dict(template.to_dict()) == template
    assert record_prompt(record(Edema=1), template=template) == (
        "Frontal radiograph of 63-years old White Male subject with Edema"
    )
    with pytest.raises(CfauditError, match="unknown key"):
        PromptTemplate.from_dict({"prefx": "x"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("height", 3, "unknown finding"),
        ("age", 150, "outside"),
        ("sex", "x", "unknown sex"),
        ("Edema", "maybe", "present"),
    ],
)
def test_bad_interventions_are_clear(name, value, message):
    with pytest.raises(CfauditError, match=message):
        parse_attribute_value(name, value)


def _flags(*names: str) -> list[bool]:
    return [name in names for name in CAPTION_STATEMENTS]


def test_subset_captions_name_only_the_kept_statements_and_the_named_absent_findings():
    record = {
        "age": 63.4,
        "sex": "M",
        "race": "White",
        "Cardiomegaly": 1.0,
        "Edema": -1.0,
        "Support Devices": 1,
    }
    assert subset_caption(record, [True] * len(CAPTION_STATEMENTS)) == record_prompt(record)
    assert subset_caption(record, _flags("Cardiomegaly")) == "Chest X-ray of subject with cardiomegaly"
    assert subset_caption(record, _flags("age", "Support Devices")) == (
        "Chest X-ray of 63-years old subject with support devices"
    )
    assert subset_caption(record, _flags()) == "Chest X-ray of subject"
    # an absent finding is named only when flagged; uncertain Edema is negative under the default policy
    no_edema = [f == "Edema" for f in FINDINGS]
    assert subset_caption(record, _flags(), no_edema) == partial_prompt({"Edema": 0})
    assert subset_caption(record, _flags("sex"), [f == "Cardiomegaly" for f in FINDINGS]) == (
        "Chest X-ray of male subject"
    )  # a present finding is never named as absent
    healthy = {"age": 40, "sex": "Female", "race": "Black"}
    assert subset_caption(healthy, _flags("No Finding")) == "Chest X-ray of subject with no finding"
    assert subset_caption(healthy, _flags("race", "Cardiomegaly")) == "Chest X-ray of black subject"
    with pytest.raises(ValueError, match="flags"):
        subset_caption(record, [True])


@pytest.mark.parametrize(
    "policy",
    [LabelPolicy(), LabelPolicy(uncertain="positive"), LabelPolicy(uncertain="blank", blank="blank")],
    ids=["u-zeros", "u-ones", "keep-missing"],
)
def test_findings_of_many_records_at_once_are_each_records_own(policy):
    """A training run works out every record's findings as one table (``records_findings``) instead of one table
    per caption: each record gets what it gets alone, whatever the rest of the table holds (mixed types, a column
    missing from some records, a record with nothing positive)."""
    records = [
        {"Cardiomegaly": 1.0, "Edema": -1.0, "Pleural Effusion": 0.0, "Support Devices": math.nan},
        {"Cardiomegaly": None, "Edema": 1, "No Finding": 1.0},  # No Finding contradicted by Edema
        {"No Finding": 1.0},  # every other column missing
        {f: -1.0 for f in FINDINGS},
        {f: 0.0 for f in FINDINGS},
        {"Lung Opacity": "1.0", "Fracture": "0"},  # read from text
    ]
    together = records_findings(records, policy)
    assert together == [record_findings(record, policy) for record in records]
    assert together[0][0][0] == "Cardiomegaly" and ("Edema" in together[0][0]) == (
        policy.uncertain == "positive"
    )
    assert records_findings([], policy) == []
