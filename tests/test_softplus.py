"""Softplus(β) surgery: replaced in place, always restored, converging to the ReLU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import segxai
from segxai.attack import SoftplusBeta, attack, count_replaceable, softplus_model


def _net() -> nn.Module:
    torch.manual_seed(0)
    shared = nn.ReLU()
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True),
        nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), shared, nn.Conv2d(6, 6, 1), shared),
        nn.Conv2d(6, 6, 1), nn.ReLU6(), nn.LeakyReLU(0.1), nn.Conv2d(6, 3, 1))


def _snapshot(model: nn.Module) -> tuple[list[tuple[str, int]], dict[str, torch.Tensor]]:
    mods = [(name, id(m)) for name, m in model.named_modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    return mods, state


def _assert_same(model: nn.Module, snap) -> None:
    mods, state = snap
    assert [(name, id(m)) for name, m in model.named_modules()] == mods
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k in state:
        assert torch.equal(now[k], state[k])


def test_replaces_relu_and_relu6_and_restores() -> None:
    net = _net()
    snap = _snapshot(net)
    assert count_replaceable(net) == 4  # ReLU, shared ReLU twice, ReLU6; LeakyReLU is kept
    x = torch.randn(2, 3, 8, 8)
    y_relu = net(x.clone())
    with softplus_model(net, beta=5.0) as swap:
        assert len(swap) == 4
        assert sorted(swap.names) == ["1", "2.1", "2.3", "4"]
        kinds = [type(m).__name__ for m in net.modules()]
        assert "ReLU" not in kinds and "ReLU6" not in kinds and "LeakyReLU" in kinds
        assert isinstance(net[4], SoftplusBeta) and net[4].clip == 6.0
        assert not torch.allclose(net(x), y_relu)
        swap.set_beta(math.inf)  # exact ReLU inside the block
        assert torch.allclose(net(x), y_relu, atol=1e-6)
    _assert_same(net, snap)
    assert torch.equal(net(x), y_relu)


def test_restored_when_the_block_raises() -> None:
    net = _net()
    snap = _snapshot(net)
    with pytest.raises(RuntimeError, match="boom"), softplus_model(net, beta=10.0):
        raise RuntimeError("boom")
    _assert_same(net, snap)


def test_restored_when_the_attack_raises() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    snap = _snapshot(net)
    x = torch.rand(1, 3, 8, 8)
    t = segxai.Target.whole_image(1, size=(8, 8))

    def fail(step: int, loss: float) -> None:
        assert isinstance(net[1], SoftplusBeta)  # smoothed during the attack
        if step == 2:
            raise RuntimeError("stop at step 2")

    with pytest.raises(RuntimeError, match="stop at step 2"):
        attack(net, x, t, "gradient", "mirror", iterations=10, callback=fail)
    _assert_same(net, snap)
    # a normal attack also leaves the model identical
    attack(net, x, t, "gradient", "mirror", iterations=3)
    _assert_same(net, snap)


def test_softplus_values_against_reference() -> None:
    x = torch.linspace(-10, 10, 201, dtype=torch.float64)
    for beta in (1.0, 10.0, 100.0):
        ref = torch.log1p(torch.exp(beta * x)) / beta  # no overflow for β·|x| <= 1000 here
        ref = torch.where(beta * x > 20, x, ref)
        assert torch.allclose(SoftplusBeta(beta)(x), ref, atol=1e-9)
        relu6 = SoftplusBeta(beta, clip=6.0)(x)
        ref6 = ref - torch.where(beta * (x - 6) > 20, x - 6,
                                 torch.log1p(torch.exp(beta * (x - 6))) / beta)
        assert torch.allclose(relu6, ref6, atol=1e-9)
    # β → ∞ converges to ReLU / ReLU6 (error <= log(2)/β)
    for beta in (10.0, 1000.0):
        assert float((SoftplusBeta(beta)(x) - torch.relu(x)).abs().max()) <= math.log(2) / beta + 1e-12
        err6 = (SoftplusBeta(beta, clip=6.0)(x) - x.clamp(0, 6)).abs().max()
        assert float(err6) <= 2 * math.log(2) / beta + 1e-12


def test_invalid_beta() -> None:
    with pytest.raises(ValueError, match="beta"):
        SoftplusBeta(0.0)
    net = _net()
    with pytest.raises(ValueError, match="beta"), softplus_model(net, beta=-1.0):
        pass
    with softplus_model(net) as swap, pytest.raises(ValueError, match="beta"):
        swap.set_beta(0.0)
    with pytest.raises(TypeError, match="model"), softplus_model("net"):  # type: ignore[arg-type]
        pass
