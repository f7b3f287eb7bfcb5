"""Shared set-up for the benchmarks: the same model, input, class and ROI for us and the peers."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def deeplab(num_classes: int = 5, size: int = 256, seed: int = 0,
            device: str = "cpu") -> nn.Module:
    """torchvision deeplabv3_mobilenet_v3_large with BatchNorm statistics calibrated once on
    random data (cumulative average over 4 batches of 4, so outputs are not constant), in eval
    mode. Every benchmark uses this model."""
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(seed)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                         num_classes=num_classes)
    return calibrate(model, size, seed=seed, device=device)


def calibrate(model: nn.Module, size: int, seed: int = 0, device: str = "cpu",
              batches: int = 4, batch_size: int = 4) -> nn.Module:
    """BatchNorm statistics from ``batches`` train-mode forwards of ``batch_size`` random
    ``size``² images (cumulative average, generator seeded with ``seed + 1``); eval mode."""
    model = model.to(device)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    g = torch.Generator().manual_seed(seed + 1)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand(batch_size, 3, size, size, generator=g).to(device))
    return model.eval()


class OutOnly(nn.Module):
    """Peers expect ``model(x)`` to return a tensor: unwrap torchvision's dict."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def interleaved(fns: dict[str, Callable[[], object]], rounds: int = 5,
                warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, runs interleaved round by round after a warm-up."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    span = float(max(a.max() - a.min(), 1e-30))
    return float((a - b).abs().max()) / span
