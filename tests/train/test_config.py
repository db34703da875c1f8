from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cfaudit.errors import CfauditError
from cfaudit.scm.config import load_config
from cfaudit.train.config import TrainConfig, VaeTrainConfig


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_yaml_with_overrides(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.yaml", "model: demo\nindex: data/index.csv\nresolution: 128\nlearning_rate: 1\n"
    )
    config = TrainConfig.from_yaml(path, {"max_steps": 7})
    assert config.model == "demo" and config.index == "data/index.csv" and config.max_steps == 7
    assert config.learning_rate == 1.0 and isinstance(config.learning_rate, float)
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rte: 0.1\n", "unknown key.*learning_rte"),
        ("resolution: 100\n", "resolution 100 must be a positive multiple of 8"),
        ("resolution: big\n", "resolution must be an integer"),
        ("use_ema: 3\n", "use_ema must be true or false"),
        ("mixed_precision: fp8\n", "mixed_precision 'fp8'"),
        ("lora_rank: 4\nuse_ema: true\n", "use_ema applies to full UNet"),
        ("sample_every: 5\n", "sample_every needs sample_prompts"),
        ("caption_dropout: 1.5\n", r"caption_dropout 1.5 must be in \[0, 1\]"),
        ("adam_beta1: 2\n", r"adam_beta1 must be in \[0, 1\), got 2.0"),
        ("adam_epsilon: -1\n", "adam_epsilon must be positive"),
        ("adam_weight_decay: -5\n", "adam_weight_decay must not be negative"),
        ("train_text_encoder: true\ntext_encoder_lr: -1\n", "text_encoder_lr must be positive or null"),
        ("lora_rank: 2\nuse_ema: false\nlora_alpha: -1\n", "lora_alpha must be positive or null"),
        ("noise_offset: -1\n", "noise_offset must be 0 .off. or positive"),
        ("sample_steps: 0\n", "sample_steps must be at least 1"),
        ("sample_every: 5\nsample_prompts: [1, 2]\n", "sample_prompts must be a list of texts"),
        ("seed: -1\n", "seed must be 0 or more"),
        ("batch_size: 0\n", r"c.yaml: train config: batch_size must be at least 1"),
        ("- a\n- b\n", "a config is a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(CfauditError, match=message):
        TrainConfig.from_yaml(_write(tmp_path / "c.yaml", text))


_LOOP_ERRORS = [
    ({"max_steps": 0}, "max_steps must be at least 1, got 0"),
    ({"batch_size": 0}, "batch_size must be at least 1, got 0"),
    ({"learning_rate": 0}, "learning_rate must be positive, got 0.0"),
    ({"lr_schedule": "sawtooth"}, "lr_schedule 'sawtooth' is not one of"),
    ({"lr_warmup_steps": -1}, "lr_warmup_steps must not be negative"),
    ({"max_grad_norm": -1}, "max_grad_norm must be 0 (off) or positive"),
    ({"log_every": 0}, "log_every must be at least 1"),
    ({"checkpoint_every": 0}, "checkpoint_every must be at least 1"),
    ({"keep_checkpoints": 0}, "keep_checkpoints must be at least 1"),
]


@pytest.mark.parametrize(("values", "message"), _LOOP_ERRORS)
def test_every_trainer_refuses_a_bad_loop_setting_in_the_same_words(values: dict, message: str) -> None:
    """The UNet, autoencoder and SCM trainers share one check of their steps, rates and bookkeeping."""
    readers = {
        "train config": lambda: TrainConfig.from_dict({"resolution": 64, **values}),
        "vae config": lambda: VaeTrainConfig.from_dict(values),
        "scm config": lambda: load_config("small", None, values),
    }
    for kind, read in readers.items():
        with pytest.raises(CfauditError) as error:
            read()
        assert str(error.value).startswith(f"{kind}: {message}"), (kind, str(error.value))


def test_the_autoencoder_trainer_knows_only_its_own_schedules() -> None:
    with pytest.raises(CfauditError, match="lr_schedule 'linear' is not one of constant, cosine"):
        VaeTrainConfig.from_dict({"lr_schedule": "linear"})
    assert TrainConfig.from_dict({"lr_schedule": "linear"}).lr_schedule == "linear"


def test_a_number_yaml_reads_as_text_is_taken_as_the_number(tmp_path: Path) -> None:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; a float setting takes it as the number meant."""
    config = TrainConfig.from_yaml(
        _write(tmp_path / "c.yaml", "learning_rate: 1e-3\n"), {"adam_epsilon": "1e-6"}
    )
    assert config.learning_rate == 0.001 and config.adam_epsilon == 1e-6
    with pytest.raises(CfauditError, match="learning_rate must be a number, got 'fast'"):
        TrainConfig.from_yaml(_write(tmp_path / "d.yaml", "learning_rate: fast\n"))


def test_a_bad_command_line_value_is_blamed_on_the_command_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "max_steps: 2\n")
    with pytest.raises(CfauditError, match=r"^the command line: max_steps must be an integer, got 'abc'"):
        TrainConfig.from_yaml(path, {"max_steps": "abc"})
    with pytest.raises(CfauditError, match=r"^the command line: unknown key.*max_stepz"):
        TrainConfig.from_yaml(path, {"max_stepz": 3})
    with pytest.raises(
        CfauditError, match=r"c\.yaml with the command line's batch_size: train config: batch_size"
    ):
        TrainConfig.from_yaml(path, {"batch_size": 0})


@pytest.mark.parametrize("empty", ["model", "index", "output_dir"])
def test_a_run_with_an_empty_path_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty: str
) -> None:
    """An empty ``model``, ``index`` or ``output_dir`` would mean the working directory: refused, nothing written."""
    from cfaudit.train.trainer import train

    monkeypatch.chdir(tmp_path)
    values = {"model": "demo", "index": "index.csv", "output_dir": "run", "resolution": 64, empty: ""}
    with pytest.raises(CfauditError, match=f"train config: `{empty}` is empty; set it to"):
        train(TrainConfig.from_dict(values))
    assert list(tmp_path.iterdir()) == []


def test_fp16_without_a_gpu_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from cfaudit.train.trainer import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = TrainConfig.from_dict(
        {
            "model": "demo",
            "index": "index.csv",
            "output_dir": str(tmp_path / "run"),
            "mixed_precision": "fp16",
        }
    )
    with pytest.raises(CfauditError, match="mixed_precision fp16 needs a CUDA GPU"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_missing_file_and_vae_config(tmp_path: Path) -> None:
    with pytest.raises(CfauditError, match="no such config file"):
        TrainConfig.from_yaml(tmp_path / "none.yaml")
    with pytest.raises(CfauditError, match="vae config: resolution 30"):
        VaeTrainConfig.from_dict({"resolution": 30})
    assert VaeTrainConfig.from_dict({"kl_weight": 0}).kl_weight == 0.0


def test_shipped_configs_are_valid() -> None:
    folder = Path(__file__).resolve().parents[2] / "configs" / "train"
    configs = {path.name: path for path in folder.glob("*.yaml")}
    assert {"demo.yaml", "tiny_vae.yaml", "tiny_f4_vae.yaml", "sd15_unet.yaml"} <= set(configs)
    assert VaeTrainConfig.from_yaml(configs.pop("tiny_vae.yaml")).crop == 64
    finer = VaeTrainConfig.from_yaml(configs.pop("tiny_f4_vae.yaml"))
    assert finer.lpips_weight > 0 and finer.mse_weight > 0 and finer.lr_schedule == "cosine"
    for path in configs.values():
        config = TrainConfig.from_yaml(path)
        assert config.resolution % 8 == 0 and config.index
    assert TrainConfig.from_yaml(folder / "demo.yaml").train_text_encoder is True
    assert TrainConfig.from_yaml(folder / "sd15_unet.yaml").train_text_encoder is False


@pytest.mark.parametrize("name", ["tiny", "tiny-f4", "tiny-f4-shipped"])
def test_the_demo_recipe_of_cfaudit_train_and_of_demo_train_are_one(name: str) -> None:
    """Each phase ``demo --train`` fits and the config named for it hold the same recipe, phase by phase, so that
    neither list can gain a phase the other lacks; the shipped model's PROVENANCE.txt names its recipe's configs."""
    from cfaudit.demo_training import DEMO_RECIPES, demo_recipe
    from cfaudit.models.shipped_model import _SHIPPED_RECIPES, _UNET_CONFIGS

    recipe = demo_recipe(name)
    assert len(recipe.configs) == len(recipe.phases)
    root = Path(__file__).resolve().parents[2]
    for file, (_, phase) in zip(recipe.configs, recipe.phases, strict=True):
        config = TrainConfig.from_yaml(root / file).to_dict()
        assert {key: config[key] for key in phase} == phase, file
    assert set(DEMO_RECIPES) == {"tiny", "tiny-f4", "tiny-f4-shipped"}
    shipped = {"tiny": DEMO_RECIPES["tiny"].configs, "tiny-f4": DEMO_RECIPES["tiny-f4-shipped"].configs}
    assert shipped == _UNET_CONFIGS
    assert {preset: DEMO_RECIPES[name].configs for preset, name in _SHIPPED_RECIPES.items()} == _UNET_CONFIGS


def test_timestep_bias_draws_the_named_end_more_often() -> None:
    import torch

    from cfaudit.train.draws import timestep_sampling_weights

    assert timestep_sampling_weights(TrainConfig(), 1000) is None  # uniform: the draws of every earlier run
    later = TrainConfig(timestep_bias="later", timestep_bias_multiplier=4.0, timestep_bias_portion=0.5)
    weights = timestep_sampling_weights(later, 1000)
    assert weights is not None and weights[999] == 4.0 and weights[0] == 1.0
    draws = torch.multinomial(weights, 20_000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert abs((draws >= 500).float().mean().item() - 0.8) < 0.02  # 4 x 500 / (4 x 500 + 500)
    earlier = timestep_sampling_weights(
        TrainConfig(timestep_bias="earlier", timestep_bias_multiplier=3.0), 1000
    )
    assert earlier is not None and earlier[:250].eq(3.0).all() and earlier[250:].eq(1.0).all()
    with pytest.raises(CfauditError, match="timestep_bias 'middle'"):
        TrainConfig(timestep_bias="middle")


def test_coarse_error_weighs_a_spread_error_above_grain() -> None:
    import torch

    from cfaudit.train.objective import coarse_error

    generator = torch.Generator().manual_seed(0)
    grain = torch.randn(64, 8, 32, 32, generator=generator)
    # white errors score about as in the plain MSE (1 per number) ...
    assert coarse_error(grain, 4).mean().item() == pytest.approx(1.0, rel=0.05)
    # ... an error spread over whole 4 x 4 cells (a border drawn in the wrong place) 16 times more
    spread = torch.zeros(1, 8, 32, 32)
    spread[:, :, 8:16, 12:20] = 1.0
    assert coarse_error(spread, 4).item() == pytest.approx(16 * spread.pow(2).mean().item())
    with pytest.raises(CfauditError, match="coarse_loss_weight"):
        TrainConfig(coarse_loss_weight=-1.0)
    with pytest.raises(CfauditError, match="coarse_loss_pool"):
        TrainConfig(coarse_loss_pool=1)


def test_finding_repeats_raise_a_rare_findings_share_of_the_draws() -> None:
    from cfaudit.train.draws import finding_repeats

    # 100 images: 10 with cardiomegaly, 50 with effusion (5 of them with both)
    records = [
        {"Cardiomegaly": 1.0 if k < 10 else None, "Pleural Effusion": 1.0 if 5 <= k < 55 else None}
        for k in range(100)
    ]
    assert finding_repeats(TrainConfig(), records) is None  # off: every image once an epoch
    repeats = finding_repeats(TrainConfig(finding_min_share=0.3, finding_max_repeat=8), records)
    assert repeats is not None and repeats.min() >= 1 and repeats.max() <= 8
    share = repeats[:10].sum().item() / repeats.sum().item()
    assert 0.25 <= share <= 0.4  # 10% of the images, about 30% of the draws
    assert repeats[60:].eq(1).all()  # images without a rare finding stand once
    capped = finding_repeats(TrainConfig(finding_min_share=0.9, finding_max_repeat=2), records)
    assert capped is not None and capped.max() == 2
    with pytest.raises(CfauditError, match="finding_min_share"):
        TrainConfig(finding_min_share=1.5)


def test_negative_rates_name_a_rare_findings_absence_less_often() -> None:
    from cfaudit.data.vocabulary import FINDINGS
    from cfaudit.train.draws import negative_rates

    # 100 images: 10 with cardiomegaly, 50 with effusion
    records = [
        {"Cardiomegaly": 1.0 if k < 10 else None, "Pleural Effusion": 1.0 if k >= 50 else None}
        for k in range(100)
    ]
    plain = TrainConfig(caption_partial=0.5, caption_negative=0.15)
    assert negative_rates(plain, records).eq(0.15).all()  # no ratio: every finding alike, as before
    capped = negative_rates(
        TrainConfig(caption_partial=0.5, caption_negative=0.15, caption_negative_ratio=0.25), records
    )
    cm, effusion = (
        capped[FINDINGS.index("Cardiomegaly")].item(),
        capped[FINDINGS.index("Pleural Effusion")].item(),
    )
    # cardiomegaly named present: 0.1 x (0.5 + 0.25) = 0.075 of the captions; absent: 0.9 x 0.5 x rate <= 0.25 x that
    assert cm == pytest.approx(0.25 * 0.075 / 0.45)
    assert effusion == pytest.approx(0.15)  # common enough: the plain rate
    # a finding every caption names when present is named twice as often in partial ones: its cap rises with it
    always = negative_rates(
        TrainConfig(caption_partial=0.5, caption_negative=0.15, caption_negative_ratio=0.25,
                    caption_always=["Cardiomegaly"]), records,
    )  # fmt: skip
    assert always[FINDINGS.index("Cardiomegaly")].item() == pytest.approx(0.25 * 0.1 / 0.45)
    with pytest.raises(CfauditError, match="caption_negative_ratio"):
        TrainConfig(caption_negative_ratio=-1.0)


@pytest.mark.parametrize(
    "path", sorted(Path(__file__).parents[2].glob("configs/train/*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_training_config_reads(path: Path) -> None:
    """The configs the docs quote stay valid as keys are added or checked more strictly."""
    config = (VaeTrainConfig if "vae" in path.name else TrainConfig).from_yaml(path)
    assert config.max_steps > 0


def test_caption_always_keeps_its_statements_in_every_partial_caption(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from cfaudit.train import draws

    monkeypatch.setattr(draws, "tokenize", lambda tokenizer, captions, warn: captions)
    records = [{"age": 60, "race": "Black", "sex": "Female", "Cardiomegaly": 1.0} for _ in range(64)]
    rows = torch.arange(64)

    def captions(**options: object) -> list[str]:
        config = TrainConfig(caption_partial=1.0, **options)  # type: ignore[arg-type]
        return draws.sampled_caption_ids(config, records, None, rows, torch.Generator().manual_seed(0))

    plain, kept = captions(), captions(caption_always=["race"])
    assert sum("black" in c.lower() for c in plain) < 48  # partial captions drop the race about half the time
    assert all("black" in c.lower() for c in kept)
    # the same draws otherwise: what else each caption names is unchanged
    assert [c.lower().replace("black ", "") for c in plain] == [c.lower().replace("black ", "") for c in kept]
    with pytest.raises(CfauditError, match="caption_always: 'ethnicity' is not a caption statement"):
        TrainConfig(caption_always=["ethnicity"])
    # the rows that keep the starting model's predictions (preserve_weight) never name those statements
    config = TrainConfig(caption_partial=1.0, caption_always=["race"], preserve_weight=1.0)
    without = torch.arange(64) < 32
    mixed = draws.sampled_caption_ids(
        config, records, None, rows, torch.Generator().manual_seed(0), None, without
    )
    assert not any("black" in c.lower() for c in mixed[:32]) and all("black" in c.lower() for c in mixed[32:])
    assert mixed[32:] == kept[32:]  # the same draws: the other rows' captions are unchanged
    assert [c.lower() for c in mixed[:32]] == [c.lower().replace("black ", "") for c in kept[:32]]
    for bad in ({"preserve_weight": -1.0}, {"preserve_share": 1.0}, {"preserve_share": 0.0},
                {"preserve_weight": 1.0, "batch_size": 1}):  # fmt: skip
        with pytest.raises(CfauditError, match="preserve_"):
            TrainConfig(**bad)  # type: ignore[arg-type]
    # caption_always_alone: the learning rows name race and nothing else, the anchored rows as before
    alone = TrainConfig(caption_partial=1.0, caption_negative=0.5, caption_always=["race"], preserve_weight=1.0,
                        caption_always_alone=True)  # fmt: skip
    named = draws.sampled_caption_ids(
        alone, records, None, rows, torch.Generator().manual_seed(0), None, without
    )
    assert named[32:] == ["Chest X-ray of black subject"] * 32
    assert named[:32] == draws.sampled_caption_ids(
        TrainConfig(caption_partial=1.0, caption_negative=0.5, caption_always=["race"], preserve_weight=1.0),
        records, None, rows, torch.Generator().manual_seed(0), None, without,
    )[:32]  # fmt: skip
    with pytest.raises(CfauditError, match="caption_always_alone needs caption_always"):
        TrainConfig(caption_always=["race"], caption_always_alone=True)
    # caption_always_alone_share: that share of the learning rows names race alone, the rest keep their own
    # caption with race in it, and the anchored rows' captions are as with every learning row alone
    half = draws.sampled_caption_ids(
        dataclasses.replace(alone, caption_always_alone_share=0.5),
        records, None, rows, torch.Generator().manual_seed(0), None, without,
    )  # fmt: skip
    assert half[:32] == named[:32]
    learning_alone = [c == "Chest X-ray of black subject" for c in half[32:]]
    assert 8 <= sum(learning_alone) <= 24
    with_race = [c for c, is_alone in zip(half[32:], learning_alone, strict=True) if not is_alone]
    assert all("black" in c.lower() for c in with_race)
    assert any(len(c) > len("Chest X-ray of black subject") for c in with_race)
    # the generator moves on by as many numbers with or without the anchored rows, so the noise drawn after the
    # captions does not depend on them
    shared = dataclasses.replace(alone, caption_always_alone_share=0.5)
    with_rows, without_rows = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    draws.sampled_caption_ids(shared, records, None, rows, with_rows, None, without)
    draws.sampled_caption_ids(shared, records, None, rows, without_rows)
    assert torch.equal(torch.rand(4, generator=with_rows), torch.rand(4, generator=without_rows))
    for bad_share in (-0.1, 1.5):
        with pytest.raises(CfauditError, match=r"caption_always_alone_share .* must be in"):
            TrainConfig(caption_always=["race"], preserve_weight=1.0, caption_always_alone=True,
                        caption_always_alone_share=bad_share)  # fmt: skip
    with pytest.raises(
        CfauditError, match="caption_always_alone_share applies only with caption_always_alone"
    ):
        TrainConfig(caption_always_alone_share=0.5)


def test_captions_drawn_with_findings_worked_out_once_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer hands ``sampled_caption_ids`` every record's findings, worked out once; the captions drawn are
    those it draws working each record's out again, with any label policy."""
    import torch

    from cfaudit.data.labels import LabelPolicy
    from cfaudit.data.prompts import records_findings
    from cfaudit.data.vocabulary import FINDINGS
    from cfaudit.train import draws

    monkeypatch.setattr(draws, "tokenize", lambda tokenizer, captions, warn: captions)
    generator = torch.Generator().manual_seed(3)
    records = [{"age": 30 + k, "race": "White", "sex": "Male",
                **{f: float(torch.randint(-1, 2, (), generator=generator)) for f in FINDINGS}}
               for k in range(40)]  # fmt: skip
    rows = torch.randint(0, 40, (64,), generator=generator)
    for policy in (LabelPolicy(), LabelPolicy(uncertain="positive")):
        config = TrainConfig(caption_partial=0.7, caption_negative=0.3, label_policy=policy.to_dict())
        once = records_findings(records, policy)
        given = draws.sampled_caption_ids(
            config, records, None, rows, torch.Generator().manual_seed(0), findings=once
        )
        again = draws.sampled_caption_ids(config, records, None, rows, torch.Generator().manual_seed(0))
        assert given == again
        assert any(
            "no " in caption for caption in given
        )  # absent findings named: the policies' values are used
