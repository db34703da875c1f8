import json
import shutil

import numpy as np
import pandas as pd
import pytest

from cfaudit.data.difference import load_difference
from cfaudit.data.edit_folder import EDIT_COLUMNS
from cfaudit.data.edit_jobs import items_from_index
from cfaudit.data.images import load_image
from cfaudit.data.interventions import Intervention
from cfaudit.data.records import DataIndex
from cfaudit.errors import CfauditError
from cfaudit.scm.job import VALUES_CSV, ScmEditSettings, run_scm_edit_job
from tests.scm.scm_tiny import tiny_model


def _items(index_path, split="all"):
    return items_from_index(DataIndex.read(index_path), split)


def test_job_writes_the_edit_layout_and_values(tiny_index, tmp_path):
    model, out = tiny_model(), tmp_path / "edits"
    items = _items(tiny_index)[:5]
    interventions = [Intervention.parse("sex=Female"), Intervention.parse("age=90")]
    report = run_scm_edit_job(model, items, interventions, out, ScmEditSettings(batch_size=2))
    assert report.images == 5 and report.edits == 10 and report.images_skipped == 0
    edits = pd.read_csv(out / "edits.csv")
    assert tuple(edits.columns) == EDIT_COLUMNS
    assert set(edits["method"]) == {"scm-hvae"} and (edits["reconstruction_l1"] == 0).all()
    for _, row in edits.iterrows():
        for column in ("counterfactual", "reconstruction", "difference", "difference_png"):
            assert (out / row[column]).is_file()
    # women are not changed by do(sex=Female); the input comes back exactly (16-bit files, exact .npy)
    female = edits[
        (edits["intervention"] == "do(sex=Female)") & edits["source_prompt"].str.contains("female")
    ]
    assert len(female) > 0 and (female["edit_l1"] == 0).all()
    assert np.all(load_difference(out / female.iloc[0]["difference"]) == 0)
    male = edits[(edits["intervention"] == "do(sex=Female)") & ~edits["source_prompt"].str.contains("female")]
    assert (male["edit_l1"] > 0).all() and male["target_prompt"].str.contains(" female ").all()
    original = load_image(items[0].path)
    assert np.abs(load_image(out / edits.iloc[0]["reconstruction"]) - original).max() < 1e-4
    values = pd.read_csv(out / VALUES_CSV)
    assert len(values) == 10
    aged = values[values["intervention"] == "do(age=90)"]
    assert (aged["age (counterfactual)"] == 90).all()
    assert (aged["sex (counterfactual)"] == aged["sex"]).all()
    assert set(aged["changed"].dropna().str.split(";").sum()) <= {"age", "Pleural Effusion"}
    assert (out / "images" / items[0].image_id / "model_mean.png").is_file()


def test_resume_and_conflicting_settings(tiny_index, tmp_path):
    model, out = tiny_model(), tmp_path / "edits"
    items = _items(tiny_index)[:4]
    do = [Intervention.parse("age=80")]
    done = []
    settings = ScmEditSettings(batch_size=2)
    run_scm_edit_job(model, items[:2], do, out, settings, on_image_done=done.append)
    first = (out / "rows" / "img0.json").read_text()
    report = run_scm_edit_job(model, items, do, out, settings, on_image_done=done.append)
    assert report.images_skipped == 2 and report.edits == 4
    assert done == ["img0", "img1", "img2", "img3"]  # the first batch was done: not redone
    assert (out / "rows" / "img0.json").read_text() == first
    with pytest.raises(CfauditError, match="other settings"):
        run_scm_edit_job(model, items, do, out, ScmEditSettings(latents="fixed"))


def _image_bytes(out):
    return {
        p.relative_to(out).as_posix(): p.read_bytes()
        for p in sorted((out / "images").rglob("*"))
        if p.is_file()
    }


def test_a_resumed_job_writes_what_one_run_writes(tiny_index, tmp_path):
    """An image redone on resume is redone with the rest of its batch: a counterfactual's last bits depend on the
    batch it is computed in (a batch of one rounds otherwise), so redoing it alone would leave a folder that no
    single run writes."""
    model, items = tiny_model(), _items(tiny_index)[:6]
    do, settings = (
        [Intervention.parse("sex=Female"), Intervention.parse("age=90")],
        ScmEditSettings(batch_size=3),
    )
    run_scm_edit_job(model, items, do, tmp_path / "once", settings)
    once = _image_bytes(tmp_path / "once")
    for lost in ("img0", "img2", "img4"):
        out = tmp_path / f"lost-{lost}"
        shutil.copytree(tmp_path / "once", out)
        (out / "rows" / f"{lost}.json").unlink()  # killed before its rows were written: not done
        done = []
        report = run_scm_edit_job(model, items, do, out, settings, on_image_done=done.append)
        assert _image_bytes(out) == once, lost
        batch = 0 if lost in ("img0", "img2") else 1
        assert done == [item.image_id for item in items[3 * batch : 3 * batch + 3]], lost
        assert report.images_skipped == 5 and report.images_redone == 0
        assert (out / "edits.csv").is_file() and (out / VALUES_CSV).is_file()


def test_job_errors(tiny_index, tmp_path):
    model, items = tiny_model(), _items(tiny_index)[:2]
    with pytest.raises(CfauditError, match="'Edema' is not a node"):
        run_scm_edit_job(model, items, [Intervention.parse("Edema=1")], tmp_path / "a")
    assert not (tmp_path / "a" / "job.json").exists()  # refused before any work
    with pytest.raises(CfauditError, match="given twice"):
        run_scm_edit_job(
            model, items, [Intervention.parse("age=80"), Intervention.parse("age=80")], tmp_path / "b"
        )
    with pytest.raises(CfauditError, match="--latents 'x'"):
        ScmEditSettings(latents="x")


def test_job_edits_each_image_with_its_own_plan_as_the_diffusion_job_does(tiny_index, tmp_path):
    """An item's own plan is what the SCM makes of it (the demo gives both methods the same edits); an item
    without one takes the job's interventions. Each counterfactual is the one a job of all the interventions
    makes (it depends on the image's own seed alone), and a resume with another plan is refused."""
    from dataclasses import replace

    model, items = tiny_model(), _items(tiny_index)[:3]
    female, old, young = (Intervention.parse(t) for t in ("sex=Female", "age=90", "age=30"))
    planned = [
        replace(items[0], interventions=(old,)),
        replace(items[1], interventions=(young, female)),
        items[2],
    ]
    report = run_scm_edit_job(model, planned, [female], tmp_path / "plan", ScmEditSettings(batch_size=3))
    edits = pd.read_csv(tmp_path / "plan" / "edits.csv")
    made = {(row.image_id, row.intervention) for row in edits.itertuples()}
    assert report.edits == 4 and made == {
        (items[0].image_id, "do(age=90)"),
        (items[1].image_id, "do(age=30)"),
        (items[1].image_id, "do(sex=Female)"),
        (items[2].image_id, "do(sex=Female)"),
    }
    run_scm_edit_job(model, items, [female, old, young], tmp_path / "all", ScmEditSettings(batch_size=3))
    for image_id, intervention in made:
        slug = Intervention.parse(intervention.removeprefix("do(").removesuffix(")")).slug
        mine, theirs = (
            load_image(tmp_path / f / "images" / image_id / f"{slug}.png") for f in ("plan", "all")
        )
        assert np.array_equal(mine, theirs), (image_id, intervention)
    assert "plan_sha256" in json.loads((tmp_path / "plan" / "job.json").read_text())
    assert "plan_sha256" not in json.loads((tmp_path / "all" / "job.json").read_text())  # as it always was
    with pytest.raises(CfauditError, match="plan_sha256"):
        run_scm_edit_job(
            model, [replace(planned[0], interventions=(young,)), *planned[1:]], [female], tmp_path / "plan"
        )
