"""Tests of the U-Net's ``skips`` option: an encoder–decoder without skip connections.

The hand parameter count and the training test run for both settings in test_models.py."""

from __future__ import annotations

import json

import pytest
import torch

from segxai.core.errors import SegxaiError
from segxai.core.layers import find_layer
from segxai.models import (
    UNet,
    UNetConfig,
    layer_names_by_stage,
    load_checkpoint,
    save_checkpoint,
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
