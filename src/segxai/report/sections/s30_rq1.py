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


INTERVAL_COLUMNS = ("deletion_auc", "insertion_auc", "context_deletion_auc", "seconds")
INTERVAL_HEADER = ["method", "deletion AUC ↓", "Δ deletion", "insertion AUC ↑", "Δ insertion",
                   "context deletion ↓", "seconds"]


def _interval_rows(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from segxai.evaluate.tables import format_row, lookup

    out = []
    for m in dict.fromkeys(e["method"] for e in table):
        row: dict[str, Any] = {"method": m}
        for metric, mean_col, diff_col in (("deletion_auc", "deletion AUC ↓", "Δ deletion"),
                                           ("insertion_auc", "insertion AUC ↑", "Δ insertion"),
                                           ("context_deletion_auc", "context deletion ↓", None),
                                           ("seconds", "seconds", None)):
            e = lookup(table, m, metric)
            mean, diff = format_row(e) if e is not None else ("–", "")
            row[mean_col] = mean
            if diff_col:
                row[diff_col] = diff
        out.append(row)
    return out


def interval_findings(table: list[dict[str, Any]], default_layer: str) -> list[str]:
    """Findings computed from the interval table: the best method per faithfulness metric and
    whether Seg-Grad-CAM at the default layer beats the random baseline."""
    from segxai.evaluate.tables import best_method, format_row, lookup

    lines = []
    for metric, label in (("deletion_auc", "deletion AUC"), ("insertion_auc", "insertion AUC")):
        b = best_method(table, metric)
        if b is not None:
            lines.append(f"Best {label}: {b['method']} {format_row(b)[0]}.")
    verdicts = {m: lookup(table, "seg-grad-cam", m) for m in ("deletion_auc", "insertion_auc")}
    if all(v is not None and "diff" in v for v in verdicts.values()):
        beats = all(v["beats_baseline"] is True for v in verdicts.values() if v is not None)
        diffs = ", ".join(f"{m}: {format_row(v)[1]}" for m, v in verdicts.items()
                          if v is not None)
        lines.append(f"Seg-Grad-CAM at the default layer {default_layer} "
                     f"{'beats' if beats else 'does not beat'} the random baseline on both "
                     f"deletion and insertion (paired differences {diffs}).")
    return lines


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
    from segxai.evaluate import (
        RANDOM_BASELINE,
        EvalConfig,
        evaluate_methods,
        interpret,
        select_images,
    )
    from segxai.evaluate.figures import plot_auc_vs_seconds, plot_mean_curves
    from segxai.evaluate.layer_study import default_layer_name
    from segxai.evaluate.tables import interval_table

    methods = list_explainers()
    n = 2 if ctx.quick else 6  # at least 2: every mean gets a 95 % interval
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
    table = interval_table(res.rows, [*methods, RANDOM_BASELINE], INTERVAL_COLUMNS,
                           seed=ctx.seed) if len(images) >= 2 else []
    findings = interval_findings(table, default_layer_name(ctx.model, images)) + \
        interpret(summary)
    skipped = sorted({s["image"] for s in res.skipped})
    notes = []
    if skipped:
        notes.append(f"Image(s) {', '.join(skipped)} skipped: the model predicts no foreground "
                     "class there.")
    for f in res.failures:
        notes.append(f"Image {f['image']}, {f['method']} failed: {f['error']}")
    settings = (f"{len(images)} image(s) of the demo set, {steps} deletion/insertion steps "
                f"(deletion substrate: ROAD noisy linear imputation; insertion: Gaussian blur "
                f"σ 5), CAM methods at the faithful default layer (the one feeding the "
                f"classifier head), tracked score "
                "= mean probability of the explained class over the ROI predicted on the clean "
                "image. Context-only deletion never deletes ROI pixels. The random-baseline "
                "row ranks pixels at random and is the floor every method should beat.")
    if ctx.quick:
        settings += " Quick mode: few images and steps, reduced iterations; numbers are noisy."
    body = (f"<p>{escape(settings)}</p>"
            + table_html(rows, COLUMNS, caption="Mean metrics per method")
            + (table_html(_interval_rows(table), INTERVAL_HEADER,
                          caption="Means with 95 % bootstrap intervals over images; Δ = "
                                  "per-image paired difference to the random baseline (✓ "
                                  "better, ✗ worse: interval excludes 0)") if table else "")
            + "<h3>Interpretation (computed from the numbers above)</h3><ul>"
            + "".join(f"<li>{escape(line)}</li>" for line in findings) + "</ul>"
            + "".join(f"<p><em>{escape(n_)}</em></p>" for n_ in notes)
            + curves_html + scatter_html)
    data = {"summary": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                         for k, v in r.items()} for r in summary],
            "findings": findings, "skipped_images": skipped, "failures": res.failures,
            "results_dir": str(out), "steps": steps, "intervals": table}
    return Section(TITLE, body, data, ORDER)
