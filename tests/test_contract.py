"""Contract tests: every registered explainer is enrolled automatically."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import segxai
from models_for_tests import TinySeg, calibrated

# Cheap parameters for the small test images; methods not listed run with their defaults.
SMALL = {
    "smoothgrad": {"n_samples": 3, "batch_size": 2},
    "occlusion": {"window": 8, "stride": 4},
    "seg-ablation-cam": {"batch_size": 8},
    "grid-saliency": {"iterations": 5},
}
SIZE = 16


def _model() -> nn.Module:
    torch.manual_seed(0)
    return calibrated(TinySeg(classes=3, width=4), size=SIZE)


def _run(method: str, model: nn.Module, x: torch.Tensor, t: segxai.Target) -> segxai.Explanation:
    return segxai.explain(model, x, t, method=method, **SMALL.get(method, {}))


def _target(n: int) -> segxai.Target:
    roi = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    roi[:, 4:10, 5:12] = True
    return segxai.Target.from_mask(roi, class_index=1)


@pytest.fixture(params=segxai.list_explainers())
def method(request: pytest.FixtureRequest) -> str:
    return request.param


def test_shape_dtype_device_and_result_fields(method: str) -> None:
    model, x = _model(), torch.rand(2, 3, SIZE, SIZE)
    e = _run(method, model, x, _target(2))
    assert isinstance(e, segxai.Explanation)
    assert e.maps.shape == (2, SIZE, SIZE)
    assert e.maps.dtype == torch.float32 and e.maps.device == x.device
    assert torch.isfinite(e.maps).all()
    assert not e.maps.requires_grad
    assert e.method == method and isinstance(e.params, dict)
    assert e.cost.forward_passes >= 2 and e.cost.seconds > 0
    assert e.target.class_index.tolist() == [1, 1]


def test_batch_independence(method: str) -> None:
    model = _model()
    g = torch.Generator().manual_seed(1)
    a, b, c = (torch.rand(1, 3, SIZE, SIZE, generator=g) for _ in range(3))
    m1 = _run(method, model, torch.cat([a, b]), _target(2)).maps
    m2 = _run(method, model, torch.cat([a, c]), _target(2)).maps
    assert torch.allclose(m1[0], m2[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(m1[1], m2[1])


def test_hooks_released_mode_and_grads_untouched(method: str) -> None:
    model = _model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    _run(method, model, torch.rand(2, 3, SIZE, SIZE), _target(2))
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert m.training  # train mode restored everywhere
    for k, v in model.state_dict().items():  # BatchNorm statistics untouched (eval mode)
        assert torch.equal(v, before[k]), k
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_deterministic_with_seed(method: str) -> None:
    model, x = _model(), torch.rand(2, 3, SIZE, SIZE)
    m1 = _run(method, model, x, _target(2)).maps
    m2 = _run(method, model, x, _target(2)).maps
    assert torch.equal(m1, m2)


def test_hooks_released_when_the_model_raises(method: str) -> None:
    model = _model()

    class Boom(RuntimeError):
        pass

    # raise in the last forward a call makes (inside the explainer's own hooks): count first
    x = torch.rand(2, 3, SIZE, SIZE)
    calls = {"n": 0, "last": 0}

    def count(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        calls["last"] += 1

    counter = model.head.register_forward_hook(count)
    _run(method, model, x, _target(2))
    counter.remove()

    def explode(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
        calls["n"] += 1
        if calls["n"] >= calls["last"]:
            raise Boom("forward failed")

    handle = model.head.register_forward_hook(explode)
    model.train()
    with pytest.raises(Boom):
        _run(method, model, x, _target(2))
    handle.remove()
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert m.training
    assert all(p.requires_grad for p in model.parameters())


def test_registry_lists_builtin_methods() -> None:
    names = segxai.list_explainers()
    assert {"gradient", "smoothgrad", "seg-grad-cam"} <= set(names)
    assert names == sorted(names)
