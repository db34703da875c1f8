import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from cfaudit import atomic_io


def test_file_appears_whole_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_io.write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_failure_leaves_nothing_behind(tmp_path):
    target = tmp_path / "table.csv"
    atomic_io.write_csv(target, pd.DataFrame({"x": [1]}))
    before = target.read_bytes()
    with pytest.raises(RuntimeError), atomic_io.atomic_open(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("killed")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_read_modes_refused(tmp_path):
    with pytest.raises(ValueError, match="not a write mode"), atomic_io.atomic_open(tmp_path / "x", "r"):
        pass


def test_remove_staged_files_takes_only_staging_files(tmp_path: Path) -> None:
    from cfaudit.atomic_io import remove_staged_files

    (tmp_path / "sub").mkdir()
    staged = [tmp_path / ".a.png.x1.part", tmp_path / "sub" / ".b.npy.y2.part"]
    kept = [tmp_path / "a.png", tmp_path / "notes.part", tmp_path / "sub" / "b.npy"]
    for path in staged + kept:
        path.write_bytes(b"x")
    assert remove_staged_files(tmp_path) == [staged[0]]
    assert staged[1].exists()
    assert remove_staged_files(tmp_path, recursive=True) == [staged[1]]
    assert all(path.exists() for path in kept) and not any(path.exists() for path in staged)
    assert remove_staged_files(tmp_path / "missing") == []
