"""The README's main job, end to end on a small phantom."""

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cfaudit.cli.main import main
from cfaudit.data.records import DataIndex
from cfaudit.demo import run_demo


def test_demo_makes_phantom_index_and_table1(tmp_path):
    result = run_demo(tmp_path / "demo", n=60, size=64, seed=3, workers=1, until="data")
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
    args = [
        "demo",
        "--out",
        str(tmp_path / "demo"),
        "--n",
        "30",
        "--size",
        "64",
        "--workers",
        "1",
        "--until",
        "data",
    ]
    assert main(args) == 0
    first = (tmp_path / "demo" / "index.csv").read_bytes()
    assert main(args) == 0
    assert (tmp_path / "demo" / "index.csv").read_bytes() == first
    assert "Table 1" in capsys.readouterr().out


@pytest.mark.parametrize("config", ["null", "configs/phantom/central_line.yaml"])
def test_demo_runs_on_another_phantom_config(tmp_path, config):
    """`--config` plants other relations (or none) in the demo's phantom; the phantom records which."""
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / config if config.endswith(".yaml") else config
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--n", "30", "--size", "64", "--workers", "1", "--until", "data"]
    assert main([*args, "--config", str(path)]) == 0
    relations = json.loads((out / "phantom" / "phantom.json").read_text())["config"]["relations"]
    if config == "null":
        assert relations == []
    else:
        assert [(r["cause"], r["effect"]) for r in relations] == [("Edema", "device.central_line")]


def test_demo_names_a_missing_phantom_config(tmp_path, capsys):
    missing = tmp_path / "nowhere.yaml"
    args = ["demo", "--out", str(tmp_path / "demo"), "--n", "30", "--size", "64", "--until", "data"]
    assert main([*args, "--config", str(missing)]) != 0
    assert "nowhere.yaml" in capsys.readouterr().err.replace("\n", "")


def test_demo_runs_every_stage_to_the_report(tmp_path, capsys):
    """The main job end to end, small: edits by both methods, Table 2, a discovery and the report."""
    args = ["demo", "--out", str(tmp_path / "demo"), "--n", "300", "--workers", "1", "--edit-images", "3",
            "--images", "3", "--do", "Cardiomegaly=0", "--do", "Edema=1"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    demo = tmp_path / "demo"
    for name in ("edits/diffusion/edits.csv", "evaluation/table2.csv", "evaluation/table2.md",
                 "discovery/candidates.csv", "discovery/discovery.json", "report.html"):  # fmt: skip
        assert (demo / name).is_file(), name
    methods = set(pd.read_csv(demo / "evaluation" / "table2.csv")["method"])
    assert len(methods) == 2  # the diffusion editor and the SCM baseline
    # Table 2 compares the same edits of the same images (every attribute edited is a node of the SCM's graph)
    made = {
        method: set(
            pd.read_csv(demo / "edits" / method / "edits.csv")[["image_id", "intervention"]].itertuples(
                index=False
            )
        )
        for method in ("diffusion", "scm")
    }
    assert made["scm"] == made["diffusion"] and len(made["scm"]) >= 6
    # Table 2's edits take the editor's default steps; the discovery's, more (DISCOVERY_STEPS)
    assert set(pd.read_csv(demo / "edits" / "diffusion" / "edits.csv")["steps"]) == {12}
    assert set(pd.read_csv(demo / "discovery" / "edits" / "edits.csv")["steps"]) == {20}
    html = (demo / "report.html").read_text()
    assert "Table 1" in html and "data:image/png;base64," in html
    assert "Top discoveries" in out and f"report: {demo / 'report.html'}" in out.replace("\n", "")


@pytest.mark.parametrize(
    ("parallel", "name"),
    [(True, "tiny"), (True, "tiny-f4"), (False, "tiny-f4-shipped")],
    ids=["tiny-side-process", "tiny-f4-side-process", "tiny-f4-shipped-one-process"],
)
def test_demo_training_recipes_run_and_give_loadable_models(tmp_path, parallel, name):
    """`cfaudit demo --train` at a tiny scale: each recipe trains a few steps and its model loads, whether the
    classifier and SCM train in a second process beside the UNet or after it."""
    from diffusers import AutoencoderKL

    from cfaudit.demo_training import demo_recipe, train_demo_models
    from cfaudit.errors import CfauditError
    from cfaudit.evaluate.classifiers import load_classifier
    from cfaudit.models.loading import load_components
    from cfaudit.models.shipped_model import shipped_autoencoder
    from cfaudit.scm.model import CausalImageModel

    result = run_demo(tmp_path / "demo", n=80, size=128, seed=1, workers=1, until="data")
    stages = []
    model, classifier, scm = train_demo_models(
        tmp_path / "models",
        result.index,
        seed=1,
        tell=lambda *a: stages.append(a[0]),
        scale=0.004,
        parallel=parallel,
        recipe=name,
    )
    assert load_components(model, device="cpu").unet is not None
    assert load_classifier(classifier, "cpu").predict([np.zeros((128, 128))])["sex"].shape == (1,)
    assert "Cardiomegaly" in CausalImageModel.load(scm, device="cpu").graph.names
    assert stages[0] == "train: UNet" and stages[-1] == "train: SCM"
    recipe = demo_recipe(name)
    phases = [tmp_path / "models" / run / "model" for run, _ in recipe.phases]
    assert Path(model) == phases[-1]
    record = json.loads((phases[0] / "provenance.json").read_text())
    assert record["base_model"]["folder"] == str(tmp_path / "models" / "init")
    assert "trained" not in record["base_model"]  # a random start: no earlier training to record
    for before, after in itertools.pairwise(phases):  # each phase from the model of the one before
        phase = json.loads((after / "provenance.json").read_text())
        assert phase["base_model"]["folder"] == str(before)
        assert phase["base_model"]["trained"]["step"] == record["step"]  # the earlier record travels on
        record = phase
    configs = [json.loads((phase / "provenance.json").read_text())["config"] for phase in phases]
    assert [config["resolution"] for config in configs] == [phase["resolution"] for _, phase in recipe.phases]
    # whatever the earlier phases' sizes and schedules, the last one trains at the data's size on the model's own
    assert configs[-1]["resolution"] == 128
    shifts = [config["snr_shift"] for config in configs]
    assert shifts == [phase.get("snr_shift", 1.0) for _, phase in recipe.phases] and shifts[-1] == 1.0
    # the race phase: from the model before, the UNet's cross-attention alone
    if recipe.phases[-1][0] == "race":
        before, after = (
            load_components(phases[-2]).unet.state_dict(),
            load_components(model).unet.state_dict(),
        )
        changed = {k for k in after if not torch.equal(before[k], after[k])}
        assert changed and all(".attn2." in k for k in changed)
    assert (Path(model) / "vae_provenance.json").is_file()  # the autoencoder's record travels on
    assert json.loads((tmp_path / "models" / "timing.json").read_text())["seconds_this_call"].keys() == {
        "unet",
        "classifier",
        "scm",
    }
    # the shipped autoencoder is reused, as the paper reuses SD's: the same weights, never trained again
    shipped = AutoencoderKL.from_pretrained(shipped_autoencoder(recipe.autoencoder)).state_dict()
    refit = load_components(model)
    assert all(torch.equal(shipped[k].float(), refit.vae.state_dict()[k].float()) for k in shipped)
    assert refit.vae_scale_factor == (4 if recipe.arch == "tiny-f4" else 8)
    # run again into the same folder, it finds every phase finished; with another recipe, it refuses the folder
    again = train_demo_models(tmp_path / "models", result.index, seed=1, tell=lambda *a: None, scale=0.004,
                              parallel=False, recipe=name)  # fmt: skip
    assert again == (model, classifier, scm)
    first = recipe.phases[0][0]
    with pytest.raises(CfauditError, match=rf"{first}/model was trained by another recipe .*max_steps"):
        train_demo_models(tmp_path / "models", result.index, seed=1, tell=lambda *a: None, scale=0.008,
                          parallel=False, recipe=name)  # fmt: skip
    # a phase left half done by another recipe is refused too, before any training, rather than finished under this one
    shutil.rmtree(phases[0])
    with pytest.raises(
        CfauditError, match=rf"{first}/checkpoints/step-\d+ was trained by another recipe .*max_steps"
    ):
        train_demo_models(tmp_path / "models", result.index, seed=1, tell=lambda *a: None, scale=0.008,
                          parallel=False, recipe=name)  # fmt: skip
    assert not phases[0].exists()
    # the shipped recipe's phases, found by the quick recipe: refused before the quick one trains any of its own
    if name == "tiny-f4-shipped":
        with pytest.raises(CfauditError, match=r"models/(unet|race)/\S+ was trained by another recipe"):
            train_demo_models(tmp_path / "models", result.index, seed=1, tell=lambda *a: None, scale=0.004,
                              parallel=False, recipe="tiny-f4")  # fmt: skip
        assert not (tmp_path / "models" / "coarse").exists()


def test_demo_training_counts_the_cores_it_may_use_not_the_machines(monkeypatch):
    """Under `taskset -c 0` (or a container's CPU set) the side models are fitted after the UNet, not beside it."""
    import os

    from cfaudit import demo_training

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert demo_training._usable_cores() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    assert demo_training._usable_cores() == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--images", "many"], "--images must be a number or 'auto'"),
        (["--detect-effect", "1.5"], "--detect-effect is a share of images"),
        (["--do", "Cardiomegaly=maybe"], "maybe"),
        (["--recipe", "tiny-f4"], "needs --train"),
        (["--train", "--recipe", "sd15"], "demo --train fits one of tiny-f4, tiny-f4-shipped, tiny"),
        (["--train", "--arch", "sd15"], "--recipe 'sd15'"),  # the option's older name
        (["--train", "--model", "demo"], "--model and --train both name the diffusion model"),
        (["--model", "no/such/folder"], "no/such/folder: no such model folder"),
    ],
)
def test_bad_discovery_options_are_refused_before_any_work(tmp_path, capsys, options, message):
    assert main(["demo", "--out", str(tmp_path / "demo"), *options]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # nothing drawn, edited or written


def test_demo_edits_with_another_diffusion_model_beside_the_shipped_judge(tmp_path):
    """`--model FOLDER`: the demo's Table 2 plan edited by that model (say, one trained on the phantom), scored by
    the shipped classifier beside the shipped SCM."""
    from cfaudit.models.random_init import write_random_pipeline

    model = write_random_pipeline(tmp_path / "tiny", "tiny", seed=0)
    demo = tmp_path / "demo"
    args = ["demo", "--out", str(demo), "--n", "300", "--workers", "1", "--edit-images", "2", "--until", "evaluate",
            "--model", str(model)]  # fmt: skip
    assert main(args) == 0
    assert json.loads((demo / "edits" / "diffusion" / "job.json").read_text())["model"] == str(model)
    table = pd.read_csv(demo / "evaluation" / "table2.csv")
    assert set(table["method"]) == {"direct", "scm-hvae"}
    assert not (demo / "discovery").exists()  # --until evaluate
