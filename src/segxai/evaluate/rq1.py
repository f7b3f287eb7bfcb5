"""The RQ1 study: which explanation method, at which layer, under which substrate, with 95 %
intervals, on three model families trained by segxai (``segxai evaluate --study rq1``).

Parts, each a resumable run directory under ``OUT`` (models are trained once and cached in
the user cache, :func:`~segxai.evaluate.rq1_models.model_cache`):

1. ``OUT/MODEL/main``: every method at its default (faithful) layer with the default
   substrates, and the random baseline; means with bootstrap intervals and per-image paired
   differences against the random baseline (:mod:`segxai.evaluate.tables`).
2. ``OUT/MODEL/layers``: the layer study (:mod:`segxai.evaluate.layer_study`).
3. ``OUT/MODEL/substrate-S``: deletion and insertion with substrate ``S``; the rankings of the
   methods under each substrate are compared with the default's (Spearman ρ with an interval
   over images, :func:`~segxai.evaluate.agreement.ranking_agreement`).
4. ``OUT/context-bias``: ground-truth faithfulness (CBD/CBL) on a U-Net trained on the biased
   split and on a control trained without the cue, same test images, paired differences.

``OUT/rq1.json`` holds every number and ``OUT/rq1.md`` the tables and the conclusions generated
from them (:mod:`segxai.evaluate.rq1_report`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from segxai.core.adapter import adapt
from segxai.core.errors import SegxaiError
from segxai.core.runstore import atomic_write_json, atomic_write_text, to_jsonable
from segxai.evaluate.agreement import ranking_agreement
from segxai.evaluate.config import RANDOM_BASELINE, EvalConfig
from segxai.evaluate.intervals import bootstrap_mean, paired_difference
from segxai.evaluate.layer_study import CAM_METHODS, default_layer_name, layer_study
from segxai.evaluate.pairs import select_images
from segxai.evaluate.rq1_models import (
    RQ1_MODELS,
    Family,
    ModelSpec,
    model_cache,
    trained_model,
)
from segxai.evaluate.runner import evaluate_methods
from segxai.evaluate.substrates import SUBSTRATES
from segxai.evaluate.tables import check_interval_images, interval_table, per_image

__all__ = ["Rq1Config", "run_rq1"]

FULL_METHODS = ("gradient", "smoothgrad", "integrated-gradients", "seg-grad-cam", "hirescam",
                "xgradcam", "grad-cam++", "seg-ablation-cam", "occlusion", "grid-saliency")
QUICK_METHODS = ("gradient", "integrated-gradients", "seg-grad-cam", "grad-cam++")
STUDY_SUBSTRATES = ("road", "dataset-mean", "mean", "blur")


@dataclass
class Rq1Config:
    """Settings of the RQ1 study (:meth:`quick_config` for ``--quick``).

    Attributes:
        images: validation images per model in the main table (≥ 2; the study uses 100).
        layer_images: images of the layer study.
        substrate_images: images of the substrate comparison.
        bias_images: test images of the context-bias part (≤ this many are usable).
        steps: deletion/insertion steps.
        models: model names (:data:`~segxai.evaluate.rq1_models.RQ1_MODELS`).
        methods: methods of the main table and the substrate comparison.
        layer_methods: CAM-type methods of the layer study.
        substrates: substrates compared (the first is the reference).
        method_params: explainer parameters per method.
        quick: the quick recipe of the models.
        seed: seed of data, training and evaluation.
        cache_dir: where trained models are cached (default ``$SEGXAI_CACHE`` or
            ``~/.cache/segxai``; see :func:`~segxai.evaluate.rq1_models.model_cache`).
    """

    images: int = 100
    layer_images: int = 100
    substrate_images: int = 100
    bias_images: int = 100
    steps: int = 20
    models: tuple[str, ...] = RQ1_MODELS
    methods: tuple[str, ...] = FULL_METHODS
    layer_methods: tuple[str, ...] = CAM_METHODS
    substrates: tuple[str, ...] = STUDY_SUBSTRATES
    method_params: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "grid-saliency": {"iterations": 50}, "smoothgrad": {"n_samples": 16}})
    quick: bool = False
    seed: int = 0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("images", "layer_images", "substrate_images", "bias_images"):
            check_interval_images(getattr(self, name), name)
        for s in self.substrates:
            if s not in SUBSTRATES:
                raise SegxaiError(f"substrates: expected names from {', '.join(SUBSTRATES)}, "
                                  f"got {s!r}")
        for m in self.models:
            if m not in RQ1_MODELS:
                raise SegxaiError(f"models: expected names from {', '.join(RQ1_MODELS)}, got "
                                  f"{m!r}")

    @classmethod
    def quick_config(cls, seed: int = 0) -> Rq1Config:
        """A few minutes once the quick models are cached: 3 images (2 in the layer study),
        8 steps, 4 methods, Seg-Grad-CAM only in the layer study."""
        return cls(images=3, layer_images=2, substrate_images=3, bias_images=3, steps=8,
                   methods=QUICK_METHODS, layer_methods=("seg-grad-cam",),
                   method_params={"integrated-gradients": {"n_steps": 8}}, quick=True,
                   seed=seed)

    def eval_config(self, methods: tuple[str, ...] | list[str], **kw: Any) -> EvalConfig:
        return EvalConfig(methods=list(methods), steps=self.steps, seed=self.seed,
                          method_params={m: p for m, p in self.method_params.items()
                                         if m in methods}, **kw)


def _substrate_agreement(runs: dict[str, Any], methods: list[str], reference: str,
                         seed: int) -> list[dict[str, Any]]:
    """Spearman ρ (with interval) between the method ranking under ``reference`` and under
    each other substrate, for deletion and insertion AUC, on the images all runs share."""
    out: list[dict[str, Any]] = []
    for metric in ("deletion_auc", "insertion_auc"):
        values = {s: {m: per_image(r.rows, m, metric) for m in methods} for s, r in runs.items()}
        common = sorted(set.intersection(*(set(v) for s in values for v in values[s].values())))
        if len(common) < 2 or len(methods) < 3:
            continue
        ref = [[values[reference][m][i] for m in methods] for i in common]
        for s in runs:
            if s == reference:
                continue
            other = [[values[s][m][i] for m in methods] for i in common]
            try:
                ci = ranking_agreement(np.asarray(ref), np.asarray(other), seed=seed)
            except SegxaiError as exc:  # a constant ranking: rho undefined
                out.append({"metric": metric, "reference": reference, "substrate": s,
                            "error": str(exc)})
                continue
            out.append({"metric": metric, "reference": reference, "substrate": s,
                        "rho": ci.estimate, "lo": ci.lo, "hi": ci.hi, "images": len(common)})
    return out


def _model_part(name: str, cfg: Rq1Config, out: Path, device: str,
                progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    tm = trained_model(ModelSpec(cast(Family, name)), cfg.cache_dir, quick=cfg.quick,
                       device=device, progress=progress, seed=cfg.seed)
    data = tm.val_data
    n_max = max(cfg.images, cfg.layer_images, cfg.substrate_images)
    keep = select_images(tm.model, data.images, n_max, device=device)
    pred = adapt(tm.model).predict(data.images[keep].to(device))
    keep = [i for j, i in enumerate(keep) if bool((pred[j] != 0).any())]
    part: dict[str, Any] = {"model": name, "val_miou": tm.val_miou,
                            "train_seconds": tm.train_seconds}
    if len(keep) < 2:  # a finding, not a crash: nothing to explain on this model
        part["skipped"] = (f"the model predicts a foreground class on {len(keep)} of "
                           f"{len(data)} validation images (at least 2 are needed)")
        return part
    ids = [str(i) for i in keep]
    images, masks = data.images[keep], data.masks[keep]
    part["default_layer"] = default_layer_name(tm.model, images)
    n = min(cfg.images, len(keep))
    main = evaluate_methods(tm.model, images[:n], masks[:n],
                            config=cfg.eval_config(cfg.methods),
                            out_dir=out / name / "main", image_ids=ids[:n], device=device,
                            progress=progress, write_figures=False)
    methods = [*cfg.methods, RANDOM_BASELINE]
    part["main"] = interval_table(main.rows, methods, seed=cfg.seed)
    part["images"] = n
    part["failures"] = main.failures
    n = min(cfg.layer_images, len(keep))
    study = layer_study(tm.model, images[:n], masks[:n], methods=cfg.layer_methods,
                        config=cfg.eval_config([]), out_dir=out / name / "layers",
                        image_ids=ids[:n], device=device, progress=progress,
                        title=f"{name}: CAM methods per layer")
    part["layers"] = {"stages": [s.to_dict() for s in study.stages], "table": study.table,
                      "images": n, "figure": str(out / name / "layers" / "figures" /
                                                 "layers.png")}
    n = min(cfg.substrate_images, len(keep))
    runs = {}
    for s in cfg.substrates:
        sub_cfg = cfg.eval_config(cfg.methods, deletion_substrate=s, insertion_substrate=s,
                                  context_deletion=False)
        runs[s] = evaluate_methods(tm.model, images[:n], masks[:n], config=sub_cfg,
                                   out_dir=out / name / f"substrate-{s}", image_ids=ids[:n],
                                   device=device, progress=progress, write_figures=False)
    part["substrates"] = {
        "images": n,
        "means": {s: interval_table(r.rows, methods, ("deletion_auc", "insertion_auc"),
                                    seed=cfg.seed) for s, r in runs.items()},
        "agreement": _substrate_agreement(runs, methods, cfg.substrates[0], cfg.seed)}
    part["seconds"] = time.perf_counter() - t0
    return part


def _bias_part(cfg: Rq1Config, out: Path, device: str, progress: bool) -> dict[str, Any]:
    """CBD/CBL on a biased and a control U-Net, same test images, with intervals."""
    from segxai.data import make_context_bias
    from segxai.evaluate.context_bias import (
        bias_sanity,
        context_bias_benchmark,
        train_bias_model,
    )

    models = {kind: train_bias_model(model_cache(f"context-bias-{kind}", cfg.quick, cfg.seed,
                                                 cfg.cache_dir), quick=cfg.quick,
                                     unbiased=kind == "control", seed=cfg.seed, device=device,
                                     progress=progress) for kind in ("biased", "control")}
    n_test = max(4 * cfg.bias_images, 24)
    test = make_context_bias(n_test, size=64, seed=20_000 + cfg.seed, bias_prob=1.0)
    unbiased = make_context_bias(n_test, size=64, seed=20_000 + cfg.seed, unbiased=True)
    methods = [m for m in cfg.methods if "@" not in m]
    part: dict[str, Any] = {"methods": {}}
    rows = {}
    for kind, model in models.items():
        part[f"{kind}_sanity"] = bias_sanity(model, test, unbiased, int(test.bias_class))
        rows[kind] = {r["method"]: r for r in context_bias_benchmark(
            model, test, methods, params=cfg.method_params, max_images=cfg.bias_images)}
    for m in methods:
        entry: dict[str, Any] = {}
        for kind in models:
            r = rows[kind][m]
            for metric in ("cbd", "cbl"):
                vals = [v for v in r[f"{metric}_values"] if v == v]
                if len(vals) >= 2:
                    ci = bootstrap_mean(vals, seed=cfg.seed)
                    entry[f"{kind}_{metric}"] = [ci.estimate, ci.lo, ci.hi, ci.n]
        b, c = rows["biased"][m], rows["control"][m]
        bi = dict(zip(b["image_indices"], b["cbl_values"]))
        ci_ = dict(zip(c["image_indices"], c["cbl_values"]))
        common = [i for i in bi if i in ci_ and bi[i] == bi[i] and ci_[i] == ci_[i]]
        if len(common) >= 2:
            d = paired_difference([bi[i] for i in common], [ci_[i] for i in common],
                                  seed=cfg.seed).difference
            entry["cbl_difference"] = [d.estimate, d.lo, d.hi, d.n]
        part["methods"][m] = entry
    return part


def run_rq1(out_dir: str | Path, config: Rq1Config | None = None, *, device: str = "cpu",
            progress: bool = False) -> dict[str, Any]:
    """Run (or resume) the RQ1 study into ``out_dir``; write ``rq1.json`` and ``rq1.md``.

    Args:
        out_dir: the study directory.
        config: the settings (default: the full study).
        device: torch device.
        progress: show progress bars.

    Returns:
        The study's numbers (as written to ``rq1.json``).
    """
    from segxai.evaluate.rq1_report import rq1_markdown

    cfg = config if config is not None else Rq1Config()
    out = Path(out_dir)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"config": asdict(replace(cfg)), "models": []}
    for name in cfg.models:
        result["models"].append(_model_part(name, cfg, out, device, progress))
    result["context_bias"] = _bias_part(cfg, out, device, progress)
    result["seconds"] = time.perf_counter() - t0
    result = to_jsonable(result)
    atomic_write_json(out / "rq1.json", result)
    atomic_write_text(out / "rq1.md", rq1_markdown(result))
    return result
