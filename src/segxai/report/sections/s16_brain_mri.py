"""The built-in U-Net trained on real brain-MRI tissue slices (the MNI152 template shipped in
the ``nilearn`` wheel, :func:`segxai.data.load_brain`) and explained: every method on held-out
slices for the class *white matter*, with deletion/insertion AUCs and 95 % intervals against
the random baseline."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from segxai.report.context import DemoContext
from segxai.report.html import Section, escape, figure_to_html, table_html

GRID_DPI = 72
"""Resolution of the embedded method × image grid (the PNG in figures/ keeps 100 dpi)."""
ORDER = 16
TITLE = "The built-in U-Net on real brain-MRI slices"

SIZE = 64
WHITE_MATTER = 2
VAL_BLOCK = (0.55, 0.70)
"""Held-out slices: this contiguous range of the (inferior → superior) slice order."""

FULL_PARAMS: dict[str, dict[str, Any]] = {
    "occlusion": {"window": 8, "stride": 8},
    "grid-saliency": {"iterations": 30},
    "integrated-gradients": {"n_steps": 16},
    "smoothgrad": {"n_samples": 10},
}
"""Budgets that keep ``make demo`` within its time on two cores."""
QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "occlusion": {"window": 16, "stride": 16},
    "grid-saliency": {"iterations": 10},
    "integrated-gradients": {"n_steps": 5},
    "smoothgrad": {"n_samples": 4},
}


def _recipe(quick: bool, seed: int) -> tuple[Any, Any]:
    from segxai.models.trainconfig import TrainConfig
    from segxai.models.unet import UNetConfig

    if quick:
        return (UNetConfig(depth=3, base_width=8, num_classes=3),
                TrainConfig(epochs=5, batch_size=8, lr=3e-3, seed=seed))
    return (UNetConfig(depth=3, base_width=8, num_classes=3),
            TrainConfig(epochs=10, batch_size=8, lr=3e-3, seed=seed))


def _split(n: int) -> tuple[list[int], list[int]]:
    lo, hi = int(VAL_BLOCK[0] * n), int(VAL_BLOCK[1] * n)
    return [i for i in range(n) if not lo <= i < hi], list(range(lo, hi))


def build(ctx: DemoContext) -> Section:
    """Train (or load from the cache) the U-Net on brain slices, then explain it."""
    from segxai.core.target import Target
    from segxai.data.real import load_brain
    from segxai.models.metrics import evaluate_segmentation
    from segxai.models.train import train_model
    from segxai.models.unet import UNet, count_parameters
    from segxai.report.figures import explanation_grid, segmentation_grid
    from segxai.report.sections._faithfulness import findings, interval_rows, maps_of, run_methods

    ds = load_brain(size=SIZE)
    train_idx, val_idx = _split(len(ds))
    train, val = ds.subset(train_idx), ds.subset(val_idx)
    model_cfg, train_cfg = _recipe(ctx.quick, ctx.seed)
    key = hashlib.sha1(json.dumps([model_cfg.to_dict(), train_cfg.to_dict(), SIZE, VAL_BLOCK],
                                  sort_keys=True).encode()).hexdigest()[:10]
    out = (ctx.cache_dir or ctx.out_dir) / f"brain-unet-{key}"
    torch.manual_seed(ctx.seed)
    model = UNet(model_cfg)
    result = train_model(model, train, val, train_cfg, out_dir=out, device=ctx.device,
                         progress=ctx.progress)
    model.eval()
    ev = evaluate_segmentation(model, val, device=ctx.device)

    # explain held-out slices where the model predicts white matter, spread over the block
    with torch.no_grad():
        pred = model(val.images.to(ctx.device)).argmax(1).cpu()
    has_wm = [i for i in range(len(val)) if bool((pred[i] == WHITE_MATTER).any())]
    n = 3 if ctx.quick else 6
    pick = [has_wm[round(j * (len(has_wm) - 1) / max(n - 1, 1))] for j in range(n)] \
        if len(has_wm) >= n else has_wm
    if len(pick) < 2:
        raise RuntimeError("the brain model predicts white matter in fewer than 2 slices")
    images = val.images[pick].to(ctx.device)
    target = Target.from_prediction(model, images, WHITE_MATTER, roi="class")
    steps = 8 if ctx.quick else 10
    budgets = QUICK_PARAMS if ctx.quick else FULL_PARAMS
    runs = run_methods(model, images, target, lambda m: dict(budgets.get(m, {})), steps=steps,
                       seed=ctx.seed)
    rows = interval_rows(runs)
    lines = findings(runs, len(pick), "the brain slices")
    axial = ds.meta.get("slices")  # the axial index of every slice of the full set
    slices = [int(axial[val_idx[i]]) if axial is not None else int(val_idx[i]) for i in pick]
    titles = [f"slice {s}" for s in slices]
    iou_rows = [{"class": c, "IoU": "-" if v is None else round(v, 3)}
                for c, v in zip(val.class_names, ev["iou"])]
    iou_rows.append({"class": "mean (mIoU)", "IoU": round(ev["miou"], 3)})
    seg_fig = segmentation_grid(images.cpu(), val.masks[pick], pred[pick], val.class_names,
                                titles=titles)
    grid = explanation_grid(images.cpu(), maps_of(runs), rois=target.roi.cpu(), titles=titles)
    body = "".join([
        "<p>Real data: axial slices of the MNI152 2009a T1 template with its grey- and "
        "white-matter probability maps thresholded at 0.5 (shipped in the <code>nilearn</code> "
        f"wheel, read by path). {len(ds)} slices at {SIZE}×{SIZE}; a contiguous block of "
        f"{len(val)} slices ({int(VAL_BLOCK[0] * 100)}-{int(VAL_BLOCK[1] * 100)} % of the "
        "inferior-to-superior order) is held out, the rest trains the built-in U-Net "
        f"({count_parameters(model):,} parameters, {train_cfg.epochs} epochs). All slices come "
        "from one template brain, so the held-out score measures interpolation between "
        "neighbouring levels of the same brain, not generalisation to other brains.</p>",
        table_html(iou_rows, caption=f"held-out IoU per class (best epoch "
                                     f"{result.best_epoch})"),
        figure_to_html(seg_fig, "held-out slices: input, ground truth, prediction",
                       save_to=ctx.figures_dir / "brain_segmentation.png"),
        f"<p>Explained: the class <em>white matter</em>, ROI = its predicted pixels, on "
        f"{len(pick)} held-out slices; deletion/insertion with {steps} steps, compared with "
        "a random ranking on the same slices (paired differences, 95 % bootstrap intervals, "
        f"exact one-sided sign-flip p-values). Budgets: {escape(str(budgets))}.</p>",
        table_html(rows, caption="deletion/insertion AUC per method [95 % interval] and the "
                                 "paired difference from random"),
        "<h3>Findings (written from the numbers above)</h3><ul>",
        "".join(f"<li>{escape(s)}</li>" for s in lines), "</ul>",
        figure_to_html(grid, "brain U-Net: rows = methods, columns = held-out slices; white "
                             "outline = predicted white matter",
                       save_to=ctx.figures_dir / "brain_explanations.png", dpi=GRID_DPI),
    ])
    data = {"n_slices": len(ds), "val_slices": len(val), "val_miou": ev["miou"],
            "val_iou": ev["iou"], "explained_slices": slices, "steps": steps, "rows": rows,
            "findings": lines, "params": budgets, "train_seconds": sum(h.get("seconds", 0.0)
                                                    for h in result.history),
            "checkpoint": str(out)}
    return Section(TITLE, body, data, ORDER)
