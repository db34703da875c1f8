"""cfaudit.config_files: the strict YAML reader shared by training, SCM and phantom configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cfaudit.config_files import check_keys, read_yaml, read_yaml_mapping
from cfaudit.errors import CfauditError
from cfaudit.train.config import TrainConfig


def test_an_unknown_key_is_named_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("batch_sise: 4\n", encoding="utf-8")
    with pytest.raises(CfauditError) as caught:
        TrainConfig.from_yaml(path)
    assert str(caught.value).startswith(f"{path}: unknown key(s) batch_sise; valid keys: ")


def test_nested_keys_are_named_by_their_path() -> None:
    with pytest.raises(
        CfauditError, match=r"^phantom config p\.yaml: unknown key\(s\) image\.colour; valid keys: a, b$"
    ):
        check_keys({"colour": 1, "a": 2}, ("b", "a"), "phantom config p.yaml", "image")


def test_files_that_are_missing_invalid_or_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(CfauditError, match="no such thing"):
        read_yaml(tmp_path / "none.yaml", missing="no such thing")
    (tmp_path / "bad.yaml").write_text("a: [\n", encoding="utf-8")
    with pytest.raises(CfauditError, match=r"bad\.yaml: not valid YAML"):
        read_yaml(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n", encoding="utf-8")
    with pytest.raises(CfauditError, match="a config is a mapping of key: value, got list"):
        read_yaml_mapping(tmp_path / "list.yaml")
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    assert read_yaml_mapping(tmp_path / "empty.yaml") == {}
