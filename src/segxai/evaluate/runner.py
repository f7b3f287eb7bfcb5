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

Checkpointing: each finished (image, method) is appended as one JSON line to
``OUT/progress.jsonl`` (flushed and fsynced); a rerun skips the pairs already there, so an
interrupted run resumes without recomputation. ``results.csv`` (columns ``image, method,
metric, value``), ``summary.md``, ``summary.json`` and the figures are rewritten atomically at
the end.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from segxai.core.adapter import adapt
from segxai.core.checks import check_choice, check_images, check_positive_int
from segxai.core.registry import get_explainer, list_explainers, make_generator
from segxai.core.stats import spearman
from segxai.core.target import Target
from segxai.evaluate.complexity import complexity, sparseness
from segxai.evaluate.cost import cost_metrics
from segxai.evaluate.curves import CURVE_SCORES, SUBSTRATES, deletion_curve, deletion_insertion
from segxai.evaluate.localisation import energy_pointing_game, pointing_game
from segxai.evaluate.robustness import max_sensitivity

__all__ = ["RANDOM_BASELINE", "EvalConfig", "EvalResult", "choose_target", "evaluate_methods",
           "interpret", "select_images", "summarise"]

RANDOM_BASELINE = "random-baseline"
STOP_ENV = "SEGXAI_EVAL_STOP_AFTER"
# direction of each metric in the summary: +1 higher is better, -1 lower is better
METRIC_DIRECTION = {"deletion_auc": -1, "insertion_auc": 1, "context_deletion_auc": -1,
                    "pointing_game": 1, "energy_pointing_game": 1, "seconds": -1,
                    "max_sensitivity": -1}


@dataclass
class EvalConfig:
    """Settings of an evaluation run (saved as ``OUT/eval_config.json``).

    Attributes:
        methods: explainer names (``None`` = every registered explainer).
        method_params: per-method explainer parameters.
        steps: deletion/insertion steps.
        batch_size: images per forward in the curves.
        score: tracked curve score (``prob_mean``, ``logit_ratio``, ``iou``).
        deletion_substrate: substrate of deletion (``black``, ``mean``, ``blur``, ``noise``).
        insertion_substrate: substrate insertion starts from.
        context_deletion: also compute context-only deletion.
        pointing_tolerance: pointing-game tolerance in pixels.
        sensitivity_samples: max-sensitivity samples per explanation (0 = skip).
        sensitivity_radius: max-sensitivity noise radius (pixel units).
        random_baseline: evaluate the ``random-baseline`` pseudo-method too.
        warmup: run each explainer once, untimed, before its first timed explanation in a
            process (first calls pay one-off import/allocation costs of seconds, which would
            otherwise be charged to the first image).
        seed: seed of tie-breaking, noise and the random baseline.
    """

    methods: list[str] | None = None
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: int = 100
    batch_size: int = 32
    score: str = "prob_mean"
    deletion_substrate: str = "mean"
    insertion_substrate: str = "blur"
    context_deletion: bool = True
    pointing_tolerance: float = 0.0
    sensitivity_samples: int = 0
    sensitivity_radius: float = 0.2
    random_baseline: bool = True
    warmup: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        check_choice(self.score, "score", CURVE_SCORES)
        check_choice(self.deletion_substrate, "deletion_substrate", SUBSTRATES)
        check_choice(self.insertion_substrate, "insertion_substrate", SUBSTRATES)
        if self.sensitivity_samples < 0:
            raise ValueError(f"sensitivity_samples: expected >= 0, got {self.sensitivity_samples}")
        if self.pointing_tolerance < 0:
            raise ValueError(f"pointing_tolerance: expected >= 0, got {self.pointing_tolerance}")

    def resolved_methods(self) -> list[str]:
        names = list(self.methods) if self.methods is not None else list_explainers()
        for m in names:
            if m != RANDOM_BASELINE:
                get_explainer(m)  # unknown names raise ValueError with suggestions
        if self.random_baseline and RANDOM_BASELINE not in names:
            names.append(RANDOM_BASELINE)
        if not names:
            raise ValueError("methods: expected at least one method")
        return names

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["methods"] = self.resolved_methods()
        return d


@dataclass
class EvalResult:
    """Everything an evaluation produced.

    Attributes:
        rows: tidy rows ``{"image", "method", "metric", "value"}``.
        curves: ``{method: {kind: [curve per image]}}``.
        summary: one dict per method with the mean of every metric (and ``images``).
        failures: ``{"image", "method", "error"}`` for pairs that raised.
        computed: number of (image, method) pairs computed in this call (the rest were
            loaded from the checkpoint).
        config: the :class:`EvalConfig`.
        skipped: ``{"image", "method", "reason"}`` for images without anything to explain
            (the model predicts no foreground class).
    """

    rows: list[dict[str, Any]]
    curves: dict[str, dict[str, list[list[float]]]]
    summary: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    computed: int
    config: EvalConfig
    skipped: list[dict[str, Any]] = field(default_factory=list)


def choose_target(model: Any, image: Tensor, mask: Tensor | None = None,
                  background: int = 0) -> tuple[Target, Tensor] | None:
    """The explained class and ROI of one image, and the mask for localisation metrics.

    Args:
        model: the model or adapter.
        image: ``(1, C, H, W)`` model-space image.
        mask: optional ``(H, W)`` ground-truth class ids.
        background: the class id never explained.

    Returns:
        ``(target, localisation mask (1, H, W) bool)`` or ``None`` when the model predicts no
        foreground class.
    """
    adapter = adapt(model)
    pred = adapter.predict(image.to(adapter.device))[0].cpu()
    predicted = [int(c) for c in torch.unique(pred) if int(c) != background]
    if not predicted:
        return None
    if mask is not None:
        gt = mask.cpu()
        counts = {c: int((gt == c).sum()) for c in predicted if int((gt == c).sum()) > 0}
        if counts:
            cls = max(sorted(counts), key=lambda c: counts[c])
            target = Target.from_prediction(adapter, image, cls)
            return target, (gt == cls).unsqueeze(0)
    counts = {c: int((pred == c).sum()) for c in predicted}
    cls = max(sorted(counts), key=lambda c: counts[c])
    target = Target.from_prediction(adapter, image, cls)
    return target, target.roi.cpu() > 0


def select_images(model: Any, images: Tensor, n: int, *, device: str = "cpu",
                  background: int = 0, batch_size: int = 64) -> list[int]:
    """Indices of the first ``n`` images in which the model predicts a foreground class
    (all of the first ``n`` if it predicts none anywhere, so that they are reported as skipped).

    Args:
        model: the model or adapter.
        images: ``(N, C, H, W)`` model-space images.
        n: how many to keep.
        device: torch device.
        background: the background class id.
        batch_size: images per forward.

    Returns:
        Sorted indices into ``images``.
    """
    n = check_positive_int(n, "n")
    adapter = adapt(model)
    if adapter.module is not None:
        adapter.module.to(device)
    keep: list[int] = []
    for start in range(0, images.shape[0], batch_size):
        pred = adapter.predict(images[start:start + batch_size].to(adapter.device))
        keep += [start + j for j in range(pred.shape[0]) if bool((pred[j] != background).any())]
        if len(keep) >= n:
            break
    return keep[:n] if keep else list(range(min(n, images.shape[0])))


def _finite(v: Any) -> float:
    v = float(v)
    return v if math.isfinite(v) else float("nan")


def _evaluate_pair(adapter: Any, image: Tensor, target: Target, loc_mask: Tensor, method: str,
                   config: EvalConfig, seed: int) -> tuple[dict[str, float], dict[str, list]]:
    if method == RANDOM_BASELINE:
        gen = make_generator(seed)
        maps = torch.rand((1, *image.shape[-2:]), generator=gen).to(image.device)
        cost = {"seconds": 0.0, "forward_passes": 0.0, "backward_passes": 0.0,
                "partial_forward_passes": 0.0}
    else:
        explainer = get_explainer(method)(**config.method_params.get(method, {}))
        expl = explainer(adapter, image, target)
        maps = expl.maps.detach()
        cost = cost_metrics(expl)
    metrics: dict[str, float] = {k: float(v) for k, v in cost.items()}
    dele, ins = deletion_insertion(
        adapter, image, target, maps, steps=config.steps,
        deletion_substrate=config.deletion_substrate,
        insertion_substrate=config.insertion_substrate, score=config.score,
        batch_size=config.batch_size, seed=seed)
    curves = {"deletion": dele.scores[0].tolist(), "insertion": ins.scores[0].tolist()}
    metrics["deletion_auc"] = _finite(dele.auc[0])
    metrics["insertion_auc"] = _finite(ins.auc[0])
    curve_fwd = dele.forward_passes + ins.forward_passes
    if config.context_deletion and bool((target.roi <= 0).any()):
        ctx = deletion_curve(adapter, image, target, maps, steps=config.steps,
                             substrate=config.deletion_substrate, score=config.score,
                             context_only=True, batch_size=config.batch_size, seed=seed)
        curves["context_deletion"] = ctx.scores[0].tolist()
        metrics["context_deletion_auc"] = _finite(ctx.auc[0])
        curve_fwd += ctx.forward_passes
    metrics["curve_forward_passes"] = float(curve_fwd)
    metrics["pointing_game"] = _finite(pointing_game(maps, loc_mask,
                                                     tolerance=config.pointing_tolerance)[0])
    metrics["energy_pointing_game"] = _finite(energy_pointing_game(maps, loc_mask)[0])
    metrics["sparseness"] = _finite(sparseness(maps)[0])
    metrics["complexity"] = _finite(complexity(maps)[0])
    if config.sensitivity_samples > 0 and method != RANDOM_BASELINE:
        sens = max_sensitivity(adapter, image, target, method,
                               params=config.method_params.get(method, {}),
                               radius=config.sensitivity_radius,
                               n_samples=config.sensitivity_samples, seed=seed, original=maps)
        metrics["max_sensitivity"] = _finite(sens.max_sensitivity[0])
        metrics["sensitivity_changed"] = float(sens.changed[0])
    return metrics, curves


def _read_progress(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill: recomputed
    return records


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def summarise(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Mean of every metric per method (NaNs ignored), in ``methods`` order."""
    out = []
    for m in methods:
        vals: dict[str, list[float]] = {}
        images = set()
        for r in rows:
            if r["method"] == m:
                vals.setdefault(r["metric"], []).append(float(r["value"]))
                images.add(r["image"])
        if not vals:
            continue
        entry: dict[str, Any] = {"method": m, "images": len(images)}
        for k, v in vals.items():
            arr = np.asarray(v, float)
            entry[k] = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
        out.append(entry)
    return out


def interpret(summary: Sequence[dict[str, Any]]) -> list[str]:
    """Short plain-language findings computed from the summary numbers."""
    lines: list[str] = []
    real = [r for r in summary if r["method"] != RANDOM_BASELINE]
    base = next((r for r in summary if r["method"] == RANDOM_BASELINE), None)
    if not real:
        return ["No explanation method produced results."]

    def best(metric: str) -> dict[str, Any] | None:
        cands = [r for r in real if np.isfinite(r.get(metric, np.nan))]
        if not cands:
            return None
        sign = METRIC_DIRECTION.get(metric, 1)
        return max(cands, key=lambda r: sign * r[metric])

    for metric, label in (("deletion_auc", "deletion AUC (lower is better)"),
                          ("insertion_auc", "insertion AUC (higher is better)"),
                          ("context_deletion_auc", "context-only deletion AUC (lower is better)")):
        b = best(metric)
        if b is None:
            continue
        text = f"Best {label}: {b['method']} ({b[metric]:.3f})"
        if base is not None and np.isfinite(base.get(metric, np.nan)):
            text += f"; random baseline {base[metric]:.3f}"
        lines.append(text + ".")
    if base is not None:
        for metric, sign in (("deletion_auc", -1), ("insertion_auc", 1)):
            if not np.isfinite(base.get(metric, np.nan)):
                continue
            worse = [r["method"] for r in real if np.isfinite(r.get(metric, np.nan))
                     and sign * (r[metric] - base[metric]) <= 0]
            if worse:
                lines.append(f"Not better than random on {metric}: {', '.join(worse)}.")
    timed = [r for r in real if np.isfinite(r.get("seconds", np.nan))]
    if timed:
        fast = min(timed, key=lambda r: r["seconds"])
        slow = max(timed, key=lambda r: r["seconds"])
        lines.append(f"Cheapest: {fast['method']} ({fast['seconds']:.3g} s per explanation); "
                     f"most expensive: {slow['method']} ({slow['seconds']:.3g} s, "
                     f"{slow['seconds'] / max(fast['seconds'], 1e-9):.0f}x).")
        ins = [r for r in timed if np.isfinite(r.get("insertion_auc", np.nan))]
        if len(ins) >= 3:
            rho = spearman([r["seconds"] for r in ins], [r["insertion_auc"] for r in ins])
            if np.isfinite(rho):
                trend = ("more compute tended to buy better insertion AUC" if rho > 0.3 else
                         "more compute did not buy better insertion AUC" if rho < -0.3 else
                         "insertion AUC was roughly unrelated to compute")
                lines.append(f"Across methods, {trend} (Spearman ρ = {rho:.2f} between seconds "
                             "and insertion AUC).")
        dominated = []
        for r in ins:
            for o in ins:
                if o is not r and o["seconds"] <= r["seconds"] and \
                        o["insertion_auc"] >= r["insertion_auc"] and \
                        (o["seconds"] < r["seconds"] or o["insertion_auc"] > r["insertion_auc"]):
                    dominated.append(r["method"])
                    break
        front = [r["method"] for r in ins if r["method"] not in dominated]
        if front:
            lines.append("Pareto-optimal on (seconds, insertion AUC): " + ", ".join(front) + ".")
    n = max((r.get("images", 0) for r in summary), default=0)
    if n < 10:
        lines.append(f"Means over only {n} image(s): differences of a few hundredths are within "
                     "noise.")
    return lines


def _summary_markdown(summary: list[dict[str, Any]], lines: list[str], config: EvalConfig,
                      failures: list[dict[str, Any]],
                      skipped: list[dict[str, Any]] | None = None) -> str:
    cols = ["method", "images", "deletion_auc", "insertion_auc", "context_deletion_auc",
            "pointing_game", "energy_pointing_game", "sparseness", "complexity",
            "max_sensitivity", "seconds", "forward_passes", "backward_passes"]
    cols = [c for c in cols if any(c in r for r in summary)]
    out = io.StringIO()
    out.write("# segxai evaluate: summary\n\n")
    out.write(f"Curves: {config.steps} steps, score `{config.score}`, deletion substrate "
              f"`{config.deletion_substrate}`, insertion substrate `{config.insertion_substrate}`"
              f", seed {config.seed}. Means over images.\n\n")
    out.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
    for r in summary:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        out.write("| " + " | ".join(cells) + " |\n")
    out.write("\n## Findings\n\n")
    for line in lines:
        out.write(f"- {line}\n")
    if skipped:
        images = sorted({s["image"] for s in skipped})
        out.write(f"\nSkipped image(s) {', '.join(images)}: {skipped[0]['reason']}.\n")
    if failures:
        out.write("\n## Failures\n\n")
        for f in failures:
            out.write(f"- image {f['image']}, {f['method']}: {f['error']}\n")
    return out.getvalue()


def _write_outputs(out_dir: Path, rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                   curves: dict[str, dict[str, list[list[float]]]], config: EvalConfig,
                   failures: list[dict[str, Any]], skipped: list[dict[str, Any]],
                   figures: bool = True) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "method", "metric", "value"],
                            lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "value": repr(float(r["value"]))})
    _atomic_write(out_dir / "results.csv", buf.getvalue())
    lines = interpret(summary)
    _atomic_write(out_dir / "summary.md",
                  _summary_markdown(summary, lines, config, failures, skipped))
    _atomic_write(out_dir / "summary.json", json.dumps(
        {"summary": summary, "findings": lines, "failures": failures, "skipped": skipped,
         "config": config.to_dict()}, indent=2, default=float))
    if not summary or not figures:
        return
    import matplotlib.pyplot as plt

    from segxai.evaluate.figures import (
        plot_auc_vs_seconds,
        plot_mean_curves,
        plot_noisiness_vs_cost,
    )

    figs = out_dir / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    for name, fig in (("curves.png", plot_mean_curves(curves, score=config.score)),
                      ("auc_vs_seconds.png", plot_auc_vs_seconds(summary)),
                      ("noisiness_vs_cost.png", plot_noisiness_vs_cost(summary))):
        tmp = figs / f".{name}.tmp.png"
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        plt.close(fig)
        tmp.replace(figs / name)


def evaluate_methods(model: Any, images: Tensor, masks: Tensor | None = None, *,
                     config: EvalConfig | None = None, out_dir: str | Path | None = None,
                     image_ids: Sequence[str] | None = None, device: str = "cpu",
                     progress: bool = True, write_figures: bool = True) -> EvalResult:
    """Evaluate every method on every image.

    Args:
        model: a segmentation model or :class:`~segxai.core.adapter.ModelAdapter`.
        images: ``(N, C, H, W)`` model-space images.
        masks: optional ``(N, H, W)`` ground-truth class ids (for the target choice and the
            localisation metrics).
        config: an :class:`EvalConfig` (default settings if ``None``).
        out_dir: directory for ``progress.jsonl`` (checkpoint), ``results.csv``,
            ``summary.md``, ``summary.json`` and ``figures/``; ``None`` keeps everything in
            memory.
        image_ids: names of the images in the table (default ``"0"``, ``"1"``, ...).
        device: torch device.
        progress: show a progress bar.
        write_figures: write the figures into ``out_dir/figures``.

    Returns:
        An :class:`EvalResult`.
    """
    config = config if config is not None else EvalConfig()
    if not isinstance(config, EvalConfig):
        raise TypeError(f"config: expected an EvalConfig, got {type(config).__name__}")
    check_images(images)
    n = images.shape[0]
    if masks is not None and (masks.dim() != 3 or masks.shape[0] != n
                              or tuple(masks.shape[1:]) != tuple(images.shape[-2:])):
        raise ValueError(f"masks: expected shape {(n, *images.shape[-2:])}, got "
                         f"{tuple(masks.shape)}")
    ids = [str(i) for i in range(n)] if image_ids is None else [str(i) for i in image_ids]
    if len(ids) != n or len(set(ids)) != n:
        raise ValueError(f"image_ids: expected {n} distinct names, got {len(ids)}")
    methods = config.resolved_methods()
    adapter = adapt(model)
    if adapter.module is not None:
        adapter.module.to(device)

    done: dict[tuple[str, str], dict[str, Any]] = {}
    progress_path = None
    if out_dir is not None:
        out_path = Path(out_dir)
        out_path.mkdir(parents=True, exist_ok=True)
        cfg_path = out_path / "eval_config.json"
        cfg = config.to_dict()
        if cfg_path.exists():  # resuming: same settings required (methods may be added)
            old = json.loads(cfg_path.read_text())
            new = json.loads(json.dumps(cfg))
            old_methods, new_methods = old.pop("methods", []), new.pop("methods")
            old.pop("warmup", None)  # affects timings only
            new.pop("warmup", None)
            if old != new:
                raise ValueError(f"out: {out_path} holds a run with other settings "
                                 f"({cfg_path}); choose another --out directory")
            cfg["methods"] = list(old_methods) + [m for m in new_methods
                                                  if m not in old_methods]
        _atomic_write(cfg_path, json.dumps(cfg, indent=2))
        progress_path = out_path / "progress.jsonl"
        for rec in _read_progress(progress_path):
            if "error" not in rec:  # failed pairs are retried
                done[(str(rec["image"]), str(rec["method"]))] = rec

    stop_after = int(os.environ.get(STOP_ENV, "0") or 0)
    todo = [(i, m) for i in range(n) for m in methods if (ids[i], m) not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n * len(methods), initial=n * len(methods) - len(todo),
                   desc="evaluate", unit="pair")
    computed = 0
    warmed: set[str] = set()
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
                    get_explainer(m)(**config.method_params.get(m, {}))(adapter, x, target)
                metrics, curves = _evaluate_pair(adapter, x, target, loc.to(x.device), m,
                                                 config, seed=config.seed + i)
                rec["metrics"], rec["curves"] = metrics, curves
            except (ValueError, TypeError, RuntimeError) as exc:
                rec["error"] = f"{type(exc).__name__}: {exc}"
        done[(ids[i], m)] = rec
        if progress_path is not None:
            _append(progress_path, rec)
        computed += 1
        if bar is not None:
            bar.update(1)
        if stop_after and computed >= stop_after:  # test hook: simulate a hard kill
            os.kill(os.getpid(), signal.SIGKILL)
    if bar is not None:
        bar.close()

    rows: list[dict[str, Any]] = []
    curves_all: dict[str, dict[str, list[list[float]]]] = {m: {} for m in methods}
    failures: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for i in range(n):
        for m in methods:
            rec = done.get((ids[i], m))
            if rec is None:
                continue
            if "skipped" in rec:
                skipped.append({"image": ids[i], "method": m, "reason": rec["skipped"]})
                continue
            if "error" in rec:
                failures.append({"image": ids[i], "method": m, "error": rec["error"]})
                continue
            for metric in sorted(rec["metrics"]):
                rows.append({"image": ids[i], "method": m, "metric": metric,
                             "value": rec["metrics"][metric]})
            for kind, c in rec["curves"].items():
                curves_all[m].setdefault(kind, []).append(c)
    summary = summarise(rows, methods)
    if out_dir is not None:
        _write_outputs(Path(out_dir), rows, summary, curves_all, config, failures, skipped,
                       figures=write_figures)
    return EvalResult(rows, curves_all, summary, failures, computed, config, skipped)
