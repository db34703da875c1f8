"""The attribute classifier's networks, in plain torch (torchvision cannot be imported beside this torch).

* :class:`ResNetSmall`: a four-stage ResNet of basic blocks (He et al., 2016), narrow enough to train on CPU in
  minutes on the phantom;
* :class:`DenseNet121`: the field's usual chest X-ray backbone (Huang et al., 2017; CheXNet, torchxrayvision),
  with torchvision's module names (``features.conv0``, ``features.denseblock1.denselayer1.norm1`` ...), so
  weights saved by torchvision-style code map onto it by name;
* :class:`AttributeNet`: one backbone, one linear layer giving every head's logits (:data:`HEADS`), and the
  per-head temperatures fitted after training (calibration).

Inputs are ``(N, 1, S, S)`` images in ``[-1, 1]`` (:func:`cfaudit.data.images.to_model_tensor`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cfaudit.data.vocabulary import FINDINGS, RACES
from cfaudit.errors import CfauditError


@dataclass(frozen=True)
class Head:
    """One output of the classifier: its name, kind and slice of the logit vector."""

    name: str
    kind: str  # "binary" | "categorical" | "regression"
    start: int
    width: int

    @property
    def stop(self) -> int:
        return self.start + self.width


def _layout() -> tuple[Head, ...]:
    heads = [
        Head("sex", "binary", 0, 1),
        Head("race", "categorical", 1, len(RACES)),
        Head("age", "regression", 5, 1),
    ]
    heads += [Head(finding, "binary", 6 + i, 1) for i, finding in enumerate(FINDINGS)]
    return tuple(heads)


#: Every head in logit order: sex (P(Male)), race (softmax over Asian/White/Black/Other), age, the 14 findings.
HEADS: tuple[Head, ...] = _layout()
HEAD_BY_NAME: dict[str, Head] = {head.name: head for head in HEADS}
N_OUTPUTS: int = HEADS[-1].stop
#: Heads with a temperature (everything but the regression head), in this order.
CALIBRATED_HEADS: tuple[str, ...] = tuple(head.name for head in HEADS if head.kind != "regression")
#: Age is predicted as ``(age - AGE_CENTER) / AGE_SCALE`` so its loss has the size of the others.
AGE_CENTER, AGE_SCALE = 50.0, 20.0
ARCHITECTURES: tuple[str, ...] = ("resnet-small", "densenet121")


# --- ResNet --------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class ResNetSmall(nn.Module):
    """Stem (5x5 stride-2 conv + max-pool), four stages of basic blocks, global average pooling."""

    def __init__(
        self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128), blocks: int = 1
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, channels = [], widths[0]
        for i, width in enumerate(widths):
            layers = [BasicBlock(channels, width, 1 if i == 0 else 2)]
            layers += [BasicBlock(width, width, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.out_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.stages(self.stem(x)), 1).flatten(1)


# --- DenseNet-121 --------------------------------------------------------------------------------------------


class _DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.norm1(features)))
        return torch.cat([features, self.conv2(self.relu2(self.norm2(out)))], dim=1)


class _DenseBlock(nn.Sequential):
    def __init__(self, layers: int, in_channels: int, growth: int, bn_size: int) -> None:
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(in_channels + i * growth, growth, bn_size))


class _Transition(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_channels))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, stride=2))


class DenseNet121(nn.Module):
    """DenseNet-121 (growth 32, blocks 6-12-24-16, bottleneck 4, compression 0.5) with torchvision's names."""

    def __init__(
        self,
        in_channels: int = 1,
        growth: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        init_features: int = 64,
        bn_size: int = 4,
    ) -> None:
        super().__init__()
        modules: OrderedDict[str, nn.Module] = OrderedDict(
            conv0=nn.Conv2d(in_channels, init_features, 7, stride=2, padding=3, bias=False),
            norm0=nn.BatchNorm2d(init_features),
            relu0=nn.ReLU(inplace=True),
            pool0=nn.MaxPool2d(3, stride=2, padding=1),
        )
        channels = init_features
        for i, layers in enumerate(block_config):
            modules[f"denseblock{i + 1}"] = _DenseBlock(layers, channels, growth, bn_size)
            channels += layers * growth
            if i != len(block_config) - 1:
                modules[f"transition{i + 1}"] = _Transition(channels, channels // 2)
                channels //= 2
        modules["norm5"] = nn.BatchNorm2d(channels)
        self.features = nn.Sequential(modules)
        self.out_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(F.relu(self.features(x)), 1).flatten(1)


def make_backbone(arch: str, in_channels: int = 1) -> ResNetSmall | DenseNet121:
    if arch == "resnet-small":
        return ResNetSmall(in_channels)
    if arch == "densenet121":
        return DenseNet121(in_channels)
    raise CfauditError(f"unknown classifier architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")


# --- the multi-head classifier -------------------------------------------------------------------------------


class AttributeNet(nn.Module):
    """Backbone + one linear layer for all heads; ``temperature`` holds one calibration value per head."""

    temperature: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, arch: str = "resnet-small") -> None:
        super().__init__()
        self.arch = arch
        self.backbone = make_backbone(arch)
        self.head = nn.Linear(self.backbone.out_features, N_OUTPUTS)
        self.register_buffer("temperature", torch.ones(len(CALIBRATED_HEADS)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw (uncalibrated) logits ``(N, N_OUTPUTS)``."""
        return self.head(self.backbone(images))


def head_outputs(logits: torch.Tensor, temperature: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Logits -> probabilities per head (P(Male), race softmax, P(finding)) and age in years.

    With ``temperature``, each calibrated head's logits are divided by its temperature first.
    """
    outputs: dict[str, torch.Tensor] = {}
    for head in HEADS:
        values = logits[:, head.start : head.stop]
        if head.kind == "regression":
            outputs[head.name] = values[:, 0] * AGE_SCALE + AGE_CENTER
            continue
        if temperature is not None:
            values = values / temperature[CALIBRATED_HEADS.index(head.name)]
        outputs[head.name] = (
            values.softmax(dim=1) if head.kind == "categorical" else torch.sigmoid(values[:, 0])
        )
    return outputs
