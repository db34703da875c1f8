import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from cfaudit.data.edit_folder import EDIT_COLUMNS, TIMING_COLUMNS, batches_to_edit, row_file, safe_name
from cfaudit.data.edit_jobs import JobItem, items_from_index, original_digest
from cfaudit.data.images import save_image
from cfaudit.data.interventions import parse_interventions
from cfaudit.data.records import INDEX_COLUMNS, DataIndex
from cfaudit.edit.editor import EditSettings
from cfaudit.edit.inversion import InversionSettings
from cfaudit.edit.job import JobSettings, ages_beyond_the_data, edit_targets, item_from_image, run_edit_job
from cfaudit.errors import CfauditError

RECORD = {"age": 63.0, "sex": "Male", "race": "White", "Cardiomegaly": 1.0}
PROMPT = "Chest X-ray of 63-years old white male subject with cardiomegaly"


class Killed(RuntimeError):
    pass


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    items = []
    for k in range(3):
        path = tmp_path / "images" / f"img{k}.png"
        save_image(rng.random((20, 24)).astype(np.float32), path, bits=16)
        items.append(JobItem(f"p{k}/img {k}", path, PROMPT, dict(RECORD)))
    return items


def settings(batch_size=1, **kwargs):
    return JobSettings(
        inversion=InversionSettings(steps=4, **kwargs), batch_size=batch_size, prompt_mode="full"
    )


def files(folder):
    """Every output file's bytes (row files without their timings), by relative path."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix == ".safetensors":
            continue
        relative = str(path.relative_to(folder))
        if path.suffix == ".json" and relative.startswith("rows"):
            rows = json.loads(path.read_text())
            out[relative] = [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]
        elif path.name == "edits.csv":
            out[relative] = (
                pd.read_csv(path)
                .drop(columns=list(TIMING_COLUMNS))
                .astype(object)
                .fillna("")
                .to_dict("records")
            )
        else:
            out[relative] = path.read_bytes()
    return out


def test_job_writes_every_output_and_one_row_per_edit(editor, images, tmp_path):
    interventions = parse_interventions(["Cardiomegaly=0", "sex=female"])
    report = run_edit_job(editor, images, interventions, tmp_path / "out", settings(), model_id="tiny")
    table = pd.read_csv(report.edits_csv)
    assert list(table.columns) == list(EDIT_COLUMNS) and len(table) == 6 and report.edits == 6
    assert table["image_id"].tolist() == [i.image_id for i in images for _ in range(2)]
    assert table["target_prompt"].iloc[0] == "Chest X-ray of 63-years old white male subject with no finding"
    assert (
        table["target_prompt"].iloc[1] == "Chest X-ray of 63-years old white female subject with cardiomegaly"
    )
    assert (
        table["unet_evals"] == (4 + 8) / 2 + 8
    ).all()  # direct, 4 steps: inversion + source shared by 2 edits
    assert table["reconstruction_l1"].between(0, 1).all() and (table["method"] == "direct").all()
    folder = tmp_path / "out" / "images" / safe_name("p0/img 0")
    assert {p.name for p in folder.iterdir()} == {
        "reconstruction.png", "cardiomegaly-0.png", "cardiomegaly-0_diff.npy", "cardiomegaly-0_diff.png",
        "sex-female.png", "sex-female_diff.npy", "sex-female_diff.png",
    }  # fmt: skip
    difference = np.load(folder / "cardiomegaly-0_diff.npy")
    assert difference.shape == (16, 16) and difference.min() < 0 < difference.max()
    assert table["difference"].iloc[0] == str(
        (folder / "cardiomegaly-0_diff.npy").relative_to(tmp_path / "out")
    )


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_killed_job_resumes_to_the_same_outputs(editor, images, tmp_path, batch_size):
    interventions = parse_interventions(["Cardiomegaly=0", "age=80"])
    job = settings(batch_size)
    run_edit_job(editor, images, interventions, tmp_path / "whole", job, model_id="tiny")

    done = []

    def kill_after_first(image_id):
        done.append(image_id)
        raise Killed(image_id)

    with pytest.raises(Killed):
        run_edit_job(
            editor,
            images,
            interventions,
            tmp_path / "resumed",
            job,
            model_id="tiny",
            on_image_done=kill_after_first,
        )
    assert not (tmp_path / "resumed" / "edits.csv").exists() and done == [images[0].image_id]
    report = run_edit_job(editor, images, interventions, tmp_path / "resumed", job, model_id="tiny")
    assert report.images_skipped == 1
    assert files(tmp_path / "resumed") == files(tmp_path / "whole")
    table = pd.read_csv(tmp_path / "resumed" / "edits.csv")
    assert len(table) == 6 and not table.duplicated(["image_id", "intervention"]).any()
    assert not [p for p in (tmp_path / "resumed").rglob("*") if p.name.endswith(".part")]
    # a finished job run again does nothing and changes nothing
    again = run_edit_job(editor, images, interventions, tmp_path / "resumed", job, model_id="tiny")
    assert again.images_skipped == 3 and files(tmp_path / "resumed") == files(tmp_path / "whole")


def test_identity_check_reports_a_sound_method(editor, images, tmp_path):
    job = JobSettings(inversion=InversionSettings(steps=4), identity_check=True)
    run_edit_job(editor, images[:1], parse_interventions(["age=80"]), tmp_path / "out", job, model_id="tiny")
    table = pd.read_csv(tmp_path / "out" / "edits.csv")
    assert len(table) == 1 and table["identity_l1"].iloc[0] < 1e-4 < table["edit_l1"].iloc[0]
    assert not any("source" in p.name for p in (tmp_path / "out" / "images").rglob("*"))


def test_inversions_are_cached_and_reused(editor, images, tmp_path):
    interventions = parse_interventions(["Cardiomegaly=0"])
    cache = tmp_path / "cache"
    run_edit_job(editor, images[:2], interventions, tmp_path / "a", settings(), model_id="m", cache_dir=cache)
    assert len(list(cache.glob("*.safetensors"))) == 2
    run_edit_job(editor, images[:2], interventions, tmp_path / "b", settings(), model_id="m", cache_dir=cache)
    table = pd.read_csv(tmp_path / "b" / "edits.csv")
    assert table["inversion_cached"].all()
    assert files(tmp_path / "a") == files(tmp_path / "b")
    # other inversion settings are another cache entry
    run_edit_job(
        editor,
        images[:1],
        interventions,
        tmp_path / "c",
        settings(method="npi"),
        model_id="m",
        cache_dir=cache,
    )
    assert len(list(cache.glob("*.safetensors"))) == 3


def test_rerunning_with_other_settings_is_refused(editor, images, tmp_path):
    interventions = parse_interventions(["Cardiomegaly=0"])
    run_edit_job(editor, images[:1], interventions, tmp_path / "out", settings(), model_id="tiny")
    with pytest.raises(CfauditError, match="other settings"):
        run_edit_job(
            editor, images[:1], interventions, tmp_path / "out", settings(method="npi"), model_id="tiny"
        )
    with pytest.raises(CfauditError, match="twice"):
        run_edit_job(editor, images[:1], interventions * 2, tmp_path / "dup", settings(), model_id="tiny")


def test_items_from_an_index_split(tmp_path, images):
    rows = []
    for k, split in enumerate(["test", "train", "test"]):
        row = {c: math.nan for c in INDEX_COLUMNS} | {"image_id": f"i{k}", "path": f"images/img{k}.png"}
        row |= {"subject_id": f"s{k}", "study_id": f"t{k}"}
        row |= {"view": "PA", "age": 50 + k, "sex": "Female", "race": "Asian", "split": split, "Edema": 1.0}
        rows.append(row)
    index = DataIndex(pd.DataFrame(rows), tmp_path)
    items = items_from_index(index, "test")
    assert [i.image_id for i in items] == ["i0", "i2"]
    assert items[0].source_prompt == "Chest X-ray of 50-years old asian female subject with edema"
    assert items[1].path == tmp_path / "images" / "img2.png"
    assert len(items_from_index(index, "test", limit=1)) == 1
    with pytest.raises(CfauditError, match="no images in split 'val'"):
        items_from_index(index, "val")
    with pytest.raises(CfauditError, match="no such image"):
        item_from_image(tmp_path / "absent.png", PROMPT)


def test_processes_split_the_batches_and_the_main_one_merges(editor, images, tmp_path, monkeypatch):
    import cfaudit.edit.job as job_module

    interventions = parse_interventions(["Cardiomegaly=0"])
    run_edit_job(editor, images, interventions, tmp_path / "single", settings(), model_id="tiny")
    seen = {}
    for rank in (1, 0):  # as `accelerate launch --num_processes 2` would run them (here one after the other)
        monkeypatch.setattr(job_module, "_process_state", lambda rank=rank: (rank, 2, lambda: None))
        run_edit_job(
            editor, images, interventions, tmp_path / "split", settings(), model_id="tiny",
            on_image_done=lambda image_id, rank=rank: seen.setdefault(image_id, rank),
        )  # fmt: skip
        assert (tmp_path / "split" / "edits.csv").exists() == (rank == 0)
    assert seen == {images[0].image_id: 0, images[1].image_id: 1, images[2].image_id: 0}
    assert files(tmp_path / "split") == files(tmp_path / "single")


def test_items_take_their_own_interventions_and_relative_age_resolves_per_record(editor, images, tmp_path):
    own = tuple(parse_interventions(["age=+20", "Cardiomegaly=0"]))
    plan = [
        JobItem(images[0].image_id, images[0].path, PROMPT, dict(RECORD), own),
        JobItem(images[1].image_id, images[1].path, PROMPT, {**RECORD, "age": 40.0}, own[:1]),
        images[2],  # takes the job's interventions
    ]
    default = parse_interventions(["sex=female"])
    report = run_edit_job(editor, plan, default, tmp_path / "out", settings(batch_size=2), model_id="tiny")
    table = pd.read_csv(report.edits_csv)
    assert table["intervention"].tolist() == [
        "do(age=+20)", "do(Cardiomegaly=0)", "do(age=+20)", "do(sex=Female)",
    ]  # fmt: skip
    assert "83-years old" in table["target_prompt"].iloc[0]
    assert "60-years old" in table["target_prompt"].iloc[2]
    assert (tmp_path / "out" / "images" / safe_name(images[0].image_id) / "age-plus20.png").is_file()
    assert json.loads((tmp_path / "out" / "job.json").read_text())["plan_sha256"]


def test_contrast_mode_edits_towards_the_partial_prompt_from_the_current_values(editor, images, tmp_path):
    interventions = parse_interventions(["Cardiomegaly=0", "Cardiomegaly=1"])
    targets = edit_targets(images[0], interventions, "contrast")
    assert [(t.prompt, t.anchor) for t in targets] == [
        ("Chest X-ray of subject with no cardiomegaly", "Chest X-ray of subject with cardiomegaly"),
        ("Chest X-ray of subject with cardiomegaly", "Chest X-ray of subject with cardiomegaly"),
    ]
    healthy = JobItem("h", images[0].path, PROMPT, {**RECORD, "Cardiomegaly": 0.0})
    assert edit_targets(healthy, interventions[1:], "contrast")[0].anchor == "Chest X-ray of subject"
    # an image known only by its caption: the caption is read back for the current values
    captioned = edit_targets(JobItem("c", images[0].path, PROMPT), interventions[:1], "contrast")
    assert captioned[0].anchor == targets[0].anchor
    # a caption that states little: what it does not state is left unnamed (full prompts refuse it)
    bare = JobItem("b", images[0].path, "Chest X-ray of subject")
    sex = parse_interventions(["sex=female"])
    assert edit_targets(bare, sex, "contrast")[0].anchor == "Chest X-ray of subject"
    with pytest.raises(CfauditError, match="names no age or no sex"):
        edit_targets(bare, sex, "full")
    job = JobSettings(inversion=InversionSettings(steps=4), prompt_mode="contrast")
    report = run_edit_job(editor, images[:1], interventions, tmp_path / "out", job, model_id="tiny")
    table = pd.read_csv(report.edits_csv)
    assert table["prompt_mode"].tolist() == ["contrast", "contrast"]
    assert table["target_prompt"].tolist() == [t.prompt for t in targets]
    assert table["reference_prompt"].tolist() == [t.anchor for t in targets]  # what each was measured against
    plain = run_edit_job(
        editor, images[:1], interventions[:1], tmp_path / "full", settings(), model_id="tiny"
    )
    assert pd.read_csv(plain.edits_csv)["reference_prompt"].tolist() == [PROMPT]
    # do(Cardiomegaly=1) of an image that has it: both prompts agree, the image stays as reconstructed
    assert table["edit_l1"].iloc[1] < 1e-3 < table["edit_l1"].iloc[0]


def test_relative_age_outside_the_valid_range_names_the_image(editor, images, tmp_path):
    item = JobItem(
        "old", images[0].path, PROMPT, {**RECORD, "age": 110.0}, tuple(parse_interventions(["age=+20"]))
    )
    with pytest.raises(CfauditError, match=r"image 'old'.*outside the valid range"):
        run_edit_job(editor, [item], [], tmp_path / "out", settings(), model_id="tiny")


def test_age_edits_past_the_ages_of_the_data_are_named(images):
    plan = [
        JobItem("old", images[0].path, PROMPT, {**RECORD, "age": 85.0}),
        JobItem("young", images[1].path, PROMPT, {**RECORD, "age": 25.0}),
        JobItem("unknown", images[2].path, PROMPT, {**RECORD, "age": math.nan}),
    ]
    ages = [20.0, 50.0, 90.0, math.nan]
    lines = ages_beyond_the_data(
        plan, parse_interventions(["age=+20", "age=-20", "age=95", "sex=female"]), ages
    )
    assert lines == [
        "do(age=+20) takes 1 of 3 image(s) outside the ages of the data (20-90 years): a model trained on it never "
        "saw such a prompt; do not trust those edits",
        "do(age=-20) takes 1 of 3 image(s) outside the ages of the data (20-90 years): a model trained on it never "
        "saw such a prompt; do not trust those edits",
        "do(age=95) takes 3 of 3 image(s) outside the ages of the data (20-90 years): a model trained on it never "
        "saw such a prompt; do not trust those edits",
    ]
    assert ages_beyond_the_data(plan, parse_interventions(["age=+5"]), ages) == []
    assert ages_beyond_the_data(plan, parse_interventions(["age=+20"]), [math.nan]) == []


def test_guidance_per_attribute_edits_those_edits_at_their_scale(editor, images, tmp_path):
    ivs = parse_interventions(["age=+20", "sex=female", "age=80, Cardiomegaly=0"])
    job = JobSettings(
        inversion=InversionSettings(steps=4),
        prompt_mode="full",
        attribute_guidance={"Age": 3, "cardiomegaly": 2},
    )
    assert job.attribute_guidance == {"age": 3.0, "Cardiomegaly": 2.0}  # spelt as interventions spell them
    assert [job.guidance_for(i) for i in ivs] == [3.0, 7.5, 2.0]  # several named: the smallest
    assert JobSettings.from_dict(job.to_dict()) == job
    assert "attribute_guidance" not in settings().to_dict()  # a job without it writes job.json as before
    report = run_edit_job(editor, images[:1], ivs, tmp_path / "out", job, model_id="tiny")
    table = pd.read_csv(report.edits_csv)
    assert table["guidance_scale"].tolist() == [3.0, 7.5, 2.0]
    # each edit is the one made at its scale alone
    alone = JobSettings(
        inversion=InversionSettings(steps=4), prompt_mode="full", edit=EditSettings(guidance_scale=3)
    )
    single = run_edit_job(editor, images[:1], ivs[:1], tmp_path / "alone", alone, model_id="tiny")
    first = pd.read_csv(single.edits_csv).iloc[0]
    assert first["edit_l1"] == pytest.approx(table["edit_l1"].iloc[0], abs=1e-5)
    # one intervention's own scale comes before its attribute's
    own = JobSettings(attribute_guidance={"age": 4, "age = -20": 2, "do(Age=80, cardiomegaly=0)": 1.5})
    assert set(own.attribute_guidance) == {"age", "do(age=-20)", "do(age=80, Cardiomegaly=0)"}
    scales = [
        own.guidance_for(i) for i in parse_interventions(["age=+20", "age=-20", "age=80, Cardiomegaly=0"])
    ]
    assert scales == [4.0, 2.0, 1.5]
    with pytest.raises(CfauditError, match="unknown attribute 'height'"):
        JobSettings(attribute_guidance={"height": 3.0})
    with pytest.raises(CfauditError, match="'do\\(heigth=2\\)'"):
        JobSettings(attribute_guidance={"do(heigth=2)": 3.0})
    with pytest.raises(CfauditError, match=">= 1"):
        JobSettings(attribute_guidance={"age": 0.5})
    with pytest.raises(CfauditError, match="nti"):
        JobSettings(inversion=InversionSettings(method="nti"), attribute_guidance={"age": 3.0})
    # guidance that no edit of the job takes (a misspelt intervention, an attribute not edited) is refused
    # before anything is written, not recorded in job.json as if applied
    assert own.unused_guidance(parse_interventions(["age=+20"])) == [
        "do(age=-20)",
        "do(age=80, Cardiomegaly=0)",
    ]
    # a discovery whose plan left an intervention out keeps only the entries its edits take
    taken = own.guidance_taken_by(parse_interventions(["age=+20", "age=-20"]))
    assert taken.attribute_guidance == {"age": 4.0, "do(age=-20)": 2.0}
    assert own.guidance_taken_by(parse_interventions(["age=-20", "age=80, Cardiomegaly=0"])) is own
    for unused, match in (({"do(age=+02)": 2}, r"do\(age=\+2\)"), ({"race": 12}, "for race: no edit")):
        job = JobSettings(inversion=InversionSettings(steps=4), attribute_guidance=unused)
        with pytest.raises(CfauditError, match=match):
            run_edit_job(editor, images[:1], ivs, tmp_path / "unused", job, model_id="tiny")
        assert not (tmp_path / "unused").exists()


# --- resuming checks what each done image was made from ----------------------------------------------------


def test_an_image_whose_inputs_changed_is_redone_and_another_index_does_not_mix_in(editor, images, tmp_path):
    interventions = parse_interventions(["Cardiomegaly=0", "age=+20"])
    out = tmp_path / "out"
    copy = tmp_path / "data" / "img2.png"  # a file of this test's own, replaced below
    copy.parent.mkdir()
    copy.write_bytes(images[2].path.read_bytes())
    first = [images[0], images[1], JobItem(images[2].image_id, copy, PROMPT, dict(RECORD))]
    run_edit_job(editor, first, interventions, out, settings(), model_id="tiny")
    # now the index says image 0 is 33 (its source prompt and target change), image 1's file has moved to
    # another root (the same bytes), and image 2's file was replaced in place by another picture
    moved = tmp_path / "moved" / "img1.png"
    moved.parent.mkdir()
    moved.write_bytes(images[1].path.read_bytes())
    copy.write_bytes(images[0].path.read_bytes())
    younger = {**RECORD, "age": 33.0}
    changed = [
        JobItem(images[0].image_id, images[0].path, PROMPT.replace("63", "33"), younger),
        JobItem(images[1].image_id, moved, PROMPT, dict(RECORD)),
        first[2],
    ]
    redone = []
    report = run_edit_job(
        editor, changed, interventions, out, settings(), model_id="tiny", on_image_done=redone.append
    )
    assert report.images_skipped == 1 and report.images_redone == 2
    assert redone == [images[0].image_id, images[2].image_id]  # the moved file is the same image: kept
    table = pd.read_csv(report.edits_csv)
    assert table["source_prompt"].iloc[0] == PROMPT.replace("63", "33")
    assert table["target_prompt"].iloc[1] == PROMPT.replace("63", "53")  # do(age=+20) of a 33-year-old
    assert table["original"].iloc[2] == str(moved.resolve())  # relinked to where the file is now
    assert table["original_sha256"].iloc[2] == original_digest(moved)
    assert (
        table["original_sha256"].iloc[4] == original_digest(images[0].path) != original_digest(images[1].path)
    )
    # another data set's images into the same folder: edits.csv holds only the images of this run
    other = [JobItem("q/other", images[2].path, PROMPT, dict(RECORD))]
    report = run_edit_job(editor, other, interventions, out, settings(), model_id="tiny")
    assert report.images_skipped == 0
    assert pd.read_csv(report.edits_csv)["image_id"].tolist() == ["q/other", "q/other"]
    # the earlier job's three images stay (a later run of that job resumes them), and the summary says so
    assert report.images_elsewhere == 3
    assert "3 image(s) of another job stay in the folder, not in edits.csv" in report.summary()
    again = run_edit_job(editor, first, interventions, out, settings(), model_id="tiny")
    assert again.images_skipped == 2 and again.images_redone == 1  # image 0: its source prompt changed back
    assert again.images_elsewhere == 1  # q/other


def test_rows_written_before_content_digests_resume_by_their_path(editor, images, tmp_path):
    interventions = parse_interventions(["Cardiomegaly=0"])
    out = tmp_path / "out"
    run_edit_job(editor, images[:2], interventions, out, settings(), model_id="tiny")
    for path in sorted((out / "rows").glob("*.json")):  # as an earlier version wrote them
        rows = json.loads(path.read_text())
        path.write_text(
            json.dumps([{k: v for k, v in row.items() if k != "original_sha256"} for row in rows])
        )
    moved = tmp_path / "moved" / "img1.png"
    moved.parent.mkdir()
    moved.write_bytes(images[1].path.read_bytes())
    items = [images[0], JobItem(images[1].image_id, moved, PROMPT, dict(RECORD))]
    report = run_edit_job(editor, items, interventions, out, settings(), model_id="tiny")
    assert report.images_skipped == 1 and report.images_redone == 1  # no digest: a new path is a new image


def test_a_damaged_folder_is_repaired_by_re_running_the_job(editor, images, tmp_path):
    interventions = parse_interventions(["Cardiomegaly=0", "sex=female"])
    whole = tmp_path / "whole"
    run_edit_job(editor, images, interventions, whole, settings(), model_id="tiny")
    out = tmp_path / "out"
    shutil.copytree(whole, out)
    rows = [out / "rows" / f"{safe_name(item.image_id)}.json" for item in images]
    (out / "images" / safe_name(images[0].image_id) / "sex-female.png").unlink()  # a deleted counterfactual
    rows[1].write_bytes(rows[1].read_bytes()[:100])  # a truncated row file
    rows[2].write_text("[]")  # a row file with no rows
    report = run_edit_job(editor, images, interventions, out, settings(), model_id="tiny")
    assert report.images_skipped == 0 and report.images_redone == 3 and report.edits == 6
    assert files(out) == files(whole)
    # a row file that is not a list of rows, or short of an edit, is not done either
    rows[0].write_text('{"image_id": "p0/img 0"}')
    rows[1].write_text(json.dumps(json.loads(rows[1].read_text())[:1]))
    report = run_edit_job(editor, images, interventions, out, settings(), model_id="tiny")
    assert report.images_skipped == 1 and report.images_redone == 2 and files(out) == files(whole)


def test_an_interrupted_job_reads_as_unfinished_until_it_is_finished(editor, images, tmp_path):
    from cfaudit.evaluate.reading import read_edit_folder

    interventions = parse_interventions(["Cardiomegaly=0"])
    out = tmp_path / "out"
    run_edit_job(editor, images[:1], interventions, out, settings(), model_id="tiny")
    assert (out / "edits.csv").is_file()

    def stop(_image_id):
        raise KeyboardInterrupt

    with pytest.raises(
        KeyboardInterrupt
    ):  # a larger run of the same job, interrupted after its first new image
        run_edit_job(editor, images, interventions, out, settings(), model_id="tiny", on_image_done=stop)
    assert (out / "job.json").is_file()  # images are done: kept, so that the same command resumes
    with pytest.raises(
        CfauditError,
        match=r"unfinished edit job \(2 of 3 images done\); re-run the same `cfaudit edit` command to finish it",
    ):
        read_edit_folder(out)
    report = run_edit_job(editor, images, interventions, out, settings(), model_id="tiny")
    assert report.images_skipped == 2 and len(read_edit_folder(out).rows) == 3


def test_what_can_be_checked_is_checked_before_job_json_is_written(editor, images, tmp_path):
    interventions = parse_interventions(["Cardiomegaly=0"])
    gone = JobItem("gone", tmp_path / "absent.png", PROMPT, dict(RECORD))
    with pytest.raises(CfauditError, match=r"absent\.png: no such image file \(image 'gone'\)"):
        run_edit_job(editor, [images[0], gone], interventions, tmp_path / "a", settings(), model_id="tiny")
    cat = JobItem("cat", images[0].path, "a cat")  # a caption that names no attribute to take the record from
    with pytest.raises(CfauditError, match="caption 'a cat' does not follow the prompt template"):
        run_edit_job(
            editor, [cat], parse_interventions(["age=+20"]), tmp_path / "b", settings(), model_id="tiny"
        )
    with pytest.raises(CfauditError, match="outside the valid range"):
        run_edit_job(
            editor, images, parse_interventions(["age=+500"]), tmp_path / "c", settings(), model_id="tiny"
        )
    with pytest.raises(CfauditError, match="prompt-to-prompt mode 'xyz'"):
        EditSettings(p2p_mode="xyz")
    assert not [p for p in ("a", "b", "c") if (tmp_path / p).exists()]


def test_a_run_that_fails_before_any_image_is_done_leaves_no_job_json(editor, images, tmp_path):
    interventions = parse_interventions(["Cardiomegaly=0"])
    unreadable = tmp_path / "text.png"
    unreadable.write_text("not an image")
    bad = JobItem("bad", unreadable, PROMPT, dict(RECORD))
    out = tmp_path / "out"
    with pytest.raises(CfauditError):
        run_edit_job(editor, [bad], interventions, out, settings(), model_id="tiny")
    assert not out.exists()  # its job.json and the folders it made, empty, are gone
    # so the corrected command, with other settings, is not refused
    report = run_edit_job(editor, images[:1], interventions, out, settings(method="npi"), model_id="tiny")
    assert report.edits == 1
    # a failure after images are done keeps job.json (the same command resumes) ...
    with pytest.raises(CfauditError):
        run_edit_job(editor, [*images[:1], bad], interventions, out, settings(method="npi"), model_id="tiny")
    assert (out / "job.json").is_file()
    # ... and so does one into a folder whose job.json was there before, even with no image done
    shutil.rmtree(out / "rows")
    with pytest.raises(CfauditError):
        run_edit_job(editor, [bad], interventions, out, settings(method="npi"), model_id="tiny")
    assert (out / "job.json").is_file()
    # a folder given that was there before stays, and so does what was in it
    given = tmp_path / "given"
    (given / "notes").mkdir(parents=True)
    with pytest.raises(CfauditError):
        run_edit_job(editor, [bad], interventions, given, settings(), model_id="tiny")
    assert sorted(p.name for p in given.iterdir()) == ["notes"]


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_guidance_must_be_a_finite_number_of_at_least_one(value):
    message = rf"must be a finite number >= 1, got {value:g}"
    with pytest.raises(CfauditError, match=r"guidance scale " + message):
        EditSettings(guidance_scale=value)
    with pytest.raises(CfauditError, match=r"guidance scale " + message):
        InversionSettings(guidance_scale=value)  # on its own too, as the API's users build it
    with pytest.raises(
        CfauditError, match=rf"null-text learning rate must be a finite number > 0, got {value:g}"
    ):
        InversionSettings(method="nti", learning_rate=value)
    with pytest.raises(CfauditError, match=r"null-text early-stop epsilon must be a finite number >= 0"):
        InversionSettings(method="nti", epsilon=-value)
    with pytest.raises(CfauditError, match=r"guidance for age " + message):
        JobSettings(attribute_guidance={"age": value})
    with pytest.raises(CfauditError, match=r"guidance for do\(sex=Female\) " + message):
        JobSettings(attribute_guidance={"do(sex=female)": value})
    with pytest.raises(CfauditError, match=r"guidance for age must be a finite number >= 1, got 0.5"):
        JobSettings(attribute_guidance={"age": 0.5})


def test_ctrl_c_in_an_edit_job_says_how_to_resume(editor, images, tmp_path, monkeypatch, capsys):
    import cfaudit.edit.job as job_module
    from cfaudit.cli.main import main
    from cfaudit.edit.editor import CounterfactualEditor

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(CounterfactualEditor, "load", classmethod(lambda cls, *a, **k: editor))
    monkeypatch.setattr(job_module, "run_edit_job", interrupted)
    command = ["edit", "--image", str(images[0].path), "--prompt", PROMPT, "--do", "sex=female"]
    assert main([*command, "--out", str(tmp_path / "out"), "--device", "cpu"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted; re-run the same command to resume"


# --- the SCM baseline's runner resumes by the same rules ------------------------------------------------------


def test_the_scm_job_redoes_changed_and_damaged_images_and_leaves_no_job_json_after_a_failed_start(tmp_path):
    from dataclasses import replace

    from cfaudit.data.interventions import Intervention
    from cfaudit.scm.job import run_scm_edit_job
    from tests.scm.scm_tiny import make_index, tiny_model

    model, out = tiny_model(), tmp_path / "edits"
    items = items_from_index(DataIndex.read(make_index(tmp_path / "data", n=4)), "all")
    do = [Intervention.parse("age=80")]
    run_scm_edit_job(model, items, do, out)
    whole = files(out)
    changed = [replace(items[0], record={**items[0].record, "age": 33.0}), *items[1:]]
    (out / "images" / items[1].image_id / "age-80_diff.png").unlink()
    (out / "rows" / f"{items[2].image_id}.json").write_text('[{"truncated')
    done = []
    report = run_scm_edit_job(model, changed, do, out, on_image_done=done.append)
    # the three are redone with the rest of their batch (all four: the default batch holds 8), as cfaudit edit does
    assert done == [item.image_id for item in items]
    assert report.images_skipped == 1 and report.images_redone == 3
    assert pd.read_csv(out / "counterfactual_values.csv")["age"].iloc[0] == 33.0
    # back to the first records: the same files as at first, to the bit
    run_scm_edit_job(model, items, do, out)
    assert files(out) == whole and len(pd.read_csv(out / "edits.csv")) == 4
    # records and image files are checked before job.json is written; a failed start leaves none
    bad_sex = replace(items[0], record={**items[0].record, "sex": "Other"})
    with pytest.raises(CfauditError, match="sex"):
        run_scm_edit_job(model, [bad_sex], do, tmp_path / "a")
    unreadable = tmp_path / "text.png"
    unreadable.write_text("not an image")
    with pytest.raises(CfauditError):
        run_scm_edit_job(model, [replace(items[0], path=unreadable)], do, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_image_that_cannot_be_read_is_named(tmp_path):
    with pytest.raises(CfauditError, match=r"gone\.png: cannot read the image \(No such file"):
        original_digest(tmp_path / "gone.png")


def test_batches_to_edit_are_whole_in_input_order_and_shared_by_rank(tmp_path):
    """Both job runners resume through it: a batch with any image not done comes back whole, a done one not at all."""
    items = [JobItem(f"img{i}", tmp_path / f"img{i}.png", "p") for i in range(7)]
    (tmp_path / "rows").mkdir()
    for done in ("img0", "img1", "img2", "img4"):
        row_file(tmp_path, done).write_text("[]")
    ids = [[item.image_id for item in batch] for batch in batches_to_edit(tmp_path, items, 3)]
    assert ids == [["img3", "img4", "img5"], ["img6"]]  # img0-2 done; img4 is redone with its batch
    share = [[item.image_id for item in b] for b in batches_to_edit(tmp_path, items, 2, rank=1, world=2)]
    assert share == [["img2", "img3"], ["img6"]]  # rank 1's batches: the 2nd and 4th; the 2nd holds img3
    assert batches_to_edit(tmp_path, items[:3], 3) == []
