"""Means with 95 % bootstrap intervals, and every method against the random baseline.

From the runner's tidy rows (``image, method, metric, value``): per method and metric the mean
over images with a bootstrap interval (:func:`~segxai.core.intervals.bootstrap_mean`), and
the per-image paired difference ``method − random baseline`` on the images both have, with its
interval and sign-flip p-value (:func:`~segxai.core.intervals.paired_difference`). A method
*beats* the baseline on a metric when the whole interval of the difference lies on the better
side of 0 (:data:`~segxai.evaluate.config.METRIC_DIRECTION`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from segxai.core.errors import SegxaiError
from segxai.core.intervals import bootstrap_mean, format_interval, paired_difference
from segxai.evaluate.config import METRIC_DIRECTION, RANDOM_BASELINE

__all__ = ["FAITHFULNESS_METRICS", "INTERVAL_METRICS", "best_method", "check_interval_images",
           "format_row", "interval_table", "lookup", "per_image"]

FAITHFULNESS_METRICS = ("deletion_auc", "insertion_auc", "context_deletion_auc")
INTERVAL_METRICS = (*FAITHFULNESS_METRICS, "pointing_game", "energy_pointing_game", "seconds")


def check_interval_images(n: int, name: str = "images") -> None:
    """Refuse fewer than 2 images: an interval over images needs at least two.

    Raises:
        SegxaiError: ``n < 2``.
    """
    if n < 2:
        raise SegxaiError(f"{name}: expected at least 2 images for a 95 % interval, got {n}")


def per_image(rows: Sequence[dict[str, Any]], method: str, metric: str) -> dict[str, float]:
    """``{image: value}`` of one method and metric (non-finite values left out)."""
    out: dict[str, float] = {}
    for r in rows:
        if r["method"] == method and r["metric"] == metric:
            v = float(r["value"])
            if math.isfinite(v):
                out[str(r["image"])] = v
    return out


def interval_table(rows: Sequence[dict[str, Any]], methods: Sequence[str],
                   metrics: Sequence[str] = INTERVAL_METRICS, *,
                   baseline: str | None = RANDOM_BASELINE, level: float = 0.95,
                   resamples: int = 10_000, seed: int = 0) -> list[dict[str, Any]]:
    """One entry per (method, metric) with at least 2 finite per-image values.

    Args:
        rows: tidy rows ``{"image", "method", "metric", "value"}``.
        methods: the methods, in output order.
        metrics: the metrics.
        baseline: the method every other one is paired with (``None``: no differences).
        level: confidence level.
        resamples: bootstrap resamples.
        seed: seed of the resampling.

    Returns:
        Dicts ``{"method", "metric", "n", "mean", "lo", "hi"}`` plus, against the baseline,
        ``"pairs", "diff", "diff_lo", "diff_hi", "p_value", "beats_baseline"`` (``True`` when
        the interval of the difference excludes 0 on the better side, ``False`` when it
        excludes it on the worse side, ``None`` otherwise or without a direction).
    """
    out: list[dict[str, Any]] = []
    for metric in metrics:
        base = per_image(rows, baseline, metric) if baseline is not None else {}
        for m in methods:
            vals = per_image(rows, m, metric)
            if len(vals) < 2:
                continue
            ci = bootstrap_mean(list(vals.values()), level=level, resamples=resamples,
                                seed=seed)
            entry: dict[str, Any] = {"method": m, "metric": metric, "n": ci.n,
                                     "mean": ci.estimate, "lo": ci.lo, "hi": ci.hi}
            common = sorted(set(vals) & set(base))
            if m != baseline and len(common) >= 2:
                pd = paired_difference([vals[i] for i in common], [base[i] for i in common],
                                       level=level, resamples=resamples, seed=seed)
                d = pd.difference
                sign = METRIC_DIRECTION.get(metric, 0)
                verdict = None
                if sign != 0 and (d.lo > 0 or d.hi < 0):
                    verdict = bool(sign * d.estimate > 0)
                entry.update(pairs=len(common), diff=d.estimate, diff_lo=d.lo, diff_hi=d.hi,
                             p_value=pd.p_value, beats_baseline=verdict)
            out.append(entry)
    return out


def format_row(entry: dict[str, Any], digits: int = 3) -> tuple[str, str]:
    """``("mean [lo, hi]", "diff [lo, hi]")`` of an :func:`interval_table` entry (the second
    is ``""`` without a baseline difference)."""
    mean = format_interval(entry["mean"], entry["lo"], entry["hi"], digits)
    if "diff" not in entry:
        return mean, ""
    diff = format_interval(entry["diff"], entry["diff_lo"], entry["diff_hi"], digits)
    mark = {True: " ✓", False: " ✗", None: ""}[entry["beats_baseline"]]
    return mean, diff + mark


def lookup(table: Sequence[dict[str, Any]], method: str, metric: str) -> dict[str, Any] | None:
    """The entry of ``method`` and ``metric`` in an :func:`interval_table`, if any."""
    return next((e for e in table if e["method"] == method and e["metric"] == metric), None)


def best_method(table: Sequence[dict[str, Any]], metric: str,
                exclude: Sequence[str] = (RANDOM_BASELINE,)) -> dict[str, Any] | None:
    """The entry with the best mean on ``metric`` (by its direction), ``None`` if none."""
    sign = METRIC_DIRECTION.get(metric, 1)
    cands = [e for e in table if e["metric"] == metric and e["method"] not in exclude
             and np.isfinite(e["mean"])]
    return max(cands, key=lambda e: sign * e["mean"]) if cands else None

