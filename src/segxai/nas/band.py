"""Size bands: search and validate inside ``[lo, hi]`` × the teacher's parameter count.

A fitness that does not grow with capacity stays near the initial structure ``F0`` when the
budget has only an upper limit and ``F0`` is the smallest network of the space. A band fixes
both ends: ``F0`` is the smallest network of the band that a seeded sample finds
(:func:`band_initial`), and every child outside the band is rejected like an over-budget child
(:attr:`Budget.min_params`). Impossible bands are refused before any work, naming the limits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segxai.core.errors import SegxaiError
from segxai.nas.evolution import Budget
from segxai.nas.space import SearchSpace
from segxai.nas.state import config_key

__all__ = ["DEFAULT_BAND", "band_budget", "band_initial", "parse_band", "sample_in_band"]

DEFAULT_BAND = (0.15, 0.25)


def parse_band(text: str, name: str = "--band") -> tuple[float, float]:
    """``"0.15-0.25"`` → ``(0.15, 0.25)`` (fractions of the teacher's parameters).

    Raises:
        SegxaiError: not two numbers separated by ``-``.
    """
    parts = str(text).strip().split("-")
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise SegxaiError(f"{name}: expected LO-HI fractions of the teacher's parameters such "
                          f"as 0.15-0.25, got {text!r}") from None
    return lo, hi


def sample_in_band(space: SearchSpace, budget: Budget, m: int, seed: int = 0,
                   max_draws: int = 20_000) -> list[dict[str, Any]]:
    """Up to ``m`` distinct configurations drawn uniformly from ``space`` inside ``budget``
    (fewer if ``max_draws`` draws find fewer)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    out: dict[str, dict[str, Any]] = {}
    for _ in range(max_draws):
        cfg = space.sample(rng)
        key = config_key(cfg)
        if key not in out and budget.admits(space.measure(cfg)):
            out[key] = cfg
            if len(out) == m:
                break
    return list(out.values())


def band_budget(lo: float, hi: float, teacher_params: int, space: SearchSpace, *,
                max_flops: int | None = None, max_depth: int | None = None,
                name: str = "--band") -> Budget:
    """The :class:`Budget` of the band ``[lo, hi]`` × ``teacher_params``.

    Raises:
        SegxaiError: ``lo`` ≤ 0, ``lo > hi``, ``hi`` above 1 (larger than the teacher), the
            upper end below the smallest network of the space, or no network of the space in
            the band (2,000 draws plus the smallest network); the message names the limits.
    """
    limits = (f"lower {lo:g} × {teacher_params} = {int(lo * teacher_params)}, upper {hi:g} × "
              f"{teacher_params} = {int(hi * teacher_params)} parameters")
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0:
        raise SegxaiError(f"{name}: expected 0 < LO <= HI <= 1, got LO={lo:g} ({limits})")
    if lo > hi:
        raise SegxaiError(f"{name}: expected LO <= HI, got LO={lo:g} > HI={hi:g} ({limits})")
    if hi > 1:
        raise SegxaiError(f"{name}: expected HI <= 1 (at most the teacher's {teacher_params} "
                          f"parameters), got HI={hi:g} ({limits})")
    smallest = space.measure(space.initial())["params"]
    if hi * teacher_params < smallest:
        raise SegxaiError(f"{name}: expected an upper end >= the smallest network of the space "
                          f"({smallest} parameters), got {limits}")
    budget = Budget(max_params=int(hi * teacher_params), max_flops=max_flops,
                    max_depth=max_depth, min_params=int(np.ceil(lo * teacher_params)))
    if not sample_in_band(space, budget, 1, seed=0, max_draws=2000) \
            and not budget.admits(space.measure(space.initial())):
        raise SegxaiError(f"{name}: expected a band some network of the search space fits, got "
                          f"{limits}, max_flops={max_flops}, max_depth={max_depth}; none of "
                          "2000 random draws fits")
    return budget


def band_initial(space: SearchSpace, budget: Budget, seed: int = 0,
                 draws: int = 64) -> dict[str, Any]:
    """``F0`` inside the band: the network with the fewest parameters among ``draws`` seeded
    draws in the band (ties: the first drawn); ``space.initial()`` if it is admissible."""
    f0 = space.initial()
    if budget.admits(space.measure(f0)):
        return f0
    found = sample_in_band(space, budget, draws, seed=seed)
    if not found:
        raise SegxaiError(f"budget: no network of the search space found in the band "
                          f"[{budget.min_params}, {budget.max_params}] parameters")
    return min(found, key=lambda c: space.measure(c)["params"])
