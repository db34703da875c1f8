"""Tests for cfaudit.data.phantom.config: strict YAML loading, relation validation, round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfaudit.data.phantom.config import PhantomConfig, default_config_path, load_config
from cfaudit.errors import CfauditError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "phantom.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_configs_load_with_their_relations() -> None:
    default = load_config()
    null = load_config(default_config_path("null"))
    assert [(r.cause, r.effect) for r in default.relations] == [
        ("Cardiomegaly", "device.pacemaker"),
        ("age", "Pleural Effusion"),
    ]
    assert default.relations[0].p_if_present == 0.7 and default.relations[0].p_if_absent == 0.05
    assert default.relations[1].log_odds_per_decade == 0.5
    assert null.relations == ()
    # Apart from the relations the two configs are the same generator.
    assert {k: v for k, v in default.to_dict().items() if k != "relations"} == {
        k: v for k, v in null.to_dict().items() if k != "relations"
    }


def test_config_round_trips_through_its_dict() -> None:
    config = load_config()
    again = PhantomConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert again.relations == config.relations


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("imgae: {size: 64}\n", ["imgae", "unknown key"]),
        ("image: {size: 64, colour: red}\n", ["image.colour", "unknown key"]),
        ("devices: {probability: {pacemaker: 1.5}}\n", ["devices.probability.pacemaker", "1.5"]),
        ("relations:\n  - {cause: Cardiomegaly, effect: device.pacemaker, p_if_present: 1.2, p_if_absent: 0.1}\n",
         ["relations[0].p_if_present", "1.2"]),
        ("relations:\n  - {cause: Heart Size, effect: device.pacemaker, p_if_present: 0.5, p_if_absent: 0.1}\n",
         ["relations[0].cause", "Heart Size"]),
        ("relations:\n  - {cause: Edema, effect: device.toaster, p_if_present: 0.5, p_if_absent: 0.1}\n",
         ["relations[0].effect", "toaster"]),
        ("relations:\n  - {cause: Edema, effect: Wobble, p_if_present: 0.5, p_if_absent: 0.1}\n",
         ["relations[0].effect", "Wobble"]),
        ("relations:\n  - {cause: Edema, effect: anatomy.spleen, shift_if_present: 0.1}\n",
         ["relations[0].effect", "spleen"]),
        ("relations:\n  - {cause: age, effect: Edema, p_if_present: 0.5, p_if_absent: 0.1}\n",
         ["relations[0]", "log_odds_per_decade"]),
        ("relations:\n  - {cause: sex, effect: Edema, p_if_present: 0.5, p_if_absent: 0.1}\n",
         ["relations[0].value", "M, F"]),
        ("relations:\n  - {cause: Edema, effect: device.ecg_leads, p_if_present: 0.5, p_if_absent: 0.1}\n",
         ["relations[0].effect", "fallback"]),
        ("relations:\n  - {cause: Edema, effect: Edema, p_if_present: 0.5, p_if_absent: 0.1}\n",
         ["relations[0]", "both Edema"]),
        ("population: {race: {Asian: 0.5, White: 0.6}}\n", ["population.race", "sum to 1.1"]),
        ("findings: {ctr_normal: [0.5, 0.4]}\n", ["findings.ctr_normal", "above high"]),
        ("image: {format: tiff}\n", ["image.format", "tiff"]),
        ("relations:\n  - {cause: No Finding, effect: Edema, p_if_present: 0.8, p_if_absent: 0.1}\n",
         ["relations[0].cause", "No Finding is the absence"]),
        ("relations:\n  - {cause: Support Devices, effect: device.central_line, p_if_present: 0.8, p_if_absent: 0.1}\n",
         ["relations[0]", "never use its p_if_absent"]),
        ("image: {size: 32}\nimage: {size: 64}\n", ["the key 'image' is given twice"]),
    ],
)  # fmt: skip
def test_bad_configs_raise_one_error_naming_the_key(tmp_path: Path, text: str, names: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CfauditError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    for name in names:
        assert name in message


def test_relation_spellings_resolve_and_label_table_path_is_relative_to_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "label_table: my_table.csv\n"
        "relations:\n"
        "  - {cause: pleural_effusion, effect: device.chest_tube, p_if_present: 0.6, p_if_absent: 0.1}\n"
        "  - {cause: race, value: Black, effect: anatomy.bone_density, shift_if_present: 0.2}\n"
        "  - {cause: age, effect: device.central_line, log_odds_per_decade: -0.3, reference_age: 50}\n",
    )
    config = load_config(path)
    first, second, third = config.relations
    assert (first.cause, first.effect, first.effect_kind) == (
        "Pleural Effusion",
        "device.chest_tube",
        "device",
    )
    assert (second.value, second.effect_name, second.effect_kind) == ("Black", "bone_density", "anatomy")
    assert (third.reference_age, third.log_odds_per_decade) == (50.0, -0.3)
    assert config.label_table == str((tmp_path / "my_table.csv").resolve())


def test_cli_overrides_are_validated() -> None:
    config = load_config().with_overrides(n=12, size=48)
    assert (config.population.n, config.image.size) == (12, 48)
    with pytest.raises(CfauditError, match="--size"):
        load_config().with_overrides(size=8)
    with pytest.raises(CfauditError, match="--n"):
        load_config().with_overrides(n=0)
