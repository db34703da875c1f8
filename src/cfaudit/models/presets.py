"""Architecture configs: the exact Stable Diffusion v1.5 / v2.1 ones, and a tiny preset that trains on 2 CPU cores.

Configs are plain dicts in the diffusers / transformers ``config.json`` vocabulary, so a preset is written to disk
exactly as a downloaded pipeline would be and then loaded through the one loading path
(:func:`cfaudit.models.loading.load_components`). The SD numbers are those of the published
``unet/config.json``, ``vae/config.json``, ``text_encoder/config.json`` and ``scheduler/scheduler_config.json``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from cfaudit.errors import CfauditError

#: SD's training noise schedule (DDPM, "scaled_linear" betas 0.00085 -> 0.012 over 1,000 steps).
SD_SCHEDULER: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
    "trained_betas": None,
    "prediction_type": "epsilon",
}


def shifted_betas(shift: float, base: dict[str, Any] | None = None) -> list[float]:
    """The betas of ``base``'s noise schedule (default SD's) with the noisy end's signal-to-noise ratio divided
    by up to ``shift``: ``logSNR'(t) = logSNR(t) - (t / T) log(shift)``, so the noisiest step's SNR is divided by
    ``shift`` and the cleanest steps keep SD's (fine detail is drawn on the same grid as before).

    Why: a latent with more numbers per object shows the object's coarse layout through more noise (Hoogeboom et
    al. 2023, "simple diffusion"). The heart's outline on the tiny-f4 preset's 32x32x8 latent stays readable even at
    SD's noisiest step, so a model trained there reads the heart's size from the noise and never learns it from
    the prompt: "with cardiomegaly" and "with no finding" drew the same heart from every seed
    (docs/BENCHMARKS.md, "Partial prompts and the noise schedule").
    """
    import numpy as np
    from diffusers import DDPMScheduler

    if shift < 1.0:
        raise ValueError(f"shift {shift} must be at least 1")
    config = {k: v for k, v in (base or SD_SCHEDULER).items() if not k.startswith("_")}
    abar = DDPMScheduler.from_config(config).alphas_cumprod.double().numpy()
    fraction = np.arange(len(abar)) / (len(abar) - 1)
    log_snr = np.log(abar / (1.0 - abar)) - fraction * np.log(shift)
    shifted = 1.0 / (1.0 + np.exp(-log_snr))
    previous = np.concatenate([[1.0], shifted[:-1]])
    return [float(b) for b in 1.0 - shifted / previous]


#: How far the tiny-f4 preset's schedule divides the noisiest step's SNR (see :func:`shifted_betas`).
TINY_F4_SNR_SHIFT = 16.0

_SD_VAE: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

_SD_UNET_BLOCKS: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "center_input_sample": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
}


@dataclass(frozen=True)
class Architecture:
    """Everything needed to build a pipeline of one architecture: the four configs and the tokenizer's padding."""

    name: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    scheduler: dict[str, Any]
    #: SD 1.x pads prompts with ``<|endoftext|>``; SD 2.x (OpenCLIP) with ``!``.
    pad_token: str = "<|endoftext|>"
    resolution: int = 512

    def configs(self) -> dict[str, dict[str, Any]]:
        """Deep copies, so callers may edit them."""
        return copy.deepcopy(
            {
                "unet": self.unet,
                "vae": self.vae,
                "text_encoder": self.text_encoder,
                "scheduler": self.scheduler,
            }
        )


SD15 = Architecture(
    name="sd15",
    unet={**_SD_UNET_BLOCKS, "attention_head_dim": 8, "cross_attention_dim": 768, "sample_size": 64},
    vae=_SD_VAE,
    text_encoder={
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05,
        "projection_dim": 768,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    },
    scheduler=SD_SCHEDULER,
)

SD21 = Architecture(
    name="sd21",
    unet={
        **_SD_UNET_BLOCKS,
        "attention_head_dim": [5, 10, 20, 20],
        "cross_attention_dim": 1024,
        "use_linear_projection": True,
        "upcast_attention": True,
        "sample_size": 96,
    },
    vae={**_SD_VAE, "sample_size": 768},
    text_encoder={
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": 49408,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 23,
        "num_attention_heads": 16,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-05,
        "projection_dim": 512,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    },
    scheduler={**SD_SCHEDULER, "prediction_type": "v_prediction"},
    pad_token="!",
    resolution=768,
)

#: The CPU preset: 128x128 single-channel images, an 8x VAE (16x16x4 latents), a ~1.5M-parameter UNet and a
#: 2-layer CLIP text encoder over SD's own 49,408-token vocabulary. Same classes as SD, so the same code runs.
TINY = Architecture(
    name="tiny",
    unet={
        **_SD_UNET_BLOCKS,
        "block_out_channels": [32, 64, 128],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "attention_head_dim": 8,
        "cross_attention_dim": 64,
        "sample_size": 16,
    },
    vae={
        **_SD_VAE,
        "block_out_channels": [16, 32, 64, 64],
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "in_channels": 1,
        "out_channels": 1,
        "sample_size": 128,
        "scaling_factor": 1.0,
    },
    text_encoder={
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": 49408,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-05,
        "projection_dim": 64,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    },
    scheduler=SD_SCHEDULER,
    resolution=128,
)

#: A finer CPU preset, measured but not yet the demo's (docs/BENCHMARKS.md, "The demo model's autoencoder" and
#: "Partial prompts and the noise schedule"): 128x128 single-channel images, a 4x VAE with 8 latent channels
#: (32x32x8 latents: half as many numbers as pixels, so 1-pixel lines, ribs and the faint race grating survive;
#: an 8x VAE with 16 channels kept a third of the lines' contrast at equal training), a ~5.7M-parameter UNet whose
#: attention starts at 16x16 (none at the 32x32 level, which would cost 5x more on a CPU), the tiny preset's
#: 2-layer CLIP text encoder, and a noise schedule whose noisiest step has 1/16 of SD's SNR.
TINY_F4 = Architecture(
    name="tiny-f4",
    unet={
        **TINY.unet,
        "block_out_channels": [32, 64, 128, 128],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "sample_size": 32,
        "in_channels": 8,
        "out_channels": 8,
    },
    vae={
        **TINY.vae,
        "block_out_channels": [16, 32, 64],
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "latent_channels": 8,
    },
    text_encoder=TINY.text_encoder,
    scheduler={**SD_SCHEDULER, "trained_betas": shifted_betas(TINY_F4_SNR_SHIFT)},
    resolution=128,
)

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (SD15, SD21, TINY, TINY_F4)}


def architecture(name: str) -> Architecture:
    """The preset called ``name`` (``sd15``, ``sd21``, ``tiny`` or ``tiny-f4``)."""
    key = name.strip().lower()
    if key not in ARCHITECTURES:
        raise CfauditError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[key]
