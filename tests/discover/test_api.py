"""What ``cfaudit.discover(...)`` and ``cfaudit discover`` refuse before they load a model, and what they print."""

import math

import pandas as pd
import pytest
from rich.console import Console

from cfaudit.cli.discover import print_power
from cfaudit.cli.main import main
from cfaudit.discover import DiscoverySettings
from cfaudit.discover.api import discover
from cfaudit.errors import CfauditError


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"images": "many"}, "--images must be a number or 'auto'"),
        ({"images": 0}, "--images must be a number of at least 1"),
        ({"images": "auto", "detect_effect": 30}, "--detect-effect is a share"),
        ({"images": 16, "edit_budget": 100}, "--edit-budget"),
        ({"alpha": 1.5}, "--alpha"),
        ({"fdr": "holm"}, "--fdr"),
    ],
)
def test_bad_options_fail_before_any_model_is_loaded(tmp_path, options, message):
    with pytest.raises(CfauditError, match=message):
        discover(model="no-such-model", index=tmp_path / "missing.csv", out=tmp_path / "out", **options)


def test_auto_images_are_accepted_in_any_case(tmp_path):
    # The options pass; the next check (the index) is what stops it
    with pytest.raises(CfauditError, match=r"missing\.csv"):
        discover(index=tmp_path / "missing.csv", images="AUTO", edit_budget=500, out=tmp_path / "out")
    settings = DiscoverySettings(images="auto", edit_budget=500)
    assert settings.to_dict()["images"] == "auto" and settings.to_dict()["edit_budget"] == 500


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--images", "many"], "--images must be"),
        (["--alpha", "2"], "--alpha"),
        (["--edit-budget", "9"], "--edit-budget"),
    ],
)
def test_the_command_line_says_what_is_wrong_in_one_line(tmp_path, capsys, options, message):
    assert (
        main(["discover", "--index", str(tmp_path / "none.csv"), "--out", str(tmp_path / "d"), *options]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_the_command_line_sums_up_what_the_run_could_detect():
    power = pd.DataFrame(
        {"intervention": ["do(Edema=1)", "do(Cardiomegaly=0)", "do(age=+20)", "do(Edema=0)"],
         "detectable_share": [0.35, 0.58, math.nan, math.inf]}
    )  # fmt: skip
    console = Console(record=True, width=200)
    print_power(console, power)
    text = console.export_text()
    assert "35% to 58% of images" in text and "1 intervention(s) have too few images" in text


def test_guidance_per_attribute_reaches_the_discoverys_edit_job(tmp_path):
    from cfaudit.discover.api import DiscoveryOptions
    from cfaudit.discover.run import discovery_job_settings

    options = DiscoveryOptions.of({"attribute_guidance": {"Age": 4}})
    job = discovery_job_settings(options.job(), options.settings())
    assert job.attribute_guidance == {"age": 4.0} and job.identity_check
    assert discovery_job_settings(DiscoveryOptions().job(), options.settings()).attribute_guidance == {}
    with pytest.raises(CfauditError, match="unknown attribute 'hair'"):
        discover(model="no-such-model", index=tmp_path / "missing.csv", out=tmp_path / "out",
                 attribute_guidance={"hair": 4})  # fmt: skip
