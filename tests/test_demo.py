"""The README's main job, end to end on a small phantom."""

import pytest

from cfaudit.cli.main import main
from cfaudit.data.records import DataIndex
from cfaudit.demo import run_demo


def test_demo_makes_phantom_index_and_table1(tmp_path):
    result = run_demo(tmp_path / "demo", n=60, size=64, seed=3, workers=1)
    index = DataIndex.read(result.index)
    assert len(index) == 60
    assert set(index.table["split"]) <= {"train", "val", "test"}
    # Patient-level split: no subject in two splits.
    assert index.table.groupby("subject_id")["split"].nunique().max() == 1
    assert all(index.image_path(i).is_file() for i in range(len(index)))
    assert (result.phantom / "ground_truth").is_dir() and result.contact_sheet.is_file()
    table = result.table1
    assert int(table.loc["all", "Samples"]) == 60
    assert int(table.loc[["train", "val", "test"], "Samples"].sum()) == 60
    males = (index.table["sex"] == "Male").mean() * 100
    assert float(table.loc["all", "Sex M %"]) == pytest.approx(males)


def test_demo_command_is_resumable(tmp_path, capsys):
    args = ["demo", "--out", str(tmp_path / "demo"), "--n", "30", "--size", "64", "--workers", "1"]
    assert main(args) == 0
    first = (tmp_path / "demo" / "index.csv").read_bytes()
    assert main(args) == 0
    assert (tmp_path / "demo" / "index.csv").read_bytes() == first
    assert "Table 1" in capsys.readouterr().out
