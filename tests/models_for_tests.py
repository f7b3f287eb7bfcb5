"""Small models shared by the core tests."""

from __future__ import annotations

import torch
from torch import nn


class TinySeg(nn.Module):
    """Encoder (stride 2) + decoder with upsampling; BatchNorm so eval/train differ."""

    def __init__(self, classes: int = 3, width: int = 8, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), act())
        self.down = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), act())
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.head = nn.Conv2d(2 * width + width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc(x)
        d = self.up(self.down(e))
        return self.head(torch.cat([e, d], dim=1))


class LinearHead(nn.Module):
    """features = 1x1 conv (C channels), head = 1x1 conv without bias: closed-form CAMs."""

    def __init__(self, channels: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, channels, 1)
        self.head = nn.Conv2d(channels, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def calibrated(model: nn.Module, size: int = 64, steps: int = 3, seed: int = 0) -> nn.Module:
    """Run a few train-mode forwards on random data so BatchNorm statistics are not the
    identity, then switch to eval mode."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.rand(2, 3, size, size, generator=g))
    return model.eval()
