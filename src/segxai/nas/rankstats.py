"""Rank correlations of proxies with trained mIoU, with bootstrap intervals and partial τ.

* Kendall τ-b and Spearman ρ of each proxy against trained mIoU;
* the **partial Kendall τ controlling for the parameter count** (Kendall 1942):
  ``τ_xy·z = (τ_xy − τ_xz τ_yz) / sqrt((1 − τ_xz²)(1 − τ_yz²))``, x = proxy, y = mIoU,
  z = params: does the proxy rank architectures beyond their size?
* percentile bootstrap 95 % intervals of all three, resampling architectures (the (x, y, z)
  triples jointly; :func:`segxai.core.intervals.bootstrap_interval`). A resample's τ-b
  counts repeated architectures as ties, as τ-b does for any ties.

τ-b is vectorised over resamples with the pairwise sign matrices ``sign(x_i − x_j)``:
``τ_b = Σ s_x s_y / sqrt(Σ s_x² · Σ s_y²)`` over the resample's index pairs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from segxai.core.intervals import bootstrap_interval
from segxai.core.stats import kendall, spearman

__all__ = ["partial_tau", "proxy_statistics"]


def partial_tau(t_xy: float, t_xz: float, t_yz: float) -> float:
    """Kendall's partial τ of x and y given z (NaN where undefined)."""
    den = (1 - t_xz ** 2) * (1 - t_yz ** 2)
    return (t_xy - t_xz * t_yz) / math.sqrt(den) if den > 0 else float("nan")


def _signs(v: np.ndarray) -> np.ndarray:
    return np.sign(v[:, None] - v[None, :])


def _tau_rows(sa: np.ndarray, sb: np.ndarray, idx: np.ndarray) -> np.ndarray:
    a = sa[idx[:, :, None], idx[:, None, :]]
    b = sb[idx[:, :, None], idx[:, None, :]]
    den = np.sqrt((a * a).sum((1, 2)) * (b * b).sum((1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum((1, 2)) / np.where(den > 0, den, 1), np.nan)


def _finite(v: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return np.where(np.isfinite(a), a, -1e300)


def proxy_statistics(scores: Sequence[float] | np.ndarray, miou: Sequence[float] | np.ndarray,
                     params: Sequence[float] | np.ndarray,
                     *, resamples: int = 10_000, level: float = 0.95,
                     seed: int = 0) -> dict[str, Any]:
    """τ, ρ and partial τ (given params) of one proxy with their bootstrap intervals.

    Args:
        scores: proxy scores (non-finite scores rank last).
        miou: trained mIoU of the same architectures.
        params: their parameter counts.
        resamples: bootstrap resamples.
        level: confidence level.
        seed: bootstrap seed.

    Returns:
        ``kendall_tau``, ``spearman_rho``, ``partial_tau`` and ``*_lo`` / ``*_hi`` for each.
    """
    x, y, z = _finite(scores), np.asarray(miou, dtype=float), np.asarray(params, dtype=float)
    n = len(x)
    sx, sy, sz = _signs(x), _signs(y), _signs(z)
    t_xy, t_xz, t_yz = kendall(x, y), kendall(x, z), kendall(y, z)
    est = {"kendall_tau": t_xy, "spearman_rho": spearman(x, y),
           "partial_tau": partial_tau(t_xy, t_xz, t_yz)}

    def tau(idx: np.ndarray) -> np.ndarray:
        return _tau_rows(sx, sy, idx)

    def rho(idx: np.ndarray) -> np.ndarray:
        return np.asarray(spearman(x[idx], y[idx], axis=1), dtype=float)

    def part(idx: np.ndarray) -> np.ndarray:
        a, b, c = _tau_rows(sx, sy, idx), _tau_rows(sx, sz, idx), _tau_rows(sy, sz, idx)
        den = (1 - b ** 2) * (1 - c ** 2)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (a - b * c) / np.sqrt(np.where(den > 0, den, 1)), np.nan)

    out: dict[str, Any] = {}
    for key, stat in (("kendall_tau", tau), ("spearman_rho", rho), ("partial_tau", part)):
        value = float(est[key])
        out[key] = value
        if not math.isfinite(value) or n < 3:
            out[f"{key}_lo"] = out[f"{key}_hi"] = float("nan")
            continue
        iv = bootstrap_interval(stat, n, estimate=value, width=3 * n * n, level=level,
                                resamples=resamples, seed=seed)
        out[f"{key}_lo"], out[f"{key}_hi"] = iv.lo, iv.hi
    return out
