"""Matplotlib figures for reports: saliency overlays with a colour bar, segmentation grids,
method × image grids and training curves. Every function returns a ``Figure`` (embed it with
:func:`segxai.report.html.figure_to_html`, which also closes it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from segxai.core.postprocess import to_hwc

__all__ = [
    "class_colours",
    "colour_mask",
    "explanation_grid",
    "overlay_figure",
    "segmentation_grid",
    "to_hwc",
    "training_curves",
]


def _mpl():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, Tensor) else np.asarray(x, float)


def class_colours(num_classes: int) -> np.ndarray:
    """``(K, 3)`` RGB colours: black background, then the ``tab10`` palette."""
    import matplotlib

    tab = matplotlib.colormaps["tab10"](np.arange(10))[:, :3]
    cols = [np.zeros(3)] + [tab[(i - 1) % 10] for i in range(1, num_classes)]
    return np.stack(cols)


def colour_mask(mask: Tensor | np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids ``(H, W)`` as an RGB image ``(H, W, 3)`` (ids outside the classes are white)."""
    m = _np(mask).astype(int)
    cols = np.vstack([class_colours(num_classes), np.ones((1, 3))])
    return cols[np.where((m >= 0) & (m < num_classes), m, num_classes)]


def _legend(fig: Any, class_names: Sequence[str]) -> None:
    from matplotlib.patches import Patch

    cols = class_colours(len(class_names))
    handles = [Patch(color=cols[i], label=n) for i, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False)


def segmentation_grid(images: Tensor | np.ndarray, gt: Tensor | np.ndarray,
                      pred: Tensor | np.ndarray | None, class_names: Sequence[str],
                      titles: Sequence[str] | None = None) -> Any:
    """Input / ground truth / prediction rows for each image (one column per image).

    Args:
        images: ``(N, C, H, W)`` in ``[0, 1]``.
        gt: ``(N, H, W)`` class ids.
        pred: ``(N, H, W)`` predicted ids, or ``None`` to omit the row.
        class_names: class names (for colours and the legend).
        titles: optional column titles.

    Returns:
        A matplotlib figure.
    """
    plt = _mpl()
    n = len(images)
    rows = [("input", None), ("ground truth", gt)] + ([("prediction", pred)] if pred is not None
                                                        else [])
    fig, axes = plt.subplots(len(rows), n, figsize=(2.1 * n, 2.1 * len(rows) + 0.5),
                             squeeze=False)
    for j in range(n):
        for i, (label, data) in enumerate(rows):
            ax = axes[i, j]
            if data is None:
                ax.imshow(to_hwc(images[j]))
            else:
                ax.imshow(colour_mask(data[j], len(class_names)), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label)
            if i == 0 and titles is not None:
                ax.set_title(str(titles[j]), fontsize=9)
    _legend(fig, class_names)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def overlay_figure(image: Tensor | np.ndarray, saliency: Tensor | np.ndarray,
                   roi: Tensor | np.ndarray | None = None, title: str = "",
                   cmap: str = "jet", alpha: float = 0.5) -> Any:
    """One image with a saliency map on top, a colour bar of the raw values, and the ROI
    outline (white contour).

    Args:
        image: ``(C, H, W)`` in ``[0, 1]``.
        saliency: ``(H, W)`` raw saliency values (the colour bar shows their range).
        roi: optional ``(H, W)`` mask of the explained region.
        title: axes title.
        cmap: matplotlib colour map.
        alpha: opacity of the saliency layer.

    Returns:
        A matplotlib figure.
    """
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(3.6, 3.0))
    _draw_overlay(ax, image, saliency, roi, cmap, alpha, colorbar=True, fig=fig)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _draw_overlay(ax: Any, image: Any, saliency: Any, roi: Any, cmap: str, alpha: float,
                  colorbar: bool, fig: Any = None) -> None:
    s = _np(saliency)
    ax.imshow(to_hwc(image))
    lo, hi = float(np.nanmin(s)), float(np.nanmax(s))
    if hi <= lo:
        hi = lo + 1e-12
    im = ax.imshow(s, cmap=cmap, alpha=alpha, vmin=lo, vmax=hi)
    if roi is not None:
        r = _np(roi)
        if r.any():
            ax.contour(r, levels=[0.5], colors="white", linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar and fig is not None:
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.ax.tick_params(labelsize=6)


def explanation_grid(images: Tensor | np.ndarray,
                     maps: Mapping[str, Tensor | np.ndarray | None],
                     rois: Tensor | np.ndarray | None = None,
                     titles: Sequence[str] | None = None, cmap: str = "jet",
                     alpha: float = 0.5, colorbar: bool = True) -> Any:
    """Rows = methods, columns = images: each cell an overlay with its own colour bar.

    Args:
        images: ``(N, C, H, W)`` in ``[0, 1]``.
        maps: method name → ``(N, H, W)`` saliency maps (a value may be ``None``: empty row).
        rois: optional ``(N, H, W)`` ROI masks drawn as white contours.
        titles: optional column titles.
        cmap: colour map.
        alpha: opacity of the saliency layer.
        colorbar: draw a colour bar per cell (raw values).

    Returns:
        A matplotlib figure.
    """
    plt = _mpl()
    n = len(images)
    names = list(maps)
    rows = len(names) + 1
    fig, axes = plt.subplots(rows, n, figsize=(2.4 * n, 2.1 * rows), squeeze=False)
    for j in range(n):
        ax = axes[0, j]
        ax.imshow(to_hwc(images[j]))
        if rois is not None and _np(rois[j]).any():
            ax.contour(_np(rois[j]), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(str(titles[j]), fontsize=9)
        if j == 0:
            ax.set_ylabel("input + ROI", fontsize=9)
        for i, name in enumerate(names, start=1):
            ax = axes[i, j]
            m = maps[name]
            if m is None:
                ax.axis("off")
                continue
            _draw_overlay(ax, images[j], m[j], rois[j] if rois is not None else None, cmap,
                          alpha, colorbar, fig)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.tight_layout()
    return fig


def training_curves(history: Sequence[Mapping[str, Any]], title: str = "") -> Any:
    """Training loss and validation mIoU per epoch (two panels)."""
    plt = _mpl()
    epochs = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(7.5, 2.8))
    a.plot(epochs, [h["loss"] for h in history], marker="o")
    a.set_xlabel("epoch")
    a.set_ylabel("training loss")
    vals = [(h["epoch"], h["val_miou"]) for h in history if h.get("val_miou") is not None]
    if vals:
        b.plot([v[0] for v in vals], [v[1] for v in vals], marker="o", color="tab:green")
    b.set_xlabel("epoch")
    b.set_ylabel("validation mIoU")
    b.set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
