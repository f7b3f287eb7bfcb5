"""Statistics shared by the metrics: correlations, SSIM, confusion matrix and IoU.

One implementation each; the evaluation, attack, NAS and continual code call these.

* :func:`pearson` works on tensors (differentiable, batched along a dimension) and on arrays;
  :func:`spearman` (Pearson of average ranks) and :func:`kendall` (τ-b) handle ties as
  ``scipy.stats.spearmanr`` / ``kendalltau`` do. All three return NaN where an input is
  constant (the correlation is undefined) or contains NaN.
* :func:`ssim` is the Gaussian-window SSIM of Wang et al. (2004) with scikit-image's settings.
* :func:`confusion_matrix` counts ``(ground truth, prediction)`` pairs with an optional ignore
  label; :func:`iou_from_confusion` and :func:`mean_iou` read IoU from it.
"""

from __future__ import annotations

from typing import Any, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from segxai.core.errors import SegxaiError
from segxai.core.ops import gaussian_taps
from segxai.core.postprocess import minmax

__all__ = ["confusion_matrix", "iou_from_confusion", "kendall", "mean_iou", "pearson", "rank",
           "spearman", "ssim"]


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu()
    return np.asarray(x, dtype=np.float64).ravel()


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_array(x), _as_array(y)
    if a.shape != b.shape:
        raise SegxaiError(f"y: expected {a.size} values like x, got {b.size}")
    return a, b


def _undefined(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.size < 2 or bool(np.isnan(a).any() or np.isnan(b).any())
            or a.min() == a.max() or b.min() == b.max())


@overload
def pearson(x: Tensor, y: Tensor, *, dim: int | None = None) -> Tensor: ...


@overload
def pearson(x: Any, y: Any, *, dim: int | None = None) -> np.ndarray | float: ...


def pearson(x: Any, y: Any, *, dim: int | None = None) -> Tensor | np.ndarray | float:
    """Pearson correlation; NaN where either input is constant.

    Args:
        x: values (tensor or array-like).
        y: values of the same shape.
        dim: correlate along this dimension (batched over the others); ``None`` flattens.

    Returns:
        For tensor inputs a tensor of the reduced shape in the inputs' dtype that keeps
        gradients (a constant slice gets NaN with zero gradient); otherwise a float (``dim``
        None) or a float64 array.

    Example:
        >>> pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]) > 0.99
        True
    """
    if isinstance(x, Tensor) and isinstance(y, Tensor):
        if x.shape != y.shape:
            raise SegxaiError(f"y: expected the shape of x {tuple(x.shape)}, "
                              f"got {tuple(y.shape)}")
        if not x.is_floating_point() or not y.is_floating_point():
            x, y = x.double(), y.double()
        if dim is None:
            x, y, dim = x.reshape(-1), y.reshape(-1), 0
        xc = x - x.mean(dim, keepdim=True)
        yc = y - y.mean(dim, keepdim=True)
        const = (x.amax(dim) == x.amin(dim)) | (y.amax(dim) == y.amin(dim))
        # sqrt of the product (not a product of norms): identical inputs give exactly 1
        den = ((xc * xc).sum(dim) * (yc * yc).sum(dim)).clamp_min(torch.finfo(x.dtype).tiny)
        r = (xc * yc).sum(dim) / den.sqrt()
        return torch.where(const, torch.full_like(r, float("nan")), r)
    xt, yt = (torch.as_tensor(np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v,
                                         dtype=np.float64)) for v in (x, y))
    r = pearson(xt, yt, dim=dim)
    return float(r) if r.dim() == 0 else r.numpy()


def rank(x: Tensor | np.ndarray | Any, *, axis: int | None = None) -> np.ndarray:
    """Ranks ``1..n`` (ties get the mean of their ranks), of the flattened values or along
    ``axis``, as float64.

    Example:
        >>> rank([10, 30, 20, 30]).tolist()
        [1.0, 3.5, 2.0, 3.5]
    """
    a = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    a = a.ravel() if axis is None else np.moveaxis(a, axis, -1)
    n = a.shape[-1]
    order = np.argsort(a, axis=-1, kind="mergesort")
    s = np.take_along_axis(a, order, axis=-1)
    idx = np.broadcast_to(np.arange(n), s.shape)
    new = np.ones(s.shape, dtype=bool)
    new[..., 1:] = s[..., 1:] != s[..., :-1]
    end = np.ones(s.shape, dtype=bool)
    end[..., :-1] = new[..., 1:]
    first = np.maximum.accumulate(np.where(new, idx, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(end, idx, n - 1), -1), axis=-1), -1)
    out = np.empty(s.shape, dtype=np.float64)
    np.put_along_axis(out, order, (first + last) / 2.0 + 1.0, axis=-1)
    return out if axis is None else np.moveaxis(out, -1, axis)


@overload
def spearman(x: Any, y: Any, *, axis: None = None) -> float: ...


@overload
def spearman(x: Any, y: Any, *, axis: int) -> np.ndarray: ...


def spearman(x: Tensor | np.ndarray | Any, y: Tensor | np.ndarray | Any, *,
             axis: int | None = None) -> float | np.ndarray:
    """Spearman rank correlation (Pearson of average ranks): of the flattened inputs, or of
    each pair of slices along ``axis`` (vectorised, e.g. over bootstrap resamples). NaN where
    either side is constant or contains NaN.

    Example:
        >>> round(spearman([1, 2, 3, 4], [1, 4, 9, 16]), 12)
        1.0
    """
    if axis is None:
        a, b = _pair(x, y)
        if _undefined(a, b):
            return float("nan")
        return float(pearson(rank(a), rank(b)))
    a = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    b = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y, dtype=np.float64)
    if a.shape != b.shape:
        raise SegxaiError(f"y: expected the shape of x {a.shape}, got {b.shape}")
    r = np.asarray(pearson(rank(a, axis=axis), rank(b, axis=axis), dim=axis), dtype=np.float64)
    bad = np.isnan(a).any(axis) | np.isnan(b).any(axis)
    return np.where(bad, np.nan, r)


def kendall(x: Tensor | np.ndarray | Any, y: Tensor | np.ndarray | Any) -> float:
    """Kendall's τ-b of the flattened inputs (ties corrected); NaN if either input is constant
    or contains NaN.

    ``τ_b = (C − D) / sqrt(P_x · P_y)`` with ``C − D = Σ_{i<j} sign(x_i − x_j)·sign(y_i − y_j)``
    and ``P_x`` the number of pairs not tied in ``x``. Pairs are counted in row blocks
    (``O(n²)`` time, ``O(n)`` memory per row).

    Example:
        >>> round(kendall([1, 2, 3], [1, 3, 2]), 12)
        0.333333333333
    """
    a, b = _pair(x, y)
    if _undefined(a, b):
        return float("nan")
    s = px = py = 0.0
    step = max(1, 2**22 // a.size)
    for start in range(0, a.size, step):
        sx = np.sign(a[start:start + step, None] - a[None, :])
        sy = np.sign(b[start:start + step, None] - b[None, :])
        s += float((sx * sy).sum())
        px += float(np.abs(sx).sum())
        py += float(np.abs(sy).sum())
    # every unordered pair was counted twice (i, j) and (j, i), in numerator and both counts
    return float(s / np.sqrt(px * py))


def ssim(a: Tensor | np.ndarray, b: Tensor | np.ndarray, *, normalize: bool = True,
         sigma: float = 1.5, window: int | None = None) -> Tensor:
    """Structural similarity (Wang et al., 2004) of 2-D maps, per map.

    Gaussian window of ``2r + 1`` taps, ``r = int(3.5σ + 0.5)`` (11 taps for σ 1.5) or
    ``r = (window - 1) // 2``, shrunk to ``(min(H, W) - 1) // 2`` for small maps; data range 1,
    constants ``(0.01)²`` and ``(0.03)²``; mean over the valid (unpadded) region. This is
    scikit-image's ``structural_similarity(gaussian_weights=True, sigma=σ,
    use_sample_covariance=False, data_range=1)``.

    Args:
        a: ``(H, W)`` or ``(N, H, W)`` maps (tensor or array).
        b: maps of the same shape.
        normalize: min-max each map to ``[0, 1]`` first (:func:`~segxai.core.postprocess.minmax`).
        sigma: Gaussian window σ.
        window: window size instead of the σ-derived one.

    Returns:
        float64 tensor of shape ``a.shape[:-2]`` (0-d for one pair of maps), in ``[-1, 1]``.
    """
    x = torch.as_tensor(np.asarray(a) if not isinstance(a, Tensor) else a).double()
    y = torch.as_tensor(np.asarray(b) if not isinstance(b, Tensor) else b).double()
    if x.dim() not in (2, 3) or x.shape != y.shape:
        raise SegxaiError(f"maps: expected two (H, W) or (N, H, W) maps of the same shape, got "
                          f"{tuple(x.shape)} and {tuple(y.shape)}")
    lead = x.shape[:-2]
    x, y = x.reshape(-1, *x.shape[-2:]), y.reshape(-1, *y.shape[-2:])
    if normalize:
        x, y = minmax(x), minmax(y)
    radius = int(3.5 * sigma + 0.5) if window is None else (int(window) - 1) // 2
    radius = max(0, min(radius, (min(x.shape[-2:]) - 1) // 2))
    g = gaussian_taps(2 * radius + 1, sigma, dtype=x.dtype, device=x.device)
    win = (g[:, None] * g[None, :]).view(1, 1, 2 * radius + 1, 2 * radius + 1)
    x, y = x.unsqueeze(1), y.unsqueeze(1)

    def filt(z: Tensor) -> Tensor:
        return F.conv2d(z, win)

    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).reshape(lead)


@overload
def confusion_matrix(pred: Tensor, target: Tensor | np.ndarray, num_classes: int,
                     ignore_index: int | None = None) -> Tensor: ...


@overload
def confusion_matrix(pred: np.ndarray, target: Tensor | np.ndarray, num_classes: int,
                     ignore_index: int | None = None) -> np.ndarray: ...


def confusion_matrix(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, num_classes: int,
                     ignore_index: int | None = None) -> Tensor | np.ndarray:
    """Confusion matrix ``(K, K)``: ``cm[g, p]`` = pixels of class ``g`` predicted as ``p``.

    Args:
        pred: predicted class ids, any shape (tensor or array).
        target: ground-truth class ids, same number of elements.
        num_classes: ``K``.
        ignore_index: a target value to skip (unlabelled pixels, e.g. 255); ``None`` skips
            nothing.

    Returns:
        int64 counts: a CPU tensor if ``pred`` is a tensor, else a numpy array.

    Raises:
        SegxaiError: mismatched sizes or class ids outside ``[0, K)``.
    """
    as_tensor = isinstance(pred, Tensor)
    p = torch.as_tensor(pred).reshape(-1).long().cpu()
    t = torch.as_tensor(target).reshape(-1).long().cpu()
    if p.shape != t.shape:
        raise SegxaiError(f"pred: expected {t.numel()} class ids like target, got {p.numel()}")
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    for name, v in (("target", t), ("pred", p)):
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= num_classes):
            raise SegxaiError(f"{name}: expected class ids in [0, {num_classes}), got "
                              f"[{int(v.min())}, {int(v.max())}]")
    cm = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    cm = cm.reshape(num_classes, num_classes)
    return cm if as_tensor else cm.numpy()


def iou_from_confusion(cm: Tensor | np.ndarray) -> np.ndarray:
    """Per-class IoU ``TP / (GT + Pred − TP)`` from a confusion matrix (rows ground truth);
    NaN for a class without ground-truth pixels."""
    conf = np.asarray(cm.cpu() if isinstance(cm, Tensor) else cm, dtype=np.float64)
    tp = np.diag(conf)
    gt = conf.sum(1)
    pr = conf.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou: np.ndarray = tp / (gt + pr - tp)
    iou[gt == 0] = np.nan
    return iou


def mean_iou(cm: Tensor | np.ndarray) -> float:
    """Mean IoU over the classes present in the ground truth (NaN if none is)."""
    iou = iou_from_confusion(cm)
    iou = iou[np.isfinite(iou)]
    return float(iou.mean()) if iou.size else float("nan")
