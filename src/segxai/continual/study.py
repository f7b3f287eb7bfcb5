"""The RQ3 study (``segxai continual --study rq3``): every memory strategy and control at the
same byte budget, at r = 4 and r = 16, random and herding selection, over paired seeds, with
95 % intervals.

Arms (each a :class:`ContinualConfig` run in ``out/<arm>``, a resumable
:class:`~segxai.core.runstore.RunStore`):

* ``r4``: none (fine-tuning), full, downsample, saliency-box, prob-box, random-box, gt-box at
  r = 4, random selection, plus the joint upper bound;
* ``r16``: the compressed strategies at r = 16 (none and full do not depend on r: they are
  compared from ``r4``);
* ``r4-herding``: full, saliency-box and gt-box with herding selection.

Task 0 does not depend on the arm (no memory yet; r, strategies and selection play no part),
so later arms reuse the first arm's task-0 checkpoints (copied before they start; the same
seeds are then excluded everywhere). Each arm's seeds run over ``workers`` processes
(:mod:`segxai.core.executor`).

Analysis (:func:`rq3_analysis`): per-seed final-task tables; per arm and strategy the mean
with a 95 % bootstrap interval over seeds; paired differences over the seeds (the unit) with
:func:`segxai.core.intervals.paired_difference` for saliency-box against full, gt-box,
random-box, downsample and prob-box (old-class mIoU), for full against none (learner sanity)
and for every strategy's new-class mIoU against none's.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from segxai.continual.config import ContinualConfig, quick_config
from segxai.continual.experiment import run_experiment
from segxai.continual.summary import base_report, load_results, rounds_report
from segxai.core.errors import SegxaiError
from segxai.core.runstore import atomic_write_json, atomic_write_text

__all__ = ["ARMS", "rq3_analysis", "rq3_configs", "run_rq3"]

COMPRESSED = ["downsample", "saliency-box", "prob-box", "random-box", "gt-box"]
ARMS: dict[str, dict[str, Any]] = {
    "r4": {"strategies": ["none", "full", *COMPRESSED], "r": 4.0, "joint": True},
    "r16": {"strategies": list(COMPRESSED), "r": 16.0},
    "r4-herding": {"strategies": ["full", "saliency-box", "gt-box"], "r": 4.0,
                   "selection": "herding"},
}
RQ3_DEFAULTS: dict[str, Any] = {"seeds": list(range(10)), "base_target": 0.7,
                                "base_rounds": 4, "pseudo_threshold": None, "unbiased_ce": True,
                                "lr": 0.01, "batch_size": 8, "task_target": 0.7,
                                "task_rounds": 3}
"""The full study: 64 px (the experiment's size), peak lr 0.01 and 8 images per step (at
the experiment's lr 3·10⁻³ and batch 16 the learner trained jointly on every label for 46
epochs kept 48.5 % old-class mIoU on seed 0; at lr 0.01 and batch 8, 99.6 %:
docs/continual.md); the strong-base rule applied to every incremental task as well (its new
classes train in rounds of 8 epochs until IoU 0.7, at most 3 rounds, reported per seed)."""
RQ3_QUICK: dict[str, Any] = {"seeds": [0, 1], "epochs": 2, "base_epochs": 10, "n_train": 400,
                             "n_val": 40, "size": 32, "batch_size": 8, "lr": 0.01,
                             "budget_bytes": 20 * (4 * 32 * 32 + 4), "base_target": 0.3,
                             "base_rounds": 2, "pseudo_threshold": None, "unbiased_ce": True}
"""``--quick``: a pipeline check; its base target is 0.3 (not 0.7), since at most 20 epochs
on 32-pixel images do not reach 0.7 reliably."""
PAIRS = [("saliency-box", "full"), ("saliency-box", "gt-box"), ("saliency-box", "random-box"),
         ("saliency-box", "downsample"), ("prob-box", "saliency-box"), ("gt-box", "full"),
         ("full", "none")]


def rq3_configs(quick: bool = False, arms: list[str] | None = None,
                strategies: list[str] | None = None, **common: Any) -> dict[str, ContinualConfig]:
    """The study's arms as configurations.

    Args:
        quick: the ``--quick`` sizes (2 seeds, 32 px, short training).
        arms: names from :data:`ARMS` (default all, in that order).
        strategies: keep only these strategies in each arm (an arm left with none is
            dropped; the joint upper bound stays only if ``"joint"`` is listed); default all.
        common: overrides of the study defaults (``seeds``, ``tasks``, ``dataset``, ``size``,
            ``budget_bytes``, ...).
    """
    names = list(ARMS) if arms is None else list(arms)
    bad = [a for a in names if a not in ARMS]
    if bad or not names:
        raise SegxaiError(f"arms: expected names from {list(ARMS)}, got {arms!r}")
    settings = dict(RQ3_QUICK if quick else RQ3_DEFAULTS)
    settings.update(common)
    out = {}
    for name in names:
        merged = {**settings, **ARMS[name]}
        if strategies is not None:  # "joint" in the list keeps the upper bound
            merged["joint"] = bool(merged.get("joint")) and "joint" in strategies
            merged["strategies"] = [s for s in merged["strategies"] if s in strategies]
            if not merged["strategies"]:
                continue
        out[name] = quick_config(**merged) if quick else ContinualConfig(**merged)
    if not out:
        raise SegxaiError(f"strategies: no arm of {names} runs any of {strategies}")
    return out


def _share_base(src: Path, dst: Path, seeds: list[int]) -> None:
    for seed in seeds:
        a, b = src / "base" / f"seed{seed}", dst / "base" / f"seed{seed}"
        if (a / "base.json").exists() and not (b / "base.json").exists():
            b.mkdir(parents=True, exist_ok=True)
            shutil.copy2(a / "model.safetensors", b / "model.safetensors")
            shutil.copy2(a / "base.json", b / "base.json")  # written last: marks it complete


def run_rq3(configs: dict[str, ContinualConfig], out: str | Path, *, workers: int = 1,
            device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Run (or resume) every arm, then write ``rq3.json``, ``rq3_seeds.csv`` and
    ``rq3_pairs.csv`` into ``out`` and return the analysis."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    first: Path | None = None
    seconds: dict[str, float] = {}
    for name, config in configs.items():
        start = time.perf_counter()
        if first is not None:
            _share_base(first, out / name, config.seeds)
        run_experiment(config, out / name, device=device, progress=progress, workers=workers)
        seconds[name] = time.perf_counter() - start
        first = first or out / name
    analysis = rq3_analysis(out, configs)
    analysis["wall_seconds_this_call"] = seconds
    atomic_write_json(out / "rq3.json", analysis)
    return analysis


def _final(rows: list[dict[str, Any]], last: int) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["strategy"], int(r["seed"])): r for r in rows if r["task"] == last}


def _interval(values: list[float]) -> dict[str, Any] | None:
    from segxai.core.intervals import bootstrap_mean

    if len(values) < 2:
        return None
    return bootstrap_mean(np.array(values), seed=0).to_dict()


def _paired(a: list[float], b: list[float]) -> dict[str, Any] | None:
    from segxai.core.intervals import paired_difference

    if len(a) < 2:
        return None
    return paired_difference(np.array(a), np.array(b), seed=0).to_dict()


def rq3_analysis(out: str | Path, configs: dict[str, ContinualConfig]) -> dict[str, Any]:
    """Per-seed tables, per-strategy intervals and paired differences (see the module)."""
    out = Path(out)
    finals: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    replayed: dict[str, dict[tuple[str, int], int]] = {}
    excluded: set[int] = set()
    below: list[dict[str, Any]] = []
    rounds: dict[str, dict[tuple[str, int], list[int]]] = {}
    for name, config in configs.items():
        rows = load_results(out / name, config)
        last = len(config.tasks) - 1
        finals[name] = _final(rows, last)
        replayed[name] = {(r["strategy"], int(r["seed"])): int(r["exemplars"])
                          for r in rows if r["task"] == last - 1}
        excluded |= set(base_report(out / name, config)["excluded_seeds"])
        below += [{"arm": name, **b} for b in rounds_report(out / name, config)["below_target"]]
        rounds[name] = {}  # rounds trained per incremental task (states before the rule: 1)
        for x in rows:
            if x["task"] > 0 and x["strategy"] != "joint":
                unit = (x["strategy"], int(x["seed"]))
                rounds[name].setdefault(unit, []).append(int(x.get("rounds") or 1))
    seed_rows, table, pairs = [], [], []
    for name, final in finals.items():
        for (strategy, seed), r in sorted(final.items()):
            seed_rows.append({"arm": name, "strategy": strategy, "seed": seed,
                              "miou_old": r["miou_old"], "miou_new": r["miou_new"],
                              "miou_all": r["miou_all"],
                              "exemplars_replayed": replayed[name].get((strategy, seed)),
                              "bytes": r["bytes"],
                              "rounds": "-".join(str(k) for k in
                                                 rounds[name].get((strategy, seed), []))})
        for strategy in sorted({s for s, _ in final}):
            entry: dict[str, Any] = {"arm": name, "strategy": strategy}
            for key in ("miou_old", "miou_new", "miou_all"):
                vals = [float(r[key]) for (s, _), r in sorted(final.items())
                        if s == strategy and r[key] is not None]
                entry[key] = _interval(vals)
                entry[f"{key}_mean"] = float(np.mean(vals)) if vals else None
            entry["seeds"] = sum(1 for s, _ in final if s == strategy)
            ex = [v for (s, _), v in replayed[name].items() if s == strategy]
            entry["exemplars_replayed"] = float(np.mean(ex)) if ex else None
            table.append(entry)
    reference = finals.get("r4", {})
    for name, final in finals.items():
        pool = {**{k: v for k, v in reference.items() if k[0] in ("none", "full")}, **final}
        comparisons = [(a, b, "miou_old") for a, b in PAIRS]
        comparisons += [(s, "none", "miou_new") for s in sorted({s for s, _ in final})
                        if s not in ("none", "joint")]
        for a, b, key in comparisons:
            seeds = sorted(s for (st, s) in pool if st == a and (b, s) in pool
                           and pool[(a, s)][key] is not None and pool[(b, s)][key] is not None)
            if not seeds or (name != "r4" and a in ("none", "full") and b in ("none", "full")):
                continue
            va = [float(pool[(a, s)][key]) for s in seeds]
            vb = [float(pool[(b, s)][key]) for s in seeds]
            pairs.append({"arm": name, "a": a, "b": b, "metric": key, "seeds": len(seeds),
                          "difference": _paired(va, vb),
                          "mean_difference": float(np.mean(np.array(va) - np.array(vb)))})
    _write_csv(out / "rq3_seeds.csv", seed_rows)
    _write_csv(out / "rq3_pairs.csv", [_flat_pair(p) for p in pairs])
    return {"arms": {n: c.to_dict() for n, c in configs.items()},
            "excluded_seeds": sorted(excluded), "below_task_target": below,
            "table": table, "pairs": pairs,
            "per_seed": seed_rows}


def _flat_pair(p: dict[str, Any]) -> dict[str, Any]:
    d = p["difference"]
    return {"arm": p["arm"], "a": p["a"], "b": p["b"], "metric": p["metric"],
            "seeds": p["seeds"], "mean_difference": p["mean_difference"],
            "lo": None if d is None else d["difference"]["lo"],
            "hi": None if d is None else d["difference"]["hi"],
            "p_value": None if d is None else d["p_value"]}


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import csv
    import io

    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _cell(entry: dict[str, Any], key: str) -> str:
    iv = entry[key]
    if iv is None:
        m = entry[f"{key}_mean"]
        return f"{100 * m:6.1f}" + " " * 17 if m is not None else "-".ljust(23)
    return f"{100 * iv['estimate']:6.1f} [{100 * iv['lo']:5.1f}, {100 * iv['hi']:5.1f}]"


def format_rq3(analysis: dict[str, Any]) -> str:
    """A plain-text report of the analysis (percentage points)."""
    below = [f"{b['arm']}/{b['strategy']}/seed{b['seed']}/task{b['task']} (lowest new-class "
             f"IoU {100 * min(v or 0.0 for v in b['new_iou']):.1f} % after {b['rounds']} rounds)"
             for b in analysis.get("below_task_target", [])]
    lines = [f"excluded seeds (weak base): {analysis['excluded_seeds'] or 'none'}",
             f"incremental tasks below the new-class target: {', '.join(below) or 'none'}",
             "arm        strategy       old mIoU % [95% CI]      new mIoU % [95% CI]    "
             "exemplars"]
    for e in analysis["table"]:
        ex = e["exemplars_replayed"]
        lines.append(f"{e['arm']:<10} {e['strategy']:<14} {_cell(e, 'miou_old'):<24} "
                     f"{_cell(e, 'miou_new'):<22} {'' if ex is None else f'{ex:.1f}'}")
    lines.append("paired differences (a - b, points, 95% CI over seeds):")
    for p in analysis["pairs"]:
        d = p["difference"]
        ci = "" if d is None else (f" [{100 * d['difference']['lo']:.1f}, "
                                   f"{100 * d['difference']['hi']:.1f}], p = {d['p_value']:.3g}")
        lines.append(f"  {p['arm']:<10} {p['metric']:<9} {p['a']} - {p['b']}: "
                     f"{100 * p['mean_difference']:+.1f}{ci} (n = {p['seeds']})")
    return "\n".join(lines)


def load_rq3(out: str | Path) -> dict[str, Any]:
    """The analysis a finished :func:`run_rq3` wrote."""
    return dict(json.loads((Path(out) / "rq3.json").read_text()))
