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


def test_a_folder_where_the_file_goes_is_one_clear_error_and_nothing_is_left(tmp_path: Path) -> None:
    from cfaudit.errors import CfauditError

    (tmp_path / "out.json").mkdir()
    with pytest.raises(
        CfauditError, match=r"out\.json: cannot write it \(.*a folder is there.*\); choose another"
    ):
        atomic_io.write_json(tmp_path / "out.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no staging file left
    (tmp_path / "afile").write_text("x")
    with pytest.raises(
        CfauditError, match=r"sub/out\.csv: cannot write it \(.*afile is a file, not a folder\)"
    ):
        atomic_io.write_text(tmp_path / "afile" / "sub" / "out.csv", "x")
    assert (tmp_path / "afile").read_text() == "x"


def test_check_output_folder_refuses_files_in_the_way_and_leaves_nothing(tmp_path: Path) -> None:
    from cfaudit.errors import CfauditError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(
        CfauditError, match=r"afile is a file, not a folder; --out names a folder .*another --out"
    ):
        atomic_io.check_output_folder(tmp_path / "afile")
    with pytest.raises(
        CfauditError, match=r"afile is a file, so no folder can be made below it; .*--output-dir"
    ):
        atomic_io.check_output_folder(tmp_path / "afile" / "a" / "b", "--output-dir")
    assert atomic_io.check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # proved creatable, then removed again
    assert atomic_io.check_output_folder(tmp_path) == tmp_path
    (tmp_path / "folder").mkdir()
    with pytest.raises(
        CfauditError, match=r"folder is a folder; --out names the file to write \(e\.g\. .*index\.csv\)"
    ):
        atomic_io.check_output_file(tmp_path / "folder", example="index.csv")
    assert atomic_io.check_output_file(tmp_path / "x" / "index.csv") == tmp_path / "x" / "index.csv"
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(
    not Path("/proc/self").is_dir(), reason="needs Linux /proc (where nothing can be created)"
)
def test_a_folder_that_cannot_be_created_is_one_clear_error() -> None:
    from cfaudit.errors import CfauditError

    with pytest.raises(
        CfauditError, match=r"^/proc/cfaudit-nope: cannot create this folder \(.*\); choose another --out"
    ):
        atomic_io.check_output_folder("/proc/cfaudit-nope")
    with pytest.raises(CfauditError, match=r"^/proc/cfaudit-nope/x\.json: cannot write it"):
        atomic_io.write_json("/proc/cfaudit-nope/x.json", {})


def test_os_error_message_names_the_path_the_cause_and_what_to_do(tmp_path: Path) -> None:
    import errno

    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError) as caught:
        (tmp_path / "afile").mkdir(parents=True, exist_ok=True)
    message = atomic_io.os_error_message(caught.value)
    assert message == (
        f"{tmp_path / 'afile'}: File exists (a file is where a folder is needed); check the path; for an output, "
        "choose another (--out, --output-dir) where you can write"
    )
    with pytest.raises(IsADirectoryError) as folder:
        open(tmp_path, "w")  # noqa: SIM115
    assert "(a folder is where a file is needed)" in str(atomic_io.os_error_message(folder.value))
    renamed = OSError(errno.EISDIR, "Is a directory", str(tmp_path / ".x.part"), None, str(tmp_path / "x"))
    assert str(atomic_io.os_error_message(renamed)).startswith(f"{tmp_path / 'x'}: Is a directory")
    full = atomic_io.os_error_message(OSError(errno.ENOSPC, "No space left on device"))
    assert full == "No space left on device; free some space, or write the output to another disk"
    assert atomic_io.os_error_message(OSError("image file is truncated")) is None  # a bug: keep its traceback
