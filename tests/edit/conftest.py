"""Fixtures of tiny, randomly initialised diffusion parts (built once per session)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.edit.tiny_parts import build_parts


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    return build_parts(tmp_path_factory.mktemp("tiny-tokenizer"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_parts: SimpleNamespace):
    return tiny_parts.tokenizer


@pytest.fixture
def editor(tiny_parts: SimpleNamespace):
    from cfaudit.edit.editor import CounterfactualEditor

    p = tiny_parts
    return CounterfactualEditor(p.unet, p.vae, p.text_encoder, p.tokenizer, p.scheduler)


@pytest.fixture(scope="session")
def tiny_image() -> torch.Tensor:
    """A smooth 16x16 'chest' in [-1, 1]: a bright ellipse on a dark background, [1, 1, 16, 16]."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    image = 0.8 * torch.exp(-((x / 0.6) ** 2 + (y / 0.8) ** 2) * 2) - 0.4 + 0.1 * torch.sin(5 * x)
    return image.clamp(-1, 1)[None, None]
