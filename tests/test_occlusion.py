"""Occlusion: equality with a plain per-window loop, localisation on a hand-built model,
fills in pixel space, batch independence, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import segxai
from segxai import Target
from segxai.core.adapter import ModelAdapter
from segxai.core.registry import make_generator

MEAN = (0.4, 0.5, 0.6)
STD = (0.2, 0.25, 0.3)


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Conv2d(6, 3, 3, padding=1))
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return net.eval()


# ---------------------------------------------------------------- independent reference
def ref_starts(n: int, k: int, s: int) -> list[int]:
    out, pos = [], 0
    while pos + k <= n:
        out.append(pos)
        pos += s
    if out[-1] + k != n:
        out.append(n - k)
    return out


def ref_blur_pixels(px: np.ndarray, sigma: float, ksize: int) -> np.ndarray:
    """Direct 2-D Gaussian convolution with reflect padding, edge padding where a side is not
    longer than the radius (numpy, per channel)."""
    half = ksize // 2
    ax = np.arange(ksize) - half
    g = np.exp(-0.5 * (ax / sigma) ** 2)
    g /= g.sum()
    kern = np.outer(g, g)
    out = np.zeros_like(px)
    for c in range(px.shape[0]):
        padded = np.pad(px[c], half, mode="reflect" if min(px.shape[1:]) > half else "edge")
        for i in range(px.shape[1]):
            for j in range(px.shape[2]):
                out[c, i, j] = (padded[i:i + ksize, j:j + ksize] * kern).sum()
    return out


def ref_fill_pixels(image_px: np.ndarray, fill: str, seed: int = 0) -> np.ndarray:
    c, h, w = image_px.shape
    if fill == "black":
        return np.zeros_like(image_px)
    if fill == "grey":
        return np.full_like(image_px, 0.5)
    if fill == "dataset-mean":
        return np.broadcast_to(np.array(MEAN, dtype=image_px.dtype)[:, None, None],
                               image_px.shape).copy()
    if fill == "image-mean":
        return np.broadcast_to(image_px.mean(axis=(1, 2), keepdims=True), image_px.shape).copy()
    if fill == "blur":
        return ref_blur_pixels(image_px.astype(np.float64), 5.0, 11).astype(image_px.dtype)
    if fill == "noise":
        return torch.rand((c, h, w), generator=make_generator(seed)).numpy()
    raise AssertionError(fill)


def reference_occlusion(net: nn.Module, images: torch.Tensor, target: Target, window, stride,
                        fill: str, score: str) -> torch.Tensor:
    """One forward per window, no batching, no fast path."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    n, _, h, w = images.shape
    maps = torch.zeros(n, h, w, dtype=torch.float64)
    for i in range(n):
        x = images[i:i + 1]
        px = (x * std + mean)[0].numpy()
        fill_model = (torch.from_numpy(ref_fill_pixels(px, fill)).unsqueeze(0) - mean) / std
        cls = int(target.class_index[i])
        roi = target.roi[i]

        def m(img: torch.Tensor, clean_pred=None, cls: int = cls,
              roi: torch.Tensor = roi) -> float:
            with torch.no_grad():
                logits = net(img)
            if score == "logit_sum":
                return float((logits[0, cls] * roi).sum())
            if score == "prob_mean":
                return float((logits.softmax(1)[0, cls] * roi).sum() / roi.sum())
            pred = logits[0].argmax(0) == cls
            inter = float((pred & clean_pred).sum())
            union = float((pred | clean_pred).sum())
            return inter / union if union else 1.0

        with torch.no_grad():
            clean_pred = net(x)[0].argmax(0) == cls
        m0 = m(x, clean_pred)
        total = torch.zeros(h, w, dtype=torch.float64)
        count = torch.zeros(h, w, dtype=torch.float64)
        for r in ref_starts(h, window[0], stride[0]):
            for c in ref_starts(w, window[1], stride[1]):
                xp = x.clone()
                xp[:, :, r:r + window[0], c:c + window[1]] = \
                    fill_model[:, :, r:r + window[0], c:c + window[1]]
                total[r:r + window[0], c:c + window[1]] += m0 - m(xp, clean_pred)
                count[r:r + window[0], c:c + window[1]] += 1
        maps[i] = total / count
    return maps.float()


@pytest.mark.parametrize("fill", ["black", "grey", "dataset-mean", "image-mean", "blur", "noise"])
def test_occlusion_equals_loop_reference_all_fills(fill: str) -> None:
    net = small_model()
    adapter = ModelAdapter(net, mean=MEAN, std=STD)
    px = torch.rand(2, 3, 13, 17)
    images = (px - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    target = Target.from_box((2, 3, 12, 10), class_index=[1, 2], size=(13, 17), n=2)
    exp = segxai.explain(adapter, images, target, method="occlusion", window=(5, 4),
                         stride=3, fill=fill, batch_size=7, fold_bn=False)
    ref = reference_occlusion(net, images, target, (5, 4), (3, 3), fill, "logit_sum")
    scale = float(ref.abs().max())
    assert scale > 0
    torch.testing.assert_close(exp.maps, ref, atol=1e-5 * scale, rtol=1e-4)
    # the windows are recomputed incrementally (default "auto"): the maps above equal the
    # independent loop; one full forward checks the first incremental window
    assert exp.extras["incremental"] is True and exp.extras["incremental_check_forwards"] == 1
    assert exp.cost.forward_passes == 2 * (1 + 4 * 6) + 1  # rows 0,3,6,8; cols 0,3,...,12,13
    plain = segxai.explain(adapter, images, target, method="occlusion", window=(5, 4),
                           stride=3, fill=fill, batch_size=7, fold_bn=False, incremental=False)
    torch.testing.assert_close(plain.maps, ref, atol=1e-5 * scale, rtol=1e-4)
    assert plain.cost.forward_passes == 2 * (1 + 4 * 6)


@pytest.mark.parametrize("score", ["prob_mean", "iou"])
def test_occlusion_other_scores_equal_reference(score: str) -> None:
    net = small_model(1)
    adapter = ModelAdapter(net, mean=MEAN, std=STD)
    images = torch.randn(1, 3, 11, 14)
    target = Target.whole_image(0, size=(11, 14), score="prob_mean")
    exp = segxai.explain(adapter, images, target, method="occlusion", window=4, stride=3,
                         fill="grey", score=score)
    ref = reference_occlusion(net, images, target, (4, 4), (3, 3), "grey", score)
    assert float(ref.abs().max()) > 0
    torch.testing.assert_close(exp.maps, ref, atol=2e-5, rtol=1e-4)
    assert exp.extras["score"] == score


def test_occlusion_fast_path_matches_plain() -> None:
    net = small_model(2)
    images = torch.randn(2, 3, 16, 16)
    target = Target.whole_image(1, size=(16, 16), n=2)
    plain = segxai.explain(net, images, target, method="occlusion", window=5, stride=2,
                           fold_bn=False, channels_last=False)
    fast = segxai.explain(net, images, target, method="occlusion", window=5, stride=2,
                          fold_bn=True, channels_last=True)
    scale = float(plain.maps.max() - plain.maps.min())
    assert float((fast.maps - plain.maps).abs().max()) <= 1e-4 * scale
    assert fast.extras["folded_batchnorms"] == 1


class RegionModel(nn.Module):
    """Class-1 logit everywhere = 10 × mean of the input over rows 4-7, columns 10-13."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, :, 4:8, 10:14].mean(dim=(1, 2, 3)) * 10
        one = s.view(-1, 1, 1, 1).expand(-1, 1, x.shape[2], x.shape[3])
        return torch.cat([torch.zeros_like(one), one], dim=1)


def test_occlusion_peaks_on_the_region_the_model_uses() -> None:
    images = torch.full((1, 3, 20, 20), 0.8)
    target = Target.whole_image(1, size=(20, 20))
    exp = segxai.explain(RegionModel(), images, target, method="occlusion", window=3, stride=1,
                         fill="black")
    idx = int(exp.maps[0].flatten().argmax())
    r, c = divmod(idx, 20)
    assert 4 <= r < 8 and 10 <= c < 14
    assert float(exp.maps[0, 0:2, 0:8].abs().max()) == 0.0  # far windows change nothing


def test_occlusion_plain_callable_without_gradients() -> None:
    net = small_model(3)

    def fn(x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"out": net(x)}

    images = torch.randn(1, 3, 12, 12)
    target = Target.whole_image(2, size=(12, 12))
    a = segxai.explain(fn, images, target, method="occlusion", window=4, stride=4)
    b = segxai.explain(net, images, target, method="occlusion", window=4, stride=4,
                       fold_bn=False)
    torch.testing.assert_close(a.maps, b.maps)
    assert segxai.get_explainer("occlusion").uses_gradients is False


@pytest.mark.parametrize("fill", ["noise", "image-mean", "blur"])
def test_occlusion_batch_independent_and_deterministic(fill: str) -> None:
    net = small_model(4)
    images = torch.randn(3, 3, 12, 12)
    target = Target.whole_image([0, 1, 2], size=(12, 12), n=3)
    all_maps = segxai.explain(net, images, target, method="occlusion", window=4, fill=fill,
                              seed=3).maps
    again = segxai.explain(net, images, target, method="occlusion", window=4, fill=fill,
                           seed=3).maps
    torch.testing.assert_close(all_maps, again, rtol=0, atol=0)
    one = segxai.explain(net, images[2:3], target[2], method="occlusion", window=4, fill=fill,
                         seed=3).maps
    torch.testing.assert_close(one[0], all_maps[2], atol=1e-6, rtol=1e-5)


def test_occlusion_many_targets_share_forwards() -> None:
    net = small_model(5)
    images = torch.randn(1, 3, 12, 12)
    t1 = Target.whole_image(0, size=(12, 12))
    t2 = Target.from_box((0, 0, 6, 6), 2, size=(12, 12))
    both = segxai.explain(net, images, [t1, t2], method="occlusion", window=4)
    for t, e in zip([t1, t2], both, strict=True):
        single = segxai.explain(net, images, t, method="occlusion", window=4)
        torch.testing.assert_close(e.maps, single.maps)
    # one set of forwards served both targets: each target's share is half of one call's
    # (integer division: one call makes 1 clean + 25 windows + 1 check of the first window)
    assert [e.cost.forward_passes for e in both] == [single.cost.forward_passes // 2] * 2


def test_occlusion_bad_input() -> None:
    net = small_model()
    images = torch.randn(1, 3, 8, 8)
    target = Target.whole_image(1, size=(8, 8))
    with pytest.raises(ValueError, match="window"):
        segxai.explain(net, images, target, method="occlusion", window=9)
    with pytest.raises(ValueError, match="stride"):
        segxai.explain(net, images, target, method="occlusion", window=4, stride=0)
    with pytest.raises(ValueError, match="fill"):
        segxai.explain(net, images, target, method="occlusion", fill="purple")
    with pytest.raises(ValueError, match="window"):
        segxai.explain(net, images, target, method="occlusion", window=0)
    with pytest.raises(ValueError, match="score"):
        segxai.explain(net, images, target, method="occlusion", score="dice")
    with pytest.raises(ValueError, match="dataset_mean|dataset-mean"):
        segxai.explain(net, images, target, method="occlusion", fill="dataset-mean")
    with pytest.raises(ValueError, match="roi"):
        Target.from_mask(torch.zeros(1, 8, 8, dtype=torch.bool), 1)
    with pytest.raises(ValueError, match="create_graph"):
        segxai.explain(net, images, target, method="occlusion", create_graph=True)


def test_occlusion_string_params_from_cli() -> None:
    net = small_model()
    images = torch.randn(1, 3, 10, 10)
    target = Target.whole_image(1, size=(10, 10))
    a = segxai.explain(net, images, target, method="occlusion", window="4,3", stride="2")
    b = segxai.explain(net, images, target, method="occlusion", window=(4, 3), stride=2)
    torch.testing.assert_close(a.maps, b.maps)
    assert a.params["window"] == [4, 3]


def test_occlusion_study_section_quick(tmp_path) -> None:
    from segxai.data import make_shapes
    from segxai.models import UNet, UNetConfig
    from segxai.report.context import DemoContext
    from segxai.report.sections import s20_occlusion_study as sec

    torch.manual_seed(0)
    data = make_shapes(4, size=32, seed=0)
    model = UNet(UNetConfig(depth=2, base_width=4)).eval()
    ctx = DemoContext(model=model, images=data.images, masks=data.masks,
                      class_names=list(data.class_names), out_dir=tmp_path, quick=True)
    section = sec.build(ctx)
    assert section.order == sec.ORDER and section.title == sec.TITLE
    assert len(section.data["runs"]) == len(sec.FILLS)  # one window in quick mode
    for run in section.data["runs"]:
        assert 0.0 <= run["ROI prob after deleting top 10%"] <= 1.0
        # 32², window 8, stride 4 (+ 1 when a full forward checks the first incremental window)
        assert run["forward passes"] in (2 * (1 + 7 * 7), 2 * (1 + 7 * 7) + 1)
    assert "<table>" in section.body and "data:image/webp;base64" in section.body
    assert (tmp_path / "figures" / "occlusion_study.png").exists()


def test_deletion_prob_removes_top_pixels() -> None:
    from segxai.report.sections.s20_occlusion_study import deletion_prob

    model = RegionModel()
    images = torch.full((1, 3, 20, 20), 0.8)
    target = Target.whole_image(1, size=(20, 20))
    good = torch.zeros(1, 20, 20)
    good[0, 4:8, 10:14] = 1  # the 16 pixels the model reads, among the top 10% (40 px)
    bad = torch.zeros(1, 20, 20)
    bad[0, 15:19, 0:10] = 1
    black = torch.zeros(1, 3, 1, 1)
    after_good = deletion_prob(model, images, target, good, black)
    after_bad = deletion_prob(model, images, target, bad, black)
    # deleting the region sets the class-1 logit to 0: p = 0.5; elsewhere it stays at 8
    assert float(after_good) == pytest.approx(0.5)
    assert float(after_bad) == pytest.approx(float(torch.sigmoid(torch.tensor(8.0))))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_occlusion_on_cuda_matches_cpu() -> None:
    net = small_model(6)
    images = torch.randn(2, 3, 16, 16)
    target = Target.whole_image([0, 2], size=(16, 16), n=2)
    cpu = segxai.explain(net, images, target, method="occlusion", window=5, stride=3)
    gpu = segxai.explain(net.cuda(), images.cuda(), target, method="occlusion", window=5,
                         stride=3)
    assert gpu.maps.is_cuda
    scale = float(cpu.maps.max() - cpu.maps.min())
    assert float((gpu.maps.cpu() - cpu.maps).abs().max()) <= 1e-3 * scale  # TF32 convs
