"""Metrics of an explanation attack: map similarity, output preservation, perturbation size.

All functions work per image on batches and return ``(N,)`` tensors (float64).

* Maps are compared after :func:`normalize_map` (``|map|`` divided by its sum). ``map_mse`` is
  reported on maps scaled to mean 1 (the sum-1 maps times ``H·W``) so that values are
  readable; Pearson is scale-free; SSIM is computed on min-max normalised maps (data range 1,
  Gaussian window σ = 1.5, 11×11, the constants of Wang et al. 2004).
* Output preservation compares the arg-max maps (pixel agreement, mean IoU over classes that
  occur in either map) and the largest absolute change of any class probability.
* Perturbation sizes are in pixel space ``[0, 1]``: L2 (per image), L∞, PSNR (peak 1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from segxai.core.errors import SegxaiError
from segxai.core.stats import pearson, ssim

__all__ = [
    "argmax_iou",
    "map_mse",
    "map_pearson",
    "map_ssim",
    "max_prob_change",
    "normalize_map",
    "pixel_agreement",
    "perturbation_sizes",
]

_EPS = 1e-12


def normalize_map(maps: Tensor) -> Tensor:
    """``|maps|`` divided by its per-image sum (``(N, H, W)``, each map sums to 1).

    An all-zero map becomes uniform (so comparisons stay defined).
    """
    if maps.dim() != 3:
        raise SegxaiError(f"maps: expected (N, H, W), got shape {tuple(maps.shape)}")
    a = maps.abs()
    total = a.flatten(1).sum(1).view(-1, 1, 1)
    uniform = torch.full_like(a, 1.0 / (a.shape[1] * a.shape[2]))
    return torch.where(total > _EPS, a / total.clamp_min(_EPS), uniform)


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.dim() != 3:
        raise SegxaiError(f"maps: expected two (N, H, W) tensors of the same shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")


def map_mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared difference of the sum-normalised maps, scaled to mean-1 maps."""
    _check_pair(a, b)
    hw = a.shape[1] * a.shape[2]
    d = (normalize_map(a.double()) - normalize_map(b.double())) * hw
    return (d * d).flatten(1).mean(1)


def map_pearson(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation of the maps' pixel values (0 where one map is constant).

    See :func:`segxai.core.stats.pearson` (float64 here; NaN for a constant map becomes 0).
    """
    _check_pair(a, b)
    r = pearson(a.double().flatten(1), b.double().flatten(1), dim=1)
    return torch.nan_to_num(r, nan=0.0)


def map_ssim(a: Tensor, b: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity of min-max normalised maps (mean over valid window positions).

    See :func:`segxai.core.stats.ssim`.

    Args:
        a: ``(N, H, W)`` maps.
        b: ``(N, H, W)`` maps.
        window: Gaussian window size (reduced to the image size for small maps).
        sigma: Gaussian σ.
    """
    _check_pair(a, b)
    return ssim(a, b, sigma=sigma, window=window)


def pixel_agreement(pred_a: Tensor, pred_b: Tensor) -> Tensor:
    """Fraction of pixels with the same arg-max class, ``(N,)``."""
    if pred_a.shape != pred_b.shape:
        raise SegxaiError(f"predictions: shapes differ, {tuple(pred_a.shape)} vs "
                         f"{tuple(pred_b.shape)}")
    return (pred_a == pred_b).double().flatten(1).mean(1)


def argmax_iou(pred_a: Tensor, pred_b: Tensor, num_classes: int) -> Tensor:
    """Mean IoU between two arg-max maps over the classes present in either, ``(N,)``."""
    if pred_a.shape != pred_b.shape:
        raise SegxaiError(f"predictions: shapes differ, {tuple(pred_a.shape)} vs "
                         f"{tuple(pred_b.shape)}")
    out = []
    for pa, pb in zip(pred_a, pred_b, strict=True):
        ious = []
        for k in range(num_classes):
            ma, mb = pa == k, pb == k
            union = int((ma | mb).sum())
            if union:
                ious.append(int((ma & mb).sum()) / union)
        out.append(sum(ious) / len(ious) if ious else 1.0)
    return torch.tensor(out, dtype=torch.float64)


def max_prob_change(prob_a: Tensor, prob_b: Tensor) -> Tensor:
    """Largest absolute difference of any class probability at any pixel, ``(N,)``."""
    if prob_a.shape != prob_b.shape:
        raise SegxaiError(f"probabilities: shapes differ, {tuple(prob_a.shape)} vs "
                         f"{tuple(prob_b.shape)}")
    return (prob_a.double() - prob_b.double()).abs().flatten(1).max(1).values


def perturbation_sizes(pixels_a: Tensor, pixels_b: Tensor) -> dict[str, Tensor]:
    """L2, L∞ and PSNR (dB, peak 1) of ``pixels_a − pixels_b`` in pixel space, each ``(N,)``."""
    if pixels_a.shape != pixels_b.shape:
        raise SegxaiError(f"images: shapes differ, {tuple(pixels_a.shape)} vs "
                         f"{tuple(pixels_b.shape)}")
    d = (pixels_a.double() - pixels_b.double()).flatten(1)
    mse = (d * d).mean(1)
    psnr = torch.where(mse > 0, -10.0 * torch.log10(mse.clamp_min(1e-300)),
                       torch.full_like(mse, math.inf))
    return {"l2": d.norm(dim=1), "linf": d.abs().max(1).values, "psnr": psnr}
