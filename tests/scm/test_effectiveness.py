"""The shipped SCM baseline changes what it is asked to: do(sex) flips the sex classifier on unseen phantoms."""

import numpy as np
import pandas as pd

from cfaudit.data.adapters import build_index, write_index
from cfaudit.data.edit_jobs import items_from_index
from cfaudit.data.images import load_image
from cfaudit.data.interventions import parse_interventions
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config
from cfaudit.data.records import DataIndex
from cfaudit.evaluate.classifiers import load_classifier
from cfaudit.scm.job import ScmEditSettings, run_scm_edit_job
from cfaudit.scm.model import CausalImageModel

#: Stated margin: the flip rate must beat chance (50%) by 25 points.
CHANCE, MARGIN = 0.5, 0.25


def test_do_sex_flips_the_sex_classifier_in_most_cases(tmp_path):
    settings = load_config(default_config_path("default")).with_overrides(n=120, size=128)
    phantom = generate_phantom(tmp_path / "phantom", settings, seed=21, workers=1)
    write_index(build_index("phantom", phantom.out, seed=21), tmp_path / "index.csv")
    model = CausalImageModel.load("demo", device="cpu")
    items = items_from_index(DataIndex.read(tmp_path / "index.csv"), "all", 40, policy=model.label_policy)
    interventions = parse_interventions(["sex=Female", "sex=Male"])
    run_scm_edit_job(model, items, interventions, tmp_path / "edits", ScmEditSettings(), model_id="demo")
    edits = pd.read_csv(tmp_path / "edits" / "edits.csv")
    sexes = {item.image_id: item.record["sex"] for item in items}
    # Only real counterfactuals: the edit that swaps each image's own sex
    swapped = edits[[f"do(sex={'Female' if sexes[i] == 'Male' else 'Male'})" == v
                     for i, v in zip(edits["image_id"], edits["intervention"], strict=True)]]  # fmt: skip
    assert len(swapped) == len(items)
    classifier = load_classifier("demo", "cpu")
    before = classifier.predict([load_image(p) for p in swapped["original"]])["sex"] > 0.5
    after = (
        classifier.predict([load_image(tmp_path / "edits" / p) for p in swapped["counterfactual"]])["sex"]
        > 0.5
    )
    target_male = np.array([sexes[i] == "Female" for i in swapped["image_id"]])
    correct_before = (before == ~target_male).mean()
    flip_rate = (after == target_male).mean()
    assert correct_before > 0.9  # the classifier reads the phantom's sex ...
    assert flip_rate >= CHANCE + MARGIN, flip_rate  # ... and the SCM's do(sex) changes what it reads
