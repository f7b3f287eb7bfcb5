"""A real model on real photographs: every method on MediaPipe's selfie segmentation network
(converted to PyTorch, :func:`segxai.models.selfie`) and photographs bundled with installed
packages (:func:`segxai.data.real.load_photographs`) at 256×256, with deletion/insertion AUCs
and 95 % intervals against the random baseline.

This is the demo-sized run (about a minute with ``--quick``); the full study on every bundled
photograph, with the layer study, is :mod:`segxai.report.sections._selfie_study` (numbers and
command in docs/evaluation.md, "The selfie network")."""

from __future__ import annotations

from typing import Any

import torch

from segxai.report.context import DemoContext
from segxai.report.html import Section, escape, figure_to_html, table_html

GRID_DPI = 72
"""Resolution of the embedded method × image grid (the PNG in figures/ keeps 100 dpi)."""
ORDER = 15
TITLE = "A real model on real photographs"

PHOTOS = ("astronaut", "camera", "grace_hopper", "coffee", "chelsea", "lion")
"""Bundled photographs (:data:`segxai.data.real.PHOTOGRAPHS`, no download); quick mode uses the
first three, the three that show people."""
SIZE = 256
PERSON = 1

FULL_PARAMS: dict[str, dict[str, Any]] = {
    "occlusion": {"window": 32, "stride": 32},
    "grid-saliency": {"iterations": 15, "cell_size": 16},
    "integrated-gradients": {"n_steps": 8},
    "smoothgrad": {"n_samples": 6},
}
"""Budgets at 256×256 on a CPU (the defaults are sized for 64×64 images)."""
QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "occlusion": {"window": 64, "stride": 64},
    "grid-saliency": {"iterations": 8, "cell_size": 32},
    "integrated-gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 3},
}


def photographs(names: tuple[str, ...], size: int = SIZE) -> tuple[torch.Tensor, list[str]]:
    """``(N, 3, size, size)`` bundled photographs in ``[0, 1]`` and the names found (a
    photograph whose package is not installed is left out)."""
    from segxai.data.real import load_photographs

    photos = load_photographs(list(names), size=size)
    return photos.images, photos.names


def build(ctx: DemoContext) -> Section:
    """Explain the predicted person region of each photograph with every method."""
    from segxai.core.adapter import adapt
    from segxai.core.target import Target
    from segxai.evaluate.layer_study import default_layer_name
    from segxai.models.mediapipe_selfie import selfie
    from segxai.report.figures import explanation_grid
    from segxai.report.sections._faithfulness import findings, interval_rows, maps_of, run_methods
    from segxai.report.sections._selfie_study import PERSON_MIN_SHARE

    steps = 8 if ctx.quick else 10
    budgets = QUICK_PARAMS if ctx.quick else FULL_PARAMS
    net = selfie(device=ctx.device)
    images, names = photographs(PHOTOS[:3] if ctx.quick else PHOTOS)
    images = images.to(ctx.device)
    adapter = adapt(net)
    pred = adapter.predict(images).cpu()
    person = (pred == PERSON).flatten(1).float().mean(1)
    keep = [i for i in range(len(names)) if float(person[i]) >= PERSON_MIN_SHARE]
    if len(keep) < 2:
        raise RuntimeError(f"the selfie network predicts a person in fewer than 2 of {names}")
    images, used = images[keep], [names[i] for i in keep]
    target = Target.from_prediction(adapter, images, PERSON, roi="class")
    runs = run_methods(adapter, images, target, lambda m: dict(budgets.get(m, {})),
                       steps=steps, seed=ctx.seed)
    rows = interval_rows(runs)
    layer = default_layer_name(adapter, images)
    lines = findings(runs, len(used), "the photographs")
    share = {n: round(float(person[names.index(n)]), 3) for n in names}
    titles = [f"{n} ({100 * share[n]:.0f} % person)" for n in used]
    fig = explanation_grid(images.cpu(), maps_of(runs), rois=target.roi.cpu(), titles=titles)
    dropped = [n for n in names if n not in used]
    intro = (
        "<p>MediaPipe's selfie segmentation network (Apache-2.0), converted from its TFLite "
        "file into a native PyTorch module, so that every method, gradients included, runs on "
        f"a network nobody on this project trained. Inputs: {len(used)} photographs bundled "
        f"with installed packages ({escape(', '.join(used))}) resized to {SIZE}×{SIZE}. "
        "Target: the class <em>person</em>, ROI = every pixel the network predicts as "
        "person (an image is used when that is at least "
        f"{100 * PERSON_MIN_SHARE:.0f} % of it), score = the sum of the person logit over "
        f"the ROI; Seg-Grad-CAM explains the layer <code>{escape(layer)}</code>. Each map is "
        "scored by deletion (the map's top pixels removed first and filled by ROAD's noisy "
        "linear imputation) and insertion (restored into a blurred copy first), "
        f"{steps} steps, tracking the ROI mean person "
        "probability; every method is compared with a random ranking of the pixels on the "
        "same images (paired differences, 95 % bootstrap intervals, exact one-sided "
        "sign-flip p-values). Budgets were lowered for 256×256 images on a CPU: "
        f"{escape(str(budgets))}.</p>"
        "<p>The network segments the dominant foreground subject, not only people: it calls "
        + escape(", ".join(f"{n} {100 * v:.0f} %" for n, v in share.items()))
        + " of the pixels a person. The explanations below explain that decision."
        + (f" Excluded (less than {100 * PERSON_MIN_SHARE:.0f} % person predicted): "
           f"{escape(', '.join(dropped))}." if dropped else "")
        + " The full study on every bundled photograph, with Seg-Grad-CAM at every stage of "
        "the network: <code>python -m segxai.report.sections._selfie_study --out DIR</code> "
        "(numbers in docs/evaluation.md, “The selfie network”).</p>")
    body = (intro + table_html(rows, caption="deletion/insertion AUC per method, mean over "
                                             "images [95 % interval], and the paired "
                                             "difference from random")
            + "<h3>Findings (written from the numbers above)</h3><ul>"
            + "".join(f"<li>{escape(s)}</li>" for s in lines) + "</ul>"
            + figure_to_html(fig, "selfie network: rows = methods, columns = photographs; "
                                  "white outline = predicted person",
                             save_to=ctx.figures_dir / "real_model.png", dpi=GRID_DPI))
    data = {"photos": used, "person_share": share, "steps": steps, "params": budgets,
            "cam_layer": layer, "excluded": dropped,
            "rows": rows, "findings": lines,
            "per_image": {r.method: {"deletion": None if r.deletion is None
                                     else r.deletion.tolist(),
                                     "insertion": None if r.insertion is None
                                     else r.insertion.tolist()} for r in runs}}
    return Section(TITLE, body, data, ORDER)
