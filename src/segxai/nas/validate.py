"""Proxy validation: do the proxies rank architectures like their trained mIoU?

``M`` architectures are sampled uniformly under the budget; each is scored by every proxy at
the same initialisation and trained with one identical short schedule
(:func:`segxai.models.train_model`); Kendall τ and Spearman ρ (``core.stats``) of every proxy
against the trained mIoU and the top-k overlap (share of the k best architectures by mIoU
that are also among the k best by the proxy) are reported.

With an output directory the run is a :class:`~segxai.core.runstore.RunStore` of kind
``"nas-validate"`` (settings :func:`validation_identity`): every finished architecture is
appended as one row to ``validated.jsonl``, so a killed run resumes where it stopped and a
directory holding a validation with other settings is refused, naming the differing keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from segxai.core.checks import check_positive_int
from segxai.core.errors import SegxaiError
from segxai.core.runstore import RunStore
from segxai.core.stats import kendall, rank, spearman
from segxai.nas.backends import InProcessBackend, RayBackend, single_thread
from segxai.nas.band import sample_in_band
from segxai.nas.evolution import Budget
from segxai.nas.rankstats import proxy_statistics
from segxai.nas.search import RANKED, ScoringTask, build_candidate, score_candidate
from segxai.nas.space import SearchSpace
from segxai.nas.state import config_key, derive_seed, open_store

if TYPE_CHECKING:
    from segxai.models import UNet

__all__ = ["ValidationTask", "correlations", "run_validation", "sample_architectures",
           "validation_identity", "validation_item"]

KIND = "nas-validate"
VALIDATED = "validated"  # rows: one finished architecture each


def sample_architectures(space: SearchSpace, budget: Budget | None, m: int, seed: int = 0,
                         max_draws: int = 100_000) -> list[dict[str, Any]]:
    """``m`` distinct configurations drawn uniformly from ``space`` inside ``budget``.

    Args:
        space: the search space.
        budget: hard limits (``None``: none).
        m: how many.
        seed: sampling seed.
        max_draws: give up after this many draws.

    Returns:
        The configurations, in draw order.
    """
    check_positive_int(m, "m")
    out = sample_in_band(space, budget or Budget(), m, seed=seed, max_draws=max_draws)
    if len(out) < m:
        raise SegxaiError(f"budget: only {len(out)} admissible architectures found in "
                          f"{max_draws} draws, {m} requested; relax the budget")
    return out


@dataclass
class ValidationTask:
    """Shared input of every validation work item (proxies + one training run).

    Attributes:
        scoring: the proxies and probe set.
        train_data: training split (``SegDataset``).
        val_data: evaluation split.
        train_config: the identical short schedule (``segxai.models.TrainConfig``).
    """

    scoring: ScoringTask
    train_data: Any
    val_data: Any
    train_config: Any


def validation_item(task: ValidationTask, item: tuple[dict[str, Any], int]) -> dict[str, Any]:
    """Proxies, parameter/FLOP counts and trained mIoU of one architecture."""
    from segxai.models import evaluate_miou, train_model
    from segxai.nas.counting import network_counts

    config, seed = item
    scores = score_candidate(task.scoring, item)
    with single_thread(task.scoring.threads):
        model = build_candidate(task.scoring.builder, config, seed)
        counts = network_counts(model, task.scoring.probe.input_shape)
        params, flops = counts["params"], counts["flops"]
        # the builder is configurable (nn.Module); train_model checks it is a UNet at runtime
        result = train_model(cast("UNet", model), task.train_data, None, task.train_config,
                             device=task.scoring.device, progress=False)
        miou = evaluate_miou(model, task.val_data, device=task.scoring.device)
    return {"config": config, "scores": scores, "params": params, "flops": flops,
            "trained_miou": miou, "train_seconds": result.seconds}


def correlations(rows: list[dict[str, Any]], proxies: list[str],
                 top_fraction: float = 0.2, resamples: int = 10_000,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Kendall τ, Spearman ρ, partial τ given params and top-k overlap of every proxy against
    trained mIoU, with bootstrap intervals (:func:`segxai.nas.rankstats.proxy_statistics`).

    Args:
        rows: results of :func:`validation_item`.
        proxies: proxy names.
        top_fraction: k = max(2, round(top_fraction · M)).
        resamples: bootstrap resamples (0: no intervals).
        seed: bootstrap seed.

    Returns:
        One dict per proxy (and per combined fitness of :data:`~segxai.nas.search.RANKED`
        whose parts are validated, as the rank sum within ``rows``): ``proxy, kendall_tau, spearman_rho, partial_tau`` (each with
        ``_lo``/``_hi`` when ``resamples > 0``; ``None`` where undefined, e.g. the partial τ
        of ``params`` itself), ``top_k_overlap, k``.
    """
    miou = np.array([r["trained_miou"] for r in rows], dtype=float)
    k = max(2, int(round(top_fraction * len(rows))))
    top_true = set(np.argsort(-miou, kind="stable")[:k].tolist())
    out = []
    columns = {p: np.array([r["scores"][p] for r in rows], dtype=float) for p in proxies}
    columns = {p: np.where(np.isfinite(v), v, -1e300) for p, v in columns.items()}
    for name, parts in RANKED.items():  # rank sums within the validated sample
        if all(p in columns for p in parts):
            columns[name] = sum((rank(columns[p]) for p in parts), np.zeros(len(rows)))
    for p, s in columns.items():
        tau = kendall(s, miou)
        rho = spearman(s, miou)
        top_p = set(np.argsort(-s, kind="stable")[:k].tolist())
        entry: dict[str, Any] = {"proxy": p, "kendall_tau": _clean(tau),
                                 "spearman_rho": _clean(rho)}
        if resamples > 0 and len(rows) >= 3:
            stats = proxy_statistics(s, miou, [r["params"] for r in rows],
                                     resamples=resamples, seed=seed)
            entry.update({k2: (float(v) if math.isfinite(v) else None)
                          for k2, v in stats.items()
                          if k2 not in ("kendall_tau", "spearman_rho")})
        out.append({**entry, "top_k_overlap": len(top_p & top_true) / k, "k": k})
    return out


def _clean(v: float) -> float:
    v = float(v)
    return v if math.isfinite(v) else 0.0


def validation_identity(task: ValidationTask, seed: int) -> dict[str, Any]:
    """What determines the per-architecture results: the run settings of the store.

    The architectures themselves are not part of it: rows are keyed by configuration, so a
    resumed run may validate more (or other) architectures.
    """
    sc = task.scoring
    train = task.train_config
    return {"proxies": list(sc.proxies), "seed": int(seed), "init_seeds": sc.init_seeds,
            "fewshot": {"steps": sc.fewshot_steps, "lr": sc.fewshot_lr,
                        "batch": sc.fewshot_batch},
            "probe": {"method": sc.probe.method, "method_params": sc.probe.method_params,
                      "pairs": sc.probe.pairs, "eps": sc.probe.eps},
            "train": train.to_dict() if hasattr(train, "to_dict") else repr(train),
            "train_images": len(task.train_data), "val_images": len(task.val_data)}


def _number(v: Any) -> float:
    # rows store non-finite numbers as JSON null
    return float("nan") if v is None else float(v)


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    """A row as :func:`validation_item` returned it (NaN where the row holds null)."""
    out = {k: v for k, v in row.items() if k != "key"}
    out["scores"] = {p: _number(v) for p, v in row["scores"].items()}
    out["trained_miou"] = _number(row["trained_miou"])
    return out


def run_validation(task: ValidationTask, configs: list[dict[str, Any]], *, seed: int = 0,
                   backend: InProcessBackend | RayBackend | None = None,
                   out_dir: str | Path | RunStore | None = None, progress: bool = True,
                   top_fraction: float = 0.2,
                   resamples: int = 10_000) -> dict[str, Any]:
    """Score and train every architecture; write ``validation.csv``/``correlations.csv``.

    Every architecture is appended as a row to ``validated.jsonl`` as soon as it is done (in
    completion order: a worker that finishes a small network takes the next one without waiting
    for a larger one), so a killed run resumes where it stopped; the rows are returned in the
    order of ``configs`` whatever the backend.

    Args:
        task: proxies, probe, data and schedule.
        configs: the architectures (:func:`sample_architectures`).
        seed: seeds of the candidates are derived from it and each configuration.
        backend: in-process (default) or Ray.
        out_dir: output directory or store (``None``: nothing written, nothing resumed).
        progress: progress bar.
        top_fraction: see :func:`correlations`.
        resamples: bootstrap resamples of the intervals (see :func:`correlations`).

    Returns:
        ``rows`` (per architecture), ``correlations``, ``proxies``.

    Raises:
        SegxaiError: ``out_dir`` holds a validation with other settings (the message names
            the differing keys).
    """
    backend = backend or InProcessBackend()
    store = open_store(out_dir, kind=KIND, settings=validation_identity(task, seed))
    done: dict[str, dict[str, Any]] = {}
    for row in store.rows(VALIDATED) if store is not None else ():
        done[row["key"]] = _decode(row)
    todo = [c for c in configs if config_key(c) not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(configs), initial=len(configs) - len(todo), desc="nas validate",
                   leave=False)
    try:
        items = [(c, derive_seed(seed, config_key(c))) for c in todo]
        for i, r in backend.imap(validation_item, task, items):
            key = config_key(todo[i])
            done[key] = r
            if store is not None:
                store.append_row(VALIDATED, {"key": key, **r})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    rows = [done[config_key(c)] for c in configs]
    proxies = list(task.scoring.proxies)
    corr = correlations(rows, proxies, top_fraction, resamples=resamples, seed=seed)
    if store is not None:
        write_validation_csv(store, rows, proxies, corr)
    return {"rows": rows, "correlations": corr, "proxies": proxies}


def arch_name(config: dict[str, Any]) -> str:
    """A short readable name of a configuration."""
    mults = config.get("width_multipliers")
    mult = "-".join(f"{m:g}" for m in mults) if mults is not None else "double"
    dec = config["decoder_width"] if config["decoder_width"] is not None else "m"
    return (f"d{config['depth']}w{config['base_width']}x{mult}k{config['kernel_size']}"
            f"{config['block'][0]}D{dec}")


def write_validation_csv(store: RunStore, rows: list[dict[str, Any]], proxies: list[str],
                         corr: list[dict[str, Any]]) -> None:
    """``validation.csv`` (architecture, proxy, score, trained_miou, params, flops) and
    ``correlations.csv`` (proxy, kendall_tau, spearman_rho, top_k_overlap), written
    atomically through ``store``."""
    store.write_csv("validation.csv", (
        {"architecture": arch_name(r["config"]), "proxy": p,
         "score": repr(float(r["scores"][p])), "trained_miou": repr(float(r["trained_miou"])),
         "params": r["params"], "flops": r["flops"]} for r in rows for p in proxies),
        fieldnames=["architecture", "proxy", "score", "trained_miou", "params", "flops"])
    fields = ["proxy", "kendall_tau", "kendall_tau_lo", "kendall_tau_hi", "spearman_rho",
              "spearman_rho_lo", "spearman_rho_hi", "partial_tau", "partial_tau_lo",
              "partial_tau_hi", "top_k_overlap"]
    store.write_csv("correlations.csv", (
        {f: c["proxy"] if f == "proxy" else "" if c.get(f) is None else repr(c[f])
         for f in fields}
        for c in corr), fieldnames=fields)


def scatter_figure(rows: list[dict[str, Any]], proxies: list[str], corr: list[dict[str, Any]]):
    """A matplotlib figure: one scatter plot (proxy score vs trained mIoU) per proxy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(proxies)
    cols = min(4, n)
    nrows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.8 * nrows), squeeze=False)
    miou = [r["trained_miou"] for r in rows]
    by_proxy = {c["proxy"]: c for c in corr}
    for ax, p in zip(axes.flat, proxies):
        s = [r["scores"][p] for r in rows]
        ax.scatter(s, miou, s=12)
        c = by_proxy[p]
        ax.set_title(f"{p}: τ={c['kendall_tau']:.2f} ρ={c['spearman_rho']:.2f}", fontsize=9)
        ax.set_xlabel("proxy score", fontsize=8)
        ax.set_ylabel("trained mIoU", fontsize=8)
        if p in ("params", "flops"):
            ax.set_xscale("log")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
