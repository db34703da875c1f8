from pathlib import Path

import pytest

from cfaudit.data.edit_jobs import JobItem
from cfaudit.data.interventions import Intervention
from cfaudit.data.vocabulary import PATHOLOGIES, RACES
from cfaudit.discover.atlas import RegionAtlas
from cfaudit.discover.plan import (
    allot_images,
    build_plan,
    default_interventions,
    eligible_counts,
    family_size,
    images_per_intervention,
    is_eligible,
    regional_interventions,
)
from cfaudit.discover.significance import images_for_share
from cfaudit.errors import CfauditError


def record(**values):
    base = {"age": 60.0, "sex": "Male", "race": "White", "Cardiomegaly": float("nan")}
    return {**base, **values}


def item(k, **values):
    return JobItem(f"img{k}", Path(f"img{k}.png"), "prompt", record(**values))


def test_default_interventions_cover_findings_sex_race_and_age_both_ways():
    names = [str(i) for i in default_interventions()]
    assert len(names) == 2 * len(PATHOLOGIES) + 2 + len(RACES) + 2
    assert "do(Cardiomegaly=0)" in names and "do(Cardiomegaly=1)" in names
    assert "do(age=+20)" in names and "do(age=-20)" in names and "do(sex=Female)" in names
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("text", "values", "eligible"),
    [
        ("Cardiomegaly=0", {"Cardiomegaly": 1.0}, True),
        ("Cardiomegaly=0", {"Cardiomegaly": 0.0}, False),
        ("Cardiomegaly=0", {"Cardiomegaly": -1.0}, False),  # uncertain reads as negative by default
        ("Cardiomegaly=1", {}, True),  # blank reads as negative by default
        ("sex=Female", {"sex": "M"}, True),
        ("sex=Female", {"sex": "F"}, False),
        ("race=Black", {"race": "Unknown"}, False),  # the source race is not known to differ
        ("race=Black", {"race": "WHITE"}, True),
        ("age=+20", {"age": 95.0}, True),
        ("age=+20", {"age": 110.0}, False),  # 130 is outside the valid range
        ("age=-20", {"age": 15.0}, False),
    ],
)
def test_eligibility(text, values, eligible):
    assert is_eligible(Intervention.parse(text), record(**values)) is eligible


def test_plan_takes_eligible_images_in_one_seeded_order_and_shares_them():
    items = [item(k, Cardiomegaly=float(k % 2), sex="Male" if k < 6 else "Female") for k in range(12)]
    interventions = [Intervention.parse("Cardiomegaly=0"), Intervention.parse("sex=Female")]
    plan = build_plan(items, interventions, per_intervention=3, seed=1)
    removed = plan.images_by_intervention["do(Cardiomegaly=0)"]
    swapped = plan.images_by_intervention["do(sex=Female)"]
    assert len(removed) == 3 and all(int(i[3:]) % 2 == 1 for i in removed)
    assert len(swapped) == 3 and all(int(i[3:]) < 6 for i in swapped)
    assert plan.n_edits == 6
    by_image = {p.image_id: [str(i) for i in p.interventions] for p in plan.items}
    for image_id in removed:
        assert "do(Cardiomegaly=0)" in by_image[image_id]
    assert sum(len(v) for v in by_image.values()) == 6
    assert build_plan(items, interventions, 3, seed=1).images_by_intervention == plan.images_by_intervention
    assert build_plan(items, interventions, 3, seed=2).images_by_intervention != plan.images_by_intervention


def test_plan_leaves_out_interventions_without_eligible_images():
    items = [item(k, Cardiomegaly=0.0) for k in range(4)]
    plan = build_plan(items, [Intervention.parse("Cardiomegaly=0"), Intervention.parse("Edema=1")], 2)
    assert plan.images_by_intervention["do(Cardiomegaly=0)"] == []
    assert len(plan.images_by_intervention["do(Edema=1)"]) == 2


def test_plan_errors():
    items = [item(0)]
    with pytest.raises(CfauditError, match="at least 1"):
        build_plan(items, default_interventions(), 0)
    with pytest.raises(CfauditError, match="twice"):
        build_plan(items, [Intervention.parse("Edema=1"), Intervention.parse("edema=present")], 1)
    with pytest.raises(CfauditError, match="no record"):
        build_plan([JobItem("x", Path("x.png"), "p")], [Intervention.parse("Edema=1")], 1)


def test_discovery_refuses_an_index_without_the_control_splits_before_editing(tmp_path):
    from cfaudit.data.adapters import build_index, write_index
    from cfaudit.data.phantom import default_config_path, generate_phantom, load_config
    from cfaudit.discover import run_discovery

    phantom = generate_phantom(
        tmp_path / "p", load_config(default_config_path()).with_overrides(n=12, size=32), seed=0, workers=1
    )
    index = build_index("phantom", phantom.out, seed=0)
    index.table["split"] = "test"
    write_index(index, tmp_path / "index.csv")

    class NoEditor:  # discovery must stop before it needs one
        def __getattr__(self, name):
            raise AssertionError(f"editor used: {name}")

    with pytest.raises(CfauditError, match=r"no images in split 'train'.*--label-split"):
        run_discovery(
            NoEditor(), tmp_path / "index.csv", None, tmp_path / "out", [Intervention.parse("Edema=1")]
        )
    # guidance for an attribute no requested edit changes is refused first, before the plan or any edit
    from cfaudit.edit.job import JobSettings

    guided = JobSettings(attribute_guidance={"race": 12.0})
    with pytest.raises(
        CfauditError, match=r"for race: no edit of this job takes it \(the edits: do\(Edema=1\)\)"
    ):
        run_discovery(
            NoEditor(), tmp_path / "index.csv", None, tmp_path / "out", [Intervention.parse("Edema=1")],
            job_settings=guided,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_real_images_are_read_square_and_no_larger_than_the_working_size(tmp_path):
    import numpy as np

    from cfaudit.data.images import save_image
    from cfaudit.discover.run import _read_at_most

    save_image(np.random.default_rng(0).random((300, 500)).astype(np.float32), tmp_path / "big.png", bits=16)
    save_image(np.full((128, 128), 0.5, dtype=np.float32), tmp_path / "small.png", bits=16)
    assert _read_at_most(tmp_path / "big.png", 256).shape == (256, 256)
    small = _read_at_most(tmp_path / "small.png", 256)
    assert small.shape == (128, 128) and abs(float(small.mean()) - 0.5) < 1e-3  # never upsampled


def test_eligible_counts_and_images_allotted_within_a_budget():
    items = [item(k, Cardiomegaly=float(k % 2), sex="Male" if k < 3 else "Female") for k in range(12)]
    interventions = [Intervention.parse("Cardiomegaly=0"), Intervention.parse("sex=Female")]
    eligible = eligible_counts(items, interventions)
    assert eligible == {"do(Cardiomegaly=0)": 6, "do(sex=Female)": 3}
    assert allot_images(5, eligible) == {"do(Cardiomegaly=0)": 5, "do(sex=Female)": 3}
    # 6 edits: the one with 3 eligible keeps them, the other gets what is left under a common cap
    assert allot_images(5, eligible, budget=6) == {"do(Cardiomegaly=0)": 3, "do(sex=Female)": 3}
    assert allot_images(5, eligible, budget=4) == {"do(Cardiomegaly=0)": 2, "do(sex=Female)": 2}
    with pytest.raises(CfauditError, match="budget"):
        allot_images(5, eligible, budget=1)


def test_plan_takes_a_number_of_images_per_intervention():
    items = [item(k, Cardiomegaly=float(k % 2)) for k in range(12)]
    interventions = [Intervention.parse("Cardiomegaly=0"), Intervention.parse("Edema=1")]
    plan = build_plan(items, interventions, {"do(Cardiomegaly=0)": 2, "do(Edema=1)": 5}, seed=1)
    assert {k: len(v) for k, v in plan.images_by_intervention.items()} == {
        "do(Cardiomegaly=0)": 2,
        "do(Edema=1)": 5,
    }
    # The same seeded order as one number for all: the first images agree
    same = build_plan(items, interventions, 5, seed=1)
    assert same.images_by_intervention["do(Edema=1)"] == plan.images_by_intervention["do(Edema=1)"]
    left_out = build_plan(items, interventions, {"do(Edema=1)": 3}, seed=1)
    assert left_out.images_by_intervention["do(Cardiomegaly=0)"] == [] and left_out.n_edits == 3


def test_auto_images_are_what_detecting_the_stated_share_needs_within_eligible_images_and_budget():
    items = [item(k, Cardiomegaly=float(k % 4 == 0)) for k in range(200)]
    interventions = [Intervention.parse("Cardiomegaly=0"), Intervention.parse("Cardiomegaly=1")]
    atlas = RegionAtlas.load()
    tests = family_size(interventions, atlas)
    assert tests == 2 * (20 - 2) + 2  # heads not targeted (the finding and No Finding are), one cluster each
    level = 0.1 / tests
    needed = images_for_share(0.3, level)
    per, eligible = images_per_intervention(items, interventions, "auto", 0.3, level)
    assert eligible == {"do(Cardiomegaly=0)": 50, "do(Cardiomegaly=1)": 150}
    assert per == {"do(Cardiomegaly=0)": min(needed, 50), "do(Cardiomegaly=1)": needed}
    per, _ = images_per_intervention(items, interventions, "auto", 0.3, level, budget=60)
    assert per == {"do(Cardiomegaly=0)": 30, "do(Cardiomegaly=1)": 30}
    assert images_per_intervention(items, interventions, 16, 0.3, level) == (16, None)
    assert regional_interventions([*interventions, Intervention.parse("sex=Female")], atlas) == {
        "do(Cardiomegaly=0)", "do(Cardiomegaly=1)",
    }  # fmt: skip
