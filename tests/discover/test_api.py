"""What ``cfaudit.discover(...)`` refuses before it loads a model or edits an image."""

import pytest

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
