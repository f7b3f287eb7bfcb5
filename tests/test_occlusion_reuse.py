"""Incremental occlusion across calls and layouts: the explainer keeps its fast copy and trace
while the model is unchanged (identical maps, no new trace), rebuilds them when the model,
its weights or the input size change, and the traced graph folds BatchNorm exactly."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

import segxai
from models_for_tests import calibrated
from segxai import Target
from segxai.explainers._fast import fold_graph_batchnorm
from segxai.explainers._incremental import trace
from test_incremental_occlusion import Zoo, rel_diff

OCC = {"fill": "black", "window": 6, "stride": 4, "batch_size": 8}


def occlusion(**kw):
    return segxai.get_explainer("occlusion")(**{**OCC, **kw})


@pytest.mark.parametrize("channels_last,fold_bn", [(False, False), (True, True), (False, True)])
def test_both_memory_layouts_equal_full_recomputation_float64(channels_last: bool,
                                                              fold_bn: bool) -> None:
    torch.manual_seed(0)
    net = calibrated(Zoo(), size=32).double()
    images = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    target = Target.from_box((4, 6, 20, 26), class_index=[1, 2], size=(32, 32), n=2)
    kw = {"channels_last": channels_last, "fold_bn": fold_bn}
    inc = occlusion(incremental=True, **kw)(net, images, target)
    full = occlusion(incremental=False, **kw)(net, images, target)
    assert inc.extras["incremental"] is True
    assert rel_diff(inc.maps, full.maps) <= 1e-9


def _zoo_case() -> tuple[nn.Module, torch.Tensor, Target]:
    torch.manual_seed(0)
    net = calibrated(Zoo(), size=32)
    return net, torch.rand(1, 3, 32, 32), Target.from_box((4, 6, 20, 26), class_index=1,
                                                          size=(32, 32))


def test_second_call_reuses_the_trace_with_identical_maps() -> None:
    net, images, target = _zoo_case()
    occ = occlusion(incremental=True)
    first, second = occ(net, images, target), occ(net, images, target)
    assert first.extras["incremental_traced"] is True
    assert second.extras["incremental_traced"] is False
    assert second.extras["incremental"] is True
    assert torch.equal(first.maps, second.maps)
    fresh = occlusion(incremental=True)(net, images, target)
    assert torch.equal(fresh.maps, second.maps)
    # another image of the same size: the same graph, maps equal a fresh explainer's
    other = torch.rand(1, 3, 32, 32)
    again = occ(net, other, target)
    assert again.extras["incremental_traced"] is False
    assert torch.equal(again.maps, occlusion(incremental=True)(net, other, target).maps)


def test_changed_weights_model_or_size_rebuild_the_copy() -> None:
    net, images, target = _zoo_case()
    occ = occlusion(incremental=True)
    before = occ(net, images, target).maps
    with torch.no_grad():
        net.head.weight.mul_(-2.0)  # in place, as an optimiser step would
    after = occ(net, images, target)
    assert after.extras["incremental_traced"] is True
    assert not torch.allclose(after.maps, before)
    assert torch.equal(after.maps, occlusion(incremental=True)(net, images, target).maps)
    other = calibrated(Zoo(), size=32, seed=1)
    assert occ(other, images, target).extras["incremental_traced"] is True
    big = torch.rand(1, 3, 40, 40)
    res = occ(other, big, Target.whole_image(1, size=(40, 40)))
    assert res.extras["incremental_traced"] is True
    assert rel_diff(res.maps, occlusion(incremental=False)(
        other, big, Target.whole_image(1, size=(40, 40))).maps) <= 1e-4


def test_explainer_with_a_kept_copy_pickles_and_copies() -> None:
    torch.manual_seed(0)
    net = calibrated(Zoo(), size=32)
    images = torch.rand(1, 3, 32, 32)
    target = Target.whole_image(1, size=(32, 32))
    occ = occlusion()
    ref = occ(net, images, target).maps
    for clone in (pickle.loads(pickle.dumps(occ)), copy.deepcopy(occ)):
        res = clone(net, images, target)
        assert res.extras["incremental_traced"] is True  # starts afresh
        assert torch.equal(res.maps, ref)


def test_auto_remembers_that_incremental_does_not_pay() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    images = torch.rand(1, 3, 8, 8)
    target = Target.whole_image(1, size=(8, 8))
    occ = occlusion(window=8)
    first, second = occ(net, images, target), occ(net, images, target)
    assert first.extras["incremental_check_forwards"] == 1
    assert second.extras["incremental_check_forwards"] == 0
    assert "footprints cover" in second.extras["incremental_note"]
    assert second.cost.forward_passes == first.cost.forward_passes - 1
    torch.testing.assert_close(first.maps, second.maps)


class Block(nn.Module):
    """Convolutions and BatchNorms as attributes (not foldable on the module tree), a
    transposed convolution followed by BatchNorm and a convolution with two users."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2), \
            nn.BatchNorm2d(8, affine=False)
        self.up, self.bn3 = nn.ConvTranspose2d(8, 8, 2, stride=2), nn.BatchNorm2d(8)
        self.conv4, self.bn4 = nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)) + y)
        z = self.conv4(y)
        y = self.bn4(z) + z  # the convolution feeds more than the BatchNorm: not folded
        return self.bn3(self.up(y))


@pytest.mark.parametrize("channels_last", [False, True])
def test_graph_batchnorm_folding_equals_the_model(channels_last: bool) -> None:
    torch.manual_seed(0)
    net = calibrated(Block(), size=16)
    x = torch.rand(1, 3, 16, 16)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), \
            x.contiguous(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    gm = trace(net, x)
    assert fold_graph_batchnorm(gm) == 2  # bn1 and bn2
    ops = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert sum("batch_norm" in o for o in ops) == 2  # bn3 (transposed), bn4 (two users)
    with torch.no_grad():
        ref, out = net(x), gm(x)
    assert float((out - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert trace(net, x, fold_bn=True).graph is not None


class TwoPaths(nn.Module):
    """A concatenation of inputs with different footprints (a local path, a coarse
    up-sampled path and a constant map the windows do not change) feeding convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.local = nn.Conv2d(3, 4, 3, padding=1)
        self.coarse = nn.Conv2d(3, 4, 5, stride=4, padding=2)
        self.const = nn.Parameter(torch.randn(1, 2, 24, 24))
        self.mix = nn.Conv2d(10, 6, 3, stride=2, padding=2, dilation=2)
        self.head = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate(self.coarse(x), scale_factor=4, mode="bilinear",
                                       align_corners=False)
        y = torch.relu(self.mix(torch.cat([up, torch.relu(self.local(x)),
                                           self.const.expand(x.shape[0], -1, -1, -1)], 1)))
        return nn.functional.interpolate(self.head(y), size=x.shape[-2:], mode="nearest")


@pytest.mark.parametrize("channels_last", [False, True])
def test_concatenation_convolved_by_parts_equals_full_recomputation(channels_last: bool) -> None:
    torch.manual_seed(0)
    net = TwoPaths().double().eval()
    images = torch.rand(1, 3, 24, 24, dtype=torch.float64)
    target = Target.from_box((3, 3, 20, 18), class_index=2, size=(24, 24))
    kw = {"channels_last": channels_last, "window": 4, "stride": 3, "batch_size": 5}
    inc = occlusion(incremental=True, **kw)(net, images, target)
    full = occlusion(incremental=False, **kw)(net, images, target)
    assert inc.extras["incremental"] is True and inc.extras["incremental_work"] < 1.0
    assert rel_diff(inc.maps, full.maps) <= 1e-9
