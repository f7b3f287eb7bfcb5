"""Complexity of attribution maps (definitions as in Quantus v0.6).

* **Sparseness** (Chalasani et al., ICML 2020): the Gini index of ``|a|`` (higher = sparser):
  ``a ← sort(|a| + 1e-7)``, ``G = Σ_i (2i − n − 1) a_i / (n Σ_i a_i)``.
* **Complexity** (Bhatt et al., IJCAI 2020): the entropy of the normalised ``|a|`` (lower =
  simpler): ``p = |a| / Σ|a|``, ``H = −Σ p log(p + 1e-12)``.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor

from segxai.core.errors import SegxaiError

__all__ = ["complexity", "sparseness"]


def _flat(maps: Tensor | np.ndarray) -> np.ndarray:
    a = maps.detach().cpu().numpy() if isinstance(maps, Tensor) else np.asarray(maps)
    if a.ndim < 2:
        raise SegxaiError(f"maps: expected (N, H, W) (or (N, ...)), got shape {a.shape}")
    a = np.abs(a.reshape(a.shape[0], -1).astype(np.float64))
    if not np.all(np.isfinite(a)):
        raise SegxaiError("maps: contains NaN or Inf values")
    return a


def sparseness(maps: Tensor | np.ndarray) -> np.ndarray:
    """Gini index of ``|maps|`` per map, ``(N,)`` in ``[0, 1)`` (higher = sparser)."""
    a = np.sort(_flat(maps) + 1e-7, axis=-1)
    n = a.shape[-1]
    i = np.arange(1, n + 1)
    return ((2 * i - n - 1) * a).sum(-1) / (n * a.sum(-1))


def complexity(maps: Tensor | np.ndarray) -> np.ndarray:
    """Entropy of ``|maps| / Σ|maps|`` per map, ``(N,)`` (lower = simpler); NaN for an
    all-zero map."""
    a = _flat(maps)
    total = a.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = a / total
    return -(p * np.log(p + 1e-12)).sum(-1)
