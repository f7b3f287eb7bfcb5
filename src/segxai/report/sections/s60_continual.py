"""RQ3: compressed replay for class-incremental segmentation (a small live run + pointers)."""

from __future__ import annotations

import html
import math
import shutil
from typing import Any

import numpy as np
import torch

from segxai.report.context import DemoContext
from segxai.report.html import Section, figure_to_html, table_html

ORDER = 60
TITLE = "RQ3: compressed replay"

FULL_COMMAND = "segxai continual --out segxai-continual --workers 2"


def _demo_config(quick: bool):
    from segxai.continual.experiment import ContinualConfig, quick_config

    if quick:
        # about 10 s on one core: 16-pixel images, one epoch per task
        return quick_config(strategies=["full", "saliency-box"], epochs=1, base_epochs=2,
                            n_train=48, n_val=24, size=16,
                            budget_bytes=20 * (4 * 16 * 16 + 4))
    # about a minute on two idle cores: 64-pixel images, reduced epochs, one seed
    return ContinualConfig(strategies=["full", "saliency-box"], seeds=[0], epochs=3,
                           base_epochs=8, n_train=200, n_val=60)


def _exemplar_figure(ctx: DemoContext) -> str:
    """One sample compressed by each strategy (saliency of the demo's model on its GT classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segxai.continual.compress import compress, exemplar_nbytes, reconstruct
    from segxai.continual.learner import saliency_maps

    masks = ctx.masks.cpu()
    fg = [i for i in range(len(masks)) if bool(((masks[i] > 0) & (masks[i] < 255)).any())]
    if not fg:
        return ""
    i = fg[0]
    image, mask = ctx.images[i:i + 1].cpu(), masks[i:i + 1]
    sal = saliency_maps(ctx.model, image.to(ctx.device), mask.to(ctx.device),
                        explainer="seg-grad-cam", device=ctx.device)[0]
    img8 = (image[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    msk8 = mask[0].clamp(0, 255).to(torch.uint8).numpy()
    size = msk8.shape
    fig, axes = plt.subplots(2, 5, figsize=(11, 4.6))
    axes[0, 0].imshow(sal, cmap="inferno")
    axes[0, 0].set_title("saliency (Seg-Grad-CAM)", fontsize=8)
    axes[1, 0].imshow(msk8, vmin=0, vmax=len(ctx.class_names) - 1, cmap="tab10",
                      interpolation="nearest")
    axes[1, 0].set_title("ground truth", fontsize=8)
    for col, strategy in enumerate(("full", "downsample", "saliency-patch", "saliency-box"), 1):
        ex = compress(img8, msk8, strategy, task=0, cls=1, saliency=sal)
        rec_img, rec_msk = reconstruct(ex, strategy, size)
        axes[0, col].imshow(rec_img.transpose(1, 2, 0), interpolation="nearest")
        axes[0, col].set_title(f"{strategy}: {exemplar_nbytes(ex)} B", fontsize=8)
        shown = np.where(rec_msk == 255, np.nan, rec_msk.astype(float))
        axes[1, col].imshow(shown, vmin=0, vmax=len(ctx.class_names) - 1, cmap="tab10",
                            interpolation="nearest")
        axes[1, col].set_title("replayed mask (white = ignore)", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    return figure_to_html(fig, "One exemplar as each strategy stores and replays it (r = 4, "
                          "τ = 0.6); bytes = the stored arrays' nbytes.",
                          save_to=ctx.figures_dir / "continual_exemplars.png")


def _fmt(v: Any, scale: float = 100.0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{scale * float(v):.1f}"


def build(ctx: DemoContext) -> Section:
    """Run a reduced continual experiment (2 strategies × 1 seed) and show its results."""
    from segxai.continual.experiment import (
        load_results,
        plot_results,
        run_experiment,
        summarise,
    )

    config = _demo_config(ctx.quick)
    out = ctx.out_dir / ("continual-quick" if ctx.quick else "continual")
    cfg_path = out / "config.json"
    if cfg_path.exists():
        import json

        if json.loads(cfg_path.read_text()) != json.loads(json.dumps(config.to_dict())):
            shutil.rmtree(out)  # a stale run of another configuration
    run_experiment(config, out, device=ctx.device, progress=ctx.progress)
    rows = load_results(out, config)
    summary = summarise(rows, config)
    parts = [
        "<p>Class-incremental segmentation on <code>shapes</code> (overlapped protocol: in "
        "each task only the current classes are labelled, old and future ones are "
        "background). Tasks: "
        + html.escape(" → ".join("{" + ", ".join(ctx.class_names[c] if c < len(
            ctx.class_names) else str(c) for c in task) + "}" for task in config.tasks))
        + f". The replay memory has a real budget of {config.budget_bytes:,} bytes "
        "(the stored uint8 arrays and coordinates themselves), split evenly over the seen "
        "classes. <code>full</code> stores whole exemplars; <code>saliency-box</code> (CIM-like) "
        f"keeps the box around Seg-Grad-CAM saliency above τ = {config.tau} at full resolution "
        f"and the rest at 1/√{config.r:g} per side.</p>",
        f"<p>This is a reduced live run ({len(config.strategies)} strategies × "
        f"{len(config.seeds)} seed, {config.size}×{config.size} pixels, {config.epochs} "
        "epoch(s) per task); the numbers are indicative only. The full experiment (all five "
        "strategies, three seeds) is <code>" + html.escape(FULL_COMMAND) + "</code>; its "
        "measured results and analysis are in <code>docs/continual.md</code>.</p>",
    ]
    table = []
    for e in summary["table"]:
        table.append({"strategy": e["strategy"],
                      "exemplars (last task)": f"{e['exemplars_replayed']:.0f}",
                      "bytes (last task)": f"{e['bytes_replayed']:.0f}",
                      "old mIoU %": _fmt(e["miou_old"]), "new mIoU %": _fmt(e["miou_new"]),
                      "all mIoU %": _fmt(e["miou_all"]),
                      "forgetting %": _fmt(e["forgetting"])})
    parts.append(table_html(table, caption=f"after the last task (task {summary['final_task']});"
                                           " exemplars and bytes = the memory replayed in it"))
    per_task = [{"strategy": r["strategy"], "task": r["task"], "old %": _fmt(r["miou_old"]),
                 "new %": _fmt(r["miou_new"]), "all %": _fmt(r["miou_all"]),
                 "exemplars": r["exemplars"], "bytes": r["bytes"]} for r in rows]
    parts.append(table_html(per_task, caption="after each task (results.csv)"))
    figs = plot_results(rows, config)
    parts.append(figure_to_html(figs[0], "mIoU after each task (all seen classes; old classes)",
                                save_to=ctx.figures_dir / "continual_miou.png"))
    parts.append(figure_to_html(figs[1], "exemplars stored vs bytes used",
                                save_to=ctx.figures_dir / "continual_exemplars_bytes.png"))
    parts.append(_exemplar_figure(ctx))
    data = {"config": config.to_dict(), "summary": summary["table"], "results_dir": str(out),
            "full_command": FULL_COMMAND}
    return Section(TITLE, "\n".join(p for p in parts if p), data, ORDER)
