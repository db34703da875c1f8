import json

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from cfaudit.cli.edit import register
from cfaudit.data.images import save_image
from cfaudit.errors import CfauditError
from tests.edit import tiny_parts

PROMPT = "Chest X-ray of 63-years old white male subject with cardiomegaly"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random pipeline saved in diffusers' folder format (what `--model` reads)."""
    from diffusers import DDPMScheduler

    from cfaudit.models.components import PipelineComponents

    root = tmp_path_factory.mktemp("model")
    parts = tiny_parts.build_parts(root / "tokenizer-src")
    components = PipelineComponents(
        parts.unet,
        parts.vae,
        parts.text_encoder,
        parts.tokenizer,
        DDPMScheduler.from_config(parts.scheduler.config),
    )
    return components.save(root / "tiny")


@pytest.fixture
def app():
    app = typer.Typer()
    register(app)
    app.command("noop", hidden=True)(lambda: None)  # a second command keeps "edit" a named subcommand
    return app


def invoke(app, *args):
    return CliRunner().invoke(app, ["edit", *map(str, args)])


def test_edit_one_image_with_two_interventions(app, model_dir, tmp_path):
    image = tmp_path / "x.png"
    save_image(np.random.default_rng(0).random((16, 16)).astype(np.float32), image, bits=16)
    out = tmp_path / "out"
    common = [
        "--model",
        model_dir,
        "--image",
        image,
        "--prompt",
        PROMPT,
        "--out",
        out,
        "--steps",
        3,
        "--device",
        "cpu",
    ]
    result = invoke(
        app, *common, "--do", "Cardiomegaly=0", "--do", "age=80, sex=female", "--prompt-mode", "full"
    )
    assert result.exit_code == 0, result.output
    assert "2 edit(s) of 1 image(s)" in " ".join(result.output.split())
    table = pd.read_csv(out / "edits.csv")
    assert table["target_prompt"].tolist() == [
        "Chest X-ray of 63-years old white male subject with no finding",
        "Chest X-ray of 80-years old white female subject with cardiomegaly",
    ]
    assert (table["method"] == "direct").all() and (table["steps"] == 3).all()
    assert (out / "images" / "x" / "age-80_sex-female.png").is_file()
    again = invoke(
        app, *common, "--do", "Cardiomegaly=0", "--do", "age=80, sex=female", "--prompt-mode", "full"
    )
    assert again.exit_code == 0 and "1 already done" in " ".join(again.output.split())


def test_edit_a_split_of_an_index_with_null_text_inversion(app, model_dir, tmp_path):
    rows = []
    for k in range(2):
        save_image(np.full((16, 16), 0.2 + 0.3 * k, dtype=np.float32), tmp_path / f"i{k}.png")
        rows.append({"image_id": f"i{k}", "path": f"i{k}.png", "subject_id": f"s{k}", "study_id": "t", "view": "AP",
                     "age": 70, "sex": "M", "race": "Black", "Cardiomegaly": 1, "split": "test"})  # fmt: skip
    from cfaudit.data.records import INDEX_COLUMNS, DataIndex

    table = pd.DataFrame(rows).reindex(columns=list(INDEX_COLUMNS))
    table["sex"] = "Male"
    DataIndex(table, tmp_path).write(tmp_path / "index.csv")
    out = tmp_path / "out"
    result = invoke(app, "--model", model_dir, "--index", tmp_path / "index.csv", "--limit", 1, "--do", "Cardiomegaly=0",
                    "--do", "age=+30", "--method", "nti", "--steps", 2, "--inner-steps", 1, "--out", out,
                    "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "edits.csv")
    assert table["image_id"].tolist() == ["i0", "i0"] and table["method"].tolist() == ["nti", "nti"]
    assert table["target_prompt"].tolist() == [
        "Chest X-ray of subject with no cardiomegaly",
        "Chest X-ray of 100-years old subject",
    ]  # contrast (the default): the partial target prompts
    # every patient of the index is 70: a prompt for 100 years is one the model never saw
    assert "do(age=+30) takes 1 of 1 image(s) outside the ages of the data (70-70 years)" in " ".join(
        result.output.split()
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--do", "age=80"], "either --index"),
        (["--do", "age=80", "--image", "x.png"], "--image needs --prompt"),
        (["--do", "heart=0", "--image", "x.png", "--prompt", PROMPT], "unknown attribute 'heart'"),
        (
            ["--do", "age=80", "--image", "x.png", "--prompt", PROMPT, "--method", "edict"],
            "direct, nti, npi, ddim",
        ),
        (
            ["--do", "age=80", "--image", "x.png", "--prompt", PROMPT, "--attribute-guidance", "age"],
            "ATTRIBUTE=SCALE",
        ),
        (
            ["--do", "age=80", "--image", "x.png", "--prompt", PROMPT, "--attribute-guidance", "age=strong"],
            "age=4",
        ),
        (
            ["--do", "age=80", "--image", "x.png", "--prompt", PROMPT, "--attribute-guidance", "hair=4"],
            "'hair'",
        ),
        (
            [
                "--do",
                "age=80",
                "--image",
                "x.png",
                "--prompt",
                PROMPT,
                "--method",
                "nti",
                "--attribute-guidance",
                "age=4",
            ],
            "guidance per attribute needs direct",
        ),
    ],
)
def test_user_mistakes_are_cfaudit_errors(app, tmp_path, args, message):
    result = invoke(app, "--out", tmp_path / "out", *args)
    assert isinstance(result.exception, CfauditError)
    assert message in str(result.exception)


def edit_one_image(app, model_dir, tmp_path, *args):
    """``cfaudit edit`` of one random 16 px image in 3 steps with ``args``; its output folder."""
    image = tmp_path / "x.png"
    save_image(np.random.default_rng(0).random((16, 16)).astype(np.float32), image, bits=16)
    out = tmp_path / "out"
    result = invoke(
        app, "--model", model_dir, "--image", image, "--prompt", PROMPT, "--out", out, "--steps", 3,
        "--device", "cpu", *args,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_edits_default_to_contrast_prompts(app, model_dir, tmp_path):
    from cfaudit.data.interventions import DEFAULT_PROMPT_MODE

    out = edit_one_image(app, model_dir, tmp_path, "--do", "Cardiomegaly=0")
    table = pd.read_csv(out / "edits.csv")
    assert table["prompt_mode"].tolist() == [DEFAULT_PROMPT_MODE] == ["contrast"]
    assert table["target_prompt"].tolist() == ["Chest X-ray of subject with no cardiomegaly"]


def test_attribute_guidance_sets_the_guidance_of_the_edits_that_name_it(app, model_dir, tmp_path):
    out = edit_one_image(
        app, model_dir, tmp_path, "--do", "age=+10", "--do", "sex=female", "--do", "age=-10",
        "--attribute-guidance", "age=4", "--attribute-guidance", "do(age=-10)=2",
    )  # fmt: skip
    assert pd.read_csv(out / "edits.csv")["guidance_scale"].tolist() == [4.0, 7.5, 2.0]
    recorded = json.loads((out / "job.json").read_text())["settings"]["attribute_guidance"]
    assert recorded == {"age": 4.0, "do(age=-10)": 2.0}
