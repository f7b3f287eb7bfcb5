"""Figures of the continual experiment: mIoU vs task, exemplars vs bytes."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from segxai.continual.config import ContinualConfig
from segxai.continual.summary import mean_std
from segxai.core.runstore import atomic_write_bytes

__all__ = ["plot_results"]


def plot_results(rows: list[dict[str, Any]], config: ContinualConfig,
                 out: str | Path | None = None) -> list[Any]:
    """Two figures: mIoU (all and old classes) vs task, and exemplars vs bytes.

    Args:
        rows: results rows.
        config: the experiment.
        out: directory to save ``miou_vs_task.png`` and ``exemplars_vs_bytes.png`` (None:
            only return the figures).

    Returns:
        The two matplotlib figures (closed if saved).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(range(len(config.tasks)))
    fig1, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for strategy in config.strategies:
        for ax, key in zip(axes, ("miou_all", "miou_old")):
            means, stds, xs = [], [], []
            for t in tasks:
                m, s = mean_std([r[key] for r in rows
                                  if r["strategy"] == strategy and r["task"] == t])
                if np.isfinite(m):
                    xs.append(t)
                    means.append(100 * m)
                    stds.append(100 * s)
            if xs:
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=strategy)
    for ax, title in zip(axes, ("all seen classes", "old classes")):
        ax.set_xlabel("task")
        ax.set_ylabel("mIoU (%)")
        ax.set_title(title)
        ax.set_xticks(tasks)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig1.tight_layout()
    fig2, ax = plt.subplots(figsize=(4.6, 3.4))
    for strategy in config.strategies:
        pts = [(r["bytes"], r["exemplars"]) for r in rows if r["strategy"] == strategy]
        if pts:
            b, e = zip(*pts)
            ax.scatter(np.array(b) / 1024, e, label=strategy, s=18)
    ax.axvline(config.budget_bytes / 1024, color="grey", ls="--", lw=1, label="budget")
    ax.set_xlabel("memory used (KiB)")
    ax.set_ylabel("exemplars stored")
    ax.set_title("exemplars vs bytes (after each task)")
    ax.legend(fontsize=7)
    fig2.tight_layout()
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        for fig, name in ((fig1, "miou_vs_task.png"), (fig2, "exemplars_vs_bytes.png")):
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
            atomic_write_bytes(Path(out) / name, buf.getvalue())
            plt.close(fig)
    return [fig1, fig2]
