"""LPIPS v0.1 with the ImageNet AlexNet trunk (Zhang et al., 2018), written in plain torch.

The network is the one of the ``lpips`` package (``LPIPS(net="alex", version="0.1")``), with no torchvision:

1. the scaling layer maps inputs in ``[-1, 1]`` to the trunk's normalisation: ``(x - shift) / scale`` with
   shift ``(-0.030, -0.088, -0.188)`` and scale ``(0.458, 0.448, 0.450)`` (ImageNet mean/std expressed for
   ``[-1, 1]`` inputs);
2. torchvision's ``alexnet().features`` layout up to the fifth ReLU, tapped after each ReLU (64, 192, 384, 256 and
   256 channels);
3. each tap is unit-normalised along channels, the two images' taps are subtracted and squared;
4. a learned 1x1 linear head (no bias) weights the channels; the result is averaged over space;
5. the five layer scores are summed into one distance per image pair.

Grayscale inputs are repeated to three channels. Weights come from :mod:`cfaudit.models.lpips_weights`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cfaudit.errors import CfauditError
from cfaudit.models.lpips_weights import TAP_CHANNELS, load_lpips_state

#: LPIPS's ScalingLayer constants for inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
#: Positions in ``features`` right after which the five ReLU taps are read.
TAP_AFTER = (1, 4, 7, 9, 11)
_EPS = 1e-10
MIN_SIZE = 32  #: the smallest side AlexNet's five stages read


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` up to the fifth ReLU (indices match its state-dict names)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(inplace=False),
    )


def _unit_normalize(features: torch.Tensor) -> torch.Tensor:
    norm = torch.sqrt(torch.sum(features * features, dim=1, keepdim=True))
    return features / (norm + _EPS)


class LPIPS(nn.Module):
    """``forward(x, y)`` -> one LPIPS distance per pair; ``x``, ``y``: ``(N, 1 or 3, H, W)`` in ``[-1, 1]``."""

    shift: torch.Tensor  # buffers (register_buffer)
    scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        # Constants of the method, not part of the weight file: kept out of the state dict.
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.features = alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in TAP_CHANNELS)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_pretrained(
        cls, path: str | Path | None = None, device: str | torch.device | None = None
    ) -> LPIPS:
        """The v0.1 AlexNet network with the weights fetched by ``cfaudit assets fetch``."""
        model = cls()
        model.load_state_dict(load_lpips_state(path))
        return model.to(device) if device is not None else model

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five unit-normalised ReLU feature maps of scaled images."""
        x = (images - self.shift) / self.scale
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAP_AFTER:
                outputs.append(_unit_normalize(x))
        return outputs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = _prepare(x, "x"), _prepare(y, "y")
        if x.shape != y.shape:
            raise CfauditError(f"LPIPS needs images of one shape; got {tuple(x.shape)} and {tuple(y.shape)}")
        return self.distance(x, y)

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The distance without :meth:`forward`'s input checks, for use as a training loss (a decoder's output
        may overshoot ``[-1, 1]`` a little; gradients flow through it). Grayscale inputs are repeated to RGB."""
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        both = self.taps(torch.cat([x, y]))
        total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for lin, tap in zip(self.lins, both, strict=True):
            a, b = tap.chunk(2)
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))
        return total


def _prepare(images: torch.Tensor, name: str) -> torch.Tensor:
    if images.dim() == 3:  # (N, H, W) grayscale
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise CfauditError(f"LPIPS input {name} has shape {tuple(images.shape)}; expected (N, 1 or 3, H, W)")
    if min(images.shape[-2:]) < MIN_SIZE:
        raise CfauditError(
            f"LPIPS input {name} is {tuple(images.shape[-2:])} pixels; AlexNet needs at least {MIN_SIZE}"
        )
    low, high = float(images.min()), float(images.max())
    if low < -1.0 - 1e-3 or high > 1.0 + 1e-3:
        raise CfauditError(
            f"LPIPS input {name} spans [{low:.3g}, {high:.3g}]; scale images to [-1, 1] (2 * x - 1 for [0, 1])"
        )
    images = images.float()
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
