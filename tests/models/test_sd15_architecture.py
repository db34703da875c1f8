"""The real SD v1.5 architecture (random weights) through the real path: write, load, one train step, one sample step.

This is the slowest test of the models package (~1-2 min on 2 cores, longer when they are shared): the SD v1.5 UNet has 860M parameters and
one forward pass at 64x64 latents takes ~7 s on CPU. The training step uses LoRA (the UNet's own weights frozen)
so that it fits beside other jobs in memory; full UNet fine-tuning runs the same loop (tests/train).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from cfaudit.data.images import save_image
from cfaudit.data.records import INDEX_COLUMNS, DataIndex, empty_label_row
from cfaudit.models.loading import load_components
from cfaudit.models.random_init import write_random_pipeline
from cfaudit.models.sampling import Sampling, sample_latents
from cfaudit.train.config import TrainConfig
from cfaudit.train.trainer import train


def _one_image_index(folder: Path) -> Path:
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:512, 0:512] / 512
    save_image(((xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.1).astype(np.float32), folder / "a.png")
    row = {"image_id": "a", "path": "a.png", "subject_id": "s", "study_id": "t", "view": "PA", "age": 50,
           "sex": "Male", "race": "White", **empty_label_row(), "split": "train"}  # fmt: skip
    DataIndex(pd.DataFrame([row], columns=list(INDEX_COLUMNS)), folder).write(folder / "index.csv")
    return folder / "index.csv"


def test_sd15_random_pipeline_loads_trains_and_samples(tmp_path: Path) -> None:
    folder = write_random_pipeline(tmp_path / "sd15", "sd15", seed=0, dtype=torch.float16)
    index = json.loads((folder / "model_index.json").read_text())
    assert (
        index["unet"] == ["diffusers", "UNet2DConditionModel"] and index["text_encoder"][1] == "CLIPTextModel"
    )

    components = load_components(folder)
    assert next(components.unet.parameters()).dtype == torch.float32
    assert sum(p.numel() for p in components.unet.parameters()) == 859_520_964
    assert components.resolution == 512 and components.prediction_type == "epsilon"
    processors = components.unet.attn_processors
    assert sum(".attn1." in k for k in processors) == 16 and sum(".attn2." in k for k in processors) == 16
    assert components.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]

    # one DDIM step at 64x64 latents with classifier-free guidance (decoding is tested with the tiny preset)
    noise = torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(0))
    latents = sample_latents(components, ["chest x-ray"], [0], Sampling(steps=1, guidance=7.5))
    assert latents.shape == (1, 4, 64, 64) and torch.isfinite(latents).all()
    assert not torch.allclose(latents, noise)
    del components

    # one training step through the trainer (LoRA on the attention projections, 512px -> 64x64 latents); it stops
    # after that step like a killed job, so the 860M-parameter final save is skipped (tests/train covers it)
    config = TrainConfig(model=str(folder), index=str(_one_image_index(tmp_path / "data")), output_dir=str(tmp_path / "run"),
                         resolution=512, max_steps=2, batch_size=1, lora_rank=4, learning_rate=1e-3,
                         latent_cache_dir=str(tmp_path / "cache"))  # fmt: skip
    result = train(config, progress=False, stop_after=1)
    assert result.step == 1 and len(result.losses) == 1 and np.isfinite(result.losses[0])
    assert result.model_dir is None
    lora = load_file(str(result.last_checkpoint / "unet_lora" / "adapter_model.safetensors"))
    assert len(lora) == 2 * 4 * 32  # A and B matrices of to_q/to_k/to_v/to_out.0 in all 32 attention layers
    assert all(torch.isfinite(t).all() for t in lora.values())
