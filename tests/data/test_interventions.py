import math

import pytest

from cfaudit.data.interventions import (
    Intervention,
    caption_record,
    parse_interventions,
    source_prompt,
)
from cfaudit.data.labels import LabelPolicy
from cfaudit.data.prompts import record_prompt
from cfaudit.errors import CfauditError

RECORD = {"age": 63.0, "sex": "Male", "race": "White", "Cardiomegaly": 1.0, "Support Devices": 1.0}


@pytest.mark.parametrize(
    "text", ["do(sex=female, age=80)", "sex=F; AGE=80", "DO( age = 80 , sex = Female )", "age=80,sex=female"]
)
def test_parse_spellings_give_one_canonical_intervention(text):
    intervention = Intervention.parse(text)
    assert intervention.changes == (("age", 80.0), ("sex", "Female"))
    assert str(intervention) == "do(age=80, sex=Female)"
    assert intervention.slug == "age-80_sex-female"


def test_from_mapping_equals_parse_and_findings_are_canonical():
    a = Intervention.from_mapping({"pleural_effusion": "absent", "cardiomegaly": "present"})
    assert a.changes == (("Cardiomegaly", 1), ("Pleural Effusion", 0))
    assert a == Intervention.parse("Pleural-Effusion=0, Cardiomegaly=1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("heart=1", "unknown attribute 'heart'.*age, sex, race.*Cardiomegaly.*Support Devices"),
        ("sex=robot", "unknown sex 'robot'.*Male, Female"),
        ("race=martian", "unknown race 'martian'.*Asian, White, Black, Other"),
        ("Cardiomegaly=maybe", "present \\(1\\) or absent \\(0\\)"),
        ("age=200", "outside 0..120"),
        ("age", "is not A=v"),
        ("do()", "empty"),
        ("age=80, age=81", "twice"),
        ("No Finding=0", "which finding to add"),
    ],
)
def test_bad_interventions_are_clear_errors(text, message):
    with pytest.raises(CfauditError, match=message):
        Intervention.parse(text)


def test_parse_interventions_needs_one():
    assert len(parse_interventions(["age=80", "Cardiomegaly=0"])) == 2
    with pytest.raises(CfauditError, match="--do"):
        parse_interventions([])


def test_partial_prompt_names_only_the_changes():
    assert (
        Intervention.parse("Cardiomegaly=0").target_prompt(RECORD)
        == "Chest X-ray of subject with no cardiomegaly"
    )
    assert (
        Intervention.parse("age=80").target_prompt(RECORD, "partial") == "Chest X-ray of 80-years old subject"
    )


def test_full_prompt_swaps_one_attribute_of_the_record():
    assert (
        source_prompt(RECORD)
        == "Chest X-ray of 63-years old white male subject with cardiomegaly and support devices"
    )
    full = Intervention.parse("Cardiomegaly=0").target_prompt(RECORD, "full")
    assert full == "Chest X-ray of 63-years old white male subject with support devices"
    assert Intervention.parse("sex=female").target_prompt(RECORD, "full") == source_prompt(RECORD).replace(
        " male ", " female "
    )
    everything = Intervention.parse("No Finding=1").target_prompt(RECORD, "full")
    assert everything == "Chest X-ray of 63-years old white male subject with no finding"


@pytest.mark.parametrize(
    ("text", "reference", "target"),
    [
        ("Cardiomegaly=0", "subject with cardiomegaly", "subject with no cardiomegaly"),
        ("sex=female", "male subject", "female subject"),
        ("race=Black", "white subject", "black subject"),
        ("age=+20", "63-years old subject", "83-years old subject"),
        ("Edema=1", "subject", "subject with edema"),  # blank is negative by default: left unnamed
        ("No Finding=1", "subject with cardiomegaly and support devices", "subject with no finding"),
        (
            "sex=female, Cardiomegaly=0",
            "male subject with cardiomegaly",
            "female subject with no cardiomegaly",
        ),
    ],
)
def test_contrast_mode_measures_the_partial_target_against_the_current_values(text, reference, target):
    intervention = Intervention.parse(text).resolve(RECORD)
    assert intervention.reference_prompt(RECORD) == f"Chest X-ray of {reference}"
    assert intervention.target_prompt(RECORD, "contrast") == f"Chest X-ray of {target}"


def test_the_reference_leaves_unknown_values_unnamed():
    unknown = {"age": math.nan, "sex": "", "race": "Unknown", "Edema": math.nan}
    for text in ("race=White", "sex=Male", "age=80"):
        assert Intervention.parse(text).reference_prompt(unknown) == "Chest X-ray of subject"
    positive = LabelPolicy(uncertain="positive")
    assert Intervention.parse("Edema=0").reference_prompt({"Edema": -1.0}) == "Chest X-ray of subject"
    assert Intervention.parse("Edema=0").reference_prompt({"Edema": -1.0}, policy=positive) == (
        "Chest X-ray of subject with edema"
    )
    assert Intervention.parse("No Finding=1").reference_prompt({}) == "Chest X-ray of subject with no finding"


def test_apply_does_not_touch_the_original_record():
    changed = Intervention.parse("Edema=1").apply(RECORD)
    assert changed["Edema"] == 1.0 and changed["No Finding"] == 0.0 and "Edema" not in RECORD


def test_unknown_prompt_mode_and_full_without_record_are_errors():
    with pytest.raises(CfauditError, match="partial, full, contrast"):
        Intervention.parse("age=80").target_prompt(RECORD, "half")
    with pytest.raises(CfauditError, match="record"):
        Intervention.parse("age=80").target_prompt(None, "full")


def test_caption_record_reads_a_caption_back():
    caption = source_prompt(RECORD)
    record = caption_record(caption)
    assert record["age"] == 63.0 and record["sex"] == "Male" and record["race"] == "White"
    assert record["Cardiomegaly"] == 1.0 and math.isnan(record["Edema"])
    assert record_prompt(record) == caption
    lower = caption_record("chest x-ray of 40-years old female subject with no finding.")
    assert lower["race"] == "Unknown" and lower["No Finding"] == 1.0


@pytest.mark.parametrize(
    ("caption", "message"),
    [("A photo of a cat", "does not follow"), ("Chest X-ray of subject with edema", "no age or no sex"),
     ("Chest X-ray of 40-years old male subject with heartache", "'heartache' is not a finding")],
)  # fmt: skip
def test_caption_record_errors(caption, message):
    with pytest.raises(CfauditError, match=message):
        caption_record(caption)


def test_words_name_the_changed_attributes():
    assert Intervention.parse("age=80, sex=female, Pleural Effusion=0").words() == (
        "80",
        "female",
        "pleural effusion",
    )


def test_relative_age_shift_parses_resolves_and_names_files():
    from cfaudit.data.interventions import AgeShift, Intervention

    up = Intervention.parse("age=+20")
    assert up.changes == (("age", AgeShift(20.0)),) and up.is_relative
    assert str(up) == "do(age=+20)" and up.slug == "age-plus20"
    assert Intervention.parse("age=-15").slug == "age-minus15"
    assert up.resolve({"age": 61.0}).changes == (("age", 81.0),)
    assert up.target_prompt({"age": 61.0, "sex": "Male"}, "partial") == "Chest X-ray of 81-years old subject"
    assert not Intervention.parse("age=80").is_relative


@pytest.mark.parametrize("text", ["age=+0", "age=+500"])
def test_relative_age_errors_are_clear(text):
    from cfaudit.data.interventions import Intervention

    with pytest.raises(CfauditError):
        Intervention.parse(text).resolve({"age": 60.0})


def test_relative_age_needs_a_record():
    from cfaudit.data.interventions import Intervention

    with pytest.raises(CfauditError, match="needs its record"):
        Intervention.parse("age=+20").resolve(None)
