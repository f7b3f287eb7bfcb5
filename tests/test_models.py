"""Tests of segxai.models: U-Net, metrics, loss, schedule, checkpoints, training."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from segxai.core.layers import default_cam_layer, find_layer
from segxai.data import SegDataset, make_shapes
from segxai.models import (
    TrainConfig,
    UNet,
    UNetConfig,
    confusion_matrix,
    count_parameters,
    evaluate_miou,
    evaluate_segmentation,
    layer_names_by_stage,
    learning_rate,
    load_checkpoint,
    load_optimizer_state,
    miou_from_confusion,
    save_checkpoint,
    save_optimizer_state,
    train_model,
)
from segxai.models.train import segmentation_loss


# ---------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize("block", ["plain", "residual", "dwsep"])
def test_unet_shapes_and_names(block: str) -> None:
    cfg = UNetConfig(depth=2, base_width=4, block=block, num_classes=3, kernel_size=5)
    net = UNet(cfg).eval()
    for h, w in [(32, 32), (21, 30)]:
        assert net(torch.rand(2, 3, h, w)).shape == (2, 3, h, w)
    for name in layer_names_by_stage(cfg):
        find_layer(net, name)
    assert not hasattr(net, "segxai_default_layer")  # the rule in core.layers decides
    x = torch.rand(1, 3, 16, 16)
    # the faithful default: the layer that feeds the classifier head (last decoder stage)
    assert default_cam_layer(net, x) is net.decoder[-1]
    assert not any(isinstance(m, torch.nn.ReLU) and m.inplace for m in net.modules())


def test_unet_config_roundtrip_and_widths() -> None:
    cfg = UNetConfig(depth=3, base_width=8, width_multipliers=(1, 1.5, 2, 4), decoder_width=12,
                     block="residual")
    assert cfg.widths == [8, 12, 16, 32]
    assert cfg.decoder_widths == [12, 12, 12]
    d = json.loads(json.dumps(cfg.to_dict()))
    assert UNetConfig.from_dict(d) == cfg
    assert UNetConfig().widths == [16, 32, 64, 128]
    with pytest.raises(ValueError, match="block"):
        UNetConfig(block="dense")
    with pytest.raises(ValueError, match="kernel_size"):
        UNetConfig(kernel_size=4)
    with pytest.raises(ValueError, match="width_multipliers"):
        UNetConfig(depth=2, width_multipliers=(1, 2))
    with pytest.raises(ValueError, match="unknown"):
        UNetConfig.from_dict({"depth": 2, "colour": 1})


@pytest.mark.parametrize("skips", [True, False])
def test_count_parameters_against_hand_count(skips: bool) -> None:
    cfg = UNetConfig(depth=1, base_width=2, num_classes=2, in_channels=1, skips=skips)
    net = UNet(cfg)
    # widths: enc 2, bottleneck 4. plain block = conv(cin,cout,3, no bias) + BN(2*cout) twice
    def block(cin: int, cout: int) -> int:
        return cin * cout * 9 + 2 * cout + cout * cout * 9 + 2 * cout
    expect = block(1, 2) + block(2, 4)
    expect += 4 * 2 * 4 + 2  # transposed conv 2x2 (4 -> 2) + bias
    # decoder block on the concatenation (without skips: on the up-sampled path only)
    expect += block(2 + (2 if skips else 0), 2)
    expect += 2 * 2 + 2  # head 1x1
    assert count_parameters(net) == expect


# ---------------------------------------------------------------------------- metrics
def _slow_miou(pred: torch.Tensor, gt: torch.Tensor, k: int) -> float:
    ious = []
    for c in range(k):
        g, p = gt == c, pred == c
        if not bool(g.any()):
            continue
        ious.append(float((g & p).sum()) / float((g | p).sum()))
    return sum(ious) / len(ious)


def test_confusion_and_miou_against_loop() -> None:
    g = torch.Generator().manual_seed(0)
    gt = torch.randint(0, 4, (3, 10, 10), generator=g)
    gt[gt == 2] = 1  # class 2 absent from the ground truth
    pred = torch.randint(0, 4, (3, 10, 10), generator=g)
    cm = confusion_matrix(pred, gt, 4)
    assert int(cm.sum()) == 300 and int(cm[2].sum()) == 0
    for a in range(4):
        for b in range(4):
            assert int(cm[a, b]) == int(((gt == a) & (pred == b)).sum())
    miou, ious = miou_from_confusion(cm)
    assert ious[2] is None
    assert math.isclose(miou, _slow_miou(pred, gt, 4), rel_tol=1e-12)
    gt_ign = gt.clone()
    gt_ign[0] = 255
    cm2 = confusion_matrix(pred, gt_ign, 4, ignore_index=255)
    assert int(cm2.sum()) == 200


class _Oracle(torch.nn.Module):
    """Returns one-hot logits of a fixed label map (for exact metric checks)."""

    def __init__(self, labels: torch.Tensor, k: int) -> None:
        super().__init__()
        self.labels = labels
        self.k = k
        self.i = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.one_hot(self.labels[self.i:self.i + x.shape[0]], self.k).permute(0, 3, 1, 2)
        self.i += x.shape[0]
        return out.float()


def test_evaluate_miou_is_dataset_level() -> None:
    ds = make_shapes(6, size=32, seed=0)
    perfect = _Oracle(ds.masks, 5)
    assert evaluate_miou(perfect, ds, batch_size=4) == pytest.approx(1.0)
    noisy = ds.masks.clone()
    noisy[:, :8] = 0
    ev = evaluate_segmentation(_Oracle(noisy, 5), ds, batch_size=4)
    assert ev["miou"] == pytest.approx(_slow_miou(noisy, ds.masks, 5))
    assert 0 < ev["pixel_accuracy"] < 1


# ---------------------------------------------------------------------------- loss / lr
def test_segmentation_loss_against_reference() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, 5, generator=g)
    y = torch.randint(0, 2, (2, 5, 5), generator=g)  # class 2 absent
    ce = F.cross_entropy(logits, y)
    assert torch.allclose(segmentation_loss(logits, y, "ce"), ce)
    p = logits.softmax(1)
    dice = []
    for c in range(2):
        inter = (p[:, c] * (y == c)).sum()
        dice.append(1 - (2 * inter + 1) / (p[:, c].sum() + (y == c).sum() + 1))
    ref = ce + sum(dice) / 2
    assert torch.allclose(segmentation_loss(logits, y, "ce+dice"), ref, atol=1e-6)


def test_learning_rate_schedules() -> None:
    cfg = TrainConfig(lr=1.0, schedule="onecycle", warmup=0.25)
    lrs = [learning_rate(s, 101, cfg) for s in range(101)]
    assert lrs[0] == pytest.approx(1 / 25) and max(lrs) == pytest.approx(1.0)
    assert lrs[25] == pytest.approx(1.0) and lrs[-1] == pytest.approx(1e-4)
    assert all(a <= b for a, b in zip(lrs[:25], lrs[1:26]))
    assert all(a >= b for a, b in zip(lrs[25:], lrs[26:]))
    cos = TrainConfig(lr=2.0, schedule="cosine")
    assert learning_rate(50, 101, cos) == pytest.approx(1.0)
    assert learning_rate(7, 10, TrainConfig(lr=0.5, schedule="constant")) == 0.5
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_roundtrip_identical_outputs(tmp_path) -> None:
    torch.manual_seed(3)
    net = UNet(UNetConfig(depth=2, base_width=4, block="residual", num_classes=3))
    # make BN running statistics non-trivial
    net.train()
    net(torch.rand(4, 3, 16, 16))
    net.eval()
    save_checkpoint(net, tmp_path / "ck", class_names=["a", "b", "c"])
    assert (tmp_path / "ck" / "model.safetensors").is_file()
    loaded = load_checkpoint(tmp_path / "ck")
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(net(x), loaded(x))
    assert loaded.class_names == ["a", "b", "c"] and loaded.config == net.config
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing")


def test_optimizer_state_roundtrip(tmp_path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1, betas=(0.8, 0.9))
    for _ in range(3):
        opt.zero_grad()
        net(torch.rand(4, 3)).sum().backward()
        opt.step()
    save_optimizer_state(opt, tmp_path)
    opt2 = torch.optim.AdamW(net.parameters(), lr=0.5)
    load_optimizer_state(opt2, tmp_path)
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for k in a["state"]:
        for name, v in a["state"][k].items():
            assert torch.equal(v, b["state"][k][name])


# ---------------------------------------------------------------------------- training
def _tiny_data(n: int = 24, seed: int = 0) -> SegDataset:
    return make_shapes(n, size=32, seed=seed)


@pytest.mark.parametrize("skips", [True, False])
def test_training_lowers_the_loss(skips: bool) -> None:
    torch.manual_seed(0)
    data = _tiny_data()
    net = UNet(UNetConfig(depth=2, base_width=4, skips=skips))
    x, y = data.images[:8], data.masks[:8]
    net.eval()
    with torch.no_grad():
        before = float(F.cross_entropy(net(x), y))
    cfg = TrainConfig(epochs=4, batch_size=8, lr=1e-2, augment=False, restore_best=False)
    res = train_model(net, data, None, cfg, progress=False)
    with torch.no_grad():
        after = float(F.cross_entropy(net(x), y))
    assert after < before
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.completed and res.epochs_run == 4 and not net.training


def test_early_stopping_and_restore_best(tmp_path) -> None:
    torch.manual_seed(0)
    data = _tiny_data(16)
    net = UNet(UNetConfig(depth=1, base_width=2))
    cfg = TrainConfig(epochs=30, batch_size=8, lr=1e-6, patience=2, min_delta=0.5)
    res = train_model(net, data, data, cfg, progress=False, out_dir=tmp_path)
    assert res.stopped_early and res.epochs_run == 3 and res.best_epoch == 1
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["val_miou"]) == 3
    # restore_best: the final weights give the best epoch's mIoU
    assert evaluate_miou(net, data) == pytest.approx(res.best_val_miou)
    assert load_checkpoint(tmp_path).config == net.config


def test_train_argument_errors() -> None:
    net = UNet(UNetConfig(depth=1, base_width=2, num_classes=2))
    with pytest.raises(ValueError, match="classes"):
        train_model(net, _tiny_data(4), progress=False)
    with pytest.raises(TypeError, match="train_data"):
        train_model(net, "shapes", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
