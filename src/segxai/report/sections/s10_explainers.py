"""Every registered explainer on the sample images: overlays and a cost table."""

from __future__ import annotations

import html
import inspect
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from segxai.report.context import DemoContext
from segxai.report.html import Section, figure_to_html, table_html

if TYPE_CHECKING:
    from segxai.core.registry import Explainer

ORDER = 10
TITLE = "Explanations of every registered method"

QUICK_BUDGETS: dict[str, int] = {
    "n_samples": 4, "num_samples": 4, "n_masks": 64, "num_masks": 64, "iterations": 10,
    "n_iter": 10, "max_iter": 10, "steps": 5, "n_steps": 5,
}
"""Budget parameters lowered in quick mode (only where the explainer has them and its default
is larger)."""


def choose_targets(model: torch.nn.Module, images: Tensor, masks: Tensor):
    """One :class:`~segxai.Target` for the samples: in each image the foreground class with
    the largest predicted area, ROI = its predicted pixels (the ground-truth pixels of the
    largest ground-truth class when the model predicts no foreground)."""
    from segxai.core.target import Target

    with torch.no_grad():
        was = model.training
        model.eval()
        pred = model(images).argmax(dim=1)
        model.train(was)
    classes, rois = [], []
    for p, g in zip(pred, masks):
        counts = torch.bincount(p.flatten(), minlength=2)[1:]
        if int(counts.sum()) > 0:
            c = int(counts.argmax()) + 1
            roi = p == c
        else:
            gcounts = torch.bincount(g.flatten(), minlength=2)[1:]
            c = int(gcounts.argmax()) + 1
            roi = g == c
        classes.append(c)
        rois.append(roi)
    return Target.from_mask(torch.stack(rois).float(), class_index=classes)


def budget_params(cls: type[Explainer], quick: bool) -> dict[str, Any]:
    """The parameters an explainer is called with: defaults, except the quick budgets."""
    if not quick:
        return {}
    out = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in QUICK_BUDGETS and isinstance(p.default, int) and not isinstance(p.default, bool):
            if p.default > QUICK_BUDGETS[name]:
                out[name] = QUICK_BUDGETS[name]
    return out


def build(ctx: DemoContext) -> Section:
    """Run each explainer of :func:`segxai.list_explainers` once on all sample images."""
    from segxai.core.registry import get_explainer, list_explainers
    from segxai.report.figures import explanation_grid

    target = choose_targets(ctx.model, ctx.images, ctx.masks)
    maps: dict[str, Tensor | None] = {}
    rows: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    n = int(ctx.images.shape[0])
    for name in list_explainers():
        cls = get_explainer(name)
        params = budget_params(cls, ctx.quick)
        t0 = time.perf_counter()
        try:
            expl = cls(**params)(ctx.model, ctx.images, target)
        except Exception as exc:  # one broken method must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"
            maps[name] = None
            rows.append({"method": name, "params": str(params), "forward": "-",
                         "backward": "-", "partial forward": "-",
                         "seconds": round(time.perf_counter() - t0, 3),
                         "ms / image": "-", "ROI share": "-", "status": "FAILED"})
            continue
        m = expl.maps.detach().float().cpu()
        maps[name] = m
        pos = m.clamp(min=0)
        share = (pos * target.roi.cpu()).flatten(1).sum(1) / pos.flatten(1).sum(1).clamp_min(1e-12)
        cost = expl.cost
        rows.append({"method": name, "params": str(params or "defaults"),
                     "forward": cost.forward_passes, "backward": cost.backward_passes,
                     "partial forward": cost.partial_forward_passes,
                     "seconds": round(cost.seconds, 3),
                     "ms / image": round(1000 * cost.seconds / n, 1),
                     "ROI share": round(float(share.mean()), 3), "status": "ok"})
    ctx.extra["explanations"] = {k: v for k, v in maps.items() if v is not None}
    ctx.extra["explain_target"] = target
    for name, err in errors.items():
        ctx.extra.setdefault("failures", []).append(f"explainer {name}: {err}")

    names = [ctx.class_names[int(c)] for c in target.class_index]
    parts = [
        "<p>Each registered explainer is called once on all sample images with its default "
        "parameters" + (" (quick mode: smaller sample/iteration budgets)" if ctx.quick else "")
        + ". Target: in each image the foreground class with the largest predicted area; its "
        "predicted pixels form the region of interest (white outline); score = the class's "
        "logits summed over the ROI. Colour bars show each map's raw values.</p>",
        table_html(rows, caption="cost per method (passes = images through the network, for "
                                 f"all {n} images together); ROI share = fraction of positive "
                                 "saliency inside the ROI"),
    ]
    if errors:
        items = "".join(f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>"
                        for k, v in errors.items())
        parts.append(f"<p class='note'><strong>Failed methods:</strong></p><ul>{items}</ul>")
    fig = explanation_grid(ctx.images.cpu(), maps, rois=target.roi.cpu(),
                           titles=[f"sample {i}: {c}" for i, c in enumerate(names)])
    parts.append(figure_to_html(fig, "saliency overlays: rows = methods, columns = images",
                                save_to=ctx.figures_dir / "explanations.png"))
    return Section(title=TITLE, body="\n".join(parts),
                   data={"methods": rows, "errors": errors, "classes": names}, order=ORDER)
