"""Demo section "RQ1: which explanation method": faithfulness, localisation, complexity and
cost of every registered explainer on the built-in model, from :mod:`segxai.evaluate`."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import numpy as np

from segxai.report.context import DemoContext
from segxai.report.html import Section, escape, figure_to_html, table_html

ORDER = 30
TITLE = "RQ1: which explanation method"

COLUMNS = ["method", "images", "deletion_auc", "insertion_auc", "context_deletion_auc",
           "pointing_game", "energy_pointing_game", "sparseness", "complexity", "seconds",
           "forward_passes", "backward_passes"]


def _fingerprint(model: Any) -> str:
    h = hashlib.sha1()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def _quick_params(methods: list[str]) -> dict[str, dict[str, Any]]:
    """Smaller iteration/sample counts for the quick demo, for explainers that take them."""
    from segxai.core.registry import get_explainer

    params: dict[str, dict[str, Any]] = {}
    for m in methods:
        accepted = inspect.signature(get_explainer(m).__init__).parameters
        p = {}
        if "iterations" in accepted:
            p["iterations"] = 20
        if "n_samples" in accepted:
            p["n_samples"] = 8
        if p:
            params[m] = p
    return params


def build(ctx: DemoContext) -> Section:
    from segxai.core.registry import list_explainers
    from segxai.evaluate import EvalConfig, evaluate_methods, interpret, select_images
    from segxai.evaluate.figures import plot_auc_vs_seconds, plot_mean_curves

    methods = list_explainers()
    n = 1 if ctx.quick else 6
    steps = 10 if ctx.quick else 100
    config = EvalConfig(methods=methods, steps=steps, seed=ctx.seed,
                        method_params=_quick_params(methods) if ctx.quick else {})
    out = ctx.out_dir / f"rq1-{'quick' if ctx.quick else 'full'}-{_fingerprint(ctx.model)}"
    keep = select_images(ctx.model, ctx.images, n, device=ctx.device)
    images = ctx.images[keep]
    masks = ctx.masks[keep] if ctx.masks is not None else None
    res = evaluate_methods(ctx.model, images, masks, config=config, out_dir=out,
                           image_ids=[str(i) for i in keep], device=ctx.device,
                           progress=ctx.progress, write_figures=False)
    summary = res.summary
    rows = [{c: r.get(c, float("nan")) for c in COLUMNS} for r in summary]
    figs_dir = ctx.figures_dir
    curves_html = figure_to_html(plot_mean_curves(res.curves, score=config.score),
                                 "Mean deletion, insertion and context-only deletion curves "
                                 "per method (ROI mean probability of the explained class).",
                                 save_to=figs_dir / "rq1_curves.png")
    scatter_html = figure_to_html(plot_auc_vs_seconds(summary),
                                  "Quality/cost trade-off: AUC vs seconds per explanation.",
                                  save_to=figs_dir / "rq1_auc_vs_seconds.png")
    findings = interpret(summary)
    skipped = sorted({s["image"] for s in res.skipped})
    notes = []
    if skipped:
        notes.append(f"Image(s) {', '.join(skipped)} skipped: the model predicts no foreground "
                     "class there.")
    for f in res.failures:
        notes.append(f"Image {f['image']}, {f['method']} failed: {f['error']}")
    settings = (f"{len(images)} image(s) of the demo set, {steps} deletion/insertion steps "
                f"(deletion substrate: mean colour; insertion: Gaussian blur σ 5), tracked score "
                "= mean probability of the explained class over the ROI predicted on the clean "
                "image. Context-only deletion never deletes ROI pixels. The random-baseline "
                "row ranks pixels at random and is the floor every method should beat.")
    if ctx.quick:
        settings += " Quick mode: few images and steps, reduced iterations; numbers are noisy."
    body = (f"<p>{escape(settings)}</p>"
            + table_html(rows, COLUMNS, caption="Mean metrics per method")
            + "<h3>Interpretation (computed from the numbers above)</h3><ul>"
            + "".join(f"<li>{escape(line)}</li>" for line in findings) + "</ul>"
            + "".join(f"<p><em>{escape(n_)}</em></p>" for n_ in notes)
            + curves_html + scatter_html)
    data = {"summary": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                         for k, v in r.items()} for r in summary],
            "findings": findings, "skipped_images": skipped, "failures": res.failures,
            "results_dir": str(out), "steps": steps}
    return Section(TITLE, body, data, ORDER)
