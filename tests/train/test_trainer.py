"""The training loop on the tiny preset at 64x64 images (8x8 latents): a few steps each."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from cfaudit.data.records import DataIndex
from cfaudit.errors import CfauditError
from cfaudit.models.loading import load_components
from cfaudit.train.checkpoint import list_checkpoints, read_state
from cfaudit.train.config import TrainConfig
from cfaudit.train.latent_cache import file_sha256
from cfaudit.train.trainer import train


def _config(model: Path, index: Path, out: Path, **overrides: object) -> TrainConfig:
    settings = {"model": str(model), "index": str(index), "output_dir": str(out), "resolution": 64, "max_steps": 6,
                "batch_size": 4, "learning_rate": 1e-3, "checkpoint_every": 2, "log_every": 1,
                "latent_cache_dir": str(out.parent / "cache"), **overrides}  # fmt: skip
    return TrainConfig.from_dict(settings)


def _unet_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"use_ema": True, "ema_decay": 0.9, "train_text_encoder": True, "caption_dropout": 0.5, "snr_gamma": 5.0,
         "prediction_type": "v_prediction", "gradient_accumulation_steps": 2, "lr_schedule": "cosine",
         "caption_partial": 0.5, "caption_negative": 0.5},
        {"finding_min_share": 0.9, "finding_max_repeat": 3, "caption_partial": 0.5, "caption_negative": 0.5, "caption_negative_ratio": 0.25,
         "coarse_loss_weight": 1.0, "coarse_loss_pool": 2, "timestep_bias": "later", "timestep_bias_multiplier": 2.0,
         "snr_shift": 4.0, "snr_gamma": 5.0},
    ],
    ids=["defaults", "ema-text-encoder-vpred-minsnr-accum", "balanced-draws-coarse-loss"],
)  # fmt: skip
def test_resume_after_stop_continues_the_same_run(
    tiny_model_dir: Path, tiny_index: Path, tmp_path: Path, options
) -> None:
    # Encode the latent cache first so that both runs below read it: on CPU, oneDNN kernels may round differently
    # with the memory layout left behind by the VAE, ~1e-7 relative, which Adam then amplifies in the weights.
    train(_config(tiny_model_dir, tiny_index, tmp_path / "warm", max_steps=1), progress=False)
    whole = train(_config(tiny_model_dir, tiny_index, tmp_path / "whole", **options), progress=False)
    first = train(
        _config(tiny_model_dir, tiny_index, tmp_path / "split", **options), progress=False, stop_after=3
    )
    assert first.step == 3 and first.model_dir is None and first.last_checkpoint.name == "step-0000003"
    second = train(
        _config(tiny_model_dir, tiny_index, tmp_path / "split", **options), progress=False, resume="latest"
    )
    assert second.step == 6 and len(second.losses) == 3
    assert first.losses + second.losses == whole.losses  # the same loss curve, bit for bit
    a, b = _unet_weights(tmp_path / "whole"), _unet_weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = load_components(tiny_model_dir).unet.state_dict()
    assert any(not torch.equal(a[k], base[k]) for k in a)  # it did train
    if options.get("train_text_encoder"):
        ta = load_file(str(tmp_path / "whole" / "model" / "text_encoder" / "model.safetensors"))
        tb = load_file(str(tmp_path / "split" / "model" / "text_encoder" / "model.safetensors"))
        assert all(torch.equal(ta[k], tb[k]) for k in ta)
        saved = json.loads((tmp_path / "whole" / "model" / "scheduler" / "scheduler_config.json").read_text())
        assert saved["prediction_type"] == "v_prediction"


def test_checkpoint_contents_and_provenance(tiny_model_dir: Path, tiny_index: Path, tmp_path: Path) -> None:
    config = _config(tiny_model_dir, tiny_index, tmp_path / "run", keep_checkpoints=2, sample_every=3,
                     sample_prompts=["chest x-ray of subject with cardiomegaly", "chest x-ray of subject with no finding"],
                     sample_steps=2)  # fmt: skip
    result = train(config, progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000004", "step-0000006"]
    state = read_state(result.last_checkpoint)
    assert state["step"] == 6 and len(state["optimizer"]["state"]) > 0 and state["order"].shape == (6,)
    provenance = json.loads((result.model_dir / "provenance.json").read_text())
    assert provenance["data"]["index_sha256"] == file_sha256(tiny_index)
    assert provenance["base_model"]["source"] == str(tiny_model_dir)
    assert provenance["config"]["max_steps"] == 6 and provenance["step"] == 6
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == [
        "step-0000003.png",
        "step-0000006.png",
    ]
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))
    load_components(result.model_dir)  # the final model is a complete pipeline


def test_lora_training_merges_into_a_plain_unet(
    tiny_model_dir: Path, tiny_index: Path, tmp_path: Path
) -> None:
    result = train(
        _config(tiny_model_dir, tiny_index, tmp_path / "run", lora_rank=4, max_steps=2), progress=False
    )
    assert (result.last_checkpoint / "unet_lora" / "adapter_model.safetensors").is_file()
    trained = _unet_weights(tmp_path / "run")
    base = load_components(tiny_model_dir).unet.state_dict()
    assert trained.keys() == base.keys()  # no adapter tensors left: LoRA fused into the weights
    changed = [k for k in trained if not torch.equal(trained[k], base[k])]
    assert changed and all("attn" in k for k in changed)


def test_unet_trainable_freezes_every_other_unet_weight(
    tiny_model_dir: Path, tiny_index: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train(_config(tiny_model_dir, tiny_index, run, max_steps=2, use_ema=True, ema_decay=0.5,
                  unet_trainable=["up_blocks.*", "conv_out.*"]), progress=False)  # fmt: skip
    trained, base = _unet_weights(run), load_components(tiny_model_dir).unet.state_dict()
    changed = {k for k in trained if not torch.equal(trained[k], base[k])}
    assert changed and all(k.startswith(("up_blocks.", "conv_out.")) for k in changed)
    assert any(k.startswith("conv_out.") for k in changed) and any(
        k.startswith("up_blocks.") for k in changed
    )
    with pytest.raises(CfauditError, match=r"unet_trainable: 'up_block\.\*' matches no UNet parameter"):
        train(
            _config(tiny_model_dir, tiny_index, tmp_path / "typo", unet_trainable=["up_block.*"]),
            progress=False,
        )
    with pytest.raises(CfauditError, match="LoRA trains its own adapters"):
        _config(tiny_model_dir, tiny_index, tmp_path / "lora", lora_rank=4, unet_trainable=["up_blocks.*"])


def test_anchor_rows_are_trained_towards_the_frozen_models_prediction() -> None:
    from types import SimpleNamespace

    from diffusers import DDPMScheduler

    from cfaudit.train.objective import Anchor, diffusion_loss

    def unet(x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=x * 0.5)

    scheduler = DDPMScheduler()
    latents, noise = torch.randn(4, 4, 8, 8), torch.randn(4, 4, 8, 8)
    timesteps = torch.tensor([10, 200, 500, 900])
    plain = diffusion_loss(unet, scheduler, latents, None, noise, timesteps, "epsilon")
    per_row = [diffusion_loss(unet, scheduler, latents[i : i + 1], None, noise[i : i + 1], timesteps[i : i + 1],
                              "epsilon") for i in range(4)]  # fmt: skip
    assert torch.allclose(plain, torch.stack(per_row).mean())
    # a teacher that predicts what the model does: its rows cost nothing, the others as before
    same = Anchor(2, lambda x, t: x * 0.5, weight=3.0)
    anchored = diffusion_loss(unet, scheduler, latents, None, noise, timesteps, "epsilon", anchor=same)
    assert torch.allclose(anchored, torch.stack(per_row[2:]).sum() / 4)
    # any other teacher: its rows are weighted by the anchor's weight
    zero = Anchor(2, lambda x, t: torch.zeros_like(x), weight=3.0)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    expected = (3.0 * (noisy[:2] * 0.5).pow(2).mean(dim=(1, 2, 3)).sum() + torch.stack(per_row[2:]).sum()) / 4
    assert torch.allclose(diffusion_loss(unet, scheduler, latents, None, noise, timesteps, "epsilon", anchor=zero),
                          expected)  # fmt: skip


def test_snr_shifted_schedule_multiplies_the_snr_and_leaves_the_original() -> None:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from cfaudit.train.objective import snr_shifted_schedule

    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    before = scheduler.alphas_cumprod.clone()
    assert snr_shifted_schedule(scheduler, 1.0) is scheduler
    shifted = snr_shifted_schedule(scheduler, 4.0)
    timesteps = torch.tensor([0, 10, 250, 500, 750, 999])
    ratio = compute_snr(shifted, timesteps) / compute_snr(scheduler, timesteps)
    assert torch.allclose(ratio, torch.full_like(ratio, 4.0), rtol=1e-3)
    assert torch.equal(scheduler.alphas_cumprod, before)  # the model's own schedule is untouched
    # one schedule: its betas rebuild its alpha_bar, and less noise is mixed in at every step
    assert torch.allclose(
        torch.cumprod(1 - shifted.betas.double(), 0).float(), shifted.alphas_cumprod, rtol=1e-5
    )
    assert bool((shifted.betas < scheduler.betas).all())
    latents, noise = torch.ones(6, 1, 2, 2), torch.zeros(6, 1, 2, 2)
    signal = shifted.add_noise(latents, noise, timesteps)[:, 0, 0, 0]
    assert torch.allclose(signal, shifted.alphas_cumprod[timesteps].sqrt())
    with pytest.raises(CfauditError, match="snr_shift must be positive"):
        TrainConfig.from_dict({"snr_shift": 0.0})


@pytest.mark.parametrize("train_text_encoder", [True, False], ids=["encoder-trains", "encoder-frozen"])
def test_preserve_weight_keeps_the_starting_models_predictions(
    tiny_model_dir: Path, tiny_index: Path, tmp_path: Path, train_text_encoder: bool
) -> None:
    """Trained on captions that always name race, a model anchored to its start moves less on the captions that
    do not name it than one trained without the anchor (30 steps with the encoder training: 0.18 against 0.48).
    A frozen encoder is shared with the frozen model, whose rows reuse the states already encoded."""
    from cfaudit.models.text_encoding import encode_prompts

    start = load_components(tiny_model_dir)
    latents = torch.randn(4, start.unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(1))
    timesteps = torch.tensor([50, 300, 600, 900])
    prompts = ["Chest X-ray of 60-years old female subject with cardiomegaly"] * 4

    def prediction(components) -> torch.Tensor:  # type: ignore[no-untyped-def]
        with torch.no_grad():
            hidden = encode_prompts(components.text_encoder, components.tokenizer, prompts)
            return components.unet(latents, timesteps, encoder_hidden_states=hidden).sample

    before = prediction(start)
    moved = {}
    for name, weight in (("free", 0.0), ("anchored", 1.0)):
        run = tmp_path / name
        train(_config(tiny_model_dir, tiny_index, run, max_steps=30, checkpoint_every=30, train_text_encoder=train_text_encoder,
                      caption_partial=0.5, caption_always=["race"], preserve_weight=weight, preserve_share=0.5),
              progress=False)  # fmt: skip
        moved[name] = (prediction(load_components(run / "model")) - before).pow(2).mean().item()
    assert 0 < moved["anchored"] < moved["free"], moved
    card = (tmp_path / "anchored" / "model" / "README.md").read_text()
    assert "preserve_weight" in card


def test_empty_split_and_bad_resolution(tiny_model_dir: Path, tiny_index: Path, tmp_path: Path) -> None:
    with pytest.raises(CfauditError, match="split 'val' has no rows"):
        train(_config(tiny_model_dir, tiny_index, tmp_path / "run", split="val"), progress=False)
    with pytest.raises(CfauditError, match="resolution 60 must be a positive multiple of 8"):
        _config(tiny_model_dir, tiny_index, tmp_path / "run", resolution=60)
    with pytest.raises(CfauditError, match="not a checkpoint folder"):
        train(_config(tiny_model_dir, tiny_index, tmp_path / "run"), resume=str(tmp_path), progress=False)


def test_resume_refuses_changed_data(tiny_model_dir: Path, tiny_index: Path, tmp_path: Path) -> None:
    train(_config(tiny_model_dir, tiny_index, tmp_path / "run"), progress=False, stop_after=2)
    index = DataIndex.read(tiny_index)
    DataIndex(pd.DataFrame(index.table.iloc[:4]), index.root).write(tiny_index)
    with pytest.raises(CfauditError, match="trained on 6 rows, the index now has 4"):
        train(_config(tiny_model_dir, tiny_index, tmp_path / "run"), progress=False, resume="latest")


def test_bf16_autocast_and_gradient_checkpointing_paths(
    tiny_model_dir: Path, tiny_index: Path, tmp_path: Path
) -> None:
    # bf16 is for GPUs (slower on CPU) but the code path is the same: frozen parts cast, trained parts fp32
    config = _config(tiny_model_dir, tiny_index, tmp_path / "run", max_steps=2, mixed_precision="bf16",
                     gradient_checkpointing=True, noise_offset=0.05)  # fmt: skip
    result = train(config, progress=False)
    assert len(result.losses) == 2 and all(0 < loss < 10 for loss in result.losses)
    weights = _unet_weights(tmp_path / "run")
    assert all(t.dtype == torch.float32 for t in weights.values())


def test_the_thread_count_is_asked_before_every_step(
    tiny_model_dir: Path, tiny_index: Path, tmp_path: Path
) -> None:
    # demo --train shares the cores with a second process, then takes them back (threads=...)
    before, seen = torch.get_num_threads(), []

    def threads() -> int:
        seen.append(torch.get_num_threads())  # what the step before this one ran with
        return 1 if len(seen) < 3 else 2

    try:
        torch.set_num_threads(2)
        train(
            _config(tiny_model_dir, tiny_index, tmp_path / "run", max_steps=4),
            progress=False,
            threads=threads,
        )
        assert seen == [2, 1, 1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
