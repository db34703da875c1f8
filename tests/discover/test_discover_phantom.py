"""Discovery end to end with the shipped tiny model and classifier on freshly drawn phantoms.

The phantom's ground truth (device masks) is read here, by the test, to score what discovery found; the
discovery code itself never reads it.
"""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfaudit.data.adapters import build_index, write_index
from cfaudit.data.interventions import parse_interventions
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config
from cfaudit.discover import DiscoverySettings, run_discovery
from cfaudit.edit.editor import CounterfactualEditor
from cfaudit.edit.job import JobSettings
from cfaudit.evaluate.classifiers import load_classifier

INTERVENTIONS = ["Cardiomegaly=0", "Edema=1", "age=+20"]
INTERVENTIONS_DO = [f"do({i})" for i in INTERVENTIONS]
PACEMAKER_BIT, TUBE_BITS = 10, (11, 12, 13, 14)  # ground_truth/legend.json of the phantom


@pytest.fixture(scope="module")
def models():
    return CounterfactualEditor.load("demo", device="cpu"), load_classifier("demo", "cpu")


def discovery(tmp_path, models, config, seed):
    settings = load_config(default_config_path(config)).with_overrides(n=800, size=128)
    phantom = generate_phantom(tmp_path / "phantom", settings, seed=seed, workers=1)
    write_index(build_index("phantom", phantom.out, seed=seed), tmp_path / "index.csv")
    editor, classifier = models
    result = run_discovery(
        editor, tmp_path / "index.csv", classifier, tmp_path / "discovery", parse_interventions(INTERVENTIONS),
        DiscoverySettings(images=12), JobSettings(batch_size=4), model_id="demo",
    )  # fmt: skip
    return phantom.out, result


def mask_share(root, members, bits, excluding=()):
    """Share of the cluster members' changed pixels that fall on the ground-truth parts ``bits`` (dilated),
    leaving out those on the parts ``excluding`` (a line that runs under the pacemaker is not a line change)."""
    from scipy import ndimage

    hits = total = 0
    for member in members.itertuples(index=False):
        grid = int(member.grid)
        changed = np.zeros(grid * grid, dtype=bool)
        changed[[int(p) for p in str(member.pixels).split()]] = True
        labels = np.asarray(Image.open(root / "ground_truth" / f"{member.image_id}_mask.png")).astype(
            np.int64
        )
        part = np.zeros(labels.shape, dtype=bool)
        other = np.zeros(labels.shape, dtype=bool)
        for bit in bits:
            part |= ((labels >> bit) & 1).astype(bool)
        for bit in excluding:
            other |= ((labels >> bit) & 1).astype(bool)
        k = labels.shape[0] // grid
        part = ndimage.binary_dilation(part.reshape(grid, k, grid, k).any(axis=(1, 3)))
        part &= ~ndimage.binary_dilation(other.reshape(grid, k, grid, k).any(axis=(1, 3)))
        hits += int((changed.reshape(grid, grid) & part).sum())
        total += int(changed.sum())
    return hits / max(total, 1)


def test_discovery_ranks_pacemaker_removal_with_cardiomegaly_and_reports_age_effusion(tmp_path, models):
    root, result = discovery(tmp_path, models, "default", seed=3)
    top = result.candidates.head(3)
    # Every rule of a hidden relation holds; whether 12 images are enough to flag it among the run's ~60 tests
    # is the q-value's to say (5 of 12 images give p = 1/32 at best, q about 0.13 here: "not significant")
    backed = top["status"].isin(["hidden", "not significant"])
    found = top[(top["kind"] == "region") & (top["intervention"] == "do(Cardiomegaly=0)") & backed]
    assert not found.empty, result.candidates.head(8).to_string()
    assert_error_rates(tmp_path / "discovery", result)
    cluster = int(found.iloc[0]["target"].split()[-1])
    members = pd.read_csv(tmp_path / "discovery" / "cluster_members.csv")
    members = members[(members["intervention"] == "do(Cardiomegaly=0)") & (members["cluster"] == cluster)]
    on_pacemakers = mask_share(root, members, (PACEMAKER_BIT,))
    on_tubes = mask_share(root, members, TUBE_BITS, excluding=(PACEMAKER_BIT,))
    # Most of the change lies on pacemakers; lines and tubes (where they do not run under one) get little of it
    assert on_pacemakers >= 0.5 and on_tubes <= on_pacemakers / 3, (on_pacemakers, on_tubes)
    assert found.iloc[0]["data_association"] < 0  # real images without cardiomegaly are darker there
    # The planted age -> effusion relation is reported (it lives in the labels, so it is not hidden)
    effusion = result.candidates[
        (result.candidates["intervention"] == "do(age=+20)")
        & (result.candidates["target"] == "Pleural Effusion")
    ]
    assert not effusion.empty and effusion.iloc[0]["label_association"] > 0.05
    assert not effusion.iloc[0]["flagged"]
    for name in (
        "candidates.json",
        "cochange.csv",
        "clusters.csv",
        "discovery.json",
        found.iloc[0]["evidence"],
    ):
        assert (tmp_path / "discovery" / name).is_file()


def test_discovery_flags_nothing_on_a_phantom_without_planted_relations(tmp_path, models):
    _, result = discovery(tmp_path, models, "null", seed=4)
    assert result.flagged.empty, result.flagged.to_string()
    assert not result.candidates.empty  # it still reports what the labels and the edits show
    assert_error_rates(tmp_path / "discovery", result)


def assert_error_rates(folder, result, alpha=0.1):
    """p, q and detectable effects are written, and flags follow q <= alpha."""
    written = pd.read_csv(folder / "candidates.csv")
    assert {"p_value", "q_value", "detectable", "classifier_bias", "rests_on", "cross_check"} <= set(
        written.columns
    )
    assert written["p_value"].between(0, 1).all() and (written["q_value"] >= written["p_value"] - 1e-12).all()
    assert (written["flagged"] == ((written["status"] == "hidden") & (written["q_value"] <= alpha))).all()
    assert (written.loc[written["status"] == "not significant", "q_value"] > alpha).all()
    power = pd.read_csv(folder / "power.csv")
    assert set(power["intervention"]) == set(INTERVENTIONS_DO) and (power["n_images"] == 12).all()
    assert power["detectable_head"].notna().all() and power["detectable_share"].notna().sum() == 2  # not age
    meta = json.loads((folder / "discovery.json").read_text())
    # the expected-region control is made (and recorded) for the heart, not for the lungs or a whole-image edit
    assert meta["region_control"]["tested"] == ["do(Cardiomegaly=0)"]
    family = meta["error_rates"]
    assert family["alpha"] == alpha and family["tests"] >= len(written[written["kind"] == "region"])
    relations = pd.concat([pd.read_csv(folder / "cochange.csv"), pd.read_csv(folder / "clusters.csv")])
    confirmed = (relations["q_value"] <= alpha) & relations["data_p"].notna()
    assert family["confirmed"] == int(confirmed.sum()) and family["rejections"] >= family["confirmed"]
