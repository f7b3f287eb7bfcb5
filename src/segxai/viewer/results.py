"""The viewer's explanations: run the chosen methods on a selection, score them with
deletion/insertion curves, and render or export the results. Plain functions, no Gradio."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segxai.core.errors import SegxaiError
from segxai.core.target import Score
from segxai.viewer.logic import Selection, ViewerModel, model_input, record_of

__all__ = [
    "MethodResult",
    "cost_markdown",
    "curves_image",
    "explain_selection",
    "export_results",
    "parse_params",
]

RANDOM = "random baseline"
"""Name of the reference row: a uniformly random ranking of the pixels."""


@dataclass
class MethodResult:
    """One method's outcome on one selection.

    Attributes:
        method: registry name (or :data:`RANDOM`).
        params: the parameters it was called with.
        saliency: ``(H, W)`` raw map, or ``None`` when it failed.
        overlay: ``(H, W, 3)`` uint8 overlay of the map on the image, or ``None``.
        cost: :meth:`segxai.Cost.as_dict` of the explanation.
        fractions: ``(T + 1,)`` x-axis of the curves.
        deletion: ``(T + 1,)`` deletion curve (ROI mean probability), or ``None``.
        insertion: ``(T + 1,)`` insertion curve, or ``None``.
        deletion_auc: area under the deletion curve (lower = more faithful).
        insertion_auc: area under the insertion curve (higher = more faithful).
        error: the error message when the method failed (shown in the page).
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    saliency: np.ndarray | None = None
    overlay: np.ndarray | None = None
    cost: dict[str, Any] = field(default_factory=dict)
    fractions: np.ndarray | None = None
    deletion: np.ndarray | None = None
    insertion: np.ndarray | None = None
    deletion_auc: float | None = None
    insertion_auc: float | None = None
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-friendly numbers (no maps)."""
        return {"method": self.method, "params": self.params, "cost": self.cost,
                "deletion_auc": self.deletion_auc, "insertion_auc": self.insertion_auc,
                "deletion": None if self.deletion is None else self.deletion.tolist(),
                "insertion": None if self.insertion is None else self.insertion.tolist(),
                "error": self.error}


def parse_params(text: str, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Explainer parameters from the page's text box: one ``METHOD.KEY=VALUE`` per line or
    comma (``KEY=VALUE`` alone when one method is chosen); keys are checked against the
    explainers, as the CLI's ``--param`` does."""
    from segxai.cli.grammar import resolve_params

    items = [s.strip() for line in (text or "").splitlines() for s in line.split(";")]
    try:
        return resolve_params([s for s in items if s], list(methods))
    except SegxaiError as exc:  # name the page's box, not the CLI option
        raise SegxaiError(str(exc).replace("--param", "parameters")) from None


def _overlay(pixels: np.ndarray, saliency: np.ndarray, roi: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    from segxai.core.postprocess import overlay

    out = overlay(pixels, saliency)
    edge = roi & ~ndimage.binary_erosion(roi, structure=np.ones((3, 3), bool))
    out[edge] = 1.0
    return (out * 255.0 + 0.5).astype(np.uint8)


def explain_selection(model: ViewerModel, pixels: np.ndarray, selection: Selection,
                      methods: Sequence[str], params: Mapping[str, Mapping[str, Any]] | None = None,
                      *, steps: int = 20, score: Score = "logit_sum",
                      seed: int = 0) -> list[MethodResult]:
    """Explain ``selection`` with each method, then score each map with deletion (mean
    colour) and insertion (blur) curves of the ROI mean probability.

    A method that fails gives a :class:`MethodResult` with ``error`` set instead of raising, so
    one failure does not hide the others. The last result is the random baseline's curves.

    Args:
        model: the viewer's model.
        pixels: ``(H, W, 3)`` image in ``[0, 1]``.
        selection: class and ROI.
        methods: registered explainer names.
        params: ``{method: {key: value}}`` explainer parameters.
        steps: deletion/insertion steps (0 skips the curves).
        score: the explained score (``"logit_sum"`` or ``"prob_mean"``).
        seed: seed of the random baseline and of the curves' tie-breaking (explainers take
            theirs from ``params``).

    Returns:
        One :class:`MethodResult` per method, then the random baseline (when ``steps > 0``).
    """
    from segxai.core.registry import get_explainer, make_generator
    from segxai.core.target import Target
    from segxai.evaluate.curves import deletion_insertion

    if not methods:
        raise SegxaiError("methods: expected at least one method, got none")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise SegxaiError(f"steps: expected an integer >= 0, got {steps!r}")
    x = model_input(model, pixels)
    roi = torch.from_numpy(selection.roi.astype(np.float32))[None]
    target = Target.from_mask(roi, class_index=selection.class_index, score=score)
    params = params or {}
    results: list[MethodResult] = []
    for method in methods:
        p = dict(params.get(method, {}))
        res = MethodResult(method, p)
        try:
            expl = get_explainer(method)(**p)(model.adapter, x, target)
            res.saliency = expl.numpy()[0].astype(np.float32)
            res.overlay = _overlay(pixels, res.saliency, selection.roi)
            res.cost = expl.cost.as_dict()
        except Exception as exc:  # shown in the page; one method must not hide the others
            res.error = f"{type(exc).__name__}: {exc}"
        results.append(res)
    if steps == 0:
        return results
    h, w = selection.roi.shape
    rand = torch.rand(1, h, w, generator=make_generator(seed)).numpy()[0]
    results.append(MethodResult(RANDOM, {"seed": seed}, saliency=rand))
    for res in results:
        if res.saliency is None:
            continue
        t0 = time.perf_counter()
        try:
            dele, ins = deletion_insertion(model.adapter, x, target,
                                           torch.from_numpy(res.saliency)[None], steps=steps,
                                           seed=seed)
        except Exception as exc:  # shown in the page
            res.error = f"curves: {type(exc).__name__}: {exc}"
            continue
        res.fractions = dele.fractions
        res.deletion, res.insertion = dele.scores[0], ins.scores[0]
        res.deletion_auc, res.insertion_auc = float(dele.auc[0]), float(ins.auc[0])
        res.cost["curve_seconds"] = round(time.perf_counter() - t0, 3)
    return results


def curves_image(results: Sequence[MethodResult]) -> np.ndarray | None:
    """Deletion and insertion curves of every result side by side, as an RGB uint8 image
    (``None`` when no result has curves)."""
    with_curves = [r for r in results if r.deletion is not None and r.fractions is not None]
    if not with_curves:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.2))
    for r in with_curves:
        style = {"color": "grey", "linestyle": "--"} if r.method == RANDOM else {}
        axes[0].plot(r.fractions, r.deletion, label=f"{r.method} ({r.deletion_auc:.3f})", **style)
        axes[1].plot(r.fractions, r.insertion, label=f"{r.method} ({r.insertion_auc:.3f})",
                     **style)
    for ax, title in zip(axes, ("deletion (lower AUC = better)",
                                "insertion (higher AUC = better)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("fraction of pixels")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("ROI mean probability")
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()  # type: ignore[attr-defined]
    plt.close(fig)
    return img


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def cost_markdown(results: Sequence[MethodResult]) -> str:
    """A Markdown table: cost and deletion/insertion AUC per method (errors in the last
    column)."""
    lines = ["| method | seconds | forward | backward | deletion AUC | insertion AUC | status |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        c = r.cost
        status = "ok" if r.error is None else "error: " + r.error.replace("|", "/")[:300]
        lines.append(f"| {r.method} | {_fmt(c.get('seconds'))} | {_fmt(c.get('forward_passes'))}"
                     f" | {_fmt(c.get('backward_passes'))} | {_fmt(r.deletion_auc)} | "
                     f"{_fmt(r.insertion_auc)} | {status} |")
    return "\n".join(lines)


def export_results(results: Sequence[MethodResult], model: ViewerModel, image_name: str,
                   selection: Selection, out_dir: str | Path) -> list[Path]:
    """Write ``METHOD.png`` (overlay), ``METHOD.npy`` (raw map) per method and
    ``record.json`` (model, image, class, ROI, parameters, cost, curves, AUCs) to ``out_dir``.

    Returns:
        The written paths (the record last).
    """
    from PIL import Image

    from segxai.core.runstore import atomic_write_bytes, atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for r in results:
        if r.method == RANDOM or r.saliency is None or r.overlay is None:
            continue
        stem = r.method.replace("/", "_")
        buf = _png_bytes(Image.fromarray(r.overlay))
        atomic_write_bytes(out / f"{stem}.png", buf)
        atomic_write_bytes(out / f"{stem}.npy", _npy_bytes(r.saliency))
        files += [out / f"{stem}.png", out / f"{stem}.npy"]
    record = record_of(model, image_name, selection,
                       {"results": [r.summary() for r in results]})
    atomic_write_json(out / "record.json", record)
    files.append(out / "record.json")
    return files


def _png_bytes(img: Any) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
