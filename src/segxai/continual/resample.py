"""Nearest-neighbour resampling and low-resolution sizes shared by the exemplar compressors."""

from __future__ import annotations

import math

import numpy as np

from segxai.core.errors import SegxaiError

__all__ = ["low_size", "nearest_resize"]


def low_size(h: int, w: int, r: float) -> tuple[int, int]:
    """Size of an ``h × w`` array stored at ``1/√r`` per side (at least 1 pixel).

    Args:
        h: height.
        w: width.
        r: area compression ratio (``r >= 1``); each side shrinks by ``√r``.

    Returns:
        ``(h_low, w_low)`` with ``h_low = max(1, round(h / √r))``.
    """
    if not isinstance(r, (int, float)) or isinstance(r, bool) or not r >= 1:
        raise SegxaiError(f"r: expected a number >= 1, got {r!r}")
    s = math.sqrt(float(r))
    return max(1, int(round(h / s))), max(1, int(round(w / s)))


def nearest_resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes (works for images and label masks).

    Output pixel ``i`` samples input pixel ``floor((i + 0.5) · H_in / H_out)``, i.e. the
    input pixel whose area contains the output pixel's centre; values are copied, never mixed.

    Args:
        arr: ``(..., H, W)`` array of any dtype.
        size: ``(H_out, W_out)``.

    Returns:
        ``(..., H_out, W_out)`` array of the same dtype.
    """
    h_in, w_in = arr.shape[-2:]
    h_out, w_out = int(size[0]), int(size[1])
    if h_out < 1 or w_out < 1:
        raise SegxaiError(f"size: expected positive sizes, got {size!r}")
    rows = np.minimum(((np.arange(h_out) + 0.5) * h_in / h_out).astype(np.int64), h_in - 1)
    cols = np.minimum(((np.arange(w_out) + 0.5) * w_in / w_out).astype(np.int64), w_in - 1)
    return arr[..., rows[:, None], cols[None, :]]
