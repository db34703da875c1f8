"""The expected-region control: a head that reads the intervened attribute's own change is a classifier confound,
one that reads something outside it stays a candidate relation."""

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cfaudit.data.adapters import build_index
from cfaudit.data.edit_folder import IDENTITY_FILE, image_folder
from cfaudit.data.interventions import Intervention
from cfaudit.data.labels import DEFAULT_POLICY
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config
from cfaudit.data.vocabulary import FINDINGS, RACES
from cfaudit.discover.atlas import RegionAtlas
from cfaudit.discover.candidates import CandidateSettings, rank_candidates
from cfaudit.discover.clusters import CLUSTER_COLUMNS
from cfaudit.discover.cochange import COCHANGE_COLUMNS
from cfaudit.discover.region_control import (
    MAX_REGION_AREA,
    blank_region,
    controlled_interventions,
    explains,
    region_mask,
    region_only_scores,
)
from cfaudit.discover.run import real_image_controls
from tests.discover.test_candidates import head_row

SIZE = 64
REMOVE_CM, ADD_EDEMA = Intervention.parse("Cardiomegaly=0"), Intervention.parse("Edema=1")
HEART = (slice(40, 56), slice(24, 48))  # rows, columns: inside the atlas's heart box
PACEMAKER = (slice(14, 20), slice(40, 46))  # the upper patient's left chest, outside it


class RegionReader:
    """A classifier whose Lung Opacity head reads the heart area and whose Support Devices head reads the
    pacemaker's place (every other head 0)."""

    def predict(self, images):
        n = len(images)
        outputs = {finding: np.zeros(n) for finding in FINDINGS}
        outputs["Lung Opacity"] = np.array([image[HEART].mean() for image in images])
        outputs["Support Devices"] = np.array([image[PACEMAKER].mean() for image in images])
        outputs["sex"], outputs["age"] = np.zeros(n), np.zeros(n)
        outputs["race"] = np.zeros((n, len(RACES)))
        return outputs


def write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255).round().astype(np.uint8)).save(path)


def edit_folder(folder):
    """Two images: do(Cardiomegaly=0) darkens the heart area and removes a bright pacemaker; do(Edema=1)
    brightens the heart area."""
    rows = []
    for image_id in ("a", "b"):
        null = np.full((SIZE, SIZE), 0.4)
        null[HEART], null[PACEMAKER] = 0.8, 0.9
        write_png(image_folder(folder, image_id) / IDENTITY_FILE, null)
        removed = null.copy()
        removed[HEART], removed[PACEMAKER] = 0.5, 0.4
        edema = null.copy()
        edema[HEART] = 1.0
        for intervention, image in ((REMOVE_CM, removed), (ADD_EDEMA, edema)):
            relative = f"images/{image_id}/{intervention.slug}.png"
            write_png(folder / relative, image)
            rows.append({"image_id": image_id, "intervention": str(intervention), "counterfactual": relative})
    return pd.DataFrame(rows)


def test_only_small_expected_regions_are_tested():
    atlas = RegionAtlas.load()
    tested = controlled_interventions([REMOVE_CM, ADD_EDEMA, Intervention.parse("sex=Female")], atlas)
    assert tested == [str(REMOVE_CM)]  # the lungs (Edema) cover most of the image; sex the whole of it
    assert 0.0 < region_mask(REMOVE_CM, atlas, SIZE).mean() <= MAX_REGION_AREA


def test_the_composite_keeps_the_heart_change_and_drops_what_changed_outside(tmp_path):
    edits = edit_folder(tmp_path)
    scores = region_only_scores(
        RegionReader(), edits, tmp_path, [REMOVE_CM, ADD_EDEMA], RegionAtlas.load(), chunk=1
    )
    cm = (edits["intervention"] == str(REMOVE_CM)).to_numpy()
    # inside the heart box the counterfactual's pixels (0.5), outside the null edit's (the pacemaker, 0.9)
    assert scores["Lung Opacity"][cm] == pytest.approx([0.5, 0.5], abs=0.01)
    assert scores["Support Devices"][cm] == pytest.approx([0.9, 0.9], abs=0.01)
    assert np.isnan(scores["Lung Opacity"][~cm]).all()  # Edema: not tested


@pytest.mark.parametrize(
    ("region_control", "delta", "explained"),
    [
        (-0.3, -0.37, True),
        (-0.2, -0.37, True),
        (-0.1, -0.37, False),
        (0.3, -0.37, False),
        (math.nan, -0.37, False),
    ],
)
def test_a_move_is_explained_by_its_region_when_it_carries_half_of_it_the_same_way(
    region_control, delta, explained
):
    assert explains(region_control, delta) is explained


@pytest.mark.parametrize(
    ("head", "region_control", "status"),
    [
        ("Lung Opacity", -0.35, "classifier confound"),  # the heart alone moves it: it reads the heart
        ("Support Devices", -0.02, "hidden"),  # the heart alone does not: something outside it changed
        ("Support Devices", math.nan, "hidden"),  # not tested (e.g. a lung finding's edit)
    ],
)
def test_a_head_the_intended_change_moves_is_a_classifier_confound_not_a_hidden_relation(
    head, region_control, status
):
    row = head_row(head, -0.37, -0.47, -0.27, 0.08, -0.19) | {"region_control": region_control}
    ranked = rank_candidates(
        pd.DataFrame([row], columns=list(COCHANGE_COLUMNS)), pd.DataFrame(columns=list(CLUSTER_COLUMNS)),
        CandidateSettings(),
    )  # fmt: skip
    assert ranked["status"].tolist() == [status]
    assert ranked["region_control"].iloc[0] == pytest.approx(region_control, nan_ok=True)
    if status == "classifier confound":
        assert "own region moves it by -0.35" in ranked["description"].iloc[0] and not ranked["flagged"].any()


def test_blanking_fills_the_region_with_one_flat_level_for_every_image():
    image = np.full((8, 8), 0.2, dtype=np.float32)
    image[2:5, 2:5] = 0.9
    mask = np.zeros((8, 8), dtype=bool)
    mask[1:6, 1:6] = True
    blank = blank_region(image, mask)
    assert blank.dtype == np.float32 and np.array_equal(blank[~mask], image[~mask])
    assert np.array_equal(
        blank[mask], blank_region(1 - image, mask)[mask]
    )  # nothing of the image is left in it


class HeartReader(RegionReader):
    """A Lung Opacity head that reads the brightness of the heart's box, at any image size."""

    def predict(self, images):
        outputs = super().predict([np.zeros((SIZE, SIZE))] * len(images))
        box = RegionAtlas.load().mask(["Cardiomegaly"], images[0].shape[0]) if images else None
        outputs["Lung Opacity"] = np.array([image[box].mean() for image in images])
        return outputs


def test_real_images_read_with_the_heart_blanked_no_longer_show_what_the_heart_carried():
    settings = load_config(default_config_path()).with_overrides(n=160, size=32)
    with tempfile.TemporaryDirectory() as folder:
        phantom = generate_phantom(Path(folder), settings, seed=2, workers=1)
        index = build_index("phantom", phantom.out, seed=2)
        records = [r for r in index.table.to_dict("records") if r["Cardiomegaly"] == 1][:5]
        real = real_image_controls(
            HeartReader(),
            index,
            DEFAULT_POLICY,
            interventions=[REMOVE_CM, ADD_EDEMA],
            atlas=RegionAtlas.load(),
        )
    seen = real.data.association(REMOVE_CM, records, DEFAULT_POLICY)["Lung Opacity"]
    blanked = real.outside[str(REMOVE_CM)].association(REMOVE_CM, records, DEFAULT_POLICY)["Lung Opacity"]
    assert abs(seen) > 0.01  # a smaller heart reads as a different "opacity" ...
    assert blanked == pytest.approx(0.0, abs=1e-6)  # ... which the blanked heart no longer carries
    assert list(real.outside) == [str(REMOVE_CM)]  # Edema's region (the lungs) is not tested
