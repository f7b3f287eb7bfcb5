"""The shared fast inference path: BatchNorm folding on a copy, channels-last, class-only
scoring, no autograd. Tolerance: results equal the plain path within 1e-5 (relative to the
output's scale) in float32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segxai import Target
from segxai.core.adapter import ModelAdapter
from segxai.explainers._fast import fold_batchnorm, prepare, score_batch


def bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.BatchNorm2d(8, affine=False)),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.BatchNorm2d(8),  # BN after ReLU
        nn.Conv2d(8, 4, 1))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(8, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(8, generator=g) + 0.3)
                if m.affine:
                    m.weight.copy_(torch.rand(8, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(8, generator=g) * 0.3)
    return net.eval()


def test_fold_batchnorm_equal_outputs_and_user_model_untouched() -> None:
    net = bn_model()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded, count = fold_batchnorm(net)
    assert count == 2  # the BN after a ReLU is not folded
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[3][1], nn.Identity)
    assert isinstance(folded[7], nn.BatchNorm2d)
    assert isinstance(net[1], nn.BatchNorm2d)  # the user's model keeps its layers
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    x = torch.randn(4, 3, 15, 13)
    with torch.no_grad():
        ref = net(x)
        out = folded(x)
    assert float((out - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


def test_fold_skips_training_mode_batchnorm() -> None:
    net = bn_model()
    net.train()
    _, count = fold_batchnorm(net)
    assert count == 2  # the copy is put in eval mode first
    assert net.training  # the user's model is not


@pytest.mark.parametrize("fold_bn,channels_last", [(False, False), (True, False),
                                                    (False, True), (True, True)])
def test_fast_model_matches_plain_forward(fold_bn: bool, channels_last: bool) -> None:
    net = bn_model(1)
    adapter = ModelAdapter(net)
    fm = prepare(adapter, fold_bn=fold_bn, channels_last=channels_last)
    x = torch.randn(3, 3, 16, 16)
    out = fm.raw(x)
    assert not out.requires_grad and out.is_inference()
    with torch.no_grad():
        ref = net(x)
    assert float((out - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    assert adapter.counter.forward == 3
    assert fm.copied == (fold_bn or channels_last)
    assert (fm.module is net) == (not fm.copied)


def test_plain_callable_runs_as_is() -> None:
    net = bn_model(2)
    adapter = ModelAdapter(lambda x: (net(x),))
    fm = prepare(adapter, fold_bn=True, channels_last=True)
    assert fm.module is None and not fm.copied
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fm.raw(x), net(x))


class Uncopyable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def __deepcopy__(self, memo: dict) -> None:
        raise RuntimeError("no copies")


def test_uncopyable_model_falls_back_with_warning() -> None:
    adapter = ModelAdapter(Uncopyable().eval())
    with pytest.warns(RuntimeWarning, match="could not be copied"):
        fm = prepare(adapter, fold_bn=True)
    assert fm.module is adapter.module and not fm.copied


@pytest.mark.parametrize("kind", ["logit_sum", "prob_mean"])
@pytest.mark.parametrize("channels", [1, 4])
def test_score_batch_equals_target_score(kind: str, channels: int) -> None:
    """Class-only scoring (gather, then upsample) equals the adapter's full logits path,
    including low-resolution outputs and one-channel (sigmoid) models."""
    torch.manual_seed(0)
    net = nn.Conv2d(3, channels, 3, stride=2, padding=1)
    adapter = ModelAdapter(net)
    x = torch.randn(5, 3, 14, 14)
    with torch.no_grad():
        logits = adapter(x)
        raw = net(x)
    roi = (torch.rand(14, 14) > 0.4).float()
    for cls in range(2 if channels == 1 else channels):
        target = Target.from_mask(roi.expand(5, -1, -1).bool(), cls, score=kind)
        ref = target.score_from_logits(logits, binary=adapter.binary)
        got = score_batch(adapter, raw, cls, roi, kind, (14, 14))
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_score_batch_iou() -> None:
    adapter = ModelAdapter(nn.Identity())
    out = torch.zeros(2, 3, 4, 4)
    out[0, 1, :2] = 5  # predicted class 1 in the top half
    out[1, 1, :, :2] = 5  # class 1 in the left half
    ref = torch.zeros(4, 4, dtype=torch.bool)
    ref[:2] = True
    iou = score_batch(adapter, out, 1, torch.ones(4, 4), "iou", (4, 4), ref_mask=ref)
    torch.testing.assert_close(iou, torch.tensor([1.0, 4 / 12]))
    none = score_batch(adapter, out, 2, torch.ones(4, 4), "iou", (4, 4),
                       ref_mask=torch.zeros(4, 4, dtype=torch.bool))
    torch.testing.assert_close(none, torch.ones(2))  # both empty: perfect agreement
    with pytest.raises(ValueError, match="score"):
        score_batch(adapter, out, 1, torch.ones(4, 4), "dice", (4, 4))


def test_fast_model_output_counts_and_unwraps() -> None:
    adapter = ModelAdapter(bn_model())
    fm = prepare(adapter)
    out = fm.output({"out": torch.zeros(3, 4, 5, 5)}, 3)
    assert out.shape == (3, 4, 5, 5) and adapter.counter.forward == 3


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("fold_bn,channels_last", [(True, True), (False, False)])
def test_fast_model_on_cuda_matches_cpu(fold_bn: bool, channels_last: bool) -> None:
    net = bn_model(3)
    x = torch.randn(4, 3, 16, 16)
    ref = prepare(ModelAdapter(net), fold_bn=False, channels_last=False).raw(x)
    gpu = net.cuda()
    got = prepare(ModelAdapter(gpu), fold_bn=fold_bn, channels_last=channels_last).raw(x.cuda())
    assert got.is_cuda
    scale = float(ref.abs().max())
    torch.testing.assert_close(got.cpu(), ref, atol=1e-3 * scale, rtol=1e-3)  # TF32 convs
