"""Occlusion study: how the fill colour and the window size change occlusion maps.

As in the seed's occlusion study (Gipiškis & Kurasova 2023), the same images are explained
with several fills (black, grey, dataset mean, Gaussian blur, noise) and window sizes. Each
map gets a small deletion-style number: the ROI mean probability of the class after the top
10 % pixels of the map are replaced by the dataset-mean colour (lower = the map found pixels
the prediction needs), next to the same deletion of 10 % random pixels.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from segxai.report.context import DemoContext
from segxai.report.html import Section, figure_to_html, table_html

ORDER = 20
TITLE = "Occlusion study: fills and window sizes"

FILLS = ("black", "grey", "dataset-mean", "blur", "noise")
DELETE_FRACTION = 0.10


def _targets(model: torch.nn.Module, images: Tensor, masks: Tensor):
    """Per image: the foreground class with the largest predicted area (ground truth when the
    model predicts no foreground); ROI = its predicted (or true) pixels."""
    from segxai.core.adapter import adapt
    from segxai.core.target import Target

    pred = adapt(model).predict(images).cpu()
    classes, rois = [], []
    for p, g in zip(pred, masks.cpu(), strict=True):
        counts = torch.bincount(p.flatten(), minlength=2)[1:]
        src = p if int(counts.sum()) > 0 else g
        counts = torch.bincount(src.flatten(), minlength=2)[1:]
        c = int(counts.argmax()) + 1 if int(counts.sum()) > 0 else 0
        classes.append(c)
        rois.append(src == c)
    return Target.from_mask(torch.stack(rois), class_index=classes)


def deletion_prob(model: torch.nn.Module, images: Tensor, target: Any, maps: Tensor,
                  colour: Tensor, fraction: float = DELETE_FRACTION) -> Tensor:
    """ROI mean class probability after replacing the top ``fraction`` pixels of each map by
    ``colour`` (``1×C×1×1``, model space). Ties are broken by pixel order (stable sort)."""
    from segxai.core.adapter import adapt

    adapter = adapt(model)
    n, _, h, w = images.shape
    k = max(1, int(round(fraction * h * w)))
    order = torch.sort(maps.flatten(1), dim=1, descending=True, stable=True).indices[:, :k]
    drop = torch.zeros(n, h * w, dtype=torch.bool, device=images.device)
    drop.scatter_(1, order.to(images.device), True)
    drop = drop.view(n, 1, h, w)
    deleted = torch.where(drop, colour.to(images), images)
    with torch.no_grad(), adapter.explaining():
        logits = adapter(deleted)
    return target.with_score("prob_mean").to(images.device).score_from_logits(
        logits, binary=adapter.binary).cpu()


def build(ctx: DemoContext) -> Section:
    """Occlusion maps for every fill and window size on the same images, with a figure, a
    deletion-style table and the cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segxai.core.adapter import adapt
    from segxai.core.registry import explain, make_generator

    n_img = 2 if ctx.quick else min(4, int(ctx.images.shape[0]))
    images = ctx.images[:n_img].to(ctx.device)
    masks = ctx.masks[:n_img]
    h, w = images.shape[-2:]
    side = min(h, w)
    windows = [max(2, side // 4)] if ctx.quick else [max(2, side // 8), max(2, side // 4)]
    adapter = adapt(ctx.model)
    target = _targets(ctx.model, images, masks)
    px = adapter.to_pixels(images)
    dataset_mean = [float(v) for v in px.mean(dim=(0, 2, 3))]
    mean_colour = adapter.colour(dataset_mean, images)
    with torch.no_grad(), adapter.explaining():
        clean = target.with_score("prob_mean").to(images.device).score_from_logits(
            adapter(images), binary=adapter.binary).cpu()
    g = make_generator(ctx.seed)
    random_maps = torch.rand(n_img, h, w, generator=g).to(images.device)
    random_del = deletion_prob(ctx.model, images, target, random_maps, mean_colour)

    rows: list[dict[str, Any]] = []
    maps: dict[tuple[int, str], Tensor] = {}
    data: dict[str, Any] = {"windows": windows, "fills": list(FILLS),
                            "clean_roi_prob": clean.tolist(),
                            "random_deletion_roi_prob": random_del.tolist(), "runs": []}
    for win in windows:
        for fill in FILLS:
            t0 = time.perf_counter()
            e = explain(ctx.model, images, target, method="occlusion", window=win,
                        stride=max(1, win // 2), fill=fill, dataset_mean=dataset_mean,
                        seed=ctx.seed)
            seconds = time.perf_counter() - t0
            m = e.maps.detach()
            maps[(win, fill)] = m.cpu()
            after = deletion_prob(ctx.model, images, target, m, mean_colour)
            pos = m.clamp(min=0).cpu()
            share = ((pos * target.roi).flatten(1).sum(1)
                     / pos.flatten(1).sum(1).clamp_min(1e-12))
            rng = (m.flatten(1).max(1).values - m.flatten(1).min(1).values).cpu()
            row = {"window": f"{win}×{win} / stride {max(1, win // 2)}", "fill": fill,
                   "ROI prob after deleting top 10%": round(float(after.mean()), 4),
                   "drop vs clean": round(float((clean - after).mean()), 4),
                   "ROI share of positive map": round(float(share.mean()), 3),
                   "map range": round(float(rng.mean()), 3),
                   "forward passes": e.cost.forward_passes, "seconds": round(seconds, 2)}
            rows.append(row)
            data["runs"].append({**row, "per_image_after": after.tolist()})

    # figure: one row per (image, window), one column per fill, maps min-max normalised
    from segxai.core.postprocess import minmax

    n_rows = n_img * len(windows)
    fig, axes = plt.subplots(n_rows, len(FILLS) + 1, figsize=(2.0 * (len(FILLS) + 1),
                                                             2.0 * n_rows), squeeze=False)
    shown = px.clamp(0, 1).cpu()
    for i in range(n_img):
        for wi, win in enumerate(windows):
            r = i * len(windows) + wi
            ax = axes[r][0]
            img = shown[i].permute(1, 2, 0).numpy() if shown.shape[1] == 3 else shown[i, 0].numpy()
            ax.imshow(img, cmap=None if shown.shape[1] == 3 else "gray")
            ax.contour(target.roi[i].numpy(), levels=[0.5], colors="white", linewidths=0.8)
            cname = ctx.class_names[int(target.class_index[i])] \
                if int(target.class_index[i]) < len(ctx.class_names) else str(
                    int(target.class_index[i]))
            ax.set_title(f"{cname}, window {win}", fontsize=8)
            for j, fill in enumerate(FILLS):
                ax = axes[r][j + 1]
                ax.imshow(minmax(maps[(win, fill)][i:i + 1])[0].numpy(), cmap="jet",
                          vmin=0, vmax=1)
                ax.contour(target.roi[i].numpy(), levels=[0.5], colors="white",
                           linewidths=0.5)
                if r == 0:
                    ax.set_title(fill, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    figure = figure_to_html(fig, "occlusion maps (min-max per map) for each fill and window; "
                                 "white outline = ROI",
                            save_to=ctx.figures_dir / "occlusion_study.png")
    body = "".join([
        "<p>Occlusion sensitivity (mean drop of the ROI logit sum over the windows covering "
        "each pixel) for the same images with different fills and window sizes (stride = half "
        "the window). Fills are defined in pixel space: black, grey 0.5, the mean colour of "
        "the sample images, a Gaussian-blurred copy (σ 5) and seeded uniform noise. The "
        f"deletion-style number replaces the top {int(DELETE_FRACTION * 100)} % pixels of each "
        "map with the mean colour and measures the class's ROI mean probability "
        f"(clean: {float(clean.mean()):.4f}; deleting 10 % random pixels: "
        f"{float(random_del.mean()):.4f}); lower means the map points at pixels the "
        "prediction needs. The full deletion/insertion curves are in the evaluation "
        "section.</p>",
        table_html(rows, caption=f"{n_img} image(s); numbers are means over images"),
        figure,
    ])
    return Section(TITLE, body, data, ORDER)
