"""Training settings: plain values, read from a YAML file and overridable from the command line.

Every key is a field of :class:`TrainConfig` (read by :class:`~cfaudit.config_files.ConfigFile`: an unknown key
is an error naming the key and the file), values are checked once here (``resolution`` a multiple of 8,
probabilities in ``[0, 1]``...), and the config round-trips through
:meth:`TrainConfig.to_dict` into every checkpoint, so a run can be told from its folder alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cfaudit.config_files import ConfigFile, requirement
from cfaudit.data.prompts import CAPTION_STATEMENTS

MIXED_PRECISION = ("no", "fp16", "bf16")
PREDICTION_TYPES = ("epsilon", "v_prediction")
LR_SCHEDULES = ("constant", "constant_with_warmup", "cosine", "linear")
TIMESTEP_BIAS = ("none", "later", "earlier")


def check_loop(
    need: Callable[[bool, str], None], config: Any, schedules: Sequence[str] = LR_SCHEDULES
) -> None:
    """The checks that every trainer's config shares, with one wording: steps, batch, learning rate and its
    schedule, warm-up, gradient clipping, logging and checkpoints (``need``: the config's
    :func:`~cfaudit.config_files.requirement`; ``schedules``: the learning-rate schedules its trainer knows)."""
    need(config.max_steps >= 1, f"max_steps must be at least 1, got {config.max_steps}")
    need(config.seed >= 0, f"seed must be 0 or more, got {config.seed}")
    need(config.batch_size >= 1, f"batch_size must be at least 1, got {config.batch_size}")
    need(config.learning_rate > 0, f"learning_rate must be positive, got {config.learning_rate}")
    need(
        config.lr_schedule in schedules,
        f"lr_schedule {config.lr_schedule!r} is not one of {', '.join(schedules)}",
    )
    need(config.lr_warmup_steps >= 0, "lr_warmup_steps must not be negative")
    need(config.max_grad_norm >= 0, "max_grad_norm must be 0 (off) or positive")
    need(config.log_every >= 1, "log_every must be at least 1")
    need(config.checkpoint_every >= 1, "checkpoint_every must be at least 1")
    need(config.keep_checkpoints >= 1, "keep_checkpoints must be at least 1")


def check_adam(need: Callable[[bool, str], None], config: Any) -> None:
    """AdamW's settings, checked before any work (torch would refuse them only at the first step)."""
    for name in ("adam_beta1", "adam_beta2"):
        value = getattr(config, name)
        need(0.0 <= value < 1.0, f"{name} must be in [0, 1), got {value}")
    need(config.adam_epsilon > 0, f"adam_epsilon must be positive, got {config.adam_epsilon}")
    need(
        config.adam_weight_decay >= 0,
        f"adam_weight_decay must not be negative, got {config.adam_weight_decay}",
    )


def require_filled(config: Any, kind: str, names: Sequence[str]) -> None:
    """Refuse a run whose ``names`` (of ``model``, ``index``, ``output_dir``) are empty, before any work: an empty
    path would otherwise mean the working directory."""
    from cfaudit.errors import CfauditError

    for name in names:
        if not str(getattr(config, name) or "").strip():
            raise CfauditError(f"{kind}: `{name}` is empty; set it to {_FILL_HINTS[name]}")


_FILL_HINTS = {
    "model": "demo, a pipeline folder or a hub id",
    "index": "an index.csv made by `cfaudit data index`",
    "output_dir": "the run's folder (its checkpoints and model are written there)",
}


@dataclass
class TrainConfig(ConfigFile):
    """One fine-tuning run. Relative paths are taken from the working directory (run from the repo root)."""

    # What to train, on what
    model: str = ""  #: ``demo``, a diffusers folder or a hub id
    index: str = ""  #: an ``index.csv`` made by ``cfaudit data index``
    split: str = "train"
    output_dir: str = "runs/train"
    resolution: int = 512
    #: keys of :class:`~cfaudit.data.prompts.PromptTemplate` and :class:`~cfaudit.data.labels.LabelPolicy`
    prompt_template: dict[str, Any] = field(default_factory=dict)
    label_policy: dict[str, Any] = field(default_factory=dict)
    # Which weights move
    train_text_encoder: bool = False
    text_encoder_lr: float | None = None  #: default: ``learning_rate``
    lora_rank: int = 0  #: > 0: train LoRA adapters on the UNet's attention instead of the full UNet
    lora_alpha: float | None = None  #: default: ``lora_rank``
    #: the UNet parameters that train, as name patterns (``fnmatch``: ``up_blocks.2.*``), the rest frozen: a phase
    #: that teaches a fine cue can leave the coarse blocks, which set the layout, as they were; empty: all
    unet_trainable: list[str] = field(default_factory=list)
    # Objective
    prediction_type: str | None = None  #: default: the model's scheduler config
    snr_gamma: float | None = None  #: min-SNR-gamma weighting (Hang et al. 2023: 5.0); None: plain MSE
    caption_dropout: float = 0.0  #: chance of the empty prompt instead (for classifier-free guidance)
    #: chance that a caption names a random subset of what is true of the image instead of all of it, so that
    #: the model learns the paper's partial prompts (each statement kept at a rate drawn per caption)
    caption_partial: float = 0.0
    #: in a partial caption, the chance that each absent finding is named as such (``... with no cardiomegaly``)
    caption_negative: float = 0.0
    #: statements every partial caption still names (entries of :data:`~cfaudit.data.prompts.CAPTION_STATEMENTS`:
    #: ``age``, ``race``, ``sex`` or a finding): a word that a partial caption drops half the time is learnt at
    #: half the pace, which a faint cue such as the phantom's race grating cannot afford; empty: none
    caption_always: list[str] = field(default_factory=list)
    #: keep what the starting model does where a phase does not teach: a ``preserve_share`` of each batch's rows
    #: gets a caption that leaves out the ``caption_always`` statements and is trained towards the prediction of a
    #: frozen copy of the starting model (its UNet and text encoder) instead of the data, weighted by
    #: ``preserve_weight`` (distillation, as in "learning without forgetting"): a phase that teaches the race words
    #: through weights every word passes (the cross-attention) otherwise also moves what the other words draw,
    #: such as the pacemaker a cardiomegaly edit takes along; 0: off. The copy is a second UNet in memory (and a
    #: second text encoder when it trains), and its forward pass costs a fifth to a third more per step
    preserve_weight: float = 0.0
    preserve_share: float = 0.5
    #: with ``preserve_weight``, the rows that learn from the data name the ``caption_always`` statements alone
    #: (``Chest X-ray of black subject``: the prompts of a contrast edit of them), so that a phase teaching those
    #: words does not also retrain how the other words draw; the anchored rows keep the rest as it was
    caption_always_alone: bool = False
    #: with ``caption_always_alone``, the share of the learning rows that name those statements alone; the rest
    #: keep their own caption (whole or partial) with the statements in it, so that the words are also learnt
    #: where a full caption names them (the paper's partial prompts invert under the full caption). 1: all alone
    caption_always_alone_share: float = 1.0
    #: name a finding's absence at most this many times per naming of its presence (lowers ``caption_negative``
    #: for rare findings: :func:`~cfaudit.train.draws.negative_rates`); None: ``caption_negative`` for all
    caption_negative_ratio: float | None = None
    noise_offset: float = 0.0
    #: weight of a coarse term beside the denoising MSE: the error averaged over ``coarse_loss_pool`` x
    #: ``coarse_loss_pool`` latent cells (:func:`~cfaudit.train.objective.coarse_error`), which weighs the layout
    #: (a heart's size) above the fine detail that dominates the plain MSE; 0: off
    coarse_loss_weight: float = 0.0
    coarse_loss_pool: int = 4
    #: draw the images of rare findings more often, so that each finding's positives make up about this share
    #: of the draws (:func:`~cfaudit.train.draws.finding_repeats`; a rare finding's word is otherwise learnt
    #: late or not at all); 0: every image once an epoch
    finding_min_share: float = 0.0
    finding_max_repeat: int = 8
    #: draw training timesteps more often from one end of the schedule, as diffusers' training scripts do:
    #: ``later`` weights the noisiest ``timestep_bias_portion`` of the steps (where the layout, such as the heart's
    #: size, is decided) by ``timestep_bias_multiplier``; ``earlier`` the cleanest; ``none`` draws uniformly
    timestep_bias: str = "none"
    timestep_bias_multiplier: float = 1.0
    timestep_bias_portion: float = 0.25
    #: multiply the training schedule's signal-to-noise ratio at every timestep by this factor
    #: (:func:`~cfaudit.train.objective.snr_shifted_schedule`; the saved model keeps its own schedule): a run at a
    #: lower resolution than the model will be used at, ``(use / train)**2``, sees the layout as noisy at each
    #: timestep as the larger image will, because averaging ``k`` x ``k`` pixels divides the noise's variance by
    #: ``k**2`` (the resolution shift of Hoogeboom et al. 2023 and Stable Diffusion 3); 1: the model's schedule
    snr_shift: float = 1.0
    # Optimisation
    max_steps: int = 1000
    batch_size: int = 8  #: per device, per micro-step
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    use_ema: bool = False
    ema_decay: float = 0.9999
    # Speed and memory
    mixed_precision: str = "no"  #: ``no`` (fp32, use on CPU), ``fp16`` or ``bf16`` (GPU)
    gradient_checkpointing: bool = False
    cache_latents: bool = True  #: encode every image with the VAE once, not every epoch
    latent_cache_dir: str | None = None  #: default: ``cache_dir()/latents``
    encode_batch_size: int = 16
    #: with a frozen text encoder, encode every distinct caption once (not every step) when their states fit
    #: in ``text_cache_mb`` of memory; else encode per step as usual
    cache_text: bool = True
    text_cache_mb: int = 2048
    # Bookkeeping
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 0  #: 0: no sample grids during training
    sample_prompts: list[str] = field(default_factory=list)
    sample_steps: int = 25
    sample_guidance: float = 7.5
    save_dtype: str = "float32"  #: precision of the final model's weights (``float16`` halves its size)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        need = requirement("train config")
        need(
            self.resolution > 0 and self.resolution % 8 == 0,
            f"resolution {self.resolution} must be a positive multiple of 8",
        )
        check_loop(need, self)
        check_adam(need, self)
        need(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be at least 1")
        need(
            self.text_encoder_lr is None or self.text_encoder_lr > 0,
            f"text_encoder_lr must be positive or null (the UNet's), got {self.text_encoder_lr}",
        )
        need(
            self.lora_alpha is None or self.lora_alpha > 0,
            f"lora_alpha must be positive or null (lora_rank), got {self.lora_alpha}",
        )
        need(self.noise_offset >= 0, f"noise_offset must be 0 (off) or positive, got {self.noise_offset}")
        need(
            self.mixed_precision in MIXED_PRECISION,
            f"mixed_precision {self.mixed_precision!r} is not one of {', '.join(MIXED_PRECISION)}",
        )
        need(
            self.prediction_type in (None, *PREDICTION_TYPES),
            f"prediction_type {self.prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}",
        )
        need(0.0 <= self.caption_dropout <= 1.0, f"caption_dropout {self.caption_dropout} must be in [0, 1]")
        need(0.0 <= self.caption_partial <= 1.0, f"caption_partial {self.caption_partial} must be in [0, 1]")
        need(
            0.0 <= self.caption_negative <= 1.0, f"caption_negative {self.caption_negative} must be in [0, 1]"
        )
        unknown = [name for name in self.caption_always if name not in CAPTION_STATEMENTS]
        need(
            not unknown,
            f"caption_always: {', '.join(map(repr, unknown))} is not a caption statement; "
            f"choose from {', '.join(CAPTION_STATEMENTS)}",
        )
        need(
            self.preserve_weight >= 0,
            f"preserve_weight must be 0 (off) or positive, got {self.preserve_weight}",
        )
        need(0.0 < self.preserve_share < 1.0, f"preserve_share {self.preserve_share} must be in (0, 1)")
        need(
            not self.preserve_weight or self.batch_size >= 2,
            f"preserve_weight needs batch_size of at least 2 (rows to anchor and rows to learn), got {self.batch_size}",
        )
        need(
            not self.caption_always_alone or (bool(self.caption_always) and self.preserve_weight > 0),
            "caption_always_alone needs caption_always (the statements to name) and preserve_weight > 0 "
            "(without the anchor, captions naming nothing else would teach the model to ignore the other words)",
        )
        need(
            0.0 <= self.caption_always_alone_share <= 1.0,
            f"caption_always_alone_share {self.caption_always_alone_share} must be in [0, 1]",
        )
        need(
            self.caption_always_alone or self.caption_always_alone_share == 1.0,
            "caption_always_alone_share applies only with caption_always_alone: true (the share of the rows "
            "naming those statements alone); set both, or leave the share at 1",
        )
        need(
            self.snr_gamma is None or self.snr_gamma > 0,
            f"snr_gamma must be positive or null, got {self.snr_gamma}",
        )
        need(
            self.timestep_bias in TIMESTEP_BIAS,
            f"timestep_bias {self.timestep_bias!r} is not one of {', '.join(TIMESTEP_BIAS)}",
        )
        need(self.timestep_bias_multiplier > 0, "timestep_bias_multiplier must be positive")
        need(
            self.coarse_loss_weight >= 0,
            f"coarse_loss_weight must be 0 (off) or positive, got {self.coarse_loss_weight}",
        )
        need(
            self.caption_negative_ratio is None or self.caption_negative_ratio >= 0,
            f"caption_negative_ratio must be null or at least 0, got {self.caption_negative_ratio}",
        )
        need(
            0.0 <= self.finding_min_share <= 1.0,
            f"finding_min_share {self.finding_min_share} must be in [0, 1]",
        )
        need(
            self.finding_max_repeat >= 1,
            f"finding_max_repeat must be at least 1, got {self.finding_max_repeat}",
        )
        need(self.coarse_loss_pool >= 2, f"coarse_loss_pool must be at least 2, got {self.coarse_loss_pool}")
        need(0.0 < self.timestep_bias_portion <= 1.0, "timestep_bias_portion must be in (0, 1]")
        need(
            self.snr_shift > 0, f"snr_shift must be positive (1: the model's schedule), got {self.snr_shift}"
        )
        need(self.lora_rank >= 0, f"lora_rank must be 0 (off) or positive, got {self.lora_rank}")
        need(
            not (self.lora_rank and self.use_ema),
            "use_ema applies to full UNet fine-tuning; set use_ema: false with lora_rank",
        )
        need(
            not (self.lora_rank and self.train_text_encoder),
            "train_text_encoder with lora_rank is not supported; choose one",
        )
        need(
            not (self.lora_rank and self.unet_trainable),
            "unet_trainable selects UNet weights for full fine-tuning; LoRA trains its own adapters, choose one",
        )
        need(
            all(isinstance(pattern, str) and pattern.strip() for pattern in self.unet_trainable),
            f"unet_trainable must be a list of parameter-name patterns, got {self.unet_trainable!r}",
        )
        need(0.0 < self.ema_decay < 1.0, f"ema_decay {self.ema_decay} must be in (0, 1)")
        need(self.sample_every >= 0, "sample_every must be 0 (off) or positive")
        need(not self.sample_every or bool(self.sample_prompts), "sample_every needs sample_prompts")
        need(
            all(isinstance(prompt, str) for prompt in self.sample_prompts),
            "sample_prompts must be a list of texts (quote a prompt that YAML would read as something else)",
        )
        need(self.sample_steps >= 1, f"sample_steps must be at least 1, got {self.sample_steps}")
        need(self.sample_guidance > 0, f"sample_guidance must be positive, got {self.sample_guidance}")
        need(self.save_dtype in ("float32", "float16", "bfloat16"), f"save_dtype {self.save_dtype!r} is not float32, float16 or bfloat16")  # fmt: skip
        need(self.encode_batch_size >= 1, "encode_batch_size must be at least 1")
        need(self.text_cache_mb >= 0, "text_cache_mb must be at least 0")


@dataclass
class VaeTrainConfig(ConfigFile):
    """Training a pipeline's VAE (the tiny preset's own autoencoder) on a data index."""

    model: str = ""  #: the pipeline whose VAE trains (``cfaudit models init-random --arch tiny``)
    index: str = ""
    split: str = "train"
    output_dir: str = "runs/vae"  #: the pipeline with the trained VAE is written to ``output_dir/model``
    resolution: int = 128
    #: > 0: train on random square crops of this size (the VAE is convolutional; 4x cheaper at half the size)
    crop: int = 0
    max_steps: int = 500
    batch_size: int = 16
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  #: ``constant`` or ``cosine`` (decay to 0 at ``max_steps``)
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0  #: 0: no clipping
    kl_weight: float = 1e-6
    #: weight of the perceptual loss (LPIPS, AlexNet; needs ``cfaudit assets fetch``); 0: L1 + KL only
    lpips_weight: float = 0.0
    #: weight of a squared-error term beside L1: it weighs large errors (a thin bright line drawn too faintly)
    #: above small ones (grain), which L1 weighs alike
    mse_weight: float = 0.0
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    #: held-out images whose reconstruction L1 is measured at every checkpoint (0: none)
    eval_split: str = "val"
    eval_images: int = 32

    def __post_init__(self) -> None:
        need = requirement("vae config")
        need(
            self.resolution > 0 and self.resolution % 8 == 0,
            f"resolution {self.resolution} must be a positive multiple of 8",
        )
        check_loop(need, self, schedules=("constant", "cosine"))
        need(self.crop == 0 or (0 < self.crop <= self.resolution and self.crop % 8 == 0),
             f"crop {self.crop} must be 0 (off) or a multiple of 8 up to the resolution")  # fmt: skip
        need(self.kl_weight >= 0, "kl_weight must be 0 or positive")
        need(self.lpips_weight >= 0, "lpips_weight must be 0 (off) or positive")
        need(self.mse_weight >= 0, "mse_weight must be 0 (off) or positive")
        need(self.eval_images >= 0, "eval_images must be 0 (off) or positive")
