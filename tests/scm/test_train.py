import json
import math

import pytest
import torch

from cfaudit.errors import CfauditError
from cfaudit.scm.config import load_config
from cfaudit.scm.model import CausalImageModel
from cfaudit.scm.train import EpochOrder, is_spike, train_scm
from tests.scm.scm_tiny import make_index


def _config(index, out, tiny_model_config, **overrides):
    settings = {"index": str(index), "output_dir": str(out), "model": tiny_model_config, "max_steps": 6,
                "batch_size": 4, "checkpoint_every": 3, "lr_warmup_steps": 1, "mechanism_steps": 30,
                "log_every": 1, "eval_images": 8, **overrides}  # fmt: skip
    return load_config("small", None, settings)


def test_training_writes_a_loadable_model_with_figures(tiny_index, tmp_path, tiny_model_config):
    out = tmp_path / "run"
    result = train_scm(_config(tiny_index, out, tiny_model_config), progress=False)
    assert result.step == 6 and len(result.losses) == 6
    assert all(math.isfinite(loss) for loss in result.losses)
    assert (out / "mechanisms.safetensors").is_file() and (out / "mechanisms.json").is_file()
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-0000003", "step-0000006"]
    assert set(result.evaluation) == {"images", "val_bits_per_dim", "val_reconstruction_l1"}
    assert result.evaluation["images"] == 3  # the tiny index's val split
    model = CausalImageModel.load(out)
    assert model.resolution == 16
    training = model.meta["training"]
    assert training["steps"] == 6 and training["evaluation"] == result.evaluation
    assert json.loads((out / "model" / "scm.json").read_text())["meta"]["provenance"]["data"]["rows"] == 6


def test_resume_continues_the_same_run(tiny_index, tmp_path, tiny_model_config):
    straight = train_scm(_config(tiny_index, tmp_path / "a", tiny_model_config), progress=False)
    first = train_scm(_config(tiny_index, tmp_path / "b", tiny_model_config), stop_after=3, progress=False)
    assert first.step == 3 and first.model_dir is None
    assert first.last_checkpoint.name == "step-0000003"
    second = train_scm(
        _config(tiny_index, tmp_path / "b", tiny_model_config), resume="latest", progress=False
    )
    assert second.step == 6 and len(second.losses) == 3
    assert first.losses + second.losses == pytest.approx(straight.losses, rel=1e-5)
    a, b = CausalImageModel.load(tmp_path / "a"), CausalImageModel.load(tmp_path / "b")
    for name, tensor in a.hvae.state_dict().items():
        assert torch.allclose(b.hvae.state_dict()[name], tensor, atol=1e-6), name
    # nothing to resume from yet: latest starts fresh
    fresh = train_scm(
        _config(tiny_index, tmp_path / "c", tiny_model_config, max_steps=1), resume="latest", progress=False
    )
    assert fresh.step == 1


def test_resume_on_other_data_is_refused(tmp_path, tiny_model_config):
    index = make_index(tmp_path / "d1")
    train_scm(_config(index, tmp_path / "run", tiny_model_config), stop_after=3, progress=False)
    other = make_index(tmp_path / "d2", n=16)
    with pytest.raises(CfauditError, match="trained on another index or split"):
        train_scm(_config(other, tmp_path / "run", tiny_model_config), resume="latest", progress=False)


def test_bad_inputs(tmp_path, tiny_index, tiny_model_config):
    with pytest.raises(CfauditError, match="`index` is empty"):
        train_scm(_config("", tmp_path / "x", tiny_model_config), progress=False)
    with pytest.raises(CfauditError, match="no such index file"):
        train_scm(_config(tmp_path / "none.csv", tmp_path / "x", tiny_model_config), progress=False)
    with pytest.raises(CfauditError, match="not a checkpoint folder"):
        train_scm(
            _config(tiny_index, tmp_path / "x", tiny_model_config), resume=str(tmp_path), progress=False
        )


def test_update_skipping_rule():
    recent = [2.0, 3.0, 4.0]
    assert not is_spike(20.0, 1.0, recent, 10.0)
    assert is_spike(31.0, 1.0, recent, 10.0)
    assert is_spike(1.0, float("nan"), recent, 10.0)
    assert is_spike(float("inf"), 1.0, [], 10.0)
    assert not is_spike(1e9, 1.0, [], 10.0)  # no history yet (warm-up): only non-finite values skip
    assert not is_spike(1e9, 1.0, recent, 0.0)  # off


def test_epoch_order_visits_every_row_once_per_epoch():
    order, generator = EpochOrder(5), torch.Generator().manual_seed(0)
    rows = torch.cat([order.next(2, generator) for _ in range(5)]).tolist()
    assert sorted(rows) == sorted(list(range(5)) * 2)
    assert order.epoch == 2
