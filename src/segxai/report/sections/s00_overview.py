"""Overview: the data, the built-in model, its training and its predictions on the samples."""

from __future__ import annotations

import html

import torch

from segxai.report.context import DemoContext
from segxai.report.html import Section, figure_to_html, table_html

ORDER = 0
TITLE = "Data, model and predictions"


def build(ctx: DemoContext) -> Section:
    """The overview section (no explainer is run; a few forward passes only)."""
    from segxai.models.metrics import evaluate_segmentation
    from segxai.models.unet import count_parameters
    from segxai.report.figures import segmentation_grid, training_curves

    builtin = ctx.extra.get("builtin")
    model = ctx.model
    with torch.no_grad():
        was = model.training
        model.eval()
        pred = model(ctx.images).argmax(dim=1)
        model.train(was)
    parts: list[str] = []
    data: dict = {"class_names": ctx.class_names, "n_samples": int(ctx.images.shape[0]),
                  "image_size": list(ctx.images.shape[-2:])}

    # data
    parts.append("<p>The synthetic <code>shapes</code> data: discs, squares, triangles and rings "
                 "(1-4 per image, random size, rotation and colour) on textured, noisy "
                 "backgrounds, generated deterministically from a seed. The class is given by "
                 "the shape alone.</p>")
    # model
    cfg = getattr(model, "config", None)
    if cfg is not None:
        rows = [{"field": k, "value": str(v)} for k, v in cfg.to_dict().items()]
        rows.append({"field": "parameters", "value": f"{count_parameters(model):,}"})
        parts.append(table_html(rows, caption="built-in U-Net"))
        data["model"] = cfg.to_dict()
        data["parameters"] = count_parameters(model)

    # training
    if builtin is not None:
        val = builtin.val_data
        ev = evaluate_segmentation(model, val, device=ctx.device)
        data["val_miou"] = ev["miou"]
        data["val_iou"] = ev["iou"]
        data["pixel_accuracy"] = ev["pixel_accuracy"]
        iou_rows = [{"class": n, "IoU": ("-" if v is None else round(v, 4))}
                    for n, v in zip(val.class_names, ev["iou"])]
        iou_rows.append({"class": "mean (mIoU)", "IoU": round(ev["miou"], 4)})
        parts.append(f"<p>Validation split: {len(val)} images; checkpoint "
                     f"<code>{html.escape(str(builtin.path))}</code>.</p>")
        parts.append(table_html(iou_rows, caption="validation IoU per class"))
        if builtin.history:
            hist = [{"epoch": h["epoch"], "loss": round(h["loss"], 4),
                     "val mIoU": "-" if h.get("val_miou") is None else round(h["val_miou"], 4),
                     "seconds": round(h.get("seconds", 0.0), 1)} for h in builtin.history]
            parts.append(table_html(hist, caption="training history"))
            parts.append(figure_to_html(training_curves(builtin.history),
                                        "training loss and validation mIoU per epoch",
                                        save_to=ctx.figures_dir / "training.png"))
            data["history"] = builtin.history

    # predictions
    sample_ious = []
    for i in range(ctx.images.shape[0]):
        gt, pr = ctx.masks[i], pred[i]
        ious = []
        for c in torch.unique(gt).tolist():
            inter = int(((gt == c) & (pr == c)).sum())
            union = int(((gt == c) | (pr == c)).sum())
            ious.append(inter / union)
        sample_ious.append(sum(ious) / len(ious))
    titles = [f"sample {i} (mIoU {v:.2f})" for i, v in enumerate(sample_ious)]
    fig = segmentation_grid(ctx.images.cpu(), ctx.masks.cpu(), pred.cpu(), ctx.class_names,
                            titles=titles)
    parts.append(figure_to_html(fig, "input, ground truth and prediction of the sample images",
                                save_to=ctx.figures_dir / "samples.png"))
    data["sample_miou"] = sample_ious
    return Section(title=TITLE, body="\n".join(parts), data=data, order=ORDER)
