"""Evaluate explanation methods × images into a tidy table, with checkpoints and resume.

For every image the explained class is chosen once (the largest ground-truth foreground class
that the model predicts, or the most predicted foreground class without ground truth) and the
ROI is its predicted mask on the clean image; every method then explains that same target.
Per (image, method) the runner records:

* faithfulness: ``deletion_auc``, ``insertion_auc``, ``context_deletion_auc`` (ROI pixels
  never deleted);
* cost: ``seconds``, ``forward_passes``, ``backward_passes``, ``partial_forward_passes``
  (and ``peak_memory_bytes`` on CUDA), as recorded by the explainer;
* localisation: ``pointing_game``, ``energy_pointing_game`` (against the ground-truth class
  mask when there is one, else the ROI);
* complexity: ``sparseness``, ``complexity``;
* robustness (optional): ``max_sensitivity``, ``sensitivity_changed``.

A ``random-baseline`` pseudo-method (seeded uniform noise maps, zero cost) is evaluated beside
the explainers so that every number has a floor to be compared with.

The output directory is a :class:`~segxai.core.runstore.RunStore` of kind ``"evaluate"``:
``run.json`` fingerprints :meth:`EvalConfig.run_settings` (``methods`` may grow on resume,
``warmup`` is not part of it), each finished (image, method) is appended as one row to
``OUT/progress.jsonl``, and a rerun skips the pairs already there, so an interrupted run
resumes without recomputation (failed pairs are retried). ``results.csv`` (columns ``image,
method, metric, value``), ``summary.md``, ``summary.json`` and the figures are rewritten
atomically at the end.

The pieces live in :mod:`~segxai.evaluate.config` (settings), :mod:`~segxai.evaluate.pairs`
(one image × method), :mod:`~segxai.evaluate.summary` (means and findings) and
:mod:`~segxai.evaluate.writers` (files); this module is the run loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import Tensor

from segxai.core.adapter import adapt
from segxai.core.checks import check_images
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.executor import Executor, InProcessExecutor
from segxai.core.progress import ImageProgress
from segxai.core.registry import get_explainer
from segxai.core.runstore import RunStore
from segxai.core.target import Target
from segxai.evaluate.config import (
    METRIC_DIRECTION,
    RANDOM_BASELINE,
    EvalConfig,
    EvalResult,
    split_method,
)
from segxai.evaluate.pairs import choose_target, evaluate_pair, select_images
from segxai.evaluate.summary import interpret, summarise, summary_markdown
from segxai.evaluate.writers import write_outputs

__all__ = ["METRIC_DIRECTION", "RANDOM_BASELINE", "EvalConfig", "EvalResult", "choose_target",
           "dataset_fill",
           "evaluate_methods", "evaluate_pair", "interpret", "select_images", "summarise",
           "summary_markdown"]

KIND = "evaluate"
PROGRESS = "progress"  # the rows file: OUT/progress.jsonl


def _number(v: Any) -> float:
    # rows store non-finite values as JSON null
    return float("nan") if v is None else float(v)


def _open_store(out_dir: str | Path, config: EvalConfig) -> RunStore:
    return RunStore(out_dir, kind=KIND, settings=config.run_settings(), mutable=("methods",))


def _check_inputs(images: Tensor, masks: Tensor | None,
                  image_ids: Sequence[str] | None) -> list[str]:
    check_images(images)
    n = images.shape[0]
    if masks is not None and (masks.dim() != 3 or masks.shape[0] != n
                              or tuple(masks.shape[1:]) != tuple(images.shape[-2:])):
        raise SegxaiError(f"masks: expected shape {(n, *images.shape[-2:])}, got "
                          f"{tuple(masks.shape)}")
    ids = [str(i) for i in range(n)] if image_ids is None else [str(i) for i in image_ids]
    if len(ids) != n or len(set(ids)) != n:
        raise SegxaiError(f"image_ids: expected {n} distinct names, got {len(ids)}")
    return ids


def dataset_fill(adapter: Any, images: Tensor, config: EvalConfig) -> list[float] | None:
    """The ``dataset-mean`` colour: ``config.dataset_mean``, else the pixel-space mean colour
    of the evaluated images (``None`` when no curve uses that substrate). The runner stores it
    in the config before any pair runs (in this process or a worker), so it is fingerprinted
    with the run."""
    if "dataset-mean" not in (config.deletion_substrate, config.insertion_substrate):
        return None
    if config.dataset_mean is not None:
        return [float(v) for v in config.dataset_mean]
    pixels = adapter.to_pixels(images.to(adapter.device))
    return [float(v) for v in pixels.mean(dim=(0, 2, 3))]


def _compute(adapter: Any, images: Tensor, masks: Tensor | None, ids: list[str],
             todo: list[tuple[int, str]], config: EvalConfig, store: RunStore | None,
             done: dict[tuple[str, str], dict[str, Any]], bar: Any, *,
             warmed: set[str] | None = None, positions: Sequence[int] | None = None) -> int:
    """Evaluate the ``todo`` pairs into ``done`` (and the store's rows); returns their count.

    ``warmed`` (methods already warmed up in this process) is updated; ``positions`` are the
    images' places in the whole run (default ``0, 1, ...``), which seed each image.
    """
    warmed = set() if warmed is None else warmed
    targets: dict[int, tuple[Target, Tensor] | None] = {}
    for i, m in todo:
        x = images[i:i + 1].to(adapter.device)
        if i not in targets:
            targets[i] = choose_target(adapter, x, None if masks is None else masks[i])
        chosen = targets[i]
        rec: dict[str, Any] = {"image": ids[i], "method": m}
        if chosen is None:
            rec["skipped"] = "the model predicts no foreground class"
        else:
            target, loc = chosen
            rec["class_index"] = int(target.class_index[0])
            try:
                if config.warmup and m != RANDOM_BASELINE and m not in warmed:
                    warmed.add(m)
                    base, fixed = split_method(m)
                    get_explainer(base)(**{**fixed, **config.method_params.get(m, {})})(
                        adapter, x, target)
                info: dict[str, Any] = {}
                metrics, curves = evaluate_pair(adapter, x, target, loc.to(x.device), m,
                                                config, seed=config.seed + (
                                                    i if positions is None else positions[i]),
                                                info=info)
                rec["metrics"], rec["curves"] = metrics, curves
                if info.get("layers"):
                    rec["layers"] = info["layers"]  # the layer actually explained
            except (ValueError, TypeError, RuntimeError) as exc:
                rec["error"] = f"{type(exc).__name__}: {exc}"
        done[(ids[i], m)] = rec
        if store is not None:
            store.append_row(PROGRESS, rec)
        if bar is not None:
            bar.update(1)
    return len(todo)


def _collect(done: dict[tuple[str, str], dict[str, Any]], ids: list[str],
             methods: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any],
                                          list[dict[str, Any]], list[dict[str, Any]]]:
    """Tidy rows, curves per method, failures and skips, in image × method order."""
    rows: list[dict[str, Any]] = []
    curves_all: dict[str, dict[str, list[list[float]]]] = {m: {} for m in methods}
    failures: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for image in ids:
        for m in methods:
            rec = done.get((image, m))
            if rec is None:
                continue
            if "skipped" in rec:
                skipped.append({"image": image, "method": m, "reason": rec["skipped"]})
                continue
            if "error" in rec:
                failures.append({"image": image, "method": m, "error": rec["error"]})
                continue
            for metric in sorted(rec["metrics"]):
                rows.append({"image": image, "method": m, "metric": metric,
                             "value": _number(rec["metrics"][metric])})
            for kind, c in rec["curves"].items():
                curves_all[m].setdefault(kind, []).append([_number(v) for v in c])
    return rows, curves_all, failures, skipped


def evaluate_methods(model: Any, images: Tensor, masks: Tensor | None = None, *,
                     config: EvalConfig | None = None, out_dir: str | Path | None = None,
                     image_ids: Sequence[str] | None = None, device: str = "cpu",
                     progress: bool = True, write_figures: bool = True,
                     executor: Executor | None = None) -> EvalResult:
    """Evaluate every method on every image.

    Args:
        model: a segmentation model or :class:`~segxai.core.adapter.ModelAdapter`.
        images: ``(N, C, H, W)`` model-space images.
        masks: optional ``(N, H, W)`` ground-truth class ids (for the target choice and the
            localisation metrics).
        config: an :class:`EvalConfig` (default settings if ``None``).
        out_dir: the run directory (``run.json``, ``progress.jsonl`` rows, ``results.csv``,
            ``summary.md``, ``summary.json`` and ``figures/``); ``None`` keeps everything in
            memory.
        image_ids: names of the images in the table (default ``"0"``, ``"1"``, ...).
        device: torch device.
        progress: show a progress bar.
        write_figures: write the figures into ``out_dir/figures``.
        executor: where the pairs are computed (:func:`~segxai.core.executor.make_executor`:
            local processes or a Ray cluster, in chunks of images × method, see
            :mod:`~segxai.evaluate.parallel`); ``None`` computes them in this process. The
            results do not depend on it as long as every process runs the same number of
            torch threads (``make_executor``'s executors run one each).

    Returns:
        An :class:`EvalResult`.

    Raises:
        SegxaiError: bad inputs, or ``out_dir`` holds a run with other settings (the message
            names the differing keys).
    """
    config = config if config is not None else EvalConfig()
    if not isinstance(config, EvalConfig):
        raise SegxaiTypeError(f"config: expected an EvalConfig, got {type(config).__name__}")
    ids = _check_inputs(images, masks, image_ids)
    n = len(ids)
    methods = config.resolved_methods()
    adapter = adapt(model)
    if adapter.module is not None:
        adapter.module.to(device)
    fill = dataset_fill(adapter, images, config)
    if fill is not None and config.dataset_mean is None:  # fixed once for every worker
        config = replace(config, dataset_mean=fill)

    store = _open_store(out_dir, config) if out_dir is not None else None
    done: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in store.rows(PROGRESS) if store is not None else ():
        if "error" not in rec:  # failed pairs are retried
            done[(str(rec["image"]), str(rec["method"]))] = rec

    todo = [(i, m) for i in range(n) for m in methods if (ids[i], m) not in done]
    bar = ImageProgress(n, len(methods), done=n * len(methods) - len(todo), desc="evaluate",
                        enabled=progress)
    try:
        if executor is None or isinstance(executor, InProcessExecutor):
            with executor.pinned() if executor is not None else contextlib.nullcontext():
                computed = _compute(adapter, images, masks, ids, todo, config, store, done,
                                    bar)
        else:
            from segxai.evaluate.parallel import compute_parallel

            computed = compute_parallel(executor, model, images, masks, ids, todo, config,
                                        store, done, bar, device=device)
    finally:
        bar.close()

    rows, curves_all, failures, skipped = _collect(done, ids, methods)
    summary = summarise(rows, methods)
    for entry in summary:  # the layers the explainer actually explained (CAM-type methods)
        used = sorted({name for (_, m), rec in done.items() if m == entry["method"]
                       for name in rec.get("layers", ())})
        if used:
            entry["layers"] = ",".join(used)
    if store is not None:
        write_outputs(store, rows, summary, curves_all, config, failures, skipped,
                      figures=write_figures)
    return EvalResult(rows, curves_all, summary, failures, computed, config, skipped)

