from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfaudit.cli.main import main
from cfaudit.data.records import DataIndex
from cfaudit.data.vocabulary import FINDINGS


def build_phantom(folder: Path, n_subjects: int = 20) -> Path:
    """A phantom-shaped folder: metadata.csv + 16x16 PNGs, two frontal images per subject."""
    rows = []
    for s in range(n_subjects):
        for k in range(2):
            image_id = f"ph{s:03d}{k}"
            rows.append(
                {"image_id": image_id, "path": f"images/{image_id}.png", "subject_id": f"{s:04d}",
                 "study_id": f"{s:04d}-{k}", "ViewPosition": "AP" if k else "PA", "age": 20 + s, "sex": "MF"[s % 2],
                 "race": ["White", "Black", "Asian", "Other"][s % 4],
                 **dict.fromkeys(FINDINGS, 0.0), "Pleural Effusion": 1.0 if s % 5 == 0 else 0.0}
            )  # fmt: skip
            (folder / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16), 50 + s, dtype=np.uint8)).save(folder / f"images/{image_id}.png")
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    return folder


def index_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["data", "index", "--source", "phantom", "--root", str(root), "--out", str(out), *extra]


def test_index_writes_index_json_and_splits(tmp_path, capsys):
    root = build_phantom(tmp_path / "phantom")
    out = tmp_path / "work" / "index.csv"
    assert main(index_args(root, out, "--seed", "3")) == 0
    printed = capsys.readouterr().out
    assert "phantom: 40 rows read, 40 kept, 0 skipped" in printed
    assert "split (random): train 28 images / 14 subjects" in printed
    index = DataIndex.read(out)
    assert len(index) == 40 and index.root == root.resolve()
    assert index.image_path(0).is_file()
    meta = json.loads((tmp_path / "work" / "index.json").read_text(encoding="utf-8"))
    assert meta["source"] == "phantom" and meta["split"]["seed"] == 3
    assert meta["summary"]["rows_kept"] == 40 and meta["label_policy"] == {
        "uncertain": "negative",
        "blank": "negative",
    }
    splits = pd.read_csv(tmp_path / "work" / "splits.csv", dtype=str)
    assert list(splits.columns) == ["subject_id", "split"] and len(splits) == 20
    assert splits["subject_id"].iloc[0] == "0000"
    per_subject = index.table.groupby("subject_id")["split"].agg(["nunique", "first"])
    assert per_subject["nunique"].max() == 1  # no subject in two splits
    assert per_subject["first"].to_dict() == dict(zip(splits["subject_id"], splits["split"], strict=True))
    assert not list((tmp_path / "work").glob(".*.part"))  # no temporary files left behind


def test_same_seed_same_split_and_saved_split_reused(tmp_path):
    root = build_phantom(tmp_path / "phantom")
    assert main(index_args(root, tmp_path / "a" / "index.csv", "--seed", "7")) == 0
    assert main(index_args(root, tmp_path / "b" / "index.csv", "--seed", "7")) == 0
    assert main(index_args(root, tmp_path / "c" / "index.csv", "--seed", "8")) == 0
    a, b, c = (pd.read_csv(tmp_path / name / "splits.csv", dtype=str) for name in "abc")
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    # a saved split wins over the seed
    saved = tmp_path / "a" / "splits.csv"
    assert main(index_args(root, tmp_path / "d" / "index.csv", "--seed", "8", "--splits", str(saved))) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "d" / "splits.csv", dtype=str), a)
    assert json.loads((tmp_path / "d" / "index.json").read_text())["split"]["method"] == "file"


def test_stats_formats(tmp_path, capsys):
    root = build_phantom(tmp_path / "phantom")
    out = tmp_path / "index.csv"
    assert main(index_args(root, out)) == 0
    capsys.readouterr()
    assert main(["data", "stats", str(out), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("split,Sex M %,Sex F %,Pleural Effusion %")
    everything = lines[4].split(",")
    # all 20 subjects: half male; PE for subjects 0, 5, 10, 15 (4 of 20); races cycle W, B, A, O
    assert everything[0] == "all" and everything[1:4] == ["50.000", "50.000", "20.000"]
    assert everything[4:9] == ["25.000", "25.000", "25.000", "40", "20"]
    assert main(["data", "stats", str(out), "--format", "markdown"]) == 0
    assert "| All | 50.0 / 50.0 | 20.0 | 25.0 / 25.0 / 25.0 | 40 | 20 |" in capsys.readouterr().out
    assert main(["data", "stats", str(out)]) == 0
    table = capsys.readouterr().out
    assert "Validation" in table and "50.0 / 50.0" in table
    assert main(["data", "stats", str(out), "--format", "csv", "--uncertain", "positive"]) == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--on-bad-row", "ignore"], "--on-bad-row 'ignore' is not one of error, skip"),
        (["--fractions", "0.5,0.5,0.5"], "sum to 1"),
        (["--split-source", "official"], "has no official split file"),
        (["--mimic-iv", "."], "the phantom source does not take --mimic-iv"),
        (["--uncertain", "maybe"], "uncertain='maybe' is not one of"),
    ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, extra, message):
    root = build_phantom(tmp_path / "phantom", n_subjects=2)
    assert main(index_args(root, tmp_path / "index.csv", *extra)) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "index.csv").exists()


def test_bad_row_exits_2_naming_file_and_line_and_skip_records_it(tmp_path, capsys):
    root = build_phantom(tmp_path / "phantom", n_subjects=4)
    table = pd.read_csv(root / "metadata.csv", dtype=str)
    table.loc[3, "age"] = "200"
    table.to_csv(root / "metadata.csv", index=False)
    out = tmp_path / "index.csv"
    assert main(index_args(root, out)) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "metadata.csv, line 5: age outside 0..120 (value '200')" in err
    assert main(index_args(root, out, "--on-bad-row", "skip")) == 0
    assert "skipped 1: age outside 0..120" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["summary"]["skipped"]["age outside 0..120"]["count"] == 1
    assert len(DataIndex.read(out)) == 7
    assert main(["data", "stats", str(tmp_path / "absent.csv")]) == 2


def test_csv_source_with_column_map(tmp_path, capsys):
    root = build_phantom(tmp_path / "mine", n_subjects=4)
    table = pd.read_csv(root / "metadata.csv", dtype=str).rename(
        columns={"path": "file", "subject_id": "patient"}
    )
    table.drop(columns=["Fracture"]).to_csv(root / "labels.csv", index=False)
    column_map = tmp_path / "columns.json"
    column_map.write_text(
        json.dumps({"csv": "labels.csv", "columns": {"path": "file", "subject_id": "patient", "age": "age",
                                                      "sex": "sex", "view": "ViewPosition"}}),
        encoding="utf-8",
    )  # fmt: skip
    out = tmp_path / "index.csv"
    assert main(["data", "index", "--source", "csv", "--root", str(root), "--columns", str(column_map),
                 "--out", str(out), "--check-images", "decode"]) == 0  # fmt: skip
    printed = " ".join(capsys.readouterr().out.split())
    assert "csv: 8 rows read, 8 kept, 0 skipped" in printed
    assert "warning: " in printed and "Fracture" in printed
    index = DataIndex.read(out)
    assert set(index.table["race"]) == {"Unknown"} and index.table["Fracture"].isna().all()
    assert list(index.table["image_id"])[:2] == ["images/ph0000", "images/ph0001"]  # path without extension
    assert main(["data", "index", "--source", "csv", "--root", str(root), "--out", str(out)]) == 2
    assert "needs a column map" in capsys.readouterr().err


def test_saved_split_with_extra_subjects_is_kept_and_counted(tmp_path, capsys):
    root = build_phantom(tmp_path / "phantom", n_subjects=4)
    shipped = tmp_path / "work" / "splits.csv"
    shipped.parent.mkdir()
    shipped.write_text(
        "subject_id,split\n0000,train\n0001,val\n0002,test\n0003,train\n0099,test\n", encoding="utf-8"
    )
    out = tmp_path / "work" / "index.csv"
    assert main(index_args(root, out, "--splits", str(shipped))) == 0
    assert "1 subject(s) in" in " ".join(capsys.readouterr().out.split())
    assert "0099,test" in shipped.read_text(encoding="utf-8")  # the shipped file is not cut down
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["split"]["unused_subjects"] == 1
    assert DataIndex.read(out).table.groupby("subject_id")["split"].first().to_dict() == {
        "0000": "train", "0001": "val", "0002": "test", "0003": "train",
    }  # fmt: skip
    shipped.write_text("subject_id,split\n0000,train\n", encoding="utf-8")
    assert main(index_args(root, out, "--splits", str(shipped))) == 2
    assert "3 subject(s) of the data are not in the split file" in " ".join(capsys.readouterr().err.split())


def test_a_bad_out_is_refused_before_anything_is_read_or_written(tmp_path, capsys):
    root = build_phantom(tmp_path / "phantom", n_subjects=2)
    (tmp_path / "idxdir").mkdir()
    (tmp_path / "splits.csv").write_text("subject_id,split\nkeep,train\n")  # another index's: must survive
    assert main(index_args(root, tmp_path / "idxdir")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {tmp_path / 'idxdir'} is a folder; --out names the file to write (e.g. " in err
    assert "Traceback" not in err
    assert (tmp_path / "splits.csv").read_text() == "subject_id,split\nkeep,train\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idxdir", "phantom", "splits.csv"]
    assert not any((tmp_path / "idxdir").iterdir())
    (tmp_path / "afile").write_text("x")
    assert main(index_args(root, tmp_path / "afile" / "index.csv")) == 2
    assert (
        "afile is a file, so no folder can be made below it; choose another --out" in capsys.readouterr().err
    )
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "index.json").mkdir()
    assert main(index_args(root, tmp_path / "work" / "index.csv")) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "index.json is a folder; `cfaudit data index` writes index.json beside --out" in err
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["index.json"]


def test_phantom_refuses_an_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert (
        main(["phantom", "--out", str(tmp_path / "afile"), "--n", "4", "--size", "64", "--workers", "1"]) == 2
    )
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {tmp_path / 'afile'} is a file, not a folder; --out names a folder" in err
    assert main(["phantom", "--out", str(tmp_path / "afile" / "ph"), "--n", "4", "--workers", "1"]) == 2
    assert "afile is a file, so no folder can be made below it" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
