"""Zen-NAS-style evolutionary search with checkpointed, resumable state.

The loop follows Zen-NAS Algorithm 1 (Lin et al., ICCV 2021), which CAM-NAS reuses: the
population starts empty; while it holds at most 10 members a child is the initial structure
``F0`` with one gene mutated, afterwards a uniformly chosen member with two genes mutated;
children over the budget (parameters, FLOPs, depth) are rejected without a penalty; the
population is trimmed to ``N`` by dropping the lowest scores; the best member is returned.
Inside a narrow size band F0 has only a handful of admissible one-gene mutations, so the
first rule would stall the search below 11 members (seen: 8 distinct candidates in 12
iterations × 4 children, 2,286 rejections); when half of a slot's ``max_attempts`` tries
have failed (already taken or outside the budget), the remaining tries use the second rule
(a uniformly chosen member, two genes).

To let the scoring fan out (see :mod:`segxai.nas.backends`) each iteration draws
``children_per_iteration`` children from the same population and scores them as one batch;
the batch size is a search setting, not a backend property, so the result does not depend on
the backend. Each candidate's seed is derived from the search seed and the candidate's
configuration (:func:`~segxai.nas.state.derive_seed`), never from global random state.

The search writes through a :class:`~segxai.core.runstore.RunStore` (kind ``"nas-search"``,
settings :func:`search_identity`): the state (population, NumPy generator state, evaluated
cache, history) is rewritten atomically to ``search_state.json`` after every iteration, and
then the iteration's history entry is appended as a row to ``iterations.jsonl``. A search
restarted on the same directory resumes and returns the same result as an uninterrupted
run; other settings, space or budget are refused with the differing keys named. Tests cut a
search after ``k`` iterations with :attr:`RunStore.on_row`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from segxai.core.checks import check_fraction, check_positive_int
from segxai.core.errors import SegxaiError
from segxai.core.runstore import RunStore, settings_diff
from segxai.nas.state import config_key, derive_seed, open_store

__all__ = ["Budget", "EvolutionSettings", "SearchResult", "SpaceLike", "evolve",
           "search_identity"]

STATE_VERSION = 1
KIND = "nas-search"
STATE_FILE = "search_state.json"
ITERATIONS = "iterations"  # rows: one history entry per finished iteration


class SpaceLike(Protocol):
    """What the search needs from a search space."""

    def initial(self) -> dict[str, Any]: ...

    def mutate(self, config: dict[str, Any], num_genes: int,
               rng: np.random.Generator) -> dict[str, Any]: ...

    def crossover(self, a: dict[str, Any], b: dict[str, Any],
                  rng: np.random.Generator) -> dict[str, Any]: ...

    def measure(self, config: dict[str, Any]) -> dict[str, int]: ...

    def sample(self, rng: np.random.Generator) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Budget:
    """Hard limits; a child outside any of them is rejected (``None`` = no limit).

    Attributes:
        max_params: parameter count.
        max_flops: FLOPs of one forward pass at the search resolution.
        max_depth: number of encoder stages.
        min_params: lower end of a size band (:mod:`segxai.nas.band`).
    """

    max_params: int | None = None
    max_flops: int | None = None
    max_depth: int | None = None
    min_params: int | None = None

    def admits(self, measures: dict[str, int]) -> bool:
        """Whether ``measures`` (``params``, ``flops``, ``depth``) fit the budget."""
        for key, limit in (("params", self.max_params), ("flops", self.max_flops),
                           ("depth", self.max_depth)):
            if limit is not None and int(measures[key]) > int(limit):
                return False
        return self.min_params is None or int(measures["params"]) >= int(self.min_params)


@dataclass(frozen=True)
class EvolutionSettings:
    """Settings of one search (they are stored in the state; resuming requires the same).

    Attributes:
        population: population size ``N``.
        iterations: number of iterations ``T``.
        children_per_iteration: children drawn and scored per iteration.
        seed: search seed.
        crossover_prob: probability that a child starts as a uniform crossover of two
            members (0 = Zen-NAS, no crossover).
        max_attempts: tries to draw a new admissible child before giving up on that slot.
        random_search: ignore the population and sample every child uniformly from the
            space (the random-search baseline, same budget and candidate count).
        tag: free text that must match on resume (e.g. the proxy name).
    """

    population: int = 32
    iterations: int = 20
    children_per_iteration: int = 4
    seed: int = 0
    crossover_prob: float = 0.0
    max_attempts: int = 100
    random_search: bool = False
    tag: str = ""

    def __post_init__(self) -> None:
        check_positive_int(self.population, "population")
        check_positive_int(self.iterations, "iterations", minimum=0)
        check_positive_int(self.children_per_iteration, "children_per_iteration")
        check_positive_int(self.max_attempts, "max_attempts")
        check_fraction(self.crossover_prob, "crossover_prob")


@dataclass
class SearchResult:
    """Outcome of :func:`evolve`.

    Attributes:
        best: the best member: ``config``, ``score``, ``params``, ``flops``, ``depth``.
        population: final population, best first.
        candidates_scored: distinct candidates scored (cache hits not counted).
        rejected: children rejected by the budget.
        history: per iteration: best score, params, FLOPs and candidates scored so far.
        seconds: wall time summed over all (resumed) runs.
        resumed_from: iteration the last run resumed from (0 = fresh).
    """

    best: dict[str, Any]
    population: list[dict[str, Any]]
    candidates_scored: int
    rejected: int
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Evaluator = Callable[[list[dict[str, Any]], list[int]], list[float]]


def search_identity(settings: EvolutionSettings, space_id: str,
                    budget: Budget | None = None) -> dict[str, Any]:
    """What determines a search's result: the run settings of its :class:`RunStore`."""
    return {"version": STATE_VERSION, "settings": asdict(settings), "space": space_id,
            "budget": asdict(budget or Budget())}


def _fresh_state(settings: EvolutionSettings, space_id: str, budget: Budget) -> dict[str, Any]:
    rng = np.random.Generator(np.random.PCG64(settings.seed))
    return {**search_identity(settings, space_id, budget), "iteration": 0, "population": [],
            "cache": {},
            "measures": {}, "rng": rng.bit_generator.state, "candidates_scored": 0,
            "rejected": 0, "history": [], "seconds": 0.0}


def _rank(population: list[list[Any]]) -> list[list[Any]]:
    # best first; ties broken by the configuration string for determinism
    return sorted(population, key=lambda item: (-item[1], item[0]))


def _load_state(store: RunStore, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state of ``store`` (``None`` when fresh); its identity must be ``identity``."""
    state = store.read_json(STATE_FILE)
    if state is None:
        return None
    differ = settings_diff({k: state.get(k) for k in identity}, identity)
    if differ:
        raise SegxaiError(f"out: {store.root} holds a search with other settings "
                          f"(differing: {', '.join(differ)}); resume with the same settings "
                          "or choose another --out directory")
    # a kill between the state write and its row leaves a history entry without a row
    logged = {int(r["iteration"]) for r in store.rows(ITERATIONS)}
    for entry in state["history"]:
        if int(entry["iteration"]) not in logged:
            store.append_row(ITERATIONS, entry)
    return state


def evolve(space: SpaceLike, evaluate: Evaluator, settings: EvolutionSettings, *,
           budget: Budget | None = None, store: RunStore | str | Path | None = None,
           progress: bool = True, space_id: str = "",
           initial: dict[str, Any] | None = None) -> SearchResult:
    """Run (or resume) the evolutionary search.

    Args:
        space: the search space (initial structure, mutation, crossover, measures).
        evaluate: scores a batch: ``evaluate(configs, seeds) -> scores`` (larger = better;
            non-finite scores count as failures and rank last).
        settings: population, iterations, seed, ...
        budget: hard limits on parameters, FLOPs and depth.
        store: the run directory (a path opens a :class:`RunStore` of kind ``"nas-search"``
            with :func:`search_identity` as settings); if it holds a state with the same
            settings the search resumes. ``None``: nothing written, nothing resumed.
        progress: show a progress bar with the best score, parameters and FLOPs.
        space_id: text identifying the space (checked on resume).
        initial: the initial structure ``F0`` (default ``space.initial()``, the smallest
            network; a size band passes its smallest admissible network).

    Returns:
        The :class:`SearchResult`.

    Raises:
        SegxaiError: ``store`` holds a search with other settings, space or budget (the
            message names the differing keys), or no admissible candidate was found.
    """
    budget = budget or Budget()
    identity = search_identity(settings, space_id, budget)
    store = open_store(store, kind=KIND, settings=identity)
    state = _load_state(store, identity) if store is not None else None
    resumed_from = int(state["iteration"]) if state is not None else 0
    if state is None:
        state = _fresh_state(settings, space_id, budget)
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state["rng"]
    cache: dict[str, float] = state["cache"]
    measures: dict[str, dict[str, int]] = state["measures"]
    population: list[list[Any]] = state["population"]
    configs: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    seconds_before = float(state["seconds"])

    def measure(cfg: dict[str, Any]) -> dict[str, int]:
        key = config_key(cfg)
        if key not in measures:
            measures[key] = {k: int(v) for k, v in space.measure(cfg).items()}
        return measures[key]

    f0 = initial if initial is not None else space.initial()

    def draw(taken: set[str]) -> dict[str, Any] | None:
        for attempt in range(settings.max_attempts):
            if settings.random_search:
                child = space.sample(rng)
            else:
                # F0's one-gene neighbourhood inside a narrow band holds only a few networks:
                # once half of the tries have failed, use the later rule (see module docs)
                if len(population) <= 10 and (attempt < settings.max_attempts // 2
                                              or len(population) < 2):
                    parent, n_genes = f0, 1
                else:
                    parent = configs_of(population[int(rng.integers(len(population)))][0])
                    n_genes = 2
                if settings.crossover_prob > 0 and len(population) >= 2 \
                        and rng.random() < settings.crossover_prob:
                    i, j = rng.choice(len(population), size=2, replace=False)
                    parent = space.crossover(configs_of(population[int(i)][0]),
                                             configs_of(population[int(j)][0]), rng)
                child = space.mutate(parent, n_genes, rng)
            key = config_key(child)
            if key in taken:
                continue
            if not budget.admits(measure(child)):
                state["rejected"] += 1
                continue
            return child
        return None

    def configs_of(key: str) -> dict[str, Any]:
        if key not in configs:
            configs[key] = json.loads(key)
        return configs[key]

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=settings.iterations, initial=int(state["iteration"]), desc="nas search",
                   leave=False)
    try:
        if state["iteration"] == 0 and not population:
            # score F0 itself first (if admissible)
            if budget.admits(measure(f0)):
                key = config_key(f0)
                score = _score_batch(evaluate, [f0], settings.seed, cache, state)[0]
                population.append([key, score])
        while state["iteration"] < settings.iterations:
            taken = {item[0] for item in population}
            children = []
            for _ in range(settings.children_per_iteration):
                child = draw(taken)
                if child is None:
                    continue
                taken.add(config_key(child))
                children.append(child)
            scores = _score_batch(evaluate, children, settings.seed, cache, state)
            for child, score in zip(children, scores):
                population.append([config_key(child), score])
            population[:] = _rank(population)[: settings.population]
            state["iteration"] += 1
            best_key, best_score = population[0]
            m = measure(configs_of(best_key))
            entry = {"iteration": state["iteration"], "best_score": best_score,
                     "params": m["params"], "flops": m["flops"],
                     "candidates_scored": state["candidates_scored"]}
            state["history"].append(entry)
            state["rng"] = rng.bit_generator.state
            state["seconds"] = seconds_before + time.perf_counter() - t_start
            if store is not None:
                store.write_json(STATE_FILE, state)
                store.append_row(ITERATIONS, entry)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(best=f"{best_score:.4g}", params=m["params"], flops=m["flops"])
    finally:
        if bar is not None:
            bar.close()
    state["seconds"] = seconds_before + time.perf_counter() - t_start
    if store is not None:
        store.write_json(STATE_FILE, state)
    if not population:
        raise SegxaiError("budget: no admissible candidate was found; relax the budget")
    members = []
    for key, score in population:
        m = measure(configs_of(key))
        members.append({"config": configs_of(key), "score": score, **m})
    return SearchResult(best=members[0], population=members,
                        candidates_scored=int(state["candidates_scored"]),
                        rejected=int(state["rejected"]), history=list(state["history"]),
                        seconds=float(state["seconds"]), resumed_from=resumed_from)


def _score_batch(evaluate: Evaluator, children: Sequence[dict[str, Any]], seed: int,
                 cache: dict[str, float], state: dict[str, Any]) -> list[float]:
    keys = [config_key(c) for c in children]
    todo = [i for i, k in enumerate(keys) if k not in cache]
    if todo:
        new = evaluate([children[i] for i in todo], [derive_seed(seed, keys[i]) for i in todo])
        if len(new) != len(todo):
            raise SegxaiError(f"evaluate: returned {len(new)} scores for {len(todo)} candidates")
        for i, s in zip(todo, new):
            s = float(s)
            cache[keys[i]] = s if np.isfinite(s) else -1e300
        state["candidates_scored"] += len(todo)
    return [cache[k] for k in keys]
