from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cfaudit.errors import CfauditError
from cfaudit.train import checkpoint as ckpt


def test_flatten_round_trip_keeps_key_types() -> None:
    state = {"optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                           "param_groups": [{"lr": 0.1, "params": [0]}]},
             "order": torch.arange(4), "ema": None, "step": 5}  # fmt: skip
    tensors: dict[str, torch.Tensor] = {}
    plain = ckpt.flatten_state("s", state, tensors)
    back = ckpt.unflatten_state(plain, tensors)
    assert list(back["optimizer"]["state"]) == [0]  # int keys survive (JSON would make them strings)
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], torch.ones(2))
    assert back["optimizer"]["param_groups"] == [{"lr": 0.1, "params": [0]}] and back["step"] == 5
    assert torch.equal(back["order"], torch.arange(4)) and back["ema"] is None


def test_write_read_latest_and_prune(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)

    class Saver:
        def save_pretrained(self, folder: str, safe_serialization: bool) -> None:
            from safetensors.torch import save_file

            Path(folder).mkdir()
            save_file(model.state_dict(), str(Path(folder) / "weights.safetensors"))

    for step in (2, 4, 6):
        ckpt.write_checkpoint(ckpt.checkpoint_dir(tmp_path, step), models={"net": Saver()}, lora_state=None,
                              state={"step": step, "x": torch.full((2,), float(step))}, provenance={"step": step})  # fmt: skip
    # a half-written checkpoint (no state json) is never picked
    (tmp_path / "checkpoints" / "step-0000009").mkdir()
    assert ckpt.latest_checkpoint(tmp_path).name == "step-0000006"
    assert ckpt.read_state(ckpt.latest_checkpoint(tmp_path))["x"].tolist() == [6.0, 6.0]
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000004", "step-0000006"]
    other = torch.nn.Linear(2, 2)
    ckpt.load_weights_into(other, ckpt.latest_checkpoint(tmp_path), "net")
    assert torch.equal(other.weight, model.weight)
    with pytest.raises(CfauditError, match="do not fit"):
        ckpt.load_weights_into(torch.nn.Linear(2, 3, bias=False), ckpt.latest_checkpoint(tmp_path), "net")
    with pytest.raises(CfauditError, match="not a checkpoint folder"):
        ckpt.resolve_resume(tmp_path, str(tmp_path))
    assert ckpt.resolve_resume(tmp_path / "empty", "latest") is None
