import pytest

from cfaudit.data.vocabulary import (
    FINDINGS,
    canonical_finding,
    check_age,
    normalize_race,
    normalize_sex,
    normalize_view,
)
from cfaudit.errors import CfauditError


def test_fourteen_chexpert_findings():
    assert len(FINDINGS) == 14 and FINDINGS[0] == "No Finding" and FINDINGS[-1] == "Support Devices"


@pytest.mark.parametrize(
    ("spelling", "race"),
    [
        ("WHITE", "White"),
        ("WHITE - RUSSIAN", "White"),
        ("BLACK/AFRICAN AMERICAN", "Black"),
        ("BLACK/CAPE VERDEAN", "Black"),
        ("ASIAN - CHINESE", "Asian"),
        ("HISPANIC/LATINO - PUERTO RICAN", "Other"),
        ("AMERICAN INDIAN/ALASKA NATIVE", "Other"),
        ("UNABLE TO OBTAIN", "Unknown"),
        ("PATIENT DECLINED TO ANSWER", "Unknown"),
        ("White, non-Hispanic", "White"),
        ("", "Unknown"),
    ],
)
def test_race_collapse(spelling, race):
    assert normalize_race(spelling) == race


def test_unknown_values_raise_with_valid_list():
    with pytest.raises(CfauditError, match="valid values"):
        normalize_race("martian")
    with pytest.raises(CfauditError, match="unknown sex"):
        normalize_sex("X")
    with pytest.raises(CfauditError, match="unknown view"):
        normalize_view("LATERAL")
    with pytest.raises(CfauditError, match="outside"):
        check_age(121)


def test_spellings():
    assert normalize_sex("f") == "Female" and normalize_view("pa") == "PA"
    assert canonical_finding("pleural_effusion") == "Pleural Effusion"
    assert canonical_finding("support-devices") == "Support Devices"
