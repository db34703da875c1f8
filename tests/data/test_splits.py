from __future__ import annotations

import pandas as pd
import pytest

from cfaudit.data.splits import (
    apply_image_splits,
    apply_subject_splits,
    check_fractions,
    parse_fractions,
    random_subject_splits,
    read_splits,
    split_counts,
    subject_splits,
    write_splits,
)
from cfaudit.errors import CfauditError


def images(n_subjects: int = 20, per_subject: int = 3) -> pd.DataFrame:
    """An index-like table: several images per subject, subject ids with leading zeros."""
    return pd.DataFrame(
        {
            "image_id": [f"i{s}-{k}" for s in range(n_subjects) for k in range(per_subject)],
            "subject_id": [f"{s:04d}" for s in range(n_subjects) for _ in range(per_subject)],
            "split": "",
        }
    )


def test_sizes_follow_fractions_and_every_subject_is_assigned_once():
    splits = random_subject_splits([f"s{i}" for i in range(100)], seed=3)
    assert splits.value_counts().to_dict() == {"train": 70, "val": 15, "test": 15}
    assert splits.index.is_unique and list(splits.index) == sorted(splits.index)
    uneven = random_subject_splits([f"s{i}" for i in range(7)], seed=0, fractions=(0.5, 0.25, 0.25))
    # cumulative cuts at rint(3.5) = 4 and rint(5.25) = 5 of 7 subjects
    assert uneven.value_counts().reindex(["train", "val", "test"]).tolist() == [4, 1, 2]


def test_same_seed_same_split_other_seed_other_split_input_order_irrelevant():
    subjects = [f"{i:05d}" for i in range(60)]
    first = random_subject_splits(subjects, seed=0)
    again = random_subject_splits(
        list(reversed(subjects)) + subjects[:5], seed=0
    )  # order and repeats ignored
    pd.testing.assert_series_equal(first, again)
    assert not first.equals(random_subject_splits(subjects, seed=1))


def test_the_cut_is_the_documented_recipe():
    """Sorted ids, permuted by default_rng(seed), cut at the rounded cumulative fractions."""
    import numpy as np

    subjects = sorted(f"p{i}" for i in range(10))
    order = np.random.default_rng(5).permutation(10)
    expected = {subjects[j]: "train" for j in order[:7]} | {subjects[j]: "val" for j in order[7:8]}
    expected |= {subjects[j]: "test" for j in order[8:]}
    assert random_subject_splits(subjects, seed=5).to_dict() == expected


def test_no_subject_crosses_splits_when_applied_to_images():
    table = images()
    assigned, unused = apply_subject_splits(table, random_subject_splits(table["subject_id"], seed=0), "test")
    assert unused == 0
    assert assigned.groupby("subject_id")["split"].nunique().max() == 1
    assert set(assigned["split"]) == {"train", "val", "test"}
    counts = split_counts(assigned)
    assert counts["all"] == {"images": 60, "subjects": 20}
    assert counts["train"] == {"images": 42, "subjects": 14} and counts["val"]["subjects"] == 3


def test_saved_split_round_trips_and_is_reused(tmp_path):
    table = images()
    splits = random_subject_splits(table["subject_id"], seed=4)
    path = tmp_path / "splits.csv"
    write_splits(path, splits)
    text = path.read_text(encoding="utf-8").splitlines()
    assert text[0] == "subject_id,split" and text[1].startswith("0000,")  # ids keep their leading zeros
    pd.testing.assert_series_equal(read_splits(path), splits, check_dtype=False)
    first, _ = apply_subject_splits(table, read_splits(path), str(path))
    second, _ = apply_subject_splits(table.sample(frac=1.0, random_state=0), read_splits(path), str(path))
    assert first.set_index("image_id")["split"].to_dict() == second.set_index("image_id")["split"].to_dict()


def test_subjects_missing_from_the_file_are_an_error_extra_ones_a_count(tmp_path):
    table = images(6, 1)
    splits = random_subject_splits([*table["subject_id"], "9998", "9999"], seed=0)
    _, unused = apply_subject_splits(table, splits, "splits.csv")
    assert unused == 2
    with pytest.raises(CfauditError, match=r"splits\.csv: 1 subject\(s\) of the data are not in the split file "
                                           r"\(e\.g\. '0005'\)"):  # fmt: skip
        apply_subject_splits(table, splits.drop("0005"), "splits.csv")


def test_reading_bad_split_files(tmp_path):
    path = tmp_path / "splits.csv"
    path.write_text("subject_id,split\na,train\nb,holdout\n", encoding="utf-8")
    with pytest.raises(
        CfauditError, match=r"splits\.csv, line 3: bad row \(subject_id 'b', split 'holdout'\)"
    ):
        read_splits(path)
    path.write_text("subject_id,split\na,train\nb,validate\na,test\n", encoding="utf-8")
    with pytest.raises(CfauditError, match=r"splits\.csv, line 4: subject 'a' is given two different splits"):
        read_splits(path)
    path.write_text("subject,split\na,train\n", encoding="utf-8")
    with pytest.raises(CfauditError, match=r"missing column\(s\) subject_id"):
        read_splits(path)
    path.write_text("subject_id,split\na,train\nb,validate\nb,val\n", encoding="utf-8")
    assert read_splits(path).to_dict() == {"a": "train", "b": "val"}  # validate == val; a repeat is fine
    with pytest.raises(CfauditError, match=r"no such split file"):
        read_splits(tmp_path / "absent.csv")


def test_image_level_split_must_keep_subjects_whole():
    table = images(2, 2)
    per_image = pd.Series({"i0-0": "train", "i0-1": "train", "i1-0": "test", "i1-1": "test"})
    assert list(apply_image_splits(table, per_image, "official")["split"]) == [
        "train",
        "train",
        "test",
        "test",
    ]
    crossing = per_image.copy()
    crossing["i1-1"] = "train"
    with pytest.raises(CfauditError, match=r"subject '0001' has images in several splits \(test, train\)"):
        apply_image_splits(table, crossing, "x")
    with pytest.raises(CfauditError, match=r"official: 1 image\(s\) are not in the official split file"):
        apply_image_splits(table, per_image.drop("i0-1"), "official")
    with pytest.raises(CfauditError, match=r"rows without a split"):
        subject_splits(table)


@pytest.mark.parametrize(
    "fractions", [(0.7, 0.2, 0.2), (0.5, 0.5), (1.2, -0.1, -0.1), (float("nan"), 0.5, 0.5)]
)
def test_bad_fractions(fractions):
    with pytest.raises(CfauditError, match=r"sum to 1"):
        check_fractions(fractions)


def test_parse_fractions():
    assert parse_fractions("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    assert parse_fractions("1,0,0") == (1.0, 0.0, 0.0)
    with pytest.raises(CfauditError, match=r"expected three numbers"):
        parse_fractions("70%,15%,15%")
