"""Localisation metrics: pointing game and energy-based pointing game.

* **Pointing game** (Zhang et al., ECCV 2016): a hit when the map's maximum lies in the mask;
  with ``tolerance`` pixels, a hit when a mask pixel lies within that Euclidean distance of a
  maximum (TorchRay's 15 px disc). Ties: a hit if any maximal pixel hits (as Quantus).
* **Energy-based pointing game** (Wang et al., Score-CAM, 2020): the fraction of positive
  attribution mass inside the mask, ``Σ_mask a⁺ / Σ a⁺``.

Both penalise legitimate context (a car explained by the road "misses"): report them next to a
faithfulness metric. An empty mask gives NaN.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from torch import Tensor

from segxai.core.errors import SegxaiError

__all__ = ["energy_pointing_game", "pointing_game"]


def _as_arrays(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> tuple[np.ndarray,
                                                                               np.ndarray]:
    a = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    m = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    if a.ndim == 2:
        a = a[None]
    if m.ndim == 2:
        m = m[None]
    if a.ndim != 3:
        raise SegxaiError(f"maps: expected (N, H, W) or (H, W), got shape {a.shape}")
    if m.shape != a.shape:
        raise SegxaiError(f"masks: expected shape {a.shape} to match maps, got {m.shape}")
    if not np.all(np.isfinite(a)):
        raise SegxaiError("maps: contains NaN or Inf values")
    return a.astype(np.float64), m.astype(bool)


def pointing_game(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray,
                  tolerance: float = 0.0) -> np.ndarray:
    """Pointing-game hit (1.0) or miss (0.0) per image.

    Args:
        maps: ``(N, H, W)`` attribution maps.
        masks: ``(N, H, W)`` ground-truth or ROI masks (bool or 0/1).
        tolerance: pixels; a maximum within this distance of the mask counts as a hit.

    Returns:
        ``(N,)`` float array of 1.0/0.0, NaN where the mask is empty.
    """
    if tolerance < 0:
        raise SegxaiError(f"tolerance: expected a non-negative number of pixels, got {tolerance}")
    a, m = _as_arrays(maps, masks)
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        if not m[i].any():
            out[i] = np.nan
            continue
        peak = a[i] == a[i].max()
        if tolerance > 0:
            near = ndimage.distance_transform_edt(~m[i]) <= tolerance
        else:
            near = m[i]
        out[i] = float(np.any(peak & near))
    return out


def energy_pointing_game(maps: Tensor | np.ndarray, masks: Tensor | np.ndarray) -> np.ndarray:
    """Fraction of positive attribution mass inside the mask, ``Σ_mask a⁺ / Σ a⁺``.

    Args:
        maps: ``(N, H, W)`` attribution maps (negative values are ignored).
        masks: ``(N, H, W)`` ground-truth or ROI masks.

    Returns:
        ``(N,)`` values in ``[0, 1]``; NaN where the mask is empty or the map has no positive
        mass.
    """
    a, m = _as_arrays(maps, masks)
    pos = np.clip(a, 0, None).reshape(a.shape[0], -1)
    mk = m.reshape(m.shape[0], -1)
    total = pos.sum(-1)
    inside = (pos * mk).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = inside / total
    out[(total <= 0) | (mk.sum(-1) == 0)] = np.nan
    return out

