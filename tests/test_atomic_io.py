import os
import stat

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
