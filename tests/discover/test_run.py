"""A classifier confounded on purpose, through the discovery's own reading of real images.

The classifier here reads every phantom image's recorded attributes, but its age head takes 15 years off
whenever the image has edema. Real images of the phantom go through :func:`real_image_controls` (as a
discovery reads them); the edits' classifier scores are synthetic (the editor adds edema, which the confounded
classifier reads as 15 years younger), so the test needs no diffusion model.
"""

import hashlib

import numpy as np
import pandas as pd
import pytest

from cfaudit.data.adapters import build_index
from cfaudit.data.interventions import Intervention
from cfaudit.data.labels import DEFAULT_POLICY, label_value
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config
from cfaudit.data.vocabulary import FINDINGS, RACES
from cfaudit.discover.candidates import CandidateSettings, rank_candidates
from cfaudit.discover.clusters import CLUSTER_COLUMNS
from cfaudit.discover.cochange import cochange_table
from cfaudit.discover.error_rates import apply_error_rates
from cfaudit.discover.heads import HEAD_COLUMNS
from cfaudit.discover.label_statistics import LabelStatistics
from cfaudit.discover.plan import is_eligible
from cfaudit.discover.run import _read_at_most, real_image_controls

ADD_EDEMA = Intervention.parse("Edema=1")
MISREAD_YEARS = -15.0


class ConfoundedClassifier:
    """Knows each real image's record (by its pixels) and reports it, except that edema shifts its age."""

    def __init__(self, index, misread_years):
        self.records = {}
        for record, path in zip(index.table.to_dict("records"), index.image_paths(), strict=True):
            self.records[self.key(_read_at_most(path, 256))] = record
        self.misread_years = misread_years

    @staticmethod
    def key(image):
        return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()

    def predict(self, images):
        records = [self.records[self.key(image)] for image in images]
        outputs = {finding: np.array([label_value(r, finding) for r in records]) for finding in FINDINGS}
        outputs["sex"] = np.array([1.0 if r["sex"] == "Male" else 0.0 for r in records])
        outputs["race"] = np.array([[float(r["race"] == race) for race in RACES] for r in records])
        outputs["age"] = np.array([r["age"] + self.misread_years * label_value(r, "Edema") for r in records])
        return outputs


@pytest.fixture(scope="module")
def phantom_index(tmp_path_factory):
    settings = load_config(default_config_path()).with_overrides(n=240, size=32)
    phantom = generate_phantom(tmp_path_factory.mktemp("phantom"), settings, seed=0, workers=1)
    return build_index("phantom", phantom.out, seed=0)


def edit_scores(records, shift_years, seed=0):
    """Classifier scores of originals, null edits and do(Edema=1) counterfactuals of ``records``: the null edit
    changes nothing but noise; the counterfactual reads ``shift_years`` older (and has edema)."""
    rng = np.random.default_rng(seed)
    n = len(records)
    original = {h: np.zeros(n) for h in HEAD_COLUMNS}
    original["age"] = np.array([r["age"] for r in records], dtype=float)
    null = {h: v + rng.normal(0, 0.002 if h != "age" else 0.5, n) for h, v in original.items()}
    counterfactual = {h: v + rng.normal(0, 0.002 if h != "age" else 0.5, n) for h, v in null.items()}
    counterfactual["age"] = counterfactual["age"] + shift_years
    counterfactual["Edema"] = counterfactual["Edema"] + 0.9
    images = [str(r["image_id"]) for r in records]
    scores = {"images": images, "original": original, "null": null, "counterfactual": counterfactual}
    return scores, pd.DataFrame({"intervention": str(ADD_EDEMA), "image_id": images})


def age_candidate(phantom_index, misread_years, shift_years):
    classifier = ConfoundedClassifier(phantom_index, misread_years)
    real = real_image_controls(classifier, phantom_index, DEFAULT_POLICY)  # every image: the data split "all"
    test = phantom_index.split("test").table
    records = [r for r in test.to_dict("records") if is_eligible(ADD_EDEMA, r)]
    scores, edits = edit_scores(records, shift_years)
    labels = LabelStatistics(phantom_index.split("train").table)
    table = cochange_table(
        scores, edits, [ADD_EDEMA], labels, real.data, {str(r["image_id"]): r for r in records}, bias=real.bias,
    )  # fmt: skip
    no_clusters = pd.DataFrame(columns=list(CLUSTER_COLUMNS))
    table, no_clusters, _ = apply_error_rates(table, no_clusters, alpha=0.1)
    age = table[table["head"] == "age"].iloc[0]
    ranked = rank_candidates(table, no_clusters, CandidateSettings())
    return age, ranked[ranked["target"] == "age"]


def test_a_classifier_that_reads_edema_as_age_is_reported_as_a_classifier_confound(phantom_index):
    age, candidate = age_candidate(phantom_index, MISREAD_YEARS, shift_years=MISREAD_YEARS)
    # Measured on real images against their recorded ages, conditional on edema
    assert age["classifier_bias"] == pytest.approx(MISREAD_YEARS, abs=1.0)
    # Real images "show" the shift beyond the labels: the rule that made the false flag would fire ...
    beyond_labels = age["data_association"] - age["label_association"]
    assert beyond_labels * age["delta"] > 0 and abs(beyond_labels) >= 5.0
    settings = CandidateSettings()
    assert age["q_value"] <= settings.alpha
    # ... but age is recorded for every image: the classifier misreads, nothing is hidden
    assert candidate["status"].tolist() == ["classifier confound"] and not candidate["flagged"].any()
    assert "classifier confound" in candidate["description"].iloc[0]


def test_the_same_age_shift_with_an_honest_classifier_is_an_editor_quirk(phantom_index):
    age, candidate = age_candidate(phantom_index, 0.0, shift_years=MISREAD_YEARS)
    assert abs(age["classifier_bias"]) < 1.0
    assert candidate["status"].tolist() == ["editor quirk"]
