"""Tiny, randomly initialised diffusion parts for the editing tests (a few seconds to build); also used by the CLI test."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

#: Words given whole-word merges in the tiny tokenizer; everything else falls back to single bytes.
WORDS = (
    "chest", "ray", "of", "years", "old", "white", "black", "asian", "female", "male", "subject", "with",
    "cardiomegaly", "no", "finding", "and", "support", "devices", "pleural", "effusion",
)  # fmt: skip

SD_SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "clip_sample": False,
    "prediction_type": "epsilon",
}


def _byte_symbols() -> list[str]:
    """GPT-2 / CLIP's printable stand-ins for the 256 byte values."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = keep[:], 0
    for byte in range(256):
        if byte not in keep:
            keep.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_tiny_tokenizer(folder: Path, words: tuple[str, ...] = WORDS) -> Path:
    """A byte-level BPE tokenizer folder (CLIP's format) whose merges make each of ``words`` one token."""
    symbols = _byte_symbols()
    vocab = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in words:
        parts = [*word[:-1], word[-1] + "</w>"]
        current = parts[0]
        for part in parts[1:]:
            merge = f"{current} {part}"
            if merge not in merges:
                merges.append(merge)
                if current + part not in vocab:
                    vocab.append(current + part)
            current += part
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    config = {
        **special,
        "pad_token": "<|endoftext|>",
        "model_max_length": 77,
        "tokenizer_class": "CLIPTokenizer",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def load_tiny_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(folder)))


def build_parts(folder: Path, *, seed: int = 0, sd_blocks: bool = False) -> SimpleNamespace:
    """Tiny UNet (8x8 latents), VAE (16x16 grayscale images), 2-layer CLIP text encoder, tokenizer, DDIM."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = load_tiny_tokenizer(folder)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    if sd_blocks:  # Stable Diffusion v1.5's exact block structure, tiny widths
        unet = UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(32, 32, 64, 64),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            layers_per_block=2,
            attention_head_dim=8,
            cross_attention_dim=32,
            norm_num_groups=8,
        )
    else:
        unet = UNet2DConditionModel(
            sample_size=8,
            block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            layers_per_block=1,
            attention_head_dim=8,
            cross_attention_dim=32,
            norm_num_groups=8,
        )
    vae = AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=16,
    )
    scheduler = DDIMScheduler(**SD_SCHEDULE)
    for model in (unet, vae, text_encoder):
        model.eval().requires_grad_(False)
    return SimpleNamespace(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler
    )
