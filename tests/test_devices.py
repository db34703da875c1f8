"""cfaudit.devices.resolve_device: the one device resolver."""

from __future__ import annotations

import pytest
import torch

from cfaudit.devices import resolve_device
from cfaudit.errors import CfauditError


def test_no_name_is_the_gpu_when_there_is_one() -> None:
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device() == expected
    assert resolve_device("") == expected


def test_a_name_or_device_is_taken_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda")


def test_a_gpu_that_is_not_there_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CfauditError, match="device 'cuda': torch sees no CUDA GPU here"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CfauditError, match=r"device 'cuda:1': torch sees 1 CUDA GPU\(s\)"):
        resolve_device("cuda:1")


def test_an_unknown_name_says_what_to_pass() -> None:
    with pytest.raises(CfauditError, match="unknown device 'gpu0'; pass cpu, cuda"):
        resolve_device("gpu0")
