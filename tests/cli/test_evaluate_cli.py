"""``cfaudit evaluate`` end to end: the shipped demo model and a tiny SCM edit the same phantom test images, and one
evaluation puts both methods side by side in Table 2 with the axioms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from cfaudit.cli import edit, scm
from cfaudit.cli.evaluate import register
from cfaudit.data.images import save_image
from cfaudit.errors import CfauditError
from tests.scm import scm_tiny

INTERVENTIONS = ["--do", "sex=female", "--do", "Pleural Effusion=1", "--do", "race=Black"]


@pytest.fixture
def app():
    app = typer.Typer()
    for module in (edit, scm):
        module.register(app)
    register(app)
    return app


def invoke(app, *args):
    return CliRunner().invoke(app, [*map(str, args)])


def random_classifier(folder: Path) -> Path:
    """An untrained 32 px attribute classifier saved as `cfaudit classifiers train` saves one (plumbing only)."""
    import torch

    from cfaudit.models.classifier import AttributeNet
    from cfaudit.train.classifier import FORMAT, ClassifierConfig, save_classifier

    torch.manual_seed(0)
    config = ClassifierConfig(size=32)
    save_classifier(AttributeNet(config.arch), {"format": FORMAT, "format_version": 1, "config": config.to_dict()}, folder)  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def phantom_index(tmp_path_factory) -> Path:
    from cfaudit.data.adapters import build_index, write_index
    from cfaudit.data.phantom import generate_phantom, load_config

    root = tmp_path_factory.mktemp("phantom")
    generate_phantom(root, load_config().with_overrides(n=40, size=128), seed=0, workers=1)
    write_index(build_index("phantom", root, seed=0), root / "index.csv")
    return root / "index.csv"


def test_both_methods_side_by_side(app, tmp_path, phantom_index):
    diffusion, causal = tmp_path / "diffusion", tmp_path / "scm"
    result = invoke(app, "edit", "--model", "demo", "--index", phantom_index, "--split", "test", "--limit", 2,
                    "--steps", 10, *INTERVENTIONS, "--out", diffusion, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    scm_tiny.tiny_model().save(tmp_path / "scm-model")
    result = invoke(app, "scm", "edit", "--model", tmp_path / "scm-model", "--index", phantom_index, "--split",
                    "test", "--limit", 2, *INTERVENTIONS, "--out", causal, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output

    out = tmp_path / "table2"
    result = invoke(app, "evaluate", "--edits", diffusion, "--edits", causal, "--classifier",
                    random_classifier(tmp_path / "classifier"), "--out", out, "--axiom-images", 1,
                    "--bootstrap", 200, "--index", phantom_index, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("table2.csv", "table2.md", "table2.png", "axioms.csv", "scores.csv", "evaluation.json"):
        assert (out / name).is_file() and f"wrote {out / name}" in result.output.replace("\n", "")
    assert "## direct (diffusion editor, model demo, direct inversion, 10 steps)" in result.output
    assert "## scm-hvae (SCM baseline" in result.output

    table = pd.read_csv(out / "table2.csv")
    assert set(table["method"]) == {"direct", "scm-hvae"}
    scores = pd.read_csv(out / "scores.csv")
    for method in ("direct", "scm-hvae"):
        mine = table[table["method"] == method]
        changed = scores[(scores["method"] == method) & scores["changes_record"]]
        assert set(mine["column"]) == set(changed["column"]) and len(mine["column"].unique()) >= 2
        assert (mine.loc[mine["metric"] == "L1", "mean"] > 0).all()
    # compared at the smaller method's own resolution (the tiny SCM's), so neither is upsampled, except to the
    # 32 px LPIPS's AlexNet needs at least, which the run says
    smallest = min(
        Image.open(next((folder / "images").rglob("*.png"))).size[0] for folder in (diffusion, causal)
    )
    assert smallest < 128 and (table["size"] == max(smallest, 32)).all()
    assert (smallest >= 32) or "upsampled" in result.output
    axioms = pd.read_csv(out / "axioms.csv")
    composition = axioms[axioms["axiom"] == "composition"].set_index(["method", "measure"])["mean"]
    # the SCM's null intervention returns its input exactly; the diffusion editor pays its autoencoder's and its
    # inversion's error each time, and it adds up (the demo model, measured: 0.8 after one, 6.4 after ten)
    assert composition[("scm-hvae", "L1 after 10 null edits")] < 1e-3
    once, ten_times = (composition[("direct", f"L1 after {n}")] for n in ("1 null edit", "10 null edits"))
    assert 0.1 < once < ten_times
    assert axioms[axioms["axiom"] == "reversibility"]["method"].nunique() == 2
    provenance = json.loads((out / "evaluation.json").read_text())
    assert [e["job"]["model"] for e in provenance["edits"]] == ["demo", str(tmp_path / "scm-model")]
    assert provenance["classifier"]["record_sha256"] and provenance["model_axioms"] == "auto"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--edits", "nowhere", "--classifier", "c", "--out", "o"], "nowhere: no such folder"),
        (["--edits", ".", "--classifier", "c", "--out", "o"], "neither edits.csv"),
    ],
)
def test_user_mistakes_are_cfaudit_errors(app, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = invoke(app, "evaluate", *args)
    assert isinstance(result.exception, CfauditError), result.output
    assert message in str(result.exception)


def test_an_out_that_cannot_be_a_folder_is_named_before_any_work(app, tmp_path):
    (tmp_path / "afile").write_text("x")
    expected = {
        tmp_path / "afile": f"{tmp_path / 'afile'} is a file, not a folder; --out names a folder",
        tmp_path / "afile" / "o": "afile is a file, so no folder can be made below it; choose another --out",
    }
    for out, message in expected.items():
        result = invoke(
            app, "evaluate", "--edits", tmp_path / "none", "--classifier", tmp_path / "c", "--out", out
        )
        assert isinstance(result.exception, CfauditError), result.output
        assert message in str(result.exception)


def test_a_missing_classifier_is_named(app, tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    save_image(np.zeros((16, 16), dtype=np.float32), folder / "a.png")
    (folder / "pairs.csv").write_text("original,counterfactual,intervention\na.png,a.png,sex=male\n")
    result = invoke(
        app, "evaluate", "--edits", folder, "--classifier", tmp_path / "none", "--out", tmp_path / "o"
    )
    assert isinstance(result.exception, CfauditError), result.output
    assert "classifier.json: not found" in str(result.exception)
