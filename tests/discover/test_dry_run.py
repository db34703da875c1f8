"""``cfaudit discover --dry-run``: the plan's edits and UNet evaluations, costed, with nothing edited or written."""

from __future__ import annotations

import pytest

from cfaudit.cli.main import main
from cfaudit.data.adapters import build_index, write_index
from cfaudit.data.edit_jobs import items_from_index
from cfaudit.data.interventions import parse_interventions
from cfaudit.data.phantom import default_config_path, generate_phantom, load_config
from cfaudit.discover.api import SECONDS_PER_EVAL, discovery_cost
from cfaudit.discover.plan import build_plan, default_interventions
from cfaudit.edit.inversion import InversionSettings
from cfaudit.edit.job import JobSettings, planned_unet_evals
from cfaudit.errors import CfauditError


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    settings = load_config(default_config_path("default")).with_overrides(n=80, size=32)
    phantom = generate_phantom(root / "phantom", settings, seed=2, workers=1)
    write_index(build_index("phantom", phantom.out, seed=2), root / "index.csv")
    return root / "index.csv"


def test_the_cost_counts_the_plans_edits_and_each_images_inversion_and_null_edit(index):
    do = ["Cardiomegaly=0", "Edema=1", "age=+20"]
    cost = discovery_cost("demo", index, do, images=5, steps=10, device="cpu")
    from cfaudit.data.records import DataIndex

    plan = build_plan(items_from_index(DataIndex.read(index), "test"), parse_interventions(do), 5)
    assert (cost.images, cost.edits) == (len(plan.items), plan.n_edits)
    # direct inversion, guided, corrected targets: N (inversion) + 2N (source) + 2N per target, the null edit one
    assert cost.unet_evals == sum(10 * (3 + 2 * (len(item.interventions) + 1)) for item in plan.items)
    assert cost.preset == "tiny-f4" and cost.seconds == pytest.approx(
        cost.unet_evals * SECONDS_PER_EVAL["tiny-f4", "cpu"]
    )
    given = discovery_cost("demo", index, do, images=5, steps=10, device="cuda:1", seconds_per_eval=0.5)
    assert given.device == "cuda" and given.seconds == pytest.approx(0.5 * cost.unet_evals)
    assert discovery_cost("demo", index, do, images=5, steps=10, device="cuda").seconds is None  # no figure


def test_the_counts_follow_the_inversion_method():
    def evals(method: str, targets: int) -> float:
        return planned_unet_evals(JobSettings(inversion=InversionSettings(method=method, steps=50)), targets)

    # docs/BENCHMARKS.md, UNet evaluations of one edit at 50 steps (no null edit): 250, 250, 200, 1850 (nti's bound)
    assert [evals(m, 1) for m in ("direct", "ddim", "npi", "nti")] == [250, 250, 200, 1850]
    assert evals("direct", 5) - evals("direct", 4) == 100  # one more target: its two passes per step


def test_the_dry_run_prints_the_cost_and_writes_nothing(index, tmp_path, capsys):
    out = tmp_path / "discovery"
    options = ["--index", str(index), "--out", str(out), "--images", "3", "--dry-run", "--device", "cpu"]
    assert main(["discover", *options]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    cost = discovery_cost("demo", index, None, images=3, device="cpu")
    assert f"{cost.edits} edits of {cost.images} images" in printed
    assert f"{cost.unet_evals:,.0f} UNet evaluations" in printed
    assert "projected time on one cpu device" in printed
    assert len(default_interventions()) > 3 and not out.exists()


def test_a_bad_figure_is_refused(index):
    with pytest.raises(CfauditError, match="seconds-per-eval"):
        discovery_cost("demo", index, ["Edema=1"], images=2, seconds_per_eval=0)


def test_the_dry_run_checks_the_model_and_the_guidance_as_a_run_would(index, tmp_path):
    with pytest.raises(CfauditError, match="no-such-model: no such model folder"):
        discovery_cost(str(tmp_path / "no-such-model"), index, ["Edema=1"], images=2)
    (tmp_path / "half" / "unet").mkdir(parents=True)
    with pytest.raises(CfauditError, match=r"missing unet/config\.json"):
        discovery_cost(str(tmp_path / "half"), index, ["Edema=1"], images=2)
    with pytest.raises(CfauditError, match=r"for do\(age=-20\): no edit of this job takes it"):
        discovery_cost("demo", index, ["age=+20"], images=2, attribute_guidance={"do(age=-20)": 2.0})
    kept = discovery_cost("demo", index, ["age=+20"], images=2, attribute_guidance={"age": 4.0})
    assert kept.edits > 0
