"""The RQ1 study: which explanation method, at which layer, under which substrate, with 95 %
intervals, on three model families trained by segxai (``segxai evaluate --study rq1``).

Parts, each a resumable run directory under ``OUT`` (models are trained once and cached in
the user cache, :func:`~segxai.evaluate.rq1_models.model_cache`), run in this order so that
an interrupted study has the most important numbers first:

1. training (or loading) the models, one task per model on the executor;
2. ``OUT/MODEL/main`` for every model: every method at its default (faithful) layer with the
   default substrates, and the random baseline; means with bootstrap intervals and per-image
   paired differences against the random baseline (:mod:`segxai.evaluate.tables`);
3. ``OUT/MODEL/layers`` for every model: the layer study (:mod:`segxai.evaluate.layer_study`);
4. the context-bias part: ground-truth faithfulness (CBD/CBL) on a U-Net trained on the
   biased split and on a control trained without the cue (the two train at once), same test
   images, paired differences;
5. ``OUT/MODEL/substrate-S`` for every model: deletion and insertion with substrate ``S``;
   the rankings of the methods under each substrate are compared with the default's
   (Spearman ρ with an interval over images,
   :func:`~segxai.evaluate.agreement.ranking_agreement`).

The (image, method) pairs of parts 2, 3 and 5 run on the executor (``--workers N`` local
processes or ``--ray``) with the numbers of one process. ``OUT/rq1.json`` and ``OUT/rq1.md``
are rewritten after every part (``"complete": false`` until the end), with the wall and CPU
seconds (this process and its workers) of each part under ``"timings"``.

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
from segxai.core.intervals import bootstrap_mean, paired_difference
from segxai.core.runstore import atomic_write_json, atomic_write_text, to_jsonable
from segxai.evaluate.agreement import ranking_agreement
from segxai.evaluate.config import RANDOM_BASELINE, EvalConfig
from segxai.evaluate.layer_study import CAM_METHODS, default_layer_name, layer_study
from segxai.evaluate.pairs import select_images
from segxai.evaluate.rq1_models import (
    BIAS_MODELS,
    RQ1_MODELS,
    Family,
    ModelSpec,
    model_cache,
    train_all,
    trained_model,
)
from segxai.evaluate.runner import evaluate_methods
from segxai.evaluate.substrates import SUBSTRATES
from segxai.evaluate.tables import check_interval_images, interval_table, per_image

__all__ = ["Rq1Config", "run_rq1"]

#: The main table's methods: one of each kind (plain gradient, path integral, CAM, CAM++,
#: ablation, perturbation). SmoothGrad and grid saliency (and the HiResCAM / XGrad-CAM
#: weightings, which the layer study covers) are left out of the default for the 30-minute
#: budget; ``--method`` adds them.
FULL_METHODS = ("gradient", "integrated-gradients", "seg-grad-cam", "grad-cam++",
                "seg-ablation-cam", "occlusion")
QUICK_METHODS = ("gradient", "integrated-gradients", "seg-grad-cam", "grad-cam++")
STUDY_SUBSTRATES = ("road", "dataset-mean", "mean", "blur")


@dataclass
class Rq1Config:
    """Settings of the RQ1 study (:meth:`quick_config` for ``--quick``).

    Attributes:
        images: validation images per model in the main table (≥ 2; the study uses 100).
        layer_images: images of the layer study (the first ones of the main table's).
        substrate_images: images of the substrate comparison (likewise).
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
    layer_images: int = 10
    substrate_images: int = 10
    bias_images: int = 50
    steps: int = 10
    models: tuple[str, ...] = RQ1_MODELS
    methods: tuple[str, ...] = FULL_METHODS
    layer_methods: tuple[str, ...] = CAM_METHODS
    substrates: tuple[str, ...] = STUDY_SUBSTRATES
    method_params: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "integrated-gradients": {"n_steps": 16}, "grid-saliency": {"iterations": 50},
        "smoothgrad": {"n_samples": 16}})
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
        """About a minute of CPU once the quick models are cached: 3 images (2 in the layer
        study and the substrate comparison), 8 steps, 4 methods, Seg-Grad-CAM only in the
        layer study, the quick model recipes."""
        return cls(images=3, layer_images=2, substrate_images=2, bias_images=3, steps=8,
                   methods=QUICK_METHODS, layer_methods=("seg-grad-cam",),
                   method_params={"integrated-gradients": {"n_steps": 8}}, quick=True,
                   seed=seed)

    def sized(self, images: int) -> Rq1Config:
        """This config with ``images`` in the main table, ``images // 10`` (at least 2) in the
        layer study and the substrate comparison and ``images // 2`` (at least 2) in the
        context-bias part (the full study: 100, 10, 10, 50)."""
        check_interval_images(images, "images")
        small = max(2, images // 10)
        return replace(self, images=images, layer_images=small, substrate_images=small,
                       bias_images=max(2, images // 2))

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


@dataclass
class _Model:
    """One model of the study with its evaluated images (those where it predicts a foreground
    class, chosen once for every part) and its entry of ``rq1.json``."""

    name: str
    model: Any
    images: Any
    masks: Any
    ids: list[str]
    part: dict[str, Any]


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished worker processes."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class _Clock:
    """Wall and CPU seconds (this process and its workers) of one part of the study."""

    def __init__(self, timings: dict[str, float], key: str) -> None:
        self.timings, self.key = timings, key

    def __enter__(self) -> _Clock:
        self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timings[self.key] = time.perf_counter() - self.wall
        self.timings[f"{self.key}_cpu"] = _cpu_seconds() - self.cpu


def _load(name: str, cfg: Rq1Config, device: str, progress: bool) -> _Model:
    timings: dict[str, float] = {}
    with _Clock(timings, "load"):
        tm = trained_model(ModelSpec(cast(Family, name)), cfg.cache_dir, quick=cfg.quick,
                           device=device, progress=progress, seed=cfg.seed)
        data = tm.val_data
        n_max = max(cfg.images, cfg.layer_images, cfg.substrate_images)
        keep = select_images(tm.model, data.images, n_max, device=device)
        pred = adapt(tm.model).predict(data.images[keep].to(device))
        keep = [i for j, i in enumerate(keep) if bool((pred[j] != 0).any())]
    part: dict[str, Any] = {"model": name, "val_miou": tm.val_miou,
                            "train_seconds": tm.train_seconds, "timings": timings}
    if len(keep) < 2:  # a finding, not a crash: nothing to explain on this model
        part["skipped"] = (f"the model predicts a foreground class on {len(keep)} of "
                           f"{len(data)} validation images (at least 2 are needed)")
    else:
        part["default_layer"] = default_layer_name(tm.model, data.images[keep])
    return _Model(name, tm.model, data.images[keep], data.masks[keep],
                  [str(i) for i in keep], part)


def _main_table(m: _Model, cfg: Rq1Config, out: Path, device: str, progress: bool,
                executor: Any) -> None:
    n = min(cfg.images, len(m.ids))
    with _Clock(m.part["timings"], "main"):
        main = evaluate_methods(m.model, m.images[:n], m.masks[:n],
                                config=cfg.eval_config(cfg.methods),
                                out_dir=out / m.name / "main", image_ids=m.ids[:n],
                                device=device, progress=progress, write_figures=False,
                                executor=executor)
    m.part["main"] = interval_table(main.rows, [*cfg.methods, RANDOM_BASELINE], seed=cfg.seed)
    m.part["images"] = n
    m.part["failures"] = main.failures


def _layers(m: _Model, cfg: Rq1Config, out: Path, device: str, progress: bool,
            executor: Any) -> None:
    n = min(cfg.layer_images, len(m.ids))
    with _Clock(m.part["timings"], "layers"):
        study = layer_study(m.model, m.images[:n], m.masks[:n], methods=cfg.layer_methods,
                            config=cfg.eval_config([]), out_dir=out / m.name / "layers",
                            image_ids=m.ids[:n], device=device, progress=progress,
                            title=f"{m.name}: CAM methods per layer", executor=executor)
    m.part["layers"] = {"stages": [s.to_dict() for s in study.stages], "table": study.table,
                        "images": n, "figure": str(out / m.name / "layers" / "figures" /
                                                   "layers.png")}


def _substrates(m: _Model, cfg: Rq1Config, out: Path, device: str, progress: bool,
                executor: Any) -> None:
    n = min(cfg.substrate_images, len(m.ids))
    methods = [*cfg.methods, RANDOM_BASELINE]
    runs = {}
    with _Clock(m.part["timings"], "substrates"):
        for s in cfg.substrates:
            sub_cfg = cfg.eval_config(cfg.methods, deletion_substrate=s,
                                      insertion_substrate=s, context_deletion=False)
            runs[s] = evaluate_methods(m.model, m.images[:n], m.masks[:n], config=sub_cfg,
                                       out_dir=out / m.name / f"substrate-{s}",
                                       image_ids=m.ids[:n], device=device, progress=progress,
                                       write_figures=False, executor=executor)
    m.part["substrates"] = {
        "images": n,
        "means": {s: interval_table(r.rows, methods, ("deletion_auc", "insertion_auc"),
                                    seed=cfg.seed) for s, r in runs.items()},
        "agreement": _substrate_agreement(runs, methods, cfg.substrates[0], cfg.seed)}


def _bias_part(cfg: Rq1Config, out: Path, device: str, progress: bool) -> dict[str, Any]:
    """CBD/CBL on a biased and a control U-Net, same test images, with intervals."""
    from segxai.evaluate.context_bias import (
        bias_sanity,
        bias_test_sets,
        context_bias_benchmark,
        train_bias_model,
    )

    models = {kind: train_bias_model(model_cache(name, cfg.quick, cfg.seed, cfg.cache_dir),
                                     quick=cfg.quick, unbiased=kind == "control", seed=cfg.seed,
                                     device=device, progress=progress)
              for kind, name in zip(("biased", "control"), BIAS_MODELS)}
    n_test = max(4 * cfg.bias_images, 24)
    test, unbiased = bias_test_sets(n_test, size=64, seed=20_000 + cfg.seed)
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


def _by_cost(models: tuple[str, ...]) -> list[str]:
    """The models in decreasing training cost (the slowest starts first on the workers)."""
    order = ("lraspp", "unet", "unet-noskip")
    return sorted(models, key=lambda m: order.index(m) if m in order else len(order))


def _write(out: Path, result: dict[str, Any], t0: float) -> dict[str, Any]:
    """Write ``rq1.json`` and ``rq1.md`` (atomically) with what is finished so far."""
    from segxai.evaluate.rq1_report import rq1_markdown

    result["seconds"] = time.perf_counter() - t0
    done = to_jsonable(result)
    atomic_write_json(out / "rq1.json", done)
    atomic_write_text(out / "rq1.md", rq1_markdown(done))
    return cast(dict[str, Any], done)


def run_rq1(out_dir: str | Path, config: Rq1Config | None = None, *, device: str = "cpu",
            progress: bool = False, executor: Any = None) -> dict[str, Any]:
    """Run (or resume) the RQ1 study into ``out_dir``; write ``rq1.json`` and ``rq1.md``.

    Args:
        out_dir: the study directory.
        config: the settings (default: the full study).
        device: torch device.
        progress: show progress bars.
        executor: where the models train (one task per model) and the (image, method) pairs
            are computed (:func:`~segxai.core.executor.make_executor`: ``--workers`` /
            ``--ray``; default this process). The numbers do not depend on it.

    Returns:
        The study's numbers (as written to ``rq1.json``).
    """
    cfg = config if config is not None else Rq1Config()
    out = Path(out_dir)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"config": asdict(replace(cfg)), "models": [],
                              "complete": False}
    timings: dict[str, float] = {}
    with _Clock(timings, "train"):
        result["train_seconds"] = train_all(
            _by_cost(cfg.models), executor, cache_dir=cfg.cache_dir, quick=cfg.quick,
            seed=cfg.seed, device=device)
    result["timings"] = timings
    models = [_load(name, cfg, device, progress) for name in cfg.models]
    result["models"] = [m.part for m in models]
    todo = [m for m in models if "skipped" not in m.part]
    # part by part over the models, writing rq1.json/md after each, so that an interrupted
    # study has every model's main table first, then the layer studies, the context-bias
    # part and the substrate comparisons (a rerun resumes from the run directories)
    for phase in (_main_table, _layers):
        for m in todo:
            phase(m, cfg, out, device, progress, executor)
            _write(out, result, t0)
    with _Clock(timings, "train_bias"):  # the two bias models train at once on 2 workers
        result["train_seconds"].update(train_all(
            BIAS_MODELS, executor, cache_dir=cfg.cache_dir, quick=cfg.quick, seed=cfg.seed,
            device=device))
    with _Clock(timings, "context_bias"):
        result["context_bias"] = _bias_part(cfg, out, device, progress)
    _write(out, result, t0)
    for m in todo:
        _substrates(m, cfg, out, device, progress, executor)
        _write(out, result, t0)
    result["complete"] = True
    result = _write(out, result, t0)
    return result
