import numpy as np
import pandas as pd
import pytest

from cfaudit.data.difference import load_difference
from cfaudit.data.edit_folder import EDIT_COLUMNS, items_from_index
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
    run_scm_edit_job(model, items[:2], do, out, on_image_done=done.append)
    first = (out / "rows" / "img0.json").read_text()
    report = run_scm_edit_job(model, items, do, out, on_image_done=done.append)
    assert report.images_skipped == 2 and report.edits == 4
    assert done == ["img0", "img1", "img2", "img3"]  # the first two were not redone
    assert (out / "rows" / "img0.json").read_text() == first
    with pytest.raises(CfauditError, match="other settings"):
        run_scm_edit_job(model, items, do, out, ScmEditSettings(latents="fixed"))


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


def test_job_edits_every_image_with_its_own_interventions_not_an_items_plan(tiny_index, tmp_path):
    """The demo hands the SCM the items of a discovery plan: each item's own plan is the diffusion editor's."""
    from dataclasses import replace

    model = tiny_model()
    planned = [
        replace(item, interventions=(Intervention.parse("Edema=1"),)) for item in _items(tiny_index)[:2]
    ]
    report = run_scm_edit_job(model, planned, [Intervention.parse("sex=Female")], tmp_path / "edits")
    edits = pd.read_csv(tmp_path / "edits" / "edits.csv")
    assert report.edits == 2 and set(edits["intervention"]) == {"do(sex=Female)"}
