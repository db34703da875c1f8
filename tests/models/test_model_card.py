"""Model cards (README.md beside every model folder): facts from the records only, user text kept, no machine paths."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from cfaudit.cli import models as models_cli
from cfaudit.digests import file_sha256
from cfaudit.errors import CfauditError
from cfaudit.models.card_facts import training_phases
from cfaudit.models.card_file import BEGIN, END, split_card
from cfaudit.models.model_card import TAGS, write_model_card
from cfaudit.models.shipped_model import DEMO_DIR, install_demo, portable
from cfaudit.train.config import TrainConfig, VaeTrainConfig
from cfaudit.train.trainer import train
from cfaudit.train.vae import train_vae
from tests.train.tiny_data import make_index  # the training tests' tiny data set

#: An absolute path of someone's machine, or the local runner script the demo's record names.
MACHINE_PATH = re.compile(r"(?<![\w.:/])/(?:home|work|tmp|root|Users|mnt|var|private)/|tmp/cf\.py")
SHIPPED = DEMO_DIR / "README.md"


def _card(path: Path) -> tuple[dict, str]:
    return split_card(path.read_text(encoding="utf-8"), path)


def _generated(text: str) -> str:
    return text[text.index(BEGIN) : text.index(END)]


def _without_index_facts(text: str) -> str:
    """The card less what it reads from the training index (not in the repository): the data section and the
    limit that names the data set."""
    text = re.sub(r"## Training data\n.*?(?=\n## )", "", text, flags=re.S)
    limit = r"- (?:Trained on the synthetic phantom|Trained on \w+ images|Check the terms of the data).*?\n(?=- |\n)"
    return re.sub(limit, "", text, flags=re.S)


@pytest.fixture()
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A random tiny pipeline (written with its card by init-random) that a test may change."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny"))


def test_the_shipped_card_has_hugging_face_front_matter() -> None:
    front, _ = _card(SHIPPED)
    assert front["library_name"] == "diffusers" and front["pipeline_tag"] == "text-to-image"
    assert front["license"] == "apache-2.0"  # trained from random weights: the project's own license
    assert set(TAGS) <= set(front["tags"]) and {"chest-x-ray", "counterfactual", "stable-diffusion"} <= set(
        TAGS
    )
    assert "base_model" not in front  # the tiny-f4 preset has no pretrained base
    assert front["cfaudit"] == {"preset": "tiny-f4", "origin": "trained"}


def test_the_shipped_card_states_its_records_and_names_no_machine() -> None:
    text = SHIPPED.read_text(encoding="utf-8")
    unet_run = json.loads((DEMO_DIR / "provenance.json").read_text())
    vae_run = json.loads((DEMO_DIR / "vae_provenance.json").read_text())
    assert unet_run["data"]["index_sha256"] in text
    # the steps of each phase (5000 + 1500 + 3000)
    phases = training_phases(unet_run)
    steps = " + ".join(str(phase["step"]) for phase in phases)
    assert len(phases) == 3
    assert f"for {steps} steps in 3 phases on {unet_run['data']['rows']} images (split `train`)" in text
    # the last phase's recorded command, program normalised
    assert "Command: `cfaudit train --config configs/train/demo_f4_race_whole.yaml " in text
    assert f"{vae_run['steps']} steps, final loss" in text and "- kl_weight: 1e-06" in text
    assert "| Train | 58.9 / 41.1 |" in text  # Table 1 of the index it was trained on
    assert "3.94 / 2.74" in text and "docs/BENCHMARKS.md" in text  # quoted figures name their source
    assert "Not for diagnosis" in text
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text)


def test_the_shipped_card_is_what_the_code_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = Path(shutil.copytree(DEMO_DIR, tmp_path / "demo"))
    data = json.loads((DEMO_DIR / "provenance.json").read_text())["data"]
    index = Path(data["index"])  # relative to the repository's root, where the demo was trained
    if not (index.is_file() and file_sha256(index) == data["index_sha256"]):
        monkeypatch.chdir(tmp_path)  # out of reach (a fresh clone): compare all the card says without it
    write_model_card(copy, name="demo")
    fresh, shipped = (p.read_text(encoding="utf-8") for p in (copy / "README.md", SHIPPED))
    if index.is_file():
        assert fresh == shipped
    else:
        assert f"Not computed: the index `{data['index']}` cannot be read here" in fresh
        assert _without_index_facts(fresh) == _without_index_facts(shipped)
        assert "## Recipe" in _without_index_facts(fresh) and "## Limits" in _without_index_facts(fresh)


def test_a_card_is_written_at_every_stage_of_a_tiny_training_run(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    index = make_index(tmp_path / "data")
    init_front, init_text = _card(tiny_model_dir / "README.md")  # init-random wrote it
    assert init_front["cfaudit"]["origin"] == "random" and init_front["cfaudit"]["init"]["seed"] == 0
    assert "init-random --arch tiny --seed 0" in init_text

    vae = train_vae(VaeTrainConfig(model=str(tiny_model_dir), index=str(index), output_dir=str(tmp_path / "vae"),
                                   resolution=32, max_steps=2, batch_size=2, checkpoint_every=1, eval_images=2,
                                   eval_split="train", seed=5), progress=False)  # fmt: skip
    vae_front, vae_text = _card(vae.model_dir / "README.md")
    assert vae_front["cfaudit"]["origin"] == "autoencoder"
    recorded = json.loads((vae.model_dir / "vae_provenance.json").read_text())["held_out_l1"]
    assert f"step 1: {recorded['1']}, step 2: {recorded['2']}" in vae_text  # held-out L1, as recorded
    assert "6 images (counted in the index)" in vae_text and "sha256 not recorded" in vae_text

    config = TrainConfig.from_dict({"model": str(vae.model_dir), "index": str(index), "output_dir": str(tmp_path / "run"),
                                    "resolution": 64, "max_steps": 2, "batch_size": 2, "seed": 11,
                                    "latent_cache_dir": str(tmp_path / "cache")})  # fmt: skip
    model = train(config, progress=False).model_dir
    front, text = _card(model / "README.md")
    unet_run = json.loads((model / "provenance.json").read_text())
    assert front["cfaudit"] == {"preset": "tiny", "origin": "trained"} and "base_model" not in front
    assert "trained by `cfaudit train` for 2 steps on 6 images (split `train`)" in text
    assert unet_run["data"]["index_sha256"] in text and "- seed: 11" in text
    assert (
        "Computed from the index, whose sha256 is the recorded one" in text
        and "| Train | 33.3 / 66.7 |" in text
    )
    assert (
        "### Autoencoder\n\nTrained by `cfaudit models train-vae`" in text
    )  # from the folder it started from
    assert "Not measured" in text  # no figures were quoted for it
    assert "Phase 1" not in text  # one phase: no phase headings

    # a second phase from the first's model: the card and PROVENANCE.txt show both, and the autoencoder's record
    # travels on to the second phase's folder
    second = TrainConfig.from_dict({**config.to_dict(), "model": str(model), "output_dir": str(tmp_path / "run2"),
                                    "max_steps": 3, "snr_gamma": None})  # fmt: skip
    phase2 = train(second, progress=False).model_dir
    assert (phase2 / "vae_provenance.json").read_bytes() == (
        vae.model_dir / "vae_provenance.json"
    ).read_bytes()
    _, two = _card(phase2 / "README.md")
    assert (
        "**Phase 1 of 2**: 2 steps" in two and "**Phase 2 of 2**, from the model of phase 1: 3 steps" in two
    )
    assert two.index("- max_steps: 2") < two.index("- max_steps: 3")
    assert "### Autoencoder\n\nTrained by `cfaudit models train-vae`" in two
    installed = install_demo(phase2, tmp_path / "installed")
    provenance = (installed / "PROVENANCE.txt").read_text(encoding="utf-8")
    assert "- phase 1: steps 2, seed 11" in provenance and "- phase 2: steps 3, seed 11" in provenance
    for card in (vae_text, text, two, provenance):
        assert str(tmp_path) not in card and not MACHINE_PATH.search(card)


def test_cli_card_quotes_metrics_and_a_refresh_keeps_the_users_text(model_copy: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    models_cli.register(app)
    card = model_copy / "README.md"
    front, body = _card(card)
    before, after = "\nMy preface, kept above.\n", "\n\n## My notes\n\nKept below, with a | pipe.\n"
    body = before + body[body.index(BEGIN) : body.index(END) + len(END)] + after
    front = {**front, "license": "mit", "tags": [*front["tags"], "my-tag"], "datasets": ["mine"]}
    card.write_text(f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n{body}", encoding="utf-8")
    metrics = tmp_path / "measured.yaml"
    metrics.write_text(yaml.safe_dump({"reconstruction": [{"measure": "L1 (0-255)", "value": "7.25",
                                                           "source": "my benchmark, 2026-12-04"}]}))  # fmt: skip

    result = CliRunner().invoke(app, ["models", "card", str(model_copy), "--metrics", str(metrics)])
    assert result.exit_code == 0, result.output
    refreshed = card.read_text(encoding="utf-8")
    front, body = split_card(refreshed, card)
    assert body.startswith(before + BEGIN) and body.endswith(END + after)  # the user's text, byte for byte
    assert front["license"] == "mit" and front["datasets"] == ["mine"] and front["tags"][-1] == "my-tag"
    assert front["cfaudit"]["origin"] == "random"  # kept from the card: a random folder has no other record
    assert "| L1 (0-255) | 7.25 | - | my benchmark, 2026-12-04 |" in refreshed
    assert "Quoted from `measured.yaml`" in refreshed

    assert CliRunner().invoke(app, ["models", "card", str(model_copy)]).exit_code == 0
    again = card.read_text(encoding="utf-8")
    assert "7.25" not in again and "Not measured" in again  # --metrics is quoted once; metrics.yaml always
    assert again.replace(_generated(again), "") == refreshed.replace(_generated(refreshed), "")


def test_a_card_without_markers_is_kept_below_the_generated_part(model_copy: Path) -> None:
    card = model_copy / "README.md"
    card.write_text("---\nlicense: other\n---\n# Mine\n\nWritten by hand.\n", encoding="utf-8")
    write_model_card(model_copy)
    text = card.read_text(encoding="utf-8")
    assert text.index(END) < text.index("# Mine\n\nWritten by hand.\n")
    assert split_card(text, card)[0]["license"] == "other"
    write_model_card(model_copy)
    assert card.read_text(encoding="utf-8") == text  # a refresh changes nothing that did not change


def test_a_hub_fine_tune_names_its_base_model_and_inherits_its_license(model_copy: Path) -> None:
    hub = "/root/.cache/huggingface/hub/models--stable-diffusion-v1-5--stable-diffusion-v1-5/snapshots/abc"
    record = {"step": 3, "config": {"seed": 0, "max_steps": 3}, "command": "/usr/bin/python -m pytest",
              "base_model": {"source": "stable-diffusion-v1-5/stable-diffusion-v1-5", "folder": hub},
              "data": {"index": "/home/someone/data/index.csv", "index_sha256": "0" * 64, "split": "train", "rows": 9}}  # fmt: skip
    (model_copy / "provenance.json").write_text(json.dumps(record))
    (model_copy / "README.md").unlink()
    write_model_card(model_copy)
    front, text = _card(model_copy / "README.md")
    assert front["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert front["license"] == "creativeml-openrail-m"
    assert "no command line recorded" in text  # a pytest run is no cfaudit command
    assert "`data/index.csv`" in text and "cannot be read here" in text
    assert not MACHINE_PATH.search(text)


def test_bad_inputs_are_one_clear_error(model_copy: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CfauditError, match=r"empty: not a model folder .*give `demo` or a pipeline folder"):
        write_model_card(empty)
    run = tmp_path / "run"
    shutil.copytree(model_copy, run / "model")
    with pytest.raises(CfauditError, match=r"its model/ folder is one"):
        write_model_card(run)
    with pytest.raises(CfauditError, match="no such model folder"):
        write_model_card(tmp_path / "missing")

    (model_copy / "provenance.json").write_text("{not json")
    with pytest.raises(CfauditError, match=r"provenance\.json: not readable JSON .*restore it"):
        write_model_card(model_copy)
    (model_copy / "provenance.json").write_text(json.dumps({"step": 1, "config": {}, "data": {
        "index": "x.csv", "index_sha256": "0" * 64}}))  # fmt: skip
    with pytest.raises(
        CfauditError, match=r"is not the 000000000000\.\.\. of the index the model was trained on"
    ):
        write_model_card(model_copy, index=make_index(tmp_path / "data"))
    (model_copy / "metrics.yaml").write_text("table2: []\nreconstruction:\n  - {measure: L1, value: 3}\n")
    with pytest.raises(CfauditError, match=r"metrics\.yaml: reconstruction\[0\]: no `source`"):
        write_model_card(model_copy)
    (model_copy / "metrics.yaml").write_text("recon: []\n")
    with pytest.raises(CfauditError, match="unknown section"):
        write_model_card(model_copy)

    app = typer.Typer()
    models_cli.register(app)
    result = CliRunner().invoke(app, ["models", "card", str(empty)])
    assert result.exit_code != 0 and isinstance(result.exception, CfauditError)


def test_install_demo_writes_the_card_and_keeps_the_measured_figures(tmp_path: Path) -> None:
    installed = install_demo(DEMO_DIR, tmp_path / "demo")
    text = (installed / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n") and "# cfaudit demo model" in text
    assert (installed / "metrics.yaml").read_bytes() == (DEMO_DIR / "metrics.yaml").read_bytes()
    assert "3.94 / 2.74" in text and not MACHINE_PATH.search(text)


def test_portable_keeps_an_options_name_and_cuts_its_path() -> None:
    assert portable("cf train --config=/home/someone/x/demo.yaml", Path("/elsewhere")) == (
        "cf train --config=x/demo.yaml"
    )
