"""Explanation-guided architecture search: probe data, candidate scoring, the search driver.

:func:`run_search` wires the pieces: the teacher's explanation maps on a fixed probe batch
(:func:`~segxai.nas.fitness.build_probe`), the search space and budget, a backend that scores
batches of candidates (in-process or Ray tasks), and the resumable evolutionary loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from segxai.core.checks import check_choice, check_positive_int
from segxai.core.runstore import RunStore
from segxai.nas.backends import InProcessBackend, RayBackend, single_thread
from segxai.nas.band import band_initial, sample_in_band
from segxai.nas.counting import network_counts
from segxai.nas.evolution import KIND, Budget, EvolutionSettings, evolve, search_identity
from segxai.nas.fitness import ProbeSet, build_probe
from segxai.nas.proxies import CAM_PROXIES, PROXIES, cam_family, compute_proxy
from segxai.nas.space import SearchSpace, build_unet
from segxai.nas.state import derive_seed

__all__ = ["RANKED", "ScoringTask", "make_probe", "probe_data", "run_search", "score_candidate",
           "score_candidates"]

_M = TypeVar("_M", bound=nn.Module)


@dataclass
class ScoringTask:
    """What every scoring task receives (sent once per batch to Ray workers).

    Attributes:
        probe: teacher maps, probe and distillation images.
        proxies: proxy names to compute (the first one is the search fitness).
        fewshot_steps: distillation steps of ``cam-fewshot``.
        fewshot_lr: their learning rate.
        fewshot_batch: their batch size.
        threads: torch threads per task (1 makes results backend-independent).
        device: torch device.
        builder: configuration dict → freshly initialised ``nn.Module`` (module-level).
        init_seeds: initialisations averaged by the CAM proxies (the first is the
            candidate's seed, the others are derived from it).
    """

    probe: ProbeSet
    proxies: tuple[str, ...] = ("cam",)
    fewshot_steps: int = 50
    fewshot_lr: float = 1e-2
    fewshot_batch: int = 8
    threads: int = 1
    device: str = "cpu"
    builder: Callable[[dict[str, Any]], nn.Module] = field(default=build_unet)
    init_seeds: int = 3

    def __post_init__(self) -> None:
        for p in self.proxies:
            check_choice(p, "proxy", PROXIES)
        check_positive_int(self.init_seeds, "init_seeds")


#: Combined fitnesses: the sum of each part's rank in a fixed reference sample of the band.
RANKED: dict[str, tuple[str, ...]] = {"cam+zen": ("cam", "zen")}
RANK_REFERENCE = 16


def _rank_in(value: float, sample: list[float]) -> float:
    """Mid-rank of ``value`` in ``sample`` as a fraction in [0, 1] (−inf ranks lowest)."""
    below = sum(v < value for v in sample)
    ties = sum(v == value for v in sample)
    return (below + 0.5 * ties) / max(1, len(sample))


def build_candidate(builder: Callable[[dict[str, Any]], _M], config: dict[str, Any],
                    seed: int) -> _M:
    """``builder(config)`` initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return builder(config)


def score_candidate(task: ScoringTask, item: tuple[dict[str, Any], int]) -> dict[str, float]:
    """Every proxy of ``task`` for one candidate ``(config, seed)`` (a backend work item)."""
    config, seed = item
    with single_thread(task.threads):
        model = build_candidate(task.builder, config, seed).to(task.device)
        cams = [p for p in task.proxies if p in CAM_PROXIES]
        out: dict[str, float] = {}
        if cams:
            replicas = [build_candidate(task.builder, config, derive_seed(seed, "init", i))
                        .to(task.device) for i in range(1, task.init_seeds)]
            out.update(cam_family(task.probe, [model, *replicas], cams))
        for name in task.proxies:
            if name not in out:
                out[name] = compute_proxy(name, model, task.probe, seed=seed,
                                          fewshot_steps=task.fewshot_steps,
                                          fewshot_lr=task.fewshot_lr,
                                          fewshot_batch=task.fewshot_batch, device=task.device)
        return {name: out[name] for name in task.proxies}


def score_candidates(task: ScoringTask, configs: list[dict[str, Any]], seeds: list[int],
                     backend: InProcessBackend | RayBackend | None = None) -> list[dict[str, float]]:
    """Score many candidates on ``backend`` (in-process by default), in order."""
    backend = backend or InProcessBackend()
    return backend.map(score_candidate, task, list(zip(configs, seeds)))


def probe_data(n_probe: int, n_distill: int, size: int = 64, seed: int = 0):
    """Probe and distillation images from ``shapes`` (a seed range disjoint from the built-in
    model's training and validation data)."""
    from segxai.data import make_shapes

    data = make_shapes(n_probe + n_distill, size=size, seed=seed + 20_000)
    return data.subset(list(range(n_probe))), data.subset(list(range(n_probe, n_probe + n_distill)))


def make_probe(teacher: nn.Module, *, n_probe: int = 8, n_distill: int = 32, size: int = 64,
               seed: int = 0, method: str = "seg-grad-cam",
               method_params: dict[str, Any] | None = None, roi: str = "prediction",
               device: str = "cpu") -> ProbeSet:
    """The teacher's probe set on ``shapes`` images (see :func:`probe_data`).

    Args:
        teacher: the frozen teacher.
        n_probe: probe images (explained).
        n_distill: images for few-shot distillation (0 = none).
        size: image size.
        seed: data seed.
        method: registered explainer.
        method_params: its parameters.
        roi: ``"prediction"`` or ``"mask"``.
        device: torch device.

    Returns:
        The :class:`ProbeSet`.
    """
    check_positive_int(n_probe, "n_probe", minimum=2)
    check_positive_int(n_distill, "n_distill", minimum=0)
    probe, distill = probe_data(n_probe, n_distill, size=size, seed=seed)
    return build_probe(teacher, probe.images, probe.masks, roi=roi, method=method,
                       method_params=method_params,
                       distill_images=distill.images if n_distill else None, device=device)


def run_search(teacher: nn.Module, probe: ProbeSet, *, proxy: str = "cam",
               space: SearchSpace | None = None, population: int = 32, iterations: int = 20,
               children_per_iteration: int = 4, budget: Budget | None = None, seed: int = 0,
               crossover_prob: float = 0.0, random_search: bool = False,
               backend: InProcessBackend | RayBackend | None = None,
               out_dir: str | Path | None = None, progress: bool = True,
               fewshot_steps: int = 50, init_seeds: int = 3,
               device: str = "cpu") -> dict[str, Any]:
    """Search a student for ``teacher`` and return the ``search.json`` content.

    Args:
        teacher: the teacher network (for its parameter and FLOP counts).
        probe: its probe set (:func:`make_probe`).
        proxy: fitness, one of :data:`~segxai.nas.proxies.PROXIES`, or ``"cam+zen"``: the
            sum of the candidate's CAM-fitness and Zen-score ranks, each taken in a fixed
            reference sample of 16 architectures of the band (:data:`RANKED`).
        space: the search space (default: :class:`SearchSpace` at the probe resolution).
        population: population size N.
        iterations: iterations T.
        children_per_iteration: candidates drawn and scored per iteration.
        budget: hard limits (default: none).
        seed: search seed.
        crossover_prob: probability of uniform crossover.
        random_search: sample every child uniformly (the random-search baseline).
        backend: where candidates are scored (default in-process).
        out_dir: if given, the run directory (a :class:`~segxai.core.runstore.RunStore` of
            kind ``"nas-search"``): ``search_state.json`` and ``iterations.jsonl``
            (checkpoint, resumed) and ``search.json``.
        progress: progress bars.
        fewshot_steps: steps of ``cam-fewshot``.
        init_seeds: initialisations averaged by the CAM proxies.
        device: torch device.

    Returns:
        ``best`` (config, params, flops, score), ``teacher`` (params, flops),
        ``candidates_scored``, ``seconds``, the settings, the history and the final population.
    """
    check_choice(proxy, "proxy", (*PROXIES, *RANKED))
    shape = probe.input_shape
    if space is None:
        space = SearchSpace(in_channels=shape[0], num_classes=probe.num_classes,
                            resolution=(shape[1], shape[2]))
    settings = EvolutionSettings(population=population, iterations=iterations,
                                 children_per_iteration=children_per_iteration, seed=seed,
                                 crossover_prob=crossover_prob, random_search=random_search,
                                 tag=f"proxy={proxy};fewshot={fewshot_steps};"
                                     f"method={probe.method};{sorted(probe.method_params.items())};"
                                     f"pairs={probe.pairs};eps={probe.eps};inits={init_seeds}")
    parts = RANKED.get(proxy, (proxy,))
    task = ScoringTask(probe=probe, proxies=parts, fewshot_steps=fewshot_steps,
                       init_seeds=init_seeds, device=device)
    backend = backend or InProcessBackend()
    reference: list[dict[str, float]] = []
    if proxy in RANKED:  # the fixed reference sample the ranks are taken in
        ref_configs = sample_in_band(space, budget or Budget(), RANK_REFERENCE, seed=seed)
        reference = score_candidates(task, ref_configs,
                                     [derive_seed(seed, "rank-reference", i)
                                      for i in range(len(ref_configs))], backend)

    def evaluate(configs: list[dict[str, Any]], seeds: list[int]) -> list[float]:
        scored = score_candidates(task, configs, seeds, backend)
        if proxy not in RANKED:
            return [r[proxy] for r in scored]
        return [sum(_rank_in(r[p], [x[p] for x in reference]) for p in parts) for r in scored]

    store = RunStore(out_dir, kind=KIND,
                     settings=search_identity(settings, space.space_id, budget)) \
        if out_dir is not None else None
    t0 = time.perf_counter()
    initial = band_initial(space, budget, seed) \
        if budget is not None and budget.min_params is not None else None
    result = evolve(space, evaluate, settings, budget=budget, store=store, progress=progress,
                    space_id=space.space_id, initial=initial)
    teacher_counts = network_counts(teacher, shape, device)
    best = result.best
    summary = {
        "best": {"config": best["config"], "params": best["params"], "flops": best["flops"],
                 "score": best["score"]},
        "teacher": teacher_counts,
        "candidates_scored": result.candidates_scored,
        "rejected": result.rejected,
        "seconds": result.seconds,
        "seconds_this_run": time.perf_counter() - t0,
        "resumed_from": result.resumed_from,
        "proxy": proxy,
        "backend": getattr(backend, "name", "local"),
        "settings": {"population": population, "iterations": iterations,
                     "children_per_iteration": children_per_iteration, "seed": seed,
                     "crossover_prob": crossover_prob, "random_search": random_search,
                     "fewshot_steps": fewshot_steps,
                     "budget": {"params": budget.max_params if budget else None,
                                "min_params": budget.min_params if budget else None,
                                "flops": budget.max_flops if budget else None,
                                "depth": budget.max_depth if budget else None},
                     "probe_pairs": probe.pairs, "resolution": list(shape[1:])},
        "history": result.history,
        "population": result.population[:10],
    }
    if store is not None:
        store.write_json("search.json", summary)
    return summary
