"""Tests of segxai.evaluate.stages.model_stages on the built-in U-Net, torchvision models and a
generic network."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import segmentation as tvseg

from segxai.core.adapter import ModelAdapter
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.layers import find_layer
from segxai.evaluate.stages import Stage, model_stages
from segxai.models import UNet, UNetConfig


def _check_common(model: nn.Module, stages: list[Stage]) -> None:
    assert [s.depth for s in stages] == list(range(len(stages)))
    assert sum(s.feeds_head for s in stages) == 1
    for s in stages:
        find_layer(model, s.name)
        assert s.channels > 0 and min(s.size) > 0 and s.stride > 0
        assert s.to_dict()["name"] == s.name


@pytest.mark.parametrize("skips", [True, False])
def test_unet_stages(skips: bool) -> None:
    net = UNet(UNetConfig(depth=3, base_width=4, num_classes=3, skips=skips))
    net.train()
    stages = model_stages(net, torch.rand(2, 3, 32, 32))
    assert net.training and all(m.training for m in net.modules())  # flags restored
    assert [(s.name, s.kind, s.stride) for s in stages] == [
        ("encoder.0", "encoder", 1.0), ("encoder.1", "encoder", 2.0),
        ("encoder.2", "encoder", 4.0), ("bottleneck", "bottleneck", 8.0),
        ("decoder.0", "decoder", 4.0), ("decoder.1", "decoder", 2.0),
        ("decoder.2", "decoder", 1.0)]
    assert [s.channels for s in stages] == [4, 8, 16, 32, 16, 8, 4]
    assert stages[-1].feeds_head and stages[-1].size == (32, 32)
    _check_common(net, stages)


def test_stages_through_a_model_adapter() -> None:
    net = UNet(UNetConfig(depth=1, base_width=2, num_classes=2))
    adapter = ModelAdapter(net, mean="imagenet", std="imagenet")
    assert [s.name for s in model_stages(adapter, torch.rand(1, 3, 8, 8))] == [
        "encoder.0", "bottleneck", "decoder.0"]


def test_fcn_resnet_backbone_stages() -> None:
    model = tvseg.fcn_resnet50(weights=None, weights_backbone=None, num_classes=3)
    stages = model_stages(model, torch.rand(1, 3, 64, 64))
    assert [(s.name, s.kind, s.stride) for s in stages] == [
        ("backbone.relu", "encoder", 2.0), ("backbone.layer1", "encoder", 4.0),
        ("backbone.layer2", "encoder", 8.0), ("backbone.layer3", "encoder", 8.0),
        ("backbone.layer4", "encoder", 8.0), ("classifier.2", "head_input", 8.0)]
    assert stages[4].channels == 2048 and stages[-1].channels == 512
    assert stages[-1].feeds_head
    _check_common(model, stages)


def test_deeplabv3_with_aux_head() -> None:
    model = tvseg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                               num_classes=4, aux_loss=True)
    stages = model_stages(model, torch.rand(1, 3, 64, 64))
    names = [s.name for s in stages]
    # the last block of each resolution; the aux classifier is not taken for the head
    assert names == ["backbone.1", "backbone.3", "backbone.6", "backbone.16", "classifier.3"]
    assert [s.stride for s in stages] == [2.0, 4.0, 8.0, 16.0, 16.0]
    assert stages[-1].kind == "head_input" and stages[-1].channels == 256
    _check_common(model, stages)


def test_lraspp_head_input_made_outside_modules() -> None:
    model = tvseg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    stages = model_stages(model, torch.rand(1, 3, 64, 64))
    assert stages[-1].name == "classifier.cbr" and stages[-1].feeds_head
    assert stages[-1].channels == 128
    assert [s.kind for s in stages[:-1]] == ["encoder"] * (len(stages) - 1)
    _check_common(model, stages)


def test_generic_fallback_top_level_modules() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.1),
                          nn.Upsample(scale_factor=2), nn.Conv2d(8, 5, 1))
    stages = model_stages(model, torch.rand(1, 3, 16, 16))
    assert [(s.name, s.kind) for s in stages] == [(str(i), "module") for i in range(7)]
    # dropout and the (module-made) up-sampling pass it on: the up-sampling feeds the head
    assert [s.name for s in stages if s.feeds_head] == ["6"]
    assert [s.stride for s in stages] == [1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 1.0]
    _check_common(model, stages)


def test_model_without_spatial_layers_is_refused() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with pytest.raises(SegxaiError, match=r"^model: expected at least one layer with an "
                                          r"\(N, C, h, w\) output, got none in Sequential"):
        model_stages(mlp, torch.rand(1, 3, 4, 4))
    with pytest.raises(SegxaiTypeError, match="^model: expected an nn.Module"):
        model_stages(lambda x: x, torch.rand(1, 3, 4, 4))  # type: ignore[arg-type]
    with pytest.raises((TypeError, ValueError), match="^images: "):
        model_stages(nn.Conv2d(3, 2, 1), torch.rand(3, 4, 4))
