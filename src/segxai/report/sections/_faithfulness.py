"""Shared by the real-data sections: every registered method on a few images, scored with
deletion/insertion AUCs, each compared with the random baseline on the same images (95 %
bootstrap intervals and exact sign-flip p-values), and the findings written from the numbers.

(A leading underscore keeps this module out of the section discovery.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["RANDOM", "MethodRun", "compare_with_random", "findings", "interval_rows",
           "run_methods"]

RANDOM = "random"
LEVEL = 0.95


@dataclass
class MethodRun:
    """One method on every image: maps, per-image AUCs, cost, or the error."""

    method: str
    params: dict[str, Any]
    maps: Tensor | None = None
    deletion: np.ndarray | None = None
    insertion: np.ndarray | None = None
    seconds: float = 0.0
    forward: int = 0
    backward: int = 0
    error: str | None = None
    comparison: dict[str, Any] = field(default_factory=dict)


def run_methods(model: Any, images: Tensor, target: Any,
                params_for: Callable[[str], dict[str, Any]], *, steps: int,
                seed: int = 0) -> list[MethodRun]:
    """Every registered explainer, then a random ranking, on ``images`` for ``target``, each
    scored by deletion (mean colour) and insertion (blur) curves of the ROI mean
    probability. A failing method is recorded with its error, not raised."""
    from segxai.core.registry import get_explainer, list_explainers, make_generator
    from segxai.evaluate.curves import deletion_insertion

    runs: list[MethodRun] = []
    for name in list_explainers():
        run = MethodRun(name, params_for(name))
        t0 = time.perf_counter()
        try:
            expl = get_explainer(name)(**run.params)(model, images, target)
            run.maps = expl.maps.detach().float().cpu()
            run.forward, run.backward = expl.cost.forward_passes, expl.cost.backward_passes
        except Exception as exc:  # reported in the section; one method must not hide others
            run.error = f"{type(exc).__name__}: {exc}"
        run.seconds = time.perf_counter() - t0
        runs.append(run)
    n, _, h, w = images.shape
    runs.append(MethodRun(RANDOM, {"seed": seed},
                          maps=torch.rand(n, h, w, generator=make_generator(seed))))
    for run in runs:
        if run.maps is None:
            continue
        dele, ins = deletion_insertion(model, images, target, run.maps.to(images.device),
                                       steps=steps, seed=seed)
        run.deletion, run.insertion = np.asarray(dele.auc), np.asarray(ins.auc)
    compare_with_random(runs, seed=seed)
    return runs


def compare_with_random(runs: list[MethodRun], seed: int = 0) -> None:
    """Fill each run's ``comparison``: bootstrap means of its AUCs and paired differences
    against the random run (deletion: lower is better, insertion: higher is better)."""
    from segxai.core.intervals import Alternative, bootstrap_mean, paired_difference

    base = next(r for r in runs if r.method == RANDOM)
    if base.deletion is None or base.insertion is None:
        return
    plan: tuple[tuple[str, np.ndarray, Alternative], ...] = (
        ("deletion", base.deletion, "less"), ("insertion", base.insertion, "greater"))
    for run in runs:
        if run.deletion is None or run.insertion is None or len(run.deletion) < 2:
            continue
        cmp: dict[str, Any] = {}
        for kind, ref, alt in plan:
            values = getattr(run, kind)
            cmp[kind] = bootstrap_mean(values, level=LEVEL, seed=seed)
            if run.method != RANDOM:
                cmp[f"{kind}_vs_random"] = paired_difference(values, ref, level=LEVEL,
                                                             alternative=alt, seed=seed)
        run.comparison = cmp


def _verdict(diff: Any, better: str) -> str:
    lo, hi = diff.difference.lo, diff.difference.hi
    if (better == "lower" and hi < 0) or (better == "higher" and lo > 0):
        return "better"
    if (better == "lower" and lo > 0) or (better == "higher" and hi < 0):
        return "worse"
    return "undecided"


def interval_rows(runs: list[MethodRun]) -> list[dict[str, Any]]:
    """One table row per method: AUCs with intervals, differences from random, p-values,
    verdicts and cost."""
    rows = []
    for r in runs:
        c = r.comparison
        row: dict[str, Any] = {"method": r.method}
        if r.error is not None or not c:
            row.update({"deletion AUC [95 % CI]": "-", "status": f"FAILED: {r.error}"
                        if r.error else "-"})
            rows.append(row)
            continue
        row["deletion AUC [95 % CI]"] = c["deletion"].format()
        row["insertion AUC [95 % CI]"] = c["insertion"].format()
        if r.method != RANDOM:
            d, i = c["deletion_vs_random"], c["insertion_vs_random"]
            row["deletion − random"] = d.format()
            row["vs random (deletion)"] = _verdict(d, "lower")
            row["insertion − random"] = i.format()
            row["vs random (insertion)"] = _verdict(i, "higher")
        row["seconds"] = round(r.seconds, 2)
        row["passes (fwd/bwd)"] = f"{r.forward}/{r.backward}"
        row["status"] = "ok"
        rows.append(row)
    return rows


def findings(runs: list[MethodRun], n_images: int, what: str) -> list[str]:
    """Sentences written from the numbers: which methods beat random, how wide the intervals
    are, and what ``n_images`` can and cannot show."""
    ok = [r for r in runs if r.method != RANDOM and r.comparison]
    failed = [r.method for r in runs if r.error is not None]
    out: list[str] = []
    if not ok:
        return [f"No method produced a map on {what}."] + (
            [f"Failed: {', '.join(failed)}."] if failed else [])
    for kind, better in (("deletion", "lower"), ("insertion", "higher")):
        verdicts = {r.method: _verdict(r.comparison[f"{kind}_vs_random"], better) for r in ok}
        good = [m for m, v in verdicts.items() if v == "better"]
        bad = [m for m, v in verdicts.items() if v == "worse"]
        undecided = len(ok) - len(good) - len(bad)
        text = (f"{kind.capitalize()} ({better} AUC is better): {len(good)} of {len(ok)} methods "
                f"beat the random baseline with the 95 % interval of the paired difference "
                f"excluding zero" + (f" ({', '.join(good)})" if good else ""))
        if bad:
            text += (f"; {len(bad)} {'is' if len(bad) == 1 else 'are'} worse than random "
                     f"({', '.join(bad)})")
        if undecided:
            text += (f"; for the other {undecided} the interval includes zero: these images "
                     "cannot tell them from random")
        out.append(text + ".")
    diffs = [r.comparison["deletion_vs_random"].difference for r in ok]
    width = float(np.median([d.hi - d.lo for d in diffs]))
    size = float(np.median([abs(d.estimate) for d in diffs]))
    best = min(ok, key=lambda r: float(np.mean(r.deletion)))  # type: ignore[arg-type]
    out.append(f"Lowest mean deletion AUC: {best.method} "
               f"({best.comparison['deletion'].format()}).")
    p_min = 2.0 ** -n_images
    spread = ("wide: as large as the differences themselves" if width >= size else
              "narrower than the differences, but a bootstrap of so few values understates "
              "the uncertainty")
    out.append(f"Only {n_images} images: the intervals are {spread} (median width of the "
               f"deletion difference {width:.3f}, median |difference| {size:.3f} AUC units), "
               f"and the exact one-sided sign-flip test cannot give p below {p_min:.3g}"
               + ("; no difference can reach p < 0.05 here, so every verdict is a hint, not a "
                  "result." if p_min >= 0.05 else
                  "; treat the verdicts as indicative of these images, not of the model in "
                  "general."))
    if failed:
        out.append(f"Failed on {what}: {', '.join(failed)} (see the table).")
    return out


def maps_of(runs: list[MethodRun]) -> Mapping[str, Tensor | None]:
    """Method name → maps, for :func:`segxai.report.figures.explanation_grid` (random left
    out)."""
    return {r.method: r.maps for r in runs if r.method != RANDOM}
