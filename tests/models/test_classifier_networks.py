"""The attribute classifier's networks: DenseNet-121 keeps torchvision's layout; every head has its logit."""

from __future__ import annotations

import torch

from cfaudit.models.classifier import N_OUTPUTS, AttributeNet, DenseNet121


def test_densenet121_matches_the_reference_layout() -> None:
    torch.manual_seed(0)
    net = DenseNet121()
    names = set(net.state_dict())
    assert "features.denseblock3.denselayer24.conv2.weight" in names
    assert "features.transition3.conv.weight" in names and "features.norm5.running_var" in names
    assert (
        sum(p.numel() for p in net.parameters()) == 6_947_584
    )  # torchvision's 6,953,856 less RGB stem/classifier
    assert net(torch.zeros(1, 1, 64, 64)).shape == (1, 1024)
    assert AttributeNet("densenet121")(torch.zeros(2, 1, 64, 64)).shape == (2, N_OUTPUTS)
