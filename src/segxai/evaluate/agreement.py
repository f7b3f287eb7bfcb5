"""Rank agreement with bootstrap intervals: Spearman's rho between paired values, and between
two rankings of the same methods (by two metrics, layers, substrates or models).

Both resample the unit (a pair, an image) with
:func:`segxai.core.intervals.bootstrap_interval` and compute rho for all resamples at once
(average ranks for ties; a resample with a constant side has no rho and is left out).

Example:
    >>> import numpy as np
    >>> scores = np.random.default_rng(0).random((20, 4)) + np.arange(4)
    >>> ranking_agreement(scores, 2 * scores).format(2)
    '1.00 [1.00, 1.00]'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.intervals import (
    Interval,
    Method,
    bootstrap_interval,
    check_options,
    check_values,
)
from segxai.core.stats import spearman

__all__ = ["ranking_agreement", "spearman_interval"]


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of ``x`` and ``y`` (NaN where a row is constant)."""
    return spearman(x, y, axis=-1)


def spearman_interval(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, *,
                      level: float = 0.95, resamples: int = 10_000,
                      method: Method = "percentile", seed: int = 0) -> Interval:
    """Spearman's rho between paired values with a bootstrap interval (pairs resampled jointly).

    Use it for two scores of the same units (e.g. per-image insertion AUC under two
    substrates). Resamples in which either side is constant (rho undefined) are left out.

    Args:
        x: first values (at least 3, not all equal).
        y: second values, paired with ``x``.
        level: confidence level.
        resamples: bootstrap resamples.
        method: ``"percentile"`` or ``"bca"``.
        seed: seed of the :class:`numpy.random.Generator`.

    Returns:
        An :class:`Interval` of rho.
    """
    a = check_values(x, "x", minimum=3, what="a rank-correlation interval")
    b = check_values(y, "y", minimum=3, what="a rank-correlation interval")
    if a.size != b.size:
        raise SegxaiError(f"y: expected {a.size} values (paired with x), got {b.size}")
    check_options(level, resamples, method)
    for name, v in (("x", a), ("y", b)):
        if np.ptp(v) == 0:
            raise SegxaiError(f"{name}: expected values that are not all equal (rho is "
                              f"undefined), got a constant")
    estimate = float(_spearman_rows(a[None], b[None])[0])
    return bootstrap_interval(lambda idx: _spearman_rows(a[idx], b[idx]), a.size,
                              estimate=estimate, width=2, level=level, resamples=resamples,
                              method=method, seed=seed)


def _as_scores(scores: Any, name: str) -> np.ndarray:
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SegxaiTypeError(f"{name}: expected an (images, methods) array of numbers, got "
                              f"{type(scores).__name__}") from err
    if s.ndim != 2 or s.shape[0] < 2 or s.shape[1] < 3:
        raise SegxaiError(f"{name}: expected an (images, methods) array with at least 2 images "
                          f"and 3 methods, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise SegxaiError(f"{name}: expected finite numbers, got NaN or infinity")
    return s


def ranking_agreement(scores_a: np.ndarray, scores_b: np.ndarray, *, level: float = 0.95,
                      resamples: int = 10_000, method: Method = "percentile",
                      seed: int = 0) -> Interval:
    """Spearman's rho between two rankings of the same methods, with an interval over images.

    ``scores_a[i, m]`` and ``scores_b[i, m]`` are method ``m``'s scores on image ``i`` under two
    settings (two metrics, layers, substrates or models). Each setting ranks the methods by
    their mean over the images; rho compares the two rankings. The interval resamples images
    (rows of both arrays together), so it says how much the agreement depends on which images
    were drawn (the methods are fixed, not sampled).

    Args:
        scores_a: ``(images, methods)`` scores under the first setting (≥ 2 images, ≥ 3
            methods).
        scores_b: the same images and methods under the second setting.
        level: confidence level.
        resamples: bootstrap resamples of the images.
        method: ``"percentile"`` or ``"bca"`` (jackknife over images).
        seed: seed of the :class:`numpy.random.Generator`.

    Returns:
        An :class:`Interval` of rho (resamples with tied-constant means are left out).
    """
    a = _as_scores(scores_a, "scores_a")
    b = _as_scores(scores_b, "scores_b")
    if a.shape != b.shape:
        raise SegxaiError(f"scores_b: expected shape {a.shape} (as scores_a), got {b.shape}")
    check_options(level, resamples, method)
    estimate = float(_spearman_rows(a.mean(0)[None], b.mean(0)[None])[0])
    if not np.isfinite(estimate):
        raise SegxaiError("scores_a, scores_b: expected method means that are not all equal "
                          "(rho is undefined), got a constant ranking")
    return bootstrap_interval(lambda idx: _spearman_rows(a[idx].mean(1), b[idx].mean(1)),
                              a.shape[0], estimate=estimate, width=2 * a.shape[1], level=level,
                              resamples=resamples, method=method, seed=seed)
