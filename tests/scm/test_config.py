import pytest

from cfaudit.errors import CfauditError
from cfaudit.scm.config import PRESETS, ScmTrainConfig, load_config, preset_path
from cfaudit.scm.graph import IMAGE, default_graph
from cfaudit.scm.hvae import HierarchicalVAE, count_parameters


def test_presets_load_and_build():
    small = load_config("small")
    assert small.model["resolution"] == 64 and small.preset == "small"
    mimic = load_config("mimic192")
    assert mimic.model["resolution"] == 192
    parent_dim = default_graph().parent_dim(IMAGE)
    sizes = {
        name: count_parameters(HierarchicalVAE(**load_config(name).architecture(parent_dim)))
        for name in PRESETS
    }
    assert 200_000 < sizes["small"] < 1_000_000  # trains on a CPU in minutes
    assert 7_000_000 < sizes["mimic192"] < 9_000_000  # "about 8M", like the published model


def test_file_then_command_line_override_the_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("batch_size: 4\nlearning_rate: 0.01\nmodel:\n  bottleneck: 0.25\n", encoding="utf-8")
    config = load_config("small", path, {"batch_size": 2, "max_steps": None, "index": "x.csv"})
    assert config.batch_size == 2  # command line wins
    assert config.learning_rate == 0.01  # file wins over preset
    assert (
        config.model["bottleneck"] == 0.25 and config.model["widths"] == load_config("small").model["widths"]
    )
    assert config.max_steps == load_config("small").max_steps  # None: not given
    assert ScmTrainConfig.from_dict(config.to_dict()) == config  # round trip (saved in checkpoints)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"colour": 1}, "unknown key(s) colour"),
        ({"batch_size": "big"}, "batch_size must be an integer"),
        ({"max_steps": 0}, "max_steps must be at least 1"),
        ({"lr_schedule": "sawtooth"}, "lr_schedule 'sawtooth'"),
        ({"skip_factor": 0.5}, "skip_factor must be 0 (off) or above 1"),
        ({"model": {"resolution": 64, "widths": [8, 8]}}, "encoder_blocks has 5 entries"),
        ({"model": {"resolution": 64, "sparkle": 1}}, "model: unknown key(s) sparkle"),
        ({"model": {"resolution": 64, "widths": "wide"}}, "model.widths must be a list of integers"),
        ({"graph": {"nodes": {"age": "continuous"}}, "graph_file": "g.yaml"}, "not both"),
        ({"label_policy": {"uncertain": "maybe"}}, "uncertain='maybe'"),
        ({"model": {"resolution": 64, "channels": 3}}, "model.channels must be 1 (the images are grayscale)"),
        ({"adam_beta2": 1.5}, "adam_beta2 must be in [0, 1), got 1.5"),
    ],
)
def test_bad_settings_name_the_key(overrides, message):
    with pytest.raises(CfauditError) as error:
        load_config("small", None, overrides)
    assert message in str(error.value)


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(CfauditError, match="unknown SCM preset 'huge'; choose one of small, mimic192"):
        preset_path("huge")
    with pytest.raises(CfauditError, match="no such config file"):
        load_config("small", tmp_path / "nope.yaml")


def test_graph_inline_or_default():
    assert load_config("small").causal_graph() == default_graph()
    inline = load_config(
        "small",
        None,
        {"graph": {"nodes": {"age": "continuous", "Edema": "binary"}, "edges": ["age -> edema"]}},
    )
    assert inline.causal_graph().parents("Edema") == ("age",)


@pytest.mark.parametrize("text", ["model:\n", "model: [1, 2]\n"])
def test_a_model_entry_that_is_not_a_mapping_names_the_file(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CfauditError, match=r"run\.yaml: model must be a mapping of architecture keys"):
        load_config("small", path)


def test_a_range_error_of_a_config_file_names_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("batch_size: 0\n", encoding="utf-8")
    with pytest.raises(CfauditError, match=r"run\.yaml: scm config: batch_size must be at least 1"):
        load_config("small", path)
    with pytest.raises(
        CfauditError, match=r"run\.yaml with the command line's batch_size, max_steps: scm config: max_steps"
    ):
        load_config("small", tmp_path / "run.yaml", {"batch_size": 2, "max_steps": 0})
