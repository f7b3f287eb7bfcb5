"""``segxai nas study``: proxy validation, searches per proxy and winners, in one resumable run.

1. **Reference**: the teacher's own architecture trained from scratch with the same schedule
   (does the schedule let the teacher's architecture reach its mIoU?), and the given teacher's
   mIoU on the same validation images.
2. **Searches**: ``seeds`` searches per proxy, same band, same population and iteration
   budget (sub-stores ``search/PROXY-sSEED/``).
3. **Winners**: every search winner trained with the same schedule; winners of the
   ``distill_proxies`` searches also with distillation + the saliency term (α, λ).
4. **Table**: per proxy and training mode, mean and spread (SD, min, max over seeds) of
   params %, FLOPs %, mIoU % of the teacher, single-thread CPU latency and search seconds.
5. **Validation** (:func:`~segxai.nas.validate.run_validation`, sub-store ``validate/``):
   ``M`` architectures sampled in the size band, every proxy, each trained with one identical
   schedule; τ, ρ and partial τ (given params) with bootstrap intervals. It runs last: it is
   the longest part, its rows are keyed by architecture in a fixed draw order, so a study cut
   short keeps its searches and winners, and ``segxai nas validate --out OUT/validate`` with
   the same options extends it to more architectures.

Every unit is appended as a row (``reference.jsonl``, ``winners.jsonl``) or lives in its own
resumable store, so a killed study resumes where it stopped (the study's settings are
fingerprinted; other settings are refused naming the differing keys).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from segxai.core.runstore import RunStore
from segxai.nas.backends import InProcessBackend, RayBackend, single_thread
from segxai.nas.counting import network_counts
from segxai.nas.evolution import Budget
from segxai.nas.fitness import ProbeSet
from segxai.nas.search import build_candidate, run_search
from segxai.nas.space import SearchSpace, build_unet
from segxai.nas.state import config_key, derive_seed
from segxai.nas.student import StudentConfig, cpu_latency_ms, train_student
from segxai.nas.validate import ValidationTask, arch_name, run_validation, sample_architectures

__all__ = ["StudySettings", "run_study", "summarise_winners"]

KIND = "nas-study"


@dataclass(frozen=True)
class StudySettings:
    """Sizes of a study (fingerprinted with the run).

    Attributes:
        architectures: architectures validated (sampled in the band).
        search_proxies: proxies searched with.
        seeds: search seeds per proxy.
        population: population of every search.
        iterations: iterations of every search.
        children: children per iteration.
        distill_proxies: proxies whose winners are also trained with distillation + saliency.
        alpha: distillation weight of that training.
        lam: saliency-matching weight of that training.
        init_seeds: initialisations averaged by the CAM proxies.
        resamples: bootstrap resamples of the intervals.
    """

    architectures: int = 60
    search_proxies: tuple[str, ...] = ("cam-gram", "cam", "params", "random")
    seeds: int = 3
    population: int = 16
    iterations: int = 12
    children: int = 4
    distill_proxies: tuple[str, ...] = ("cam",)
    alpha: float = 0.5
    lam: float = 1.0
    init_seeds: int = 3
    resamples: int = 10_000


@dataclass
class WinnerTask:
    """Shared input of the winner trainings: teacher, data and the identical schedule."""

    teacher: nn.Module
    train_data: Any
    val_data: Any
    train_config: Any
    input_shape: tuple[int, int, int]
    device: str = "cpu"


def winner_item(task: WinnerTask, item: tuple[dict[str, Any], int, float, float]
                ) -> dict[str, Any]:
    """Train one winner ``(config, seed, alpha, lam)`` with the schedule (a backend item)."""
    config, seed, alpha, lam = item
    with single_thread(1):
        model = build_candidate(build_unet, config, seed)
        res = train_student(model, task.train_data, task.train_config,
                            teacher=task.teacher if alpha > 0 or lam > 0 else None,
                            student_config=StudentConfig(alpha=alpha, lam=lam),
                            val_data=task.val_data, device=task.device, progress=False)
        counts = network_counts(model, task.input_shape)
        return {"params": counts["params"], "flops": counts["flops"],
                "val_miou": res["val_miou"], "train_seconds": res["seconds"],
                "cpu_latency_ms": cpu_latency_ms(model, task.input_shape)}


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values),
            "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def summarise_winners(rows: list[dict[str, Any]], teacher: dict[str, Any],
                      target: float = 0.95) -> list[dict[str, Any]]:
    """Per (proxy, mode): mean/SD/min/max over seeds of params %, FLOPs %, mIoU % of the
    teacher, CPU latency and search seconds, and how many seeds reach ``target`` of the
    teacher's mIoU."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["proxy"], r["mode"]), []).append(r)
    out = []
    for (proxy, mode), rs in groups.items():
        pct = [100.0 * r["val_miou"] / teacher["val_miou"] for r in rs]
        entry: dict[str, Any] = {"proxy": proxy, "mode": mode, "seeds": len(rs),
                                 "reached": sum(p >= 100.0 * target for p in pct)}
        for key, vals in (("params_pct", [100.0 * r["params"] / teacher["params"] for r in rs]),
                          ("flops_pct", [100.0 * r["flops"] / teacher["flops"] for r in rs]),
                          ("miou_pct", pct),
                          ("latency_ms", [r["cpu_latency_ms"] for r in rs]),
                          ("search_s", [r["search_seconds"] for r in rs])):
            for stat, v in _spread(vals).items():
                entry[f"{key}_{stat}"] = v
        out.append(entry)
    return out


def run_study(teacher: nn.Module, probe: ProbeSet, budget: Budget, vtask: ValidationTask,
              settings: StudySettings, *, seed: int = 0,
              backend: InProcessBackend | RayBackend | None = None,
              out_dir: str | Path | None = None, progress: bool = True,
              device: str = "cpu") -> dict[str, Any]:
    """Run (or resume) the whole study; see the module docstring.

    Args:
        teacher: the trained teacher.
        probe: its probe set.
        budget: the size band (:func:`~segxai.nas.band.band_budget`).
        vtask: proxies, data and the identical schedule (validation and winners).
        settings: sizes.
        seed: study seed.
        backend: in-process, processes or Ray.
        out_dir: the run directory (``None``: nothing written or resumed).
        progress: progress bars.
        device: torch device.

    Returns:
        ``validation`` (rows, correlations), ``reference``, ``winners`` (rows), ``table``.
    """
    backend = backend or InProcessBackend()
    root = Path(out_dir) if out_dir is not None else None
    # the architecture count and the bootstrap size are not part of the identity: a later run
    # with more architectures extends the validation (its own store keys rows by architecture)
    sizes = {k: v for k, v in asdict(settings).items() if k not in ("architectures", "resamples")}
    identity = {"settings": sizes, "seed": seed, "budget": asdict(budget),
                "train": vtask.train_config.to_dict(), "train_images": len(vtask.train_data),
                "val_images": len(vtask.val_data)}
    store = RunStore(root, kind=KIND, settings=identity) if root is not None else None
    shape = probe.input_shape
    space = SearchSpace(in_channels=shape[0], num_classes=probe.num_classes,
                        resolution=(shape[1], shape[2]))
    wtask = WinnerTask(teacher=teacher, train_data=vtask.train_data, val_data=vtask.val_data,
                       train_config=vtask.train_config, input_shape=shape, device=device)

    def rows_of(name: str) -> dict[str, dict[str, Any]]:
        return {r["key"]: r for r in store.rows(name)} if store is not None else {}

    done_ref = rows_of("reference")
    reference = dict(done_ref.get("reference", {}))
    # (key, config, seed, alpha, lam) of every training still to do; the teacher's architecture
    # (the largest network) goes first so that the workers end together
    trainings: list[tuple[str, dict[str, Any], int, float, float]] = []
    if not reference:
        from segxai.models import evaluate_miou

        tcounts = network_counts(teacher, shape)
        reference = {"key": "reference", "params": tcounts["params"], "flops": tcounts["flops"],
                     "val_miou": evaluate_miou(teacher, vtask.val_data, device=device),
                     "cpu_latency_ms": cpu_latency_ms(teacher, shape)}
        tconfig = getattr(getattr(teacher, "config", None), "to_dict", None)
        if callable(tconfig):
            trainings.append(("reference", tconfig(), derive_seed(seed, "teacher-arch"), 0.0, 0.0))
        elif store is not None:
            store.append_row("reference", reference)
    searches: dict[str, dict[str, Any]] = {}
    for proxy in settings.search_proxies:
        for s in range(settings.seeds):
            name = f"{proxy}-s{s}"
            searches[name] = run_search(
                teacher, probe, proxy=proxy, space=space, population=settings.population,
                iterations=settings.iterations, children_per_iteration=settings.children,
                budget=budget, seed=seed * 1000 + s, backend=backend,
                out_dir=root / "search" / name if root else None, progress=progress,
                init_seeds=settings.init_seeds, device=device)
    done = rows_of("winners")
    units: dict[str, tuple[str, str, float, float, dict[str, Any]]] = {}
    for name, summary in searches.items():
        modes = [("plain", 0.0, 0.0)]
        if summary["proxy"] in settings.distill_proxies:
            modes.append(("distill+saliency", settings.alpha, settings.lam))
        for mode, alpha, lam in modes:
            units[f"{name}/{mode}"] = (name, mode, alpha, lam, summary)
    # distillation + saliency runs the teacher every step (about 3x a plain training): those
    # go first too
    todo = sorted((key for key in units if key not in done),
                  key=lambda key: units[key][1] == "plain")
    trainings += [(key, units[key][4]["best"]["config"], derive_seed(seed, "winner", key),
                   units[key][2], units[key][3]) for key in todo]
    # one fan-out for all trainings, each row written as soon as its training ends
    for i, res in backend.imap(winner_item, wtask, [t[1:] for t in trainings]):
        key = trainings[i][0]
        if key == "reference":
            reference["architecture_under_schedule_miou"] = res["val_miou"]
            if store is not None:
                store.append_row("reference", reference)
            continue
        name, mode, _, _, summary = units[key]
        row = {"key": key, "search": name, "proxy": summary["proxy"], "mode": mode,
               "architecture": arch_name(summary["best"]["config"]),
               "config_key": config_key(summary["best"]["config"]),
               "search_seconds": summary["seconds"], **res}
        done[key] = row
        if store is not None:
            store.append_row("winners", row)
    winners = [done[key] for key in units]
    table = summarise_winners(winners, reference)
    # validation last: the longest part, and the one a later run extends (rows are keyed by
    # architecture and the draw order is fixed), so a study cut short keeps its searches
    configs = sample_architectures(space, budget, settings.architectures, seed=seed)
    val = run_validation(vtask, configs, seed=seed, backend=backend,
                         out_dir=root / "validate" if root else None, progress=progress,
                         resamples=settings.resamples)
    result = {"validation": {"correlations": val["correlations"], "rows": val["rows"]},
              "reference": reference, "winners": winners, "table": table,
              "settings": asdict(settings), "band": [budget.min_params, budget.max_params]}
    if store is not None:
        store.write_json("study.json", result)
        store.write_csv("table.csv", table, fieldnames=list(table[0]) if table else ["proxy"])
    return result
