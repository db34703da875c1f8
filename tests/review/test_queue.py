"""Review queues: made from an edit folder or a discovery, read back, and checked against a changed edit folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cfaudit.data.images import load_image, save_image
from cfaudit.errors import CfauditError
from cfaudit.review.queue import (
    QUEUE_FILE,
    RATINGS_FILE,
    candidates_changed,
    changed_items,
    make_queue,
    read_queue,
    require_unchanged,
)


def test_a_queue_of_an_edit_folder_has_one_candidate_per_intervention(edits: Path):
    queue = make_queue(edits)

    assert queue.path == (edits / "review" / QUEUE_FILE).absolute() and queue.path.is_file()
    assert queue.ratings_path == queue.path.parent / RATINGS_FILE
    table = pd.read_csv(edits / "edits.csv")
    assert [c.key for c in queue.candidates] == list(dict.fromkeys(table["intervention"]))
    assert {c.kind for c in queue.candidates} == {"intervention"}
    # Grouped by intervention, every edit once, each with the line of edits.csv it came from.
    assert [i.intervention for i in queue.items] == sorted(
        table["intervention"], key=list(dict.fromkeys(table["intervention"])).index
    )
    assert sorted(i.key for i in queue.items) == sorted(
        zip(table["image_id"], table["intervention"], strict=True)
    )
    for item in queue.items:
        row = table.iloc[item.line - 2]
        assert (row["image_id"], row["intervention"]) == item.key
        assert item.candidates == (item.intervention,) and len(item.digest) == 16
    assert len({i.digest for i in queue.items}) == len(queue.items)


def test_a_queue_reads_back_as_written_with_paths_relative_to_its_folder(edits: Path, tmp_path: Path):
    queue = make_queue(edits, tmp_path / "elsewhere" / "my-review")
    data = json.loads(queue.path.read_text(encoding="utf-8"))
    assert not Path(data["edit_folder"]).is_absolute() and not Path(data["source"]["path"]).is_absolute()

    again = read_queue(queue.folder)
    assert again.items == queue.items and again.candidates == queue.candidates
    assert again.edit_folder == edits.resolve() and again.source_kind == "edits"


def test_images_limits_the_edits_per_intervention(edits: Path):
    queue = make_queue(edits, images=2)
    counts = pd.Series([i.intervention for i in queue.items]).value_counts()
    assert set(counts) == {2} and len(counts) == 2


def test_a_discovery_queue_puts_flagged_candidates_first_then_the_top_ranked(discovery: Path):
    table = pd.read_csv(discovery / "candidates.csv")
    table["flagged"] = table["rank"].isin([1, 4])  # a flagged candidate ranked below unflagged ones
    table.to_csv(discovery / "candidates.csv", index=False)

    queue = make_queue(discovery, top=2)

    assert [c.key for c in queue.candidates] == ["rank-1", "rank-4", "rank-2"]
    assert [c.flagged for c in queue.candidates] == [True, True, False]
    assert queue.edit_folder == (discovery / "edits").absolute() and queue.source_kind == "discovery"
    assert {i.intervention for i in queue.items} == {"do(Cardiomegaly=0)", "do(sex=Female)"}
    assert (
        make_queue(discovery, top=0).candidates[1].key == "rank-4"
    )  # flagged ones always, --top 0 adds none


def test_an_edit_shared_by_two_candidates_is_one_item_listing_both(discovery: Path):
    queue = make_queue(discovery, top=5, images=0)

    cardiomegaly = [i for i in queue.items if i.intervention == "do(Cardiomegaly=0)"]
    assert len(cardiomegaly) == 6 and all(i.candidates == ("rank-1", "rank-2") for i in cardiomegaly)
    assert len(queue.items) == len({i.key for i in queue.items}) == 18
    assert len(queue.items_of("rank-1")) == len(queue.items_of("rank-2")) == 6


def test_a_region_candidates_example_images_come_first(discovery: Path):
    edits = pd.read_csv(discovery / "edits" / "edits.csv")
    last_two = list(dict.fromkeys(edits["image_id"]))[-2:][::-1]
    table = pd.read_csv(discovery / "candidates.csv")
    table.loc[table["rank"] == 2, "examples"] = ";".join(last_two)
    table.loc[table["rank"] == 1, "flagged"] = False
    table.to_csv(discovery / "candidates.csv", index=False)

    queue = make_queue(discovery, top=0, images=3)

    assert [c.key for c in queue.candidates] == ["rank-2"]
    assert queue.candidates[0].kind == "region" and queue.candidates[0].x == pytest.approx(0.72)
    assert [i.image_id for i in queue.items][:2] == last_two and len(queue.items) == 3


def test_candidates_json_is_read_when_there_is_no_csv(discovery: Path):
    table = pd.read_csv(discovery / "candidates.csv")
    (discovery / "candidates.json").write_text(table.to_json(orient="records"), encoding="utf-8")
    (discovery / "candidates.csv").unlink()
    assert [c.key for c in make_queue(discovery, top=3).candidates] == ["rank-1", "rank-2", "rank-3"]


def test_a_changed_counterfactual_and_a_removed_edit_are_detected(edits: Path):
    queue = make_queue(edits)
    assert not changed_items(queue)
    first, second = queue.items[0], queue.items[1]
    image = load_image(edits / first.counterfactual)
    save_image(np.clip(image + 0.1, 0, 1), edits / first.counterfactual, bits=16)
    table = pd.read_csv(edits / "edits.csv")
    keep = ~((table["image_id"] == second.image_id) & (table["intervention"] == second.intervention))
    table[keep].to_csv(edits / "edits.csv", index=False)

    changes = changed_items(read_queue(queue.path))

    assert changes.changed == [first] and changes.missing == [second]
    with pytest.raises(CfauditError) as caught:
        require_unchanged(read_queue(queue.path))
    message = str(caught.value)
    assert f"{first.image_id} {first.intervention}" in message and f"{second.image_id}" in message
    assert "1 changed" in message and "1 gone" in message and "re-make the queue" in message
    assert "cfaudit review queue" in message and "are kept" in message


def test_rewritten_timings_are_not_a_change(edits: Path):
    queue = make_queue(edits)
    table = pd.read_csv(edits / "edits.csv")
    table["seconds"] = table["seconds"] * 3
    table["inversion_cached"] = True
    table.to_csv(edits / "edits.csv", index=False)
    assert not changed_items(queue)
    require_unchanged(queue)


def test_a_changed_prompt_in_edits_csv_is_a_change(edits: Path):
    queue = make_queue(edits)
    table = pd.read_csv(edits / "edits.csv")
    table.loc[0, "target_prompt"] = "Chest X-ray of subject with something else"
    table.to_csv(edits / "edits.csv", index=False)
    assert [i.line for i in changed_items(queue).changed] == [2]


def test_a_deleted_edit_folder_makes_every_item_gone(edits: Path):
    queue = make_queue(edits, edits.parent / "review-elsewhere")
    (edits / "edits.csv").unlink()
    assert len(changed_items(queue).missing) == len(queue.items)


def test_remaking_a_queue_over_ratings_of_other_edits_is_refused(
    edits: Path, tmp_path: Path, index_csv: Path
):
    from tests.report.fake_outputs import make_edit_job

    queue = make_queue(edits)
    queue.ratings_path.write_text("reviewer\n", encoding="utf-8")
    make_queue(edits)  # the same edits: re-making is how a changed folder is taken up

    other = make_edit_job(tmp_path / "other", index_csv, images=2)
    with pytest.raises(CfauditError, match="holds the ratings of another edit folder"):
        make_queue(other, queue.folder)
    assert queue.ratings_path.read_text(encoding="utf-8") == "reviewer\n"


def test_bad_sources_and_queues_are_one_clear_error(tmp_path: Path, edits: Path):
    with pytest.raises(CfauditError, match="no such folder"):
        make_queue(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CfauditError, match="neither an edit folder"):
        make_queue(tmp_path / "empty")
    with pytest.raises(CfauditError, match="--top must be 0 or more"):
        make_queue(edits, top=-1)
    with pytest.raises(CfauditError, match="no review queue there"):
        read_queue(tmp_path / "empty")
    broken = tmp_path / "broken" / QUEUE_FILE
    broken.parent.mkdir()
    broken.write_text('{"format": "cfaudit-review-queue", "version": 1, "items": [', encoding="utf-8")
    with pytest.raises(CfauditError, match=rf"{broken}: not valid JSON.*re-make it"):
        read_queue(broken)
    broken.write_text('{"format": "cfaudit-review-queue", "version": 1}', encoding="utf-8")
    with pytest.raises(CfauditError, match="malformed review queue"):
        read_queue(broken)


def test_a_missing_counterfactual_is_refused_when_making_the_queue(edits: Path):
    table = pd.read_csv(edits / "edits.csv")
    (edits / table.loc[1, "counterfactual"]).unlink()
    with pytest.raises(CfauditError, match=r"edits.csv, line 3: counterfactual .* is missing"):
        make_queue(edits)


def test_a_re_run_discovery_is_told_by_its_candidates_file(discovery: Path):
    queue = make_queue(discovery, top=2)
    assert read_queue(queue.path).candidates_file == queue.candidates_file
    assert queue.candidates_file is not None and queue.candidates_file[0] == "candidates.csv"
    assert not candidates_changed(read_queue(queue.path))
    table = pd.read_csv(discovery / "candidates.csv")
    table.loc[0, "effect"] = 0.5
    table.to_csv(discovery / "candidates.csv", index=False)
    assert candidates_changed(read_queue(queue.path))
    assert not candidates_changed(
        make_queue(discovery.parent / "discovery" / "edits")
    )  # an edit folder has none


def test_a_repeated_edit_or_an_unknown_attribute_in_edits_csv_is_refused_as_every_reader_refuses_it(
    edits: Path,
):
    path = edits / "edits.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")
    with pytest.raises(
        CfauditError, match=rf"line {len(lines) + 1}: repeats the edit of line 2 .*; re-run the edit job"
    ):
        make_queue(edits)
    table = pd.read_csv(edits / "edits.csv").head(len(lines) - 1)
    table.loc[0, "intervention"] = "do(colour=red)"
    table.to_csv(path, index=False)
    with pytest.raises(
        CfauditError, match=r"edits.csv, line 2: .*unknown attribute 'colour'.*; re-run the edit job"
    ):
        make_queue(edits)
