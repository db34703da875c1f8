"""`cfaudit review queue` and `cfaudit review open` from the command line (the page itself: tests/ui)."""

from __future__ import annotations

from pathlib import Path

from cfaudit.cli.main import main
from cfaudit.review.queue import read_queue


def test_review_queue_writes_the_queue_and_says_how_to_open_it(discovery: Path, capsys):
    assert main(["review", "queue", str(discovery), "--top", "3", "--images", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    queue = read_queue(discovery / "review")
    assert [c.key for c in queue.candidates] == ["rank-1", "rank-2", "rank-3"]
    assert f"review queue: {queue.path} (4 counterfactuals, 3 candidates)" in out
    assert "do(Cardiomegaly=0) → Support Devices flagged: 2" in out
    assert f"cfaudit review open {queue.folder}" in out


def test_review_errors_are_one_line_and_status_2(tmp_path: Path, edits: Path, capsys):
    assert main(["review", "queue", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["review", "open", str(tmp_path)]) == 2
    assert "no review queue there" in capsys.readouterr().err
    assert main(["review", "queue", str(edits)]) == 0
    (edits / "edits.csv").unlink()
    assert main(["review", "open", str(edits / "review"), "--port", "1"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "changed since the review queue" in err and "Traceback" not in err


def test_the_editor_opens_a_review_queue_too(tmp_path: Path, edits: Path, capsys):
    assert main(["ui", "--review", str(tmp_path)]) == 2
    assert "no review queue there" in capsys.readouterr().err
    assert main(["review", "queue", str(edits)]) == 0
    (edits / "edits.csv").unlink()
    assert main(["ui", "--review", str(edits / "review"), "--port", "1"]) == 2
    assert "changed since the review queue" in " ".join(capsys.readouterr().err.split())
