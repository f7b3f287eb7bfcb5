"""Tests of the U-Net's ``skips`` option: an encoder–decoder without skip connections."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from segxai.core.errors import SegxaiError
from segxai.core.layers import find_layer
from segxai.data import make_shapes
from segxai.models import (
    TrainConfig,
    UNet,
    UNetConfig,
    count_parameters,
    layer_names_by_stage,
    load_checkpoint,
    save_checkpoint,
    train_model,
)


@pytest.mark.parametrize("block", ["plain", "residual", "dwsep"])
def test_no_skip_network_builds_and_keeps_the_input_size(block: str) -> None:
    cfg = UNetConfig(depth=2, base_width=4, block=block, num_classes=3, skips=False)
    net = UNet(cfg).eval()
    for h, w in [(32, 32), (21, 30)]:
        assert net(torch.rand(2, 3, h, w)).shape == (2, 3, h, w)
    for name in layer_names_by_stage(cfg):
        find_layer(net, name)
    # each decoder block sees only the up-sampled path: its input width is the stage width
    first = [m for m in net.decoder[0].block.modules() if isinstance(m, torch.nn.Conv2d)][0]
    assert first.in_channels == cfg.decoder_widths[0]


def test_no_skip_forward_is_the_plain_chain_of_stages() -> None:
    net = UNet(UNetConfig(depth=2, base_width=4, num_classes=3, skips=False)).eval()
    x = torch.rand(2, 3, 16, 16)
    h = net.bottleneck(net.encoder[1](net.encoder[0](x)))
    for stage in net.decoder:
        h = stage.block(stage.up(h))
    torch.testing.assert_close(net(x), net.head(h), atol=0, rtol=0)


def test_no_skip_parameter_count_by_hand() -> None:
    net = UNet(UNetConfig(depth=1, base_width=2, num_classes=2, in_channels=1, skips=False))

    def block(cin: int, cout: int) -> int:  # two conv (no bias) + BN pairs
        return cin * cout * 9 + 2 * cout + cout * cout * 9 + 2 * cout

    expect = block(1, 2) + block(2, 4)  # encoder stage, bottleneck
    expect += 4 * 2 * 4 + 2  # transposed conv 2x2 (4 -> 2) + bias
    expect += block(2, 2)  # decoder block on the up-sampled path only (no +2 skip channels)
    expect += 2 * 2 + 2  # head 1x1
    assert count_parameters(net) == expect


def test_skips_option_serialisation_and_default_unchanged() -> None:
    assert "skips" not in UNetConfig().to_dict()  # old configs, cache keys, resume signatures
    assert UNetConfig.from_dict(UNetConfig().to_dict()).skips is True
    cfg = UNetConfig(depth=2, skips=False)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["skips"] is False and UNetConfig.from_dict(d) == cfg
    with pytest.raises(SegxaiError, match="^skips: expected True or False"):
        UNetConfig(skips="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="skips"):
        UNetConfig(skips=1)  # type: ignore[arg-type]


def test_checkpoint_records_the_option(tmp_path) -> None:
    torch.manual_seed(3)
    net = UNet(UNetConfig(depth=2, base_width=4, num_classes=3, skips=False))
    net.train()
    net(torch.rand(4, 3, 16, 16))  # non-trivial BN statistics
    net.eval()
    save_checkpoint(net, tmp_path / "ck")
    stored = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert stored["model"]["skips"] is False
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.config.skips is False and loaded.config == net.config
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(net(x), loaded(x))
    save_checkpoint(UNet(UNetConfig(depth=2, base_width=4, num_classes=3)), tmp_path / "with")
    stored = json.loads((tmp_path / "with" / "config.json").read_text())
    assert "skips" not in stored["model"]
    assert load_checkpoint(tmp_path / "with").config.skips is True


def test_no_skip_network_trains() -> None:
    torch.manual_seed(0)
    data = make_shapes(16, size=32, seed=0)
    net = UNet(UNetConfig(depth=2, base_width=4, skips=False))
    x, y = data.images[:8], data.masks[:8]
    net.eval()
    with torch.no_grad():
        before = float(F.cross_entropy(net(x), y))
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e-2, augment=False, restore_best=False)
    res = train_model(net, data, None, cfg, progress=False)
    with torch.no_grad():
        after = float(F.cross_entropy(net(x), y))
    assert after < before and res.history[-1]["loss"] < res.history[0]["loss"]
