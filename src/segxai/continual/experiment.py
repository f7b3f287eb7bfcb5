"""The continual-segmentation experiment: strategies × seeds × tasks, checkpointed per task.

Layout of ``out``::

    config.json                     the experiment's configuration (checked when resuming)
    base/seed{s}/                   the model after task 0 (shared by all strategies: task 0
                                    has no memory yet, so its training is the same for all)
    runs/{strategy}/seed{s}/        state.json (task done, IoUs, rows), model_t{t}.safetensors,
                                    memory_t{t}/memory.npz + memory.json
    results.csv                     strategy, seed, task, miou_old, miou_new, miou_all,
                                    forgetting, exemplars, bytes
    summary.json, summary.csv       final-task means and standard deviations per strategy
    miou_vs_task.png, exemplars_vs_bytes.png

A run killed at any point resumes from the last completed task of every (strategy, seed): the
per-task randomness is derived from ``(seed, task)`` and every task starts a fresh optimiser,
so a resumed run ends with the same numbers as an uninterrupted one. For tests, the
environment variable ``SEGXAI_CONTINUAL_KILL_AFTER_TASK=k`` makes the process SIGKILL itself
right after the first checkpoint of task ``k``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from segxai.continual.compress import STRATEGIES
from segxai.continual.learner import build_memory, evaluate_ious, mib_init, train_task
from segxai.continual.memory import ReplayMemory
from segxai.continual.metrics import task_metrics
from segxai.continual.scenario import (
    eval_masks,
    seen_classes,
    task_indices,
    task_masks,
    validate_tasks,
)

__all__ = [
    "COLUMNS",
    "ContinualConfig",
    "load_results",
    "plot_results",
    "quick_config",
    "run_experiment",
    "summarise",
]

COLUMNS = ("strategy", "seed", "task", "miou_old", "miou_new", "miou_all", "forgetting",
           "exemplars", "bytes")
KILL_ENV = "SEGXAI_CONTINUAL_KILL_AFTER_TASK"
FULL_EXEMPLAR_BYTES_64 = 4 * 64 * 64 + 4


def _default_model() -> dict[str, Any]:
    return {"depth": 3, "base_width": 8, "num_classes": 5}


@dataclass
class ContinualConfig:
    """Settings of a continual experiment (JSON-serialisable).

    Attributes:
        tasks: foreground classes of each task (default ``[[1, 2], [3], [4]]``: disc + square,
            then triangle, then ring).
        strategies: memory strategies (:data:`segxai.continual.compress.STRATEGIES`).
        seeds: seeds (model init, training data, batch order, selection).
        budget_bytes: memory budget in bytes (default: 20 full 64×64 exemplars incl. meta).
        epochs: epochs per incremental task.
        base_epochs: epochs of task 0 (None: ``epochs``); the base task is trained once per
            seed and shared by all strategies, so a longer base schedule is cheap.
        batch_size: images per step.
        ratio: fraction of each batch replayed from memory.
        lr: Adam learning rate.
        r: compression ratio (``downsample``, outside the box, EPR patch area ``1/r``).
        tau: saliency-box threshold.
        patch: EPR patch side (None: ``size / √r``).
        explainer: saliency method (any registered explainer).
        pseudo_threshold: old-class pseudo-label confidence for stored masks (None = off).
        saliency_on: classes whose saliency places the patch / box: ``"selected"`` (the class
            the exemplar is stored for) or ``"present"`` (every labelled class in it).
        distill: MiB unbiased-distillation weight (0 = off).
        n_train: training images generated per seed (each task uses those with its classes).
        n_val: validation images (one fixed set for all seeds).
        size: image side.
        model: :class:`segxai.models.UNetConfig` fields.
    """

    tasks: list[list[int]] = field(default_factory=lambda: [[1, 2], [3], [4]])
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget_bytes: int = 20 * FULL_EXEMPLAR_BYTES_64
    epochs: int = 8
    base_epochs: int | None = 30
    batch_size: int = 16
    ratio: float = 0.5
    lr: float = 3e-3
    r: float = 4.0
    tau: float = 0.6
    patch: int | None = None
    explainer: str = "seg-grad-cam"
    pseudo_threshold: float | None = 0.7
    saliency_on: str = "selected"
    distill: float = 0.0
    n_train: int = 300
    n_val: int = 100
    size: int = 64
    model: dict[str, Any] = field(default_factory=_default_model)

    def __post_init__(self) -> None:
        from segxai.data import SHAPES_CLASSES

        self.tasks = validate_tasks(self.tasks, len(SHAPES_CLASSES))
        if len(self.tasks) < 2:
            raise ValueError("tasks: expected at least two tasks")
        if not self.strategies or any(s not in STRATEGIES for s in self.strategies):
            raise ValueError(f"strategies: expected a non-empty subset of {STRATEGIES}, "
                             f"got {self.strategies!r}")
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies: duplicates in {self.strategies!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: expected distinct integers, got {self.seeds!r}")
        self.seeds = [int(s) for s in self.seeds]
        for name in ("budget_bytes",):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}: expected an integer >= 0, got {getattr(self, name)}")
        if self.base_epochs is not None and (isinstance(self.base_epochs, bool) or not
                                             isinstance(self.base_epochs, int)
                                             or self.base_epochs < 1):
            raise ValueError(f"base_epochs: expected an integer >= 1, got {self.base_epochs!r}")
        for name in ("epochs", "batch_size", "n_train", "n_val", "size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")
        if self.size < 16:
            raise ValueError(f"size: expected at least 16 pixels, got {self.size}")
        if not 0.0 <= float(self.ratio) < 1.0:
            raise ValueError(f"ratio: expected a fraction in [0, 1), got {self.ratio!r}")
        if not 0.0 <= float(self.tau) < 1.0:
            raise ValueError(f"tau: expected a threshold in [0, 1), got {self.tau!r}")
        if not float(self.r) >= 1.0:
            raise ValueError(f"r: expected a compression ratio >= 1, got {self.r!r}")
        if self.patch is not None and not 1 <= int(self.patch) <= self.size:
            raise ValueError(f"patch: expected a side in [1, {self.size}], got {self.patch!r}")
        if self.saliency_on not in ("selected", "present"):
            raise ValueError(f"saliency_on: expected 'selected' or 'present', got "
                             f"{self.saliency_on!r}")
        if self.distill < 0:
            raise ValueError(f"distill: expected a weight >= 0, got {self.distill!r}")
        import segxai.explainers  # noqa: F401  (registers the built-in explainers)
        from segxai.core.registry import list_explainers

        if self.explainer not in list_explainers():
            raise ValueError(f"explainer: expected one of {list_explainers()}, "
                             f"got {self.explainer!r}")
        self.model = dict(self.model)
        self.model["num_classes"] = len(SHAPES_CLASSES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContinualConfig:
        return cls(**data)


def quick_config(**overrides: Any) -> ContinualConfig:
    """The same pipeline at a size that runs in about a minute (32×32, one seed)."""
    base = {"seeds": [0], "epochs": 3, "base_epochs": 6, "n_train": 120, "n_val": 40, "size": 32,
            "budget_bytes": 20 * (4 * 32 * 32 + 4),
            "model": {"depth": 2, "base_width": 8, "num_classes": 5}}
    base.update(overrides)
    return ContinualConfig(**base)


# ---------------------------------------------------------------------------- persistence
def _save_model(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(tmp))
    os.replace(tmp, path)


def _load_model(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def _nan_to_none(values: Any) -> Any:
    if isinstance(values, float) and math.isnan(values):
        return None
    if isinstance(values, (list, tuple)):
        return [_nan_to_none(v) for v in values]
    return values


def _none_to_nan(values: list[Any]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def _maybe_kill(task: int) -> None:
    target = os.environ.get(KILL_ENV)
    if target is not None and int(target) == task:
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------------- experiment
def _make_model(config: ContinualConfig, seed: int) -> nn.Module:
    from segxai.models.unet import UNet, UNetConfig

    torch.manual_seed(int(seed))
    return UNet(UNetConfig.from_dict(config.model))


def _data(config: ContinualConfig, seed: int):
    from segxai.data import make_shapes

    train = make_shapes(config.n_train, size=config.size, seed=10_000 + int(seed))
    val = make_shapes(config.n_val, size=config.size, seed=99_991)
    return train, val


def _task_data(train, config: ContinualConfig, t: int):
    idx = task_indices(train.masks, config.tasks, t)
    return train.images[idx], task_masks(train.masks[idx], config.tasks, t)


def _row(strategy: str, seed: int, t: int, metrics: dict[str, float],
         memory: ReplayMemory) -> dict[str, Any]:
    return {"strategy": strategy, "seed": seed, "task": t, **metrics,
            "exemplars": len(memory), "bytes": memory.nbytes}


def _base_task(config: ContinualConfig, seed: int, out: Path, train, val, device: str,
               progress: bool) -> tuple[Path, np.ndarray, float]:
    """Train (or reload) the task-0 model of ``seed``."""
    folder = out / "base" / f"seed{seed}"
    state_path = folder / "base.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        return folder / "model.safetensors", _none_to_nan(state["iou"]), state["seconds"]
    start = time.perf_counter()
    model = _make_model(config, seed)
    images, masks = _task_data(train, config, 0)
    seen = seen_classes(config.tasks, 0)
    epochs = config.base_epochs if config.base_epochs is not None else config.epochs
    train_task(model, images, masks, seen, epochs=epochs, batch_size=config.batch_size,
               ratio=config.ratio, lr=config.lr, seed=seed * 100, device=device,
               progress=progress, desc=f"seed {seed} task 0")
    iou = evaluate_ious(model, val.images, eval_masks(val.masks, config.tasks, 0), seen,
                        config.model["num_classes"], device=device)
    seconds = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    _save_model(model, folder / "model.safetensors")
    _write_json(state_path, {"iou": _nan_to_none(iou.tolist()), "seconds": seconds})
    return folder / "model.safetensors", iou, seconds


def _run_strategy(config: ContinualConfig, strategy: str, seed: int, out: Path, train, val,
                  base_model: Path, base_iou: np.ndarray, device: str, progress: bool,
                  bar: Any) -> None:
    folder = out / "runs" / strategy / f"seed{seed}"
    state_path = folder / "state.json"
    num_classes = config.model["num_classes"]
    size = (config.size, config.size)
    patch = None if config.patch is None else (int(config.patch), int(config.patch))
    params = {"r": config.r, "tau": config.tau, "patch": config.patch,
              "explainer": config.explainer}
    model = _make_model(config, seed)
    if state_path.exists():
        state = json.loads(state_path.read_text())
        done = int(state["task"])
        _load_model(model, folder / f"model_t{done}.safetensors")
        memory = ReplayMemory.load(folder / f"memory_t{done}")
        ious = [_none_to_nan(v) for v in state["ious"]]
        rows = state["rows"]
        seconds = state["seconds"]
    else:
        done = -1
        memory = ReplayMemory(strategy, config.budget_bytes, size, params)
        ious, rows, seconds = [], [], 0.0
    for t in range(done + 1, len(config.tasks)):
        start = time.perf_counter()
        images, masks = _task_data(train, config, t)
        seen = seen_classes(config.tasks, t)
        if t == 0:
            _load_model(model, base_model)
            iou = base_iou
        else:
            old_model = None
            old_seen = seen_classes(config.tasks, t - 1)
            if config.distill > 0:
                old_model = _make_model(config, seed)
                old_model.load_state_dict(model.state_dict())
                old_model.eval()
                mib_init(model, config.tasks[t], num_classes)
            mem_img, mem_msk = memory.reconstructed()
            train_task(model, images, masks, seen,
                       memory_images=torch.from_numpy(mem_img).float() / 255.0,
                       memory_masks=torch.from_numpy(mem_msk).long(),
                       epochs=config.epochs, batch_size=config.batch_size, ratio=config.ratio,
                       lr=config.lr, seed=seed * 100 + t, old_model=old_model,
                       old_seen=old_seen, new_classes=config.tasks[t], distill=config.distill,
                       device=device, progress=progress, desc=f"{strategy} s{seed} t{t}")
            iou = evaluate_ious(model, val.images, eval_masks(val.masks, config.tasks, t), seen,
                                num_classes, device=device)
        build_memory(memory, model, images, masks, task=t, new_classes=config.tasks[t],
                     seen=seen, seed=seed, explainer=config.explainer, r=config.r,
                     tau=config.tau, patch=patch, pseudo_threshold=config.pseudo_threshold,
                     saliency_on=config.saliency_on, device=device)
        ious.append(iou)
        rows.append(_row(strategy, seed, t, task_metrics(ious, config.tasks), memory))
        seconds += time.perf_counter() - start
        # checkpoint: new files first, then the state that points at them, then clean up
        folder.mkdir(parents=True, exist_ok=True)
        _save_model(model, folder / f"model_t{t}.safetensors")
        memory.save(folder / f"memory_t{t}")
        _write_json(state_path, {"task": t, "ious": [_nan_to_none(v.tolist()) for v in ious],
                                 "rows": [{k: _nan_to_none(v) for k, v in r.items()}
                                          for r in rows],
                                 "seconds": seconds})
        if t > 0:
            (folder / f"model_t{t - 1}.safetensors").unlink(missing_ok=True)
            shutil.rmtree(folder / f"memory_t{t - 1}", ignore_errors=True)
        _write_results(out, config)
        if bar is not None and t > 0:
            bar.update(1)
        _maybe_kill(t)


def _write_results(out: Path, config: ContinualConfig) -> list[dict[str, Any]]:
    rows = load_results(out, config)
    tmp = out / f"results.csv.{os.getpid()}.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("nan" if r[k] is None else r[k]) for k in COLUMNS})
    os.replace(tmp, out / "results.csv")
    return rows


def load_results(out: str | Path, config: ContinualConfig) -> list[dict[str, Any]]:
    """Rows of every completed task in ``out`` (strategy order, then seed, then task);
    undefined metrics (old-class mIoU and forgetting at task 0) are None."""
    out = Path(out)
    rows: list[dict[str, Any]] = []
    for strategy in config.strategies:
        for seed in config.seeds:
            path = out / "runs" / strategy / f"seed{seed}" / "state.json"
            if path.exists():
                rows.extend(json.loads(path.read_text())["rows"])
    return rows


def _run_seed(config: ContinualConfig, seed: int, out: Path, device: str, progress: bool,
              bar: Any) -> None:
    train, val = _data(config, seed)
    base_model, base_iou, _ = _base_task(config, seed, out, train, val, device, progress)
    for strategy in config.strategies:
        _run_strategy(config, strategy, seed, out, train, val, base_model, base_iou, device,
                      progress, bar)


def _run_seed_worker(config: dict[str, Any], seed: int, out: str, device: str) -> None:
    torch.set_num_threads(1)
    _run_seed(ContinualConfig.from_dict(config), seed, Path(out), device, False, None)


def run_experiment(config: ContinualConfig, out: str | Path, *, device: str = "cpu",
                   progress: bool = True, workers: int = 1) -> list[dict[str, Any]]:
    """Run (or resume) every strategy × seed × task and write results, summary and plots.

    Args:
        config: the experiment.
        out: output directory (resumes what it already holds; a different configuration
            there raises ValueError).
        device: torch device.
        progress: show progress bars.
        workers: processes running seeds in parallel (one torch thread each; 1 = in this
            process). Results do not depend on it.

    Returns:
        The rows of ``results.csv`` (None for undefined metrics).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        if old != json.loads(json.dumps(config.to_dict())):
            raise ValueError(f"out: {out} holds a run with a different configuration; use "
                             "another --out directory or delete it")
    else:
        _write_json(cfg_path, config.to_dict())
    n_units = len(config.seeds) * len(config.strategies) * (len(config.tasks) - 1)
    bar = tqdm(total=n_units, desc="continual", disable=not progress)
    bar.update(sum(1 for r in load_results(out, config) if r["task"] > 0))
    start = time.perf_counter()
    if workers > 1 and len(config.seeds) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(config.seeds)),
                                 mp_context=ctx) as pool:
            futures = [pool.submit(_run_seed_worker, config.to_dict(), seed, str(out), device)
                       for seed in config.seeds]
            for fut in as_completed(futures):
                fut.result()
                bar.n = sum(1 for r in load_results(out, config) if r["task"] > 0)
                bar.refresh()
    else:
        for seed in config.seeds:
            _run_seed(config, seed, out, device, progress, bar)
    bar.close()
    rows = _write_results(out, config)
    summary = summarise(rows, config)
    summary["wall_seconds_this_call"] = time.perf_counter() - start
    summary["workers"] = workers
    summary["base_seconds"] = {
        f"seed{seed}": json.loads((out / "base" / f"seed{seed}" / "base.json").read_text())[
            "seconds"] for seed in config.seeds}
    summary["run_seconds"] = {
        f"{s}/seed{seed}": json.loads((out / "runs" / s / f"seed{seed}" / "state.json")
                                      .read_text())["seconds"]
        for s in config.strategies for seed in config.seeds}
    _write_json(out / "summary.json", summary)
    _write_summary_csv(out / "summary.csv", summary)
    plot_results(rows, config, out)
    return rows


# ---------------------------------------------------------------------------- summary, plots
def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarise(rows: list[dict[str, Any]], config: ContinualConfig) -> dict[str, Any]:
    """Final-task metrics per strategy: mean and sample standard deviation over seeds, plus
    the mean over tasks of the all-class mIoU ("avg")."""
    last = len(config.tasks) - 1
    table = []
    for strategy in config.strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        final = [r for r in mine if r["task"] == last]
        entry: dict[str, Any] = {"strategy": strategy, "seeds": len(final)}
        for key in ("miou_old", "miou_new", "miou_all", "forgetting", "exemplars", "bytes"):
            m, s = _mean_std([r[key] for r in final])
            entry[key] = m
            entry[f"{key}_std"] = s
        # exemplars stored while the last task trained (memory after task T-2)
        before = [r for r in mine if r["task"] == last - 1]
        entry["exemplars_replayed"], entry["exemplars_replayed_std"] = _mean_std(
            [r["exemplars"] for r in before])
        entry["bytes_replayed"], _ = _mean_std([r["bytes"] for r in before])
        per_seed_avg = []
        for seed in config.seeds:
            vals = [r["miou_all"] for r in mine if r["seed"] == seed]
            if len(vals) == len(config.tasks):
                per_seed_avg.append(float(np.mean(vals)))
        entry["miou_all_avg"], entry["miou_all_avg_std"] = _mean_std(per_seed_avg)
        table.append(entry)
    return {"config": config.to_dict(), "final_task": last, "table": table}


def _write_summary_csv(path: Path, summary: dict[str, Any]) -> None:
    table = summary["table"]
    if not table:
        return
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0].keys()))
        writer.writeheader()
        for row in table:
            writer.writerow(row)


def plot_results(rows: list[dict[str, Any]], config: ContinualConfig,
                 out: str | Path | None = None) -> list[Any]:
    """Two figures: mIoU (all and old classes) vs task, and exemplars vs bytes.

    Args:
        rows: results rows.
        config: the experiment.
        out: directory to save ``miou_vs_task.png`` and ``exemplars_vs_bytes.png`` (None:
            only return the figures).

    Returns:
        The two matplotlib figures (closed if saved).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(range(len(config.tasks)))
    fig1, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for strategy in config.strategies:
        for ax, key in zip(axes, ("miou_all", "miou_old")):
            means, stds, xs = [], [], []
            for t in tasks:
                m, s = _mean_std([r[key] for r in rows
                                  if r["strategy"] == strategy and r["task"] == t])
                if np.isfinite(m):
                    xs.append(t)
                    means.append(100 * m)
                    stds.append(100 * s)
            if xs:
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=strategy)
    for ax, title in zip(axes, ("all seen classes", "old classes")):
        ax.set_xlabel("task")
        ax.set_ylabel("mIoU (%)")
        ax.set_title(title)
        ax.set_xticks(tasks)
    axes[0].legend(fontsize=7)
    fig1.tight_layout()
    fig2, ax = plt.subplots(figsize=(4.6, 3.4))
    for strategy in config.strategies:
        pts = [(r["bytes"], r["exemplars"]) for r in rows if r["strategy"] == strategy]
        if pts:
            b, e = zip(*pts)
            ax.scatter(np.array(b) / 1024, e, label=strategy, s=18)
    ax.axvline(config.budget_bytes / 1024, color="grey", ls="--", lw=1, label="budget")
    ax.set_xlabel("memory used (KiB)")
    ax.set_ylabel("exemplars stored")
    ax.set_title("exemplars vs bytes (after each task)")
    ax.legend(fontsize=7)
    fig2.tight_layout()
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        for fig, name in ((fig1, "miou_vs_task.png"), (fig2, "exemplars_vs_bytes.png")):
            fig.savefig(Path(out) / name, dpi=100, bbox_inches="tight")
            plt.close(fig)
    return [fig1, fig2]
