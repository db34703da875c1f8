from __future__ import annotations

import logging

import pytest
import torch

from cfaudit.models.text_encoding import encode_prompts, tokenize
from cfaudit.models.tokenizer import load_sd_tokenizer


def test_long_prompt_is_truncated_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    clip = load_sd_tokenizer()
    long = "chest x-ray with " + " and ".join(["cardiomegaly"] * 40)
    with caplog.at_level(logging.WARNING, logger="cfaudit"):
        ids = tokenize(clip, ["short prompt", long])
    assert ids.shape == (2, 77)
    assert ids[1, -1].item() == 49407  # still ends with the end token
    assert "truncated" in caplog.text and "1 prompt(s)" in caplog.text


def test_short_prompts_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cfaudit"):
        tokenize(load_sd_tokenizer(), ["a photo of a cat"])
    assert caplog.text == ""


def test_encode_prompts_shape(tiny_model_dir) -> None:
    from cfaudit.models.loading import load_components

    components = load_components(tiny_model_dir)
    hidden = encode_prompts(components.text_encoder, components.tokenizer, ["a", "b", "a"])
    assert hidden.shape == (3, 77, 64)
    assert torch.equal(hidden[0], hidden[2]) and not torch.equal(hidden[0], hidden[1])
