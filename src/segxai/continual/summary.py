"""Results of the continual experiment: the rows of every completed task, the per-strategy
summary (final-task means and standard deviations), and their CSV files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from segxai.continual.config import ContinualConfig
from segxai.core.runstore import RunStore

__all__ = ["COLUMNS", "base_report", "load_results", "mean_std", "rounds_report", "summarise",
           "write_results", "write_summary_csv"]

COLUMNS = ("strategy", "seed", "task", "miou_old", "miou_new", "miou_all", "forgetting",
           "exemplars", "bytes")


def write_results(store: RunStore, config: ContinualConfig) -> list[dict[str, Any]]:
    """Rewrite ``results.csv`` from the completed tasks (undefined metrics as ``nan``)."""
    rows = load_results(store.root, config)
    store.write_csv("results.csv", [{k: ("nan" if r[k] is None else r[k]) for k in COLUMNS}
                                    for r in rows], fieldnames=COLUMNS)
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
    if config.joint:  # the upper bound: one row per seed, strategy "joint"
        for seed in config.seeds:
            path = out / "joint" / f"seed{seed}" / "state.json"
            if path.exists():
                rows.extend(json.loads(path.read_text())["rows"])
    return rows


def base_report(out: str | Path, config: ContinualConfig) -> dict[str, Any]:
    """Per seed: the task-0 IoUs, rounds and whether the base is strong; and the seeds
    excluded because it is not (``base_target``)."""
    out = Path(out)
    seeds: dict[str, Any] = {}
    for seed in config.seeds:
        path = out / "base" / f"seed{seed}" / "base.json"
        if path.exists():
            state = json.loads(path.read_text())
            seeds[str(seed)] = {"iou": state["iou"], "rounds": state.get("rounds", 1),
                                "strong": state.get("strong", True),
                                "seconds": state["seconds"]}
    excluded = [int(s) for s, v in seeds.items() if not v["strong"]]
    return {"target": config.base_target, "seeds": seeds, "excluded_seeds": excluded}


def rounds_report(out: str | Path, config: ContinualConfig) -> dict[str, Any]:
    """Per strategy and seed, what the rounds rule (``task_target``) did in each incremental
    task (rounds trained, the new classes' validation IoU after each round, reached or not);
    and every task whose new classes stayed below the target after ``task_rounds`` rounds
    (kept in the results, listed here)."""
    out = Path(out)
    units: dict[str, Any] = {}
    below = []
    for strategy in config.strategies:
        for seed in config.seeds:
            path = out / "runs" / strategy / f"seed{seed}" / "state.json"
            if not path.exists():
                continue
            tasks = json.loads(path.read_text()).get("rounds", [])
            units[f"{strategy}/seed{seed}"] = tasks
            for t, entry in enumerate(tasks):
                if entry is not None and entry["reached"] is False:
                    below.append({"strategy": strategy, "seed": seed, "task": t,
                                  "rounds": entry["rounds"], "new_iou": entry["new_iou"][-1]})
    return {"target": config.task_target, "max_rounds": config.task_rounds, "units": units,
            "below_target": below}


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarise(rows: list[dict[str, Any]], config: ContinualConfig) -> dict[str, Any]:
    """Final-task metrics per strategy: mean and sample standard deviation over seeds, plus
    the mean over tasks of the all-class mIoU ("avg")."""
    last = len(config.tasks) - 1
    table = []
    for strategy in [*config.strategies, *(["joint"] if config.joint else [])]:
        mine = [r for r in rows if r["strategy"] == strategy]
        final = [r for r in mine if r["task"] == last]
        entry: dict[str, Any] = {"strategy": strategy, "seeds": len(final)}
        for key in ("miou_old", "miou_new", "miou_all", "forgetting", "exemplars", "bytes"):
            m, s = mean_std([r[key] for r in final])
            entry[key] = m
            entry[f"{key}_std"] = s
        # exemplars stored while the last task trained (memory after task T-2)
        before = [r for r in mine if r["task"] == last - 1]
        entry["exemplars_replayed"], entry["exemplars_replayed_std"] = mean_std(
            [r["exemplars"] for r in before])
        entry["bytes_replayed"], _ = mean_std([r["bytes"] for r in before])
        per_seed_avg = []
        for seed in config.seeds:
            vals = [r["miou_all"] for r in mine if r["seed"] == seed]
            if len(vals) == len(config.tasks):
                per_seed_avg.append(float(np.mean(vals)))
        entry["miou_all_avg"], entry["miou_all_avg_std"] = mean_std(per_seed_avg)
        table.append(entry)
    return {"config": config.to_dict(), "final_task": last, "table": table}


def write_summary_csv(store: RunStore, summary: dict[str, Any]) -> None:
    """``summary.csv``: one row per strategy."""
    if summary["table"]:
        store.write_csv("summary.csv", summary["table"])
