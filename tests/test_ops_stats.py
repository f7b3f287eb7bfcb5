"""The shared helpers of segxai.core.ops / core.stats against slow or external references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from segxai.core.errors import SegxaiError
from segxai.core.ops import gaussian_blur
from segxai.core.postprocess import minmax
from segxai.core.stats import (
    confusion_matrix,
    iou_from_confusion,
    kendall,
    mean_iou,
    pearson,
    rank,
    spearman,
    ssim,
)


# ---------------------------------------------------------------------------- blur
def _reference_blur(img: np.ndarray, sigma: float, k: int) -> np.ndarray:
    """Direct (non-separable) 2-D convolution with an explicitly padded image."""
    r = k // 2
    taps = np.arange(k) - r
    g = np.exp(-(taps**2) / (2 * sigma**2))
    g2 = np.outer(g, g) / np.outer(g, g).sum()
    h, w = img.shape[-2:]
    mode = "reflect" if min(h, w) > r else "edge"  # numpy's reflect = mirror without the edge
    out = np.empty_like(img)
    for idx in np.ndindex(*img.shape[:-2]):
        padded = np.pad(img[idx], r, mode=mode)
        for i in range(h):
            for j in range(w):
                out[idx + (i, j)] = (padded[i:i + k, j:j + k] * g2).sum()
    return out


@pytest.mark.parametrize(("size", "k", "sigma"), [((13, 17), 7, 2.0), ((9, 12), 11, 5.0),
                                                  ((4, 6), 11, 5.0), ((3, 3), 5, 1.0)])
def test_blur_matches_direct_convolution(size: tuple[int, int], k: int, sigma: float) -> None:
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = gaussian_blur(x, sigma=sigma, kernel_size=k).numpy()
    np.testing.assert_allclose(got, _reference_blur(x.numpy(), sigma, k), atol=1e-12)


def test_blur_padding_rule_and_errors() -> None:
    x = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    # reflect padding: a constant image stays constant, and the border differs from replicate
    assert torch.allclose(gaussian_blur(torch.ones(1, 2, 8, 8)), torch.ones(1, 2, 8, 8))
    assert gaussian_blur(x, sigma=2.0, kernel_size=5).shape == x.shape
    with pytest.raises(SegxaiError, match="kernel_size"):
        gaussian_blur(x, sigma=2.0, kernel_size=4)
    with pytest.raises(SegxaiError, match="kernel_size"):
        gaussian_blur(x, kernel_size=0)
    with pytest.raises(SegxaiError, match="sigma"):
        gaussian_blur(x, sigma=0.0)
    with pytest.raises(TypeError, match="images"):
        gaussian_blur(x[0])
    with pytest.raises(TypeError):
        gaussian_blur(x, 5.0, 11)  # type: ignore[misc]  # keyword-only


def test_blur_keeps_gradients() -> None:
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, sigma=1.0, kernel_size=3), (x,))


# ---------------------------------------------------------------------------- correlations
def _samples() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    a = rng.random(50)
    tied = np.round(rng.random(60) * 4)
    return [(a, a + 0.5 * rng.random(50)), (tied, np.round(rng.random(60) * 3)),
            (tied, tied * 2 + rng.random(60)), (a, -a**3)]


def test_correlations_match_scipy() -> None:
    for x, y in _samples():
        assert pearson(x, y) == pytest.approx(sps.pearsonr(x, y).statistic, abs=1e-12)
        assert spearman(x, y) == pytest.approx(sps.spearmanr(x, y).statistic, abs=1e-12)
        assert kendall(x, y) == pytest.approx(sps.kendalltau(x, y).statistic, abs=1e-12)
        np.testing.assert_allclose(rank(x), sps.rankdata(x))
    t = torch.from_numpy(_samples()[0][0])
    assert spearman(t, t.exp()) == pytest.approx(1.0)
    assert kendall(t.view(5, 10), -t.view(5, 10)) == pytest.approx(-1.0)


def test_spearman_along_an_axis_matches_scipy_per_row() -> None:
    rng = np.random.default_rng(5)
    x = np.round(rng.random((6, 12)) * 4)  # many ties
    y = np.round(rng.random((6, 12)) * 3)
    x[2] = 1.0  # a constant row
    np.testing.assert_allclose(rank(x, axis=1), sps.rankdata(x, axis=1))
    np.testing.assert_allclose(rank(x.T, axis=0), sps.rankdata(x.T, axis=0))
    rows = spearman(x, y, axis=-1)
    assert rows.shape == (6,) and math.isnan(rows[2])
    for i in (0, 1, 3, 4, 5):
        assert rows[i] == pytest.approx(sps.spearmanr(x[i], y[i]).statistic, abs=1e-12)
    np.testing.assert_allclose(spearman(x.T, y.T, axis=0), rows, equal_nan=True)


def test_correlations_undefined_for_constant_input() -> None:
    x = np.arange(5.0)
    for f in (pearson, spearman, kendall):
        assert math.isnan(f(np.ones(5), x))
        assert math.isnan(f(x, np.full(5, 2.0)))
    assert math.isnan(spearman([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0]))
    with pytest.raises(SegxaiError, match="y"):
        spearman(x, x[:4])


def test_pearson_batched_and_differentiable() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.rand(4, 30, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(4, 30, generator=g, dtype=torch.float64)
    b[2] = 1.0  # constant row
    r = pearson(a, b, dim=1)
    for i in (0, 1, 3):
        ref = np.corrcoef(a[i].detach().numpy(), b[i].numpy())[0, 1]
        assert r[i].item() == pytest.approx(ref, abs=1e-12)
    assert math.isnan(r[2].item())
    torch.nan_to_num(r, nan=0.0).sum().backward()
    assert torch.isfinite(a.grad).all() and torch.equal(a.grad[2], torch.zeros(30, dtype=a.dtype))
    rows = [0, 1, 3]
    assert torch.autograd.gradcheck(lambda t: pearson(t, b[rows], dim=1), (a[rows].detach()
                                                                             .requires_grad_(),))


# ---------------------------------------------------------------------------- ssim, min-max
def test_ssim_matches_scikit_image_batched() -> None:
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a = rng.random((3, 20, 26))
    b = a + 0.4 * rng.random((3, 20, 26))
    got = ssim(a, b)
    assert got.shape == (3,)
    for i in range(3):
        ref = skm.structural_similarity(minmax(a)[i], minmax(b)[i], data_range=1.0,
                                        gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
        assert got[i].item() == pytest.approx(ref, abs=1e-9)
        assert ssim(torch.from_numpy(a[i]), b[i]).item() == pytest.approx(ref, abs=1e-9)
    # maps smaller than the window: the window shrinks to 7 taps (scikit-image would pad
    # instead), checked against a direct valid-region computation
    x, y = minmax(rng.random((1, 7, 9)))[0], minmax(rng.random((1, 7, 9)))[0]
    taps = np.exp(-(np.arange(-3, 4) ** 2) / (2 * 1.5**2))
    w = np.outer(taps, taps) / np.outer(taps, taps).sum()
    vals = []
    for i in range(1):
        for j in range(3):
            px, py = x[i:i + 7, j:j + 7], y[i:i + 7, j:j + 7]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2
            cxy = (w * px * py).sum() - mx * my
            vals.append((2 * mx * my + 1e-4) * (2 * cxy + 9e-4)
                        / ((mx**2 + my**2 + 1e-4) * (vx + vy + 9e-4)))
    assert ssim(x, y).item() == pytest.approx(float(np.mean(vals)), abs=1e-12)
    with pytest.raises(SegxaiError, match="maps"):
        ssim(a, b[:, :10])


def test_minmax_tensor_and_array_agree() -> None:
    x = np.random.default_rng(2).random((2, 5, 6)) * 7 - 3
    got = minmax(x)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, minmax(torch.from_numpy(x)).numpy())
    assert got.min() == 0.0 and got.max() == 1.0
    assert np.array_equal(minmax(np.ones((1, 3, 3))), np.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match="maps"):
        minmax(np.ones((3, 3)))


# ---------------------------------------------------------------------------- confusion
def test_confusion_matrix_against_loop_with_ignore_index() -> None:
    rng = np.random.default_rng(4)
    target = rng.integers(0, 5, (3, 7, 9))
    target[0, :2] = 255
    pred = rng.integers(0, 5, (3, 7, 9))
    cm = confusion_matrix(pred, target, 5, ignore_index=255)
    slow = np.zeros((5, 5), dtype=np.int64)
    for p, t in zip(pred.ravel(), target.ravel(), strict=True):
        if t != 255:
            slow[t, p] += 1
    assert isinstance(cm, np.ndarray) and cm.dtype == np.int64
    np.testing.assert_array_equal(cm, slow)
    cmt = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 5, ignore_index=255)
    assert isinstance(cmt, torch.Tensor) and torch.equal(cmt, torch.from_numpy(slow))
    with pytest.raises(SegxaiError, match="target"):
        confusion_matrix(pred, target, 5)  # 255 is not a class without ignore_index
    with pytest.raises(SegxaiError, match="pred"):
        confusion_matrix(pred[:1], target, 5, ignore_index=255)
    iou = iou_from_confusion(slow)
    for c in range(5):
        tp = slow[c, c]
        assert iou[c] == pytest.approx(tp / (slow[c].sum() + slow[:, c].sum() - tp))
    assert mean_iou(slow) == pytest.approx(float(np.mean(iou)))
    slow[3] = 0  # class 3 without ground truth: NaN and left out of the mean
    assert math.isnan(iou_from_confusion(slow)[3])
    assert mean_iou(slow) == pytest.approx(float(np.nanmean(iou_from_confusion(slow))))
