"""Explicit post-processing of raw maps: normalisation, top-p% thresholding, overlays."""

from __future__ import annotations

from typing import overload

import numpy as np
import torch
from torch import Tensor

from segxai.core.checks import check_fraction
from segxai.core.errors import SegxaiError

__all__ = ["minmax", "overlay", "to_hwc", "top_p", "zscore"]


def _check_maps(maps: Tensor) -> Tensor:
    if not isinstance(maps, Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise SegxaiError(f"maps: expected an (N, H, W) tensor, got {shape}")
    return maps


@overload
def minmax(maps: Tensor, eps: float = 1e-12) -> Tensor: ...


@overload
def minmax(maps: np.ndarray, eps: float = 1e-12) -> np.ndarray: ...


def minmax(maps: Tensor | np.ndarray, eps: float = 1e-12) -> Tensor | np.ndarray:
    """Per-map min-max scaling to ``[0, 1]``; a map whose range is at most ``eps`` (a constant
    map) becomes all zeros.

    The one min-max of segxai: explainers' callers, SSIM, the attack metrics and the continual
    compressors all use it.

    Args:
        maps: ``(N, H, W)`` tensor (gradients flow through) or numpy array (returned as a
            float64 array).
        eps: the largest range treated as constant.
    """
    if isinstance(maps, np.ndarray):
        if maps.ndim != 3:
            raise SegxaiError(f"maps: expected an (N, H, W) array, got shape {maps.shape}")
        return minmax(torch.from_numpy(maps.astype(np.float64)), eps).numpy()
    _check_maps(maps)
    flat = maps.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1)
    span = hi - lo
    return torch.where(span > eps, (maps - lo) / span.clamp_min(eps), torch.zeros_like(maps))


def zscore(maps: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-map standardisation ``(m - mean) / std``; a constant map becomes all zeros."""
    _check_maps(maps)
    flat = maps.flatten(1)
    mean = flat.mean(1).view(-1, 1, 1)
    std = flat.std(1, unbiased=False).view(-1, 1, 1)
    return torch.where(std > eps, (maps - mean) / std.clamp_min(eps), torch.zeros_like(maps))


def top_p(maps: Tensor, p: float) -> Tensor:
    """Keep the most important ``p`` percent of pixels of each map, zero the rest.

    Ties at the threshold are kept, so slightly more than ``p``% may survive on flat maps.

    Args:
        maps: ``(N, H, W)``.
        p: percentage in ``(0, 100]``.
    """
    _check_maps(maps)
    p = check_fraction(p, "p", low=0.0, high=100.0, low_open=True)
    flat = maps.flatten(1)
    k = max(1, int(round(flat.shape[1] * p / 100.0)))
    thresh = flat.topk(k, dim=1).values[:, -1].view(-1, 1, 1)
    return torch.where(maps >= thresh, maps, torch.zeros_like(maps))


def to_hwc(image: Tensor | np.ndarray) -> np.ndarray:
    """A ``(C, H, W)`` or ``(H, W, C)`` image (tensor or array) as ``(H, W, 3)`` in ``[0, 1]``."""
    img: np.ndarray = (image.detach().cpu().float().numpy() if isinstance(image, Tensor)
                       else np.asarray(image))
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    clipped: np.ndarray = np.clip(img, 0.0, 1.0)  # dtype unknown: the stubs' overloads give Any
    return clipped


def overlay(image: Tensor | np.ndarray, heat: Tensor | np.ndarray, alpha: float = 0.5,
            cmap: str = "jet") -> np.ndarray:
    """Blend a ``(3, H, W)`` or ``(H, W, 3)`` image in ``[0, 1]`` with a heat map ``(H, W)``.

    The heat map is min-max scaled for colour only. Returns an ``(H, W, 3)`` float array.
    """
    import matplotlib

    img = to_hwc(image)
    h = heat.detach().cpu().numpy() if isinstance(heat, Tensor) else np.asarray(heat, dtype=float)
    if h.shape != img.shape[:2]:
        raise SegxaiError(f"heat: expected shape {img.shape[:2]} to match the image, got {h.shape}")
    h = minmax(np.asarray(h, dtype=np.float64)[None])[0]
    colours: np.ndarray = matplotlib.colormaps[cmap](h)[..., :3]
    return np.clip((1 - alpha) * img + alpha * colours, 0, 1)
