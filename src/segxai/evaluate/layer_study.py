"""Layer study: the CAM-type methods at every stage of a model, with 95 % intervals.

Every CAM-type method (:data:`CAM_METHODS`: Seg-Grad-CAM and its HiResCAM / XGrad-CAM
weightings, Grad-CAM++, Seg-Ablation-CAM) explains each stage listed by
:func:`~segxai.evaluate.stages.model_stages` (encoder stages, bottleneck, decoder stages, the
layer feeding the head; for torchvision FCN/DeepLab/LRASPP the backbone's stages). The pairs
run through the ordinary runner as methods ``NAME@LAYER`` (resumable, with the random
baseline), and :func:`layer_table` turns the rows into per-layer means with intervals and
paired differences against the random baseline (:mod:`segxai.evaluate.tables`).

Example:
    >>> from segxai.models import UNet, UNetConfig
    >>> net = UNet(UNetConfig(depth=2, base_width=4, num_classes=3))
    >>> names, stages = layer_methods(net, torch.rand(1, 3, 16, 16), ["decoder.1"],
    ...                               methods=["seg-grad-cam"])
    >>> names
    ['seg-grad-cam@decoder.1']
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from segxai.core.adapter import adapt
from segxai.core.errors import SegxaiError
from segxai.core.layers import default_cam_layer, module_name
from segxai.core.runstore import atomic_write_bytes, atomic_write_json, to_jsonable
from segxai.evaluate.config import METRIC_DIRECTION, RANDOM_BASELINE, EvalConfig, EvalResult
from segxai.evaluate.runner import evaluate_methods
from segxai.evaluate.stages import Stage, model_stages
from segxai.evaluate.tables import check_interval_images, interval_table

__all__ = ["CAM_METHODS", "LAYER_METRICS", "LayerStudy", "best_layers", "default_layer_name",
           "layer_methods", "layer_study", "layer_table", "plot_layers", "write_layer_outputs"]

CAM_METHODS = ("seg-grad-cam", "hirescam", "xgradcam", "grad-cam++", "seg-ablation-cam")
LAYER_METRICS = ("deletion_auc", "insertion_auc", "context_deletion_auc", "pointing_game",
                 "energy_pointing_game")


def default_layer_name(model: Any, images: Tensor) -> str:
    """Dotted name of the faithful default layer (:func:`segxai.core.layers.default_cam_layer`)."""
    module = adapt(model).module
    if module is None:
        raise SegxaiError("model: expected an nn.Module for a layer study, got a plain callable")
    with torch.no_grad():
        return module_name(module, default_cam_layer(module, images[:1]))


def layer_methods(model: Any, images: Tensor, layers: str | Sequence[str] = "all", *,
                  methods: Sequence[str] = CAM_METHODS) -> tuple[list[str], list[Stage]]:
    """The runner method names ``NAME@LAYER`` of a layer study and the stages they explain.

    Args:
        model: the model (or adapter).
        images: ``(N, C, H, W)`` images (the first one probes the stages).
        layers: ``"all"`` or stage names (as listed by :func:`model_stages`).
        methods: CAM-type methods (registered explainers or variants with a ``layer=``).

    Returns:
        ``(names, stages)``: method-major names and the chosen stages in depth order.

    Raises:
        SegxaiError: an unknown layer (the message lists the valid stages), no layer, or a
            model without spatial layers.
    """
    module = adapt(model).module
    if module is None:
        raise SegxaiError("model: expected an nn.Module for a layer study, got a plain callable")
    stages = model_stages(module, images)
    by_name = {s.name: s for s in stages}
    if isinstance(layers, str) and layers == "all":
        chosen = stages
    else:
        wanted = [layers] if isinstance(layers, str) else list(layers)
        if not wanted:
            raise SegxaiError("layers: expected 'all' or at least one stage name, got none")
        unknown = [w for w in wanted if w not in by_name]
        if unknown:
            raise SegxaiError(f"layers: expected 'all' or stage names of this model ("
                              f"{', '.join(by_name)}), got unknown {', '.join(unknown)}")
        chosen = sorted((by_name[w] for w in dict.fromkeys(wanted)), key=lambda s: s.depth)
    return [f"{m}@{s.name}" for m in methods for s in chosen], chosen


def layer_table(rows: Sequence[dict[str, Any]], stages: Sequence[Stage],
                methods: Sequence[str] = CAM_METHODS, metrics: Sequence[str] = LAYER_METRICS,
                *, default_layer: str | None = None, resamples: int = 10_000,
                seed: int = 0) -> list[dict[str, Any]]:
    """Per (method, layer, metric): mean with interval and the paired difference against the
    random baseline, plus ``"base", "layer", "depth", "kind", "stride", "default"``."""
    names = [f"{m}@{s.name}" for m in methods for s in stages]
    table = interval_table(rows, [*names, RANDOM_BASELINE], metrics, resamples=resamples,
                           seed=seed)
    by_name = {s.name: s for s in stages}
    for e in table:
        base, _, layer = e["method"].partition("@")
        st = by_name.get(layer)
        e.update(base=base, layer=layer or None, depth=st.depth if st else None,
                 kind=st.kind if st else None, stride=st.stride if st else None,
                 default=layer == default_layer if layer else False)
    return table


def best_layers(table: Sequence[dict[str, Any]], metric: str) -> dict[str, str]:
    """``{method: layer with the best mean on metric}``."""
    sign = METRIC_DIRECTION.get(metric, 1)
    out: dict[str, tuple[float, str]] = {}
    for e in table:
        if e["metric"] != metric or not e.get("layer"):
            continue
        score = sign * e["mean"]
        if e["base"] not in out or score > out[e["base"]][0]:
            out[e["base"]] = (score, e["layer"])
    return {m: layer for m, (_, layer) in out.items()}



def plot_layers(table: Sequence[dict[str, Any]], stages: Sequence[Stage],
                metrics: Sequence[str] = LAYER_METRICS, title: str = "") -> Any:
    """Metric vs depth: one panel per metric, one line per method with its 95 % interval,
    the random baseline as a grey band and the default layer as a dashed vertical line."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.4), squeeze=False)
    depths = [s.depth for s in stages]
    for ax, metric in zip(axes[0], metrics):
        entries = [e for e in table if e["metric"] == metric]
        for base in dict.fromkeys(e["base"] for e in entries if e.get("layer")):
            pts = sorted((e for e in entries if e["base"] == base and e.get("layer")),
                         key=lambda e: e["depth"])
            x = [e["depth"] for e in pts]
            ax.errorbar(x, [e["mean"] for e in pts],
                        yerr=[[e["mean"] - e["lo"] for e in pts],
                              [e["hi"] - e["mean"] for e in pts]],
                        marker="o", ms=3, capsize=2, label=base)
            for e in pts:
                if e.get("default"):
                    ax.axvline(e["depth"], color="k", ls="--", lw=0.8)
        rb = next((e for e in entries if e["method"] == RANDOM_BASELINE), None)
        if rb is not None:
            ax.axhspan(rb["lo"], rb["hi"], color="grey", alpha=0.3, label="random (95 % CI)")
        ax.set_xticks(depths)
        ax.set_xticklabels([s.name for s in stages], rotation=60, fontsize=7)
        ax.set_title(metric.replace("_", " ") + (" ↓" if METRIC_DIRECTION.get(metric) == -1
                                                  else " ↑"), fontsize=9)
    axes[0][0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def write_layer_outputs(out_dir: Path, stages: Sequence[Stage], default: str,
                        table: Sequence[dict[str, Any]], title: str = "") -> None:
    """``OUT/layers.json`` (stages, default layer, table) and ``OUT/figures/layers.png``,
    each written atomically."""
    import matplotlib.pyplot as plt

    atomic_write_json(out_dir / "layers.json", to_jsonable(
        {"stages": [s.to_dict() for s in stages], "default_layer": default,
         "table": list(table)}))
    fig = plot_layers(table, stages, title=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(out_dir / "figures" / "layers.png", buf.getvalue())


@dataclass
class LayerStudy:
    """A finished layer study.

    Attributes:
        stages: the stages studied.
        default_layer: the faithful default layer's name.
        table: :func:`layer_table` entries.
        result: the runner's :class:`~segxai.evaluate.config.EvalResult`.
    """

    stages: list[Stage]
    default_layer: str
    table: list[dict[str, Any]]
    result: EvalResult


def layer_study(model: nn.Module | Any, images: Tensor, masks: Tensor | None = None, *,
                layers: str | Sequence[str] = "all", methods: Sequence[str] = CAM_METHODS,
                config: EvalConfig | None = None, out_dir: str | Path | None = None,
                image_ids: Sequence[str] | None = None, device: str = "cpu",
                progress: bool = False, title: str = "", executor: Any = None) -> LayerStudy:
    """Run the CAM-type ``methods`` at every chosen stage and tabulate them per layer.

    Args:
        model: the model (or adapter).
        images: ``(N, C, H, W)`` model-space images (N ≥ 2: every mean gets an interval).
        masks: optional ground-truth masks (localisation metrics, target choice).
        layers: ``"all"`` or stage names.
        methods: CAM-type methods.
        config: curve settings (its ``methods`` are replaced by the layer study's).
        out_dir: the run directory (resumable); also receives ``layers.json`` and
            ``figures/layers.png``.
        image_ids: image names.
        device: torch device.
        progress: show a progress bar.
        title: figure title.
        executor: the runner's executor (``--workers``; default in-process).

    Returns:
        A :class:`LayerStudy`.
    """
    check_interval_images(int(images.shape[0]))
    names, stages = layer_methods(model, images, layers, methods=methods)
    base = config if config is not None else EvalConfig()
    cfg = replace(base, methods=names, random_baseline=True)
    result = evaluate_methods(model, images, masks, config=cfg, out_dir=out_dir,
                              image_ids=image_ids, device=device, progress=progress,
                              write_figures=False, executor=executor)
    default = default_layer_name(model, images)
    table = layer_table(result.rows, stages, methods, default_layer=default, seed=cfg.seed)
    if out_dir is not None:
        write_layer_outputs(Path(out_dir), stages, default, table, title=title)
    return LayerStudy(stages, default, table, result)
