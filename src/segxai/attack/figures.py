"""Matplotlib figures of explanation attacks (used by the CLI and the demo report)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["plot_attack", "plot_success_rates"]


def _img(x: Tensor) -> np.ndarray:
    return x.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def plot_attack(pixels: Tensor, pixels_adv: Tensor, original_map: Tensor, target_map: Tensor,
                adversarial_map: Tensor, pred_original: Tensor, pred_adversarial: Tensor,
                num_classes: int, title: str = "") -> Any:
    """One row: clean image, its map, the target, x_adv, its map, both predictions.

    Args:
        pixels: ``(3, H, W)`` clean image in pixel space.
        pixels_adv: ``(3, H, W)`` adversarial image in pixel space.
        original_map: ``(H, W)`` explanation of the clean image.
        target_map: ``(H, W)`` target map.
        adversarial_map: ``(H, W)`` explanation of x_adv (original ReLU model).
        pred_original: ``(H, W)`` clean arg-max.
        pred_adversarial: ``(H, W)`` arg-max on x_adv.
        num_classes: for the colour scale of the predictions.
        title: figure title.

    Returns:
        A matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels = [("image", _img(pixels), None), ("original map", original_map, "inferno"),
              ("target map", target_map, "inferno"), ("x_adv", _img(pixels_adv), None),
              ("attacked map", adversarial_map, "inferno"),
              ("prediction (clean)", pred_original, "tab10"),
              ("prediction (x_adv)", pred_adversarial, "tab10")]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
    for ax, (name, data, cmap) in zip(axes, panels, strict=True):
        if isinstance(data, Tensor):
            data = data.detach().cpu().numpy()
        if cmap == "tab10":
            ax.imshow(data, cmap=cmap, vmin=0, vmax=max(9, num_classes - 1),
                      interpolation="nearest")
        elif cmap is None:
            ax.imshow(data)
        else:
            ax.imshow(data, cmap=cmap)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_success_rates(rows: Sequence[dict[str, Any]], title: str = "") -> Any:
    """Success rates per explainer (without and with the defence) and the mean Pearson
    correlation with the target map (clean, attacked, attacked under the defence).

    Args:
        rows: the ``"attacked"`` rows of :func:`~segxai.attack.study.summarize_records`.
        title: figure title.

    Returns:
        A matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = [r["method"] for r in rows]
    xs = np.arange(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(2.5 + 2.6 * len(names), 3.0))
    ax1.bar(xs - 0.2, [r["success_rate"] for r in rows], 0.4, label="attack")
    ax1.bar(xs + 0.2, [r.get("defended_success_rate", float("nan")) for r in rows], 0.4,
            label="with β-smoothing")
    ax1.set_xticks(xs, names)
    ax1.set_ylim(0, 1.05)
    ax1.set_ylabel("success rate")
    ax1.legend(fontsize=7)
    series = [("clean", "clean_target_pearson"), ("attacked", "target_pearson"),
              ("attacked, β-smoothed", "defended_target_pearson")]
    width = 0.8 / len(series)
    for k, (label, key) in enumerate(series):
        ax2.bar(xs + (k - 1) * width, [r.get(key, float("nan")) for r in rows], width,
                label=label)
    ax2.axhline(0.0, color="k", lw=0.5)
    ax2.set_xticks(xs, names)
    ax2.set_ylim(-1, 1)
    ax2.set_ylabel("Pearson r with the target map")
    ax2.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_robustness_map(summary: Sequence[dict[str, Any]], metric: str = "target_pearson",
                        part: str = "attack", title: str = "") -> Any:
    """``metric`` (mean with its interval) against ε, one line per method.

    Args:
        summary: rows of :func:`~segxai.attack.robustness.summarize_map`.
        metric: e.g. ``"target_pearson"`` or ``"success"``.
        part: which rows (``"attack"``, ``"transfer"``, ...).
        title: figure title.

    Returns:
        A matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = [r for r in summary if r["part"] == part and metric in r]

    def order(eps: str) -> float:
        return float("inf") if eps == "none" else float(eps.split("/")[0])

    labels = sorted({r["eps"] for r in rows}, key=order)
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for k, method in enumerate(sorted({r["method"] for r in rows})):
        pts = sorted((r for r in rows if r["method"] == method), key=lambda r: order(r["eps"]))
        xs = np.array([labels.index(r["eps"]) for r in pts], dtype=float) + 0.04 * k
        ys = np.array([r[metric] for r in pts])
        ci = [r.get(f"{metric}_ci") for r in pts]
        lo = np.array([ys[i] - c[0] if c else 0.0 for i, c in enumerate(ci)])
        hi = np.array([c[1] - ys[i] if c else 0.0 for i, c in enumerate(ci)])
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", ms=3, capsize=2, label=method)
    ax.set_xticks(range(len(labels)), ["∞" if e == "none" else e for e in labels])
    ax.set_xlabel("ε (L∞, pixel units; ∞ = valid range only)")
    ax.set_ylabel(metric.replace("_", " "))
    if metric in ("success", "pixel_agreement"):
        ax.set_ylim(-0.02, 1.02)
    if rows:  # a map without this part (e.g. no transfer) draws empty axes
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
