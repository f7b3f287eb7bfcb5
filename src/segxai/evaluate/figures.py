"""Figures of an evaluation run: mean curves per method, AUC vs seconds, noisiness vs cost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["plot_auc_vs_seconds", "plot_mean_curves", "plot_noisiness_vs_cost"]


def _plt() -> Any:
    import matplotlib.pyplot as plt

    return plt


def _colours(methods: Sequence[str]) -> dict[str, Any]:
    """One fixed colour per method (sorted names), shared by every figure."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    names = sorted(m for m in methods if m != "random-baseline")
    out: dict[str, tuple[float, float, float, float] | str] = {
        m: cmap(i % 10) for i, m in enumerate(names)}
    out["random-baseline"] = "grey"
    return out


def plot_mean_curves(curves: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
                     kinds: Sequence[str] = ("deletion", "insertion", "context_deletion"),
                     score: str = "prob_mean") -> Any:
    """Mean curve (± standard error) per method, one panel per curve kind.

    Args:
        curves: ``{method: {kind: [curve per image, ...]}}``; each curve is ``T + 1`` scores.
        kinds: which kinds to draw (missing kinds are skipped).
        score: label of the y axis.

    Returns:
        A matplotlib figure.
    """
    plt = _plt()
    present = [k for k in kinds if any(curves[m].get(k) for m in curves)]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(4.2 * max(1, len(present)), 3.4),
                             squeeze=False)
    colours = _colours(list(curves))
    for ax, kind in zip(axes[0], present, strict=False):
        for method in sorted(curves):
            rows = [np.asarray(c, float) for c in curves[method].get(kind, [])]
            if not rows:
                continue
            arr = np.stack(rows)
            x = np.linspace(0, 1, arr.shape[1])
            mean = np.nanmean(arr, 0)
            ax.plot(x, mean, label=method, lw=1.5, color=colours[method],
                    ls="--" if method == "random-baseline" else "-")
            if arr.shape[0] > 1:
                se = np.nanstd(arr, 0) / np.sqrt(arr.shape[0])
                ax.fill_between(x, mean - se, mean + se, alpha=0.15, color=colours[method])
        ax.set_title(kind.replace("_", " "))
        ax.set_xlabel("fraction of pixels perturbed")
        ax.set_ylabel(score)
        ax.grid(alpha=0.3)
    if present:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _scatter(summary: Sequence[Mapping[str, Any]], x: str, ys: Sequence[str], xlabel: str,
             ylabels: Sequence[str]) -> Any:
    plt = _plt()
    ys = [y for y in ys if any(np.isfinite(r.get(y, np.nan)) for r in summary)]
    colours = _colours([r["method"] for r in summary])
    fig, axes = plt.subplots(1, max(1, len(ys)), figsize=(4.4 * max(1, len(ys)), 3.6),
                             squeeze=False)
    for ax, y, lab in zip(axes[0], ys, ylabels, strict=False):
        for r in summary:
            xv, yv = r.get(x, np.nan), r.get(y, np.nan)
            if not np.isfinite(yv):
                continue
            if r["method"] == "random-baseline":  # no cost: a reference line, not a point
                ax.axhline(yv, color="grey", ls="--", lw=1, label="random baseline")
                ax.legend(fontsize=7)
                continue
            if not np.isfinite(xv):
                continue
            ax.scatter([max(xv, 1e-6)], [yv], s=30, color=colours[r["method"]])
            ax.annotate(r["method"], (max(xv, 1e-6), yv), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_auc_vs_seconds(summary: Sequence[Mapping[str, Any]]) -> Any:
    """Quality/cost trade-off: mean deletion and insertion AUC vs mean seconds per
    explanation (log x), one point per method."""
    return _scatter(summary, "seconds", ["deletion_auc", "insertion_auc"],
                    "seconds per explanation (log)",
                    ["deletion AUC (lower = better)", "insertion AUC (higher = better)"])


def plot_noisiness_vs_cost(summary: Sequence[Mapping[str, Any]]) -> Any:
    """Noisiness (entropy complexity; max-sensitivity where measured) vs seconds."""
    return _scatter(summary, "seconds", ["complexity", "max_sensitivity"],
                    "seconds per explanation (log)",
                    ["complexity (entropy; lower = simpler)",
                     "max-sensitivity (lower = more robust)"])
