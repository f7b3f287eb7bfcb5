"""The continual-segmentation experiment: strategies × seeds × tasks, checkpointed per task.

Layout of ``out`` (a :class:`~segxai.core.runstore.RunStore` of kind ``"continual"``)::

    run.json                        kind and settings (a different configuration is refused)
    config.json                     the experiment's configuration
    base/seed{s}/, runs/{strategy}/seed{s}/, rows.jsonl   per-seed runs (:mod:`.runs`)
    results.csv                     strategy, seed, task, miou_old, miou_new, miou_all,
                                    forgetting, exemplars, bytes
    summary.json, summary.csv       final-task means and standard deviations per strategy
    miou_vs_task.png, exemplars_vs_bytes.png

A run killed at any point resumes from the last completed task of every (strategy, seed) and
ends with the same numbers as an uninterrupted one. Tests simulate the kill with
:attr:`RunStore.on_row <segxai.core.runstore.RunStore.on_row>` (one row per completed task).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from segxai.continual.config import FULL_EXEMPLAR_BYTES_64, ContinualConfig, quick_config
from segxai.continual.plots import plot_results
from segxai.continual.runs import open_store, run_seed
from segxai.continual.summary import (
    COLUMNS,
    base_report,
    load_results,
    rounds_report,
    summarise,
    write_results,
    write_summary_csv,
)

__all__ = [
    "COLUMNS",
    "FULL_EXEMPLAR_BYTES_64",
    "ContinualConfig",
    "load_results",
    "plot_results",
    "quick_config",
    "run_experiment",
    "summarise",
]


def _seed_task(shared: tuple[dict[str, Any], str, str], seed: int) -> int:
    """One seed in an executor's worker (``shared`` = config dict, out, device)."""
    config, out, device = shared
    cfg = ContinualConfig.from_dict(config)
    run_seed(cfg, seed, open_store(cfg, out), device, False, None)
    return seed


def run_experiment(config: ContinualConfig, out: str | Path, *, device: str = "cpu",
                   progress: bool = True, workers: int = 1) -> list[dict[str, Any]]:
    """Run (or resume) every strategy × seed × task and write results, summary and plots.

    Args:
        config: the experiment.
        out: output directory (resumes what it already holds; a different configuration
            there raises :class:`~segxai.core.errors.SegxaiError`, a ValueError).
        device: torch device.
        progress: show progress bars.
        workers: processes running seeds in parallel (one torch thread each; 1 = in this
            process). Results do not depend on it.

    Returns:
        The rows of ``results.csv`` (None for undefined metrics).
    """
    store = open_store(config, out)
    store.write_json("config.json", config.to_dict())
    n_units = len(config.seeds) * len(config.strategies) * (len(config.tasks) - 1)
    bar = tqdm(total=n_units, desc="continual", disable=not progress)
    bar.update(sum(1 for r in load_results(store.root, config) if r["task"] > 0))
    start = time.perf_counter()
    if workers > 1 and len(config.seeds) > 1:
        from segxai.core.executor import make_executor

        shared = (config.to_dict(), str(store.root), device)
        with make_executor(min(workers, len(config.seeds))) as pool:
            for _ in pool.imap(_seed_task, shared, list(config.seeds)):
                bar.n = sum(1 for r in load_results(store.root, config) if r["task"] > 0)
                bar.refresh()
    else:
        for seed in config.seeds:
            run_seed(config, seed, store, device, progress, bar)
    bar.close()
    rows = write_results(store, config)
    summary = summarise(rows, config)
    summary["wall_seconds_this_call"] = time.perf_counter() - start
    summary["workers"] = workers
    base = base_report(store.root, config)
    summary["base"] = base
    summary["excluded_seeds"] = base["excluded_seeds"]
    summary["task_rounds"] = rounds_report(store.root, config)
    summary["base_seconds"] = {f"seed{seed}": v["seconds"] for seed, v in base["seeds"].items()}
    summary["run_seconds"] = {
        f"{s}/seed{seed}": store.read_json(f"runs/{s}/seed{seed}/state.json")["seconds"]
        for s in config.strategies for seed in config.seeds
        if seed not in base["excluded_seeds"]}
    store.write_json("summary.json", summary)
    write_summary_csv(store, summary)
    plot_results(rows, config, store.root)
    return rows
