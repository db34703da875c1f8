from __future__ import annotations

import pytest

from cfaudit.errors import CfauditError
from cfaudit.models.presets import SD15, SD21, SD_SCHEDULER, TINY, TINY_F4, architecture, shifted_betas
from cfaudit.models.random_init import build_random


def test_sd_configs_are_the_published_ones() -> None:
    assert (
        SD15.unet["block_out_channels"] == [320, 640, 1280, 1280] and SD15.unet["cross_attention_dim"] == 768
    )
    assert SD15.text_encoder["hidden_size"] == 768 and SD15.text_encoder["num_hidden_layers"] == 12
    assert SD15.vae["scaling_factor"] == 0.18215 and SD15.scheduler["beta_end"] == 0.012
    assert SD21.scheduler["prediction_type"] == "v_prediction" and SD21.unet["cross_attention_dim"] == 1024
    assert SD21.unet["attention_head_dim"] == [5, 10, 20, 20] and SD21.pad_token == "!"


def test_tiny_preset_is_small_and_shaped_like_sd() -> None:
    components = build_random(TINY, seed=0)
    n_unet = sum(p.numel() for p in components.unet.parameters())
    assert 1_000_000 < n_unet < 5_000_000
    assert components.resolution == 128 and components.vae_scale_factor == 8
    assert components.unet.config.cross_attention_dim == components.text_encoder.config.hidden_size
    processors = components.unet.attn_processors
    assert sum(".attn2." in k for k in processors) == sum(".attn1." in k for k in processors) == 7


def test_tiny_f4_preset_keeps_thin_lines_on_a_finer_latent() -> None:
    components = build_random(TINY_F4, seed=0)
    assert 1_000_000 < sum(p.numel() for p in components.unet.parameters()) < 8_000_000
    # a 4x autoencoder with 8 channels: 32x32x8 latents, fine enough for the phantom's 1-pixel lines
    assert components.resolution == 128 and components.vae_scale_factor == 4
    assert components.vae.config.latent_channels == components.unet.config.in_channels == 8
    assert architecture("tiny-f4") is TINY_F4


def test_shifted_schedule_is_noisier_at_the_noisy_end_only() -> None:
    import numpy as np
    from diffusers import DDPMScheduler

    base = DDPMScheduler.from_config(SD_SCHEDULER).alphas_cumprod.double().numpy()
    shifted = np.cumprod(1.0 - np.array(shifted_betas(16.0)))
    snr, snr_base = shifted / (1 - shifted), base / (1 - base)
    assert np.all(np.diff(shifted) < 0)  # still a noise schedule: ever noisier
    assert snr[-1] == pytest.approx(snr_base[-1] / 16.0, rel=1e-6)  # the noisiest step's SNR divided by 16
    assert snr[0] == pytest.approx(snr_base[0], rel=1e-6)  # the cleanest step untouched
    assert np.allclose(np.cumprod(1.0 - np.array(shifted_betas(1.0))), base)
    with pytest.raises(ValueError, match="at least 1"):
        shifted_betas(0.5)
    # the tiny-f4 preset trains and samples with it
    tiny = DDPMScheduler.from_config(TINY_F4.scheduler).alphas_cumprod.double().numpy()
    assert np.allclose(tiny, shifted, rtol=1e-5)


def test_unknown_architecture() -> None:
    with pytest.raises(CfauditError, match="sd15, sd21, tiny, tiny-f4"):
        architecture("sdxl")
    assert architecture(" SD15 ") is SD15


@pytest.mark.parametrize(
    ("arch", "unet", "text_encoder"),
    [(SD15, 859_520_964, 123_060_480), (SD21, 865_910_724, 340_387_840)],
    ids=["sd15", "sd21"],
)
def test_sd_parameter_counts_match_the_published_models(arch, unet: int, text_encoder: int) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = arch.configs()
    text_config = {
        k: v for k, v in configs["text_encoder"].items() if k not in ("architectures", "model_type")
    }
    with torch.device("meta"):  # shapes only: instant, no memory
        parts = (UNet2DConditionModel(**configs["unet"]), CLIPTextModel(CLIPTextConfig(**text_config)),
                 AutoencoderKL(**configs["vae"]))  # fmt: skip
    counts = [sum(p.numel() for p in part.parameters()) for part in parts]
    assert counts == [unet, text_encoder, 83_653_863]
