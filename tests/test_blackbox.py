"""Black-box models: every registered explainer either refuses a model without gradients up
front with one clear error, or returns a map that depends on the model.

Two different black boxes (NumPy/NHWC/probabilities and torch/logits), constant models (a
black box and a differentiable module), and modules that hide their gradients (forward under
``torch.no_grad``, integer labels) are run through ``segxai.list_explainers()``, so a newly
registered method is enrolled automatically.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import segxai
from models_for_tests import TinySeg, calibrated
from segxai.core.registry import methods_without_gradients
from test_contract import SMALL

SIZE = 16
# grid saliency must converge on a constant model (its mask shrinks to 0 in ~10 Adam steps)
PARAMS = {**SMALL, "grid-saliency": {"iterations": 30}}


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return calibrated(TinySeg(classes=3, width=4), size=SIZE, seed=seed)


def _numpy_probabilities(net: nn.Module) -> segxai.BlackBox:
    def fn(x: np.ndarray) -> np.ndarray:  # NHWC float32 -> NHWC softmax probabilities
        assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape[-1] == 3
        logits = net(torch.from_numpy(x).permute(0, 3, 1, 2))
        return logits.softmax(1).permute(0, 2, 3, 1).numpy()

    return segxai.BlackBox(fn, num_classes=3, output="probabilities", layout="NHWC",
                           array="numpy")


def _torch_logits(net: nn.Module) -> segxai.BlackBox:
    return segxai.BlackBox(lambda x: net(x), num_classes=3)


def _constant_black_box() -> segxai.BlackBox:
    levels = torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1, 1)
    return segxai.BlackBox(lambda x: levels.expand(x.shape[0], 3, *x.shape[-2:]),
                           num_classes=3)


class ConstantNet(nn.Module):
    """Differentiable, but its output does not depend on the input (zero gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.register_buffer("levels", torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 0 + self.levels


class NoGradNet(nn.Module):
    """A real network whose forward hides its graph (as a wrapped runtime would)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.net(x)


class LabelNet(NoGradNet):
    """Returns integer class labels ``N×1×H×W`` instead of scores."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).argmax(1, keepdim=True)


def _target(n: int = 2) -> segxai.Target:
    roi = torch.zeros(n, SIZE, SIZE, dtype=torch.bool)
    roi[:, 4:10, 5:12] = True
    return segxai.Target.from_mask(roi, class_index=1)


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))


def _explain(method: str, model: object) -> segxai.Explanation:
    return segxai.explain(model, _images(), _target(), method=method, **PARAMS.get(method, {}))


def _assert_refusal(err: BaseException, method: str, black_box: bool) -> None:
    msg = str(err)
    assert isinstance(err, segxai.SegxaiError)
    assert msg.startswith("model: ") and repr(method) in msg and "no gradients" in msg
    works = methods_without_gradients(black_box=black_box)
    assert works and f"methods that work on it: {', '.join(works)}" in msg
    assert method not in works


def _refuses(method: str, black_box: bool) -> bool:
    cls = segxai.get_explainer(method)
    return cls.uses_gradients or (black_box and cls.uses_layers)


@pytest.mark.parametrize("method", segxai.list_explainers())
def test_every_explainer_on_two_black_boxes_and_a_constant_one(method: str) -> None:
    boxes = {"a": _numpy_probabilities(_net(0)), "b": _torch_logits(_net(1)),
             "constant": _constant_black_box()}
    maps = {}
    for name, box in boxes.items():
        if _refuses(method, black_box=True):
            with pytest.raises(segxai.SegxaiError) as info:
                _explain(method, box)
            _assert_refusal(info.value, method, black_box=True)
        else:
            maps[name] = _explain(method, box).maps
    if not maps:
        return
    a, b, const = maps["a"], maps["b"], maps["constant"]
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    scale = max(float(a.abs().max()), float(b.abs().max()))
    assert scale > 0
    assert float((a - b).abs().max()) > 1e-2 * scale  # the map depends on the model
    assert float(const.max() - const.min()) <= 1e-6  # nothing to explain: flat


@pytest.mark.parametrize("method", segxai.list_explainers())
def test_every_explainer_on_a_constant_module(method: str) -> None:
    maps = _explain(method, ConstantNet().eval()).maps
    assert torch.isfinite(maps).all()
    assert float(maps.max() - maps.min()) <= 1e-6, "a constant model got a patterned map"


@pytest.mark.parametrize("method", segxai.list_explainers())
@pytest.mark.parametrize("hidden", [NoGradNet, LabelNet])
def test_modules_without_gradients_refused_after_the_clean_forward(method: str,
                                                                   hidden: type) -> None:
    model = hidden(_net(0)).eval()
    if not segxai.get_explainer(method).uses_gradients:
        if hidden is NoGradNet:  # forward passes suffice: the map follows the network
            ours = _explain(method, model).maps
            ref = _explain(method, _net(0)).maps
            torch.testing.assert_close(ours, ref)
        return
    with pytest.raises(segxai.SegxaiError) as info:
        _explain(method, model)
    _assert_refusal(info.value, method, black_box=False)
    assert ("labels" in str(info.value)) == (hidden is LabelNet)


def test_black_box_equals_the_module_it_wraps_for_occlusion() -> None:
    net = _net(0)
    ours = _explain("occlusion", _torch_logits(net)).maps
    torch.testing.assert_close(ours, _explain("occlusion", net).maps)


def test_probabilities_become_logits() -> None:
    net, x = _net(0), _images()
    box = _numpy_probabilities(net)
    logp = net(x).log_softmax(1)
    torch.testing.assert_close(box(x), logp, atol=1e-5, rtol=1e-5)
    sig = segxai.BlackBox(lambda t: torch.sigmoid(net(t)[:, :1]), binary=True,
                          output="probabilities")
    torch.testing.assert_close(sig(x), net(x)[:, :1], atol=1e-4, rtol=1e-4)


def test_fixed_batch_and_size() -> None:
    net, calls = _net(0), []

    def fn(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return net(x)

    box = segxai.BlackBox(fn, input_shape=(3, SIZE, SIZE), batch_size=2, name="net.bin")
    x = torch.rand(3, 3, SIZE, SIZE)
    torch.testing.assert_close(box(x), net(x))
    assert calls == [2, 2]
    with pytest.raises(segxai.SegxaiError, match=r"\(N, 3, 16, 16\) for net\.bin.*got \(1, 3, 8, 8\)"):
        box(torch.rand(1, 3, 8, 8))


def test_bad_outputs_named() -> None:
    x = torch.rand(1, 3, 8, 8)
    flat = segxai.BlackBox(lambda t: t.mean((2, 3)), name="flat.bin")
    with pytest.raises(segxai.SegxaiError, match=r"N×K×H×W scores from flat\.bin.*got shape \(1, 3\)"):
        flat(x)
    labels = segxai.BlackBox(lambda t: (t > 0.5).long(), name="labels.bin")
    with pytest.raises(segxai.SegxaiError, match="labels.bin.*int64"):
        labels(x)
    with pytest.raises(segxai.SegxaiError, match="num_classes"):
        segxai.BlackBox(lambda t: t, num_classes=2)(x)
    with pytest.raises(segxai.SegxaiError, match="output"):
        segxai.BlackBox(lambda t: t, output="softmax")  # type: ignore[arg-type]


def test_perturbation_fast_path_quiet_on_uncopyable_wrappers() -> None:
    net = _net(0)

    class Wrapper(nn.Module):  # holds an object deepcopy refuses, like an interpreter
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return net(x)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for model in (Wrapper(), _torch_logits(net)):
            e = segxai.explain(model, _images(), _target(), method="occlusion", window=8,
                               stride=4, fold_bn=True, channels_last=True)
            assert e.maps.abs().max() > 0


@pytest.mark.parametrize("method", segxai.list_explainers())
def test_plain_callables_checked_the_same_way(method: str) -> None:
    net = _net(0)

    def detached(x: torch.Tensor) -> torch.Tensor:  # leaves autograd, like a runtime would
        return torch.from_numpy(net(x).detach().numpy())

    cls = segxai.get_explainer(method)
    if cls.uses_layers:  # a plain callable has no layers: the existing clear refusal
        with pytest.raises(segxai.SegxaiError, match="nn.Module"):
            _explain(method, detached)
        return
    if cls.uses_gradients:
        with pytest.raises(segxai.SegxaiError) as info:
            _explain(method, detached)
        _assert_refusal(info.value, method, black_box=False)
        # a differentiable callable still works and gives the network's map
        torch.testing.assert_close(_explain(method, lambda x: net(x)).maps,
                                   _explain(method, net).maps)
    else:
        torch.testing.assert_close(_explain(method, detached).maps, _explain(method, net).maps)
