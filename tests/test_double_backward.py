"""Double backward: explanations built with ``create_graph=True`` are differentiable w.r.t. the
input, and their input gradient equals central finite differences of the explanation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import segxai
from segxai.attack import softplus_model

CASES = [
    ("gradient", {}),
    ("gradient", {"reduce": "sum"}),
    ("smoothgrad", {"n_samples": 3, "batch_size": 2, "seed": 3}),
    ("seg-grad-cam", {"layer": "1", "relu": False}),
    ("seg-grad-cam", {"layer": "1", "weighting": "hirescam", "relu": False}),
]


def _smooth_net() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 4, 3, padding=1),
                        nn.Softplus(beta=2.0), nn.Conv2d(4, 3, 1)).double()
    return net.eval()


def _functional(net: nn.Module, x: torch.Tensor, method: str, params: dict,
                weights: torch.Tensor, create_graph: bool) -> torch.Tensor:
    target = segxai.Target.from_mask(torch.tensor([[0, 1, 1, 0, 0, 0]] * 6, dtype=torch.bool),
                                     class_index=2)
    maps = segxai.explain(net, x, target, method=method, create_graph=create_graph,
                          **params).maps
    return (maps * weights).sum()


@pytest.mark.parametrize(("method", "params"), CASES)
def test_double_backward_matches_finite_differences(method: str, params: dict) -> None:
    net = _smooth_net()
    g = torch.Generator().manual_seed(7)
    x = 0.1 + 0.8 * torch.rand(1, 3, 6, 6, generator=g, dtype=torch.float64)
    # SmoothGrad's σ = noise·(max x − min x) is a constant of the draws (not differentiated):
    # pin the extremes at two coordinates that are left out of the comparison, so a small
    # step anywhere else leaves σ unchanged
    x[0, 0, 0, 0], x[0, 2, 5, 5] = 0.0, 1.0
    keep = torch.ones_like(x, dtype=torch.bool)
    keep[0, 0, 0, 0] = keep[0, 2, 5, 5] = False
    weights = torch.rand(1, 6, 6, generator=g, dtype=torch.float64)
    xg = x.clone().requires_grad_(True)
    value = _functional(net, xg, method, params, weights, create_graph=True)
    (auto,) = torch.autograd.grad(value, xg)
    step = 1e-6
    numeric = torch.zeros_like(x)
    flat = x.flatten()
    for i in range(flat.numel()):
        plus, minus = flat.clone(), flat.clone()
        plus[i] += step
        minus[i] -= step
        fp = _functional(net, plus.view_as(x), method, params, weights, create_graph=False)
        fm = _functional(net, minus.view_as(x), method, params, weights, create_graph=False)
        numeric.view(-1)[i] = (fp - fm) / (2 * step)
    auto, numeric = auto[keep], numeric[keep]
    assert float(auto.abs().max()) > 1e-4  # a real, non-trivial derivative
    assert torch.allclose(auto, numeric, rtol=1e-5, atol=1e-7), \
        float((auto - numeric).abs().max())


def test_relu_kills_the_second_derivative_and_softplus_restores_it() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 2, 1)).double()
    x = torch.rand(1, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    target = segxai.Target.whole_image(1, size=(6, 6))

    def input_grad() -> torch.Tensor:
        maps = segxai.explain(net, x, target, method="gradient", create_graph=True).maps
        (grad,) = torch.autograd.grad(maps.sum(), x, allow_unused=True)
        return torch.zeros_like(x) if grad is None else grad

    assert float(input_grad().abs().max()) == 0.0  # piecewise-linear net: ∂h/∂x = 0 a.e.
    with softplus_model(net, beta=10.0):
        assert float(input_grad().abs().max()) > 1e-3
