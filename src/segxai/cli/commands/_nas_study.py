"""``segxai nas validate`` and ``segxai nas study``: the validation task, its statistics
printed with intervals, and the one-command study (the options live in
:mod:`segxai.cli.commands.nas`)."""

from __future__ import annotations

import argparse
from typing import Any

from segxai.cli.commands.nas import (
    QUICK,
    STUDY_SEARCH,
    _fixed,
    _proxies,
    _search_proxies,
    _setup,
)
from segxai.cli.common import write_json
from segxai.core.checks import check_choice
from segxai.core.errors import SegxaiError


def _validation_task(args: argparse.Namespace, env: dict[str, Any],
                     proxies: tuple[str, ...]) -> Any:
    """The validation task of ``validate`` and ``study``: proxies, data and the schedule."""
    from segxai.data import make_shapes
    from segxai.models import TrainConfig
    from segxai.nas import ScoringTask, ValidationTask

    return ValidationTask(
        scoring=ScoringTask(probe=env["probe"], proxies=proxies, fewshot_steps=env["fewshot"],
                            init_seeds=args.init_seeds, device=args.device),
        train_data=make_shapes(QUICK.get(args, "train_images"), size=env["size"],
                               seed=args.seed + 30_000),
        val_data=make_shapes(_fixed(args, "val_images"), size=env["size"],
                             seed=args.seed + 40_000),
        train_config=TrainConfig(epochs=QUICK.get(args, "epochs"), batch_size=args.batch_size,
                                 lr=args.lr, seed=args.seed, restore_best=False,
                                 memory_format="channels_last"))


def _proxy_list(text: str, option: str,
                choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
    proxies = tuple(p.strip() for p in text.split(",") if p.strip())
    if not proxies:
        raise SegxaiError(f"{option}: expected a comma-separated list of proxies, got {text!r}")
    for p in proxies:
        check_choice(p, option, choices or _proxies())
    return proxies


def validate_command(args: argparse.Namespace) -> int:
    """``segxai nas validate``."""
    from segxai.nas import SearchSpace, run_validation
    from segxai.nas.validate import sample_architectures, scatter_figure

    proxies = _proxy_list(args.proxies, "--proxies")
    env = _setup(args)
    probe = env["probe"]
    m = QUICK.get(args, "architectures")
    n_train = QUICK.get(args, "train_images")
    epochs = QUICK.get(args, "epochs")
    space = SearchSpace(num_classes=probe.num_classes, resolution=probe.input_shape[1:])
    configs = sample_architectures(space, env["budget"], m, seed=args.seed)
    task = _validation_task(args, env, proxies)
    try:
        res = run_validation(task, configs, seed=args.seed, backend=env["backend"],
                             out_dir=args.out, progress=not args.quiet)
    finally:
        env["backend"].close()
    for c in res["correlations"]:
        print(f"{c['proxy']:>12}: kendall tau {_ci(c, 'kendall_tau')}  spearman rho "
              f"{_ci(c, 'spearman_rho')}  partial tau | params {_ci(c, 'partial_tau')}  "
              f"top-{c['k']} overlap {c['top_k_overlap']:.2f}")
    if args.out is not None:
        from segxai.report.html import save_figure

        save_figure(scatter_figure(res["rows"], list(proxies), res["correlations"]),
                    args.out / "scatter.png")
        write_json(args.out / "validation.json", {
            "correlations": res["correlations"], "architectures": m, "train_images": n_train,
            "epochs": epochs, "batch_size": args.batch_size, "lr": args.lr, "fewshot_steps": env["fewshot"],
            "budget_params": env["budget"].max_params,
            "band_params": [env["budget"].min_params, env["budget"].max_params],
            "teacher_params": env["teacher_params"], "rows": res["rows"]})
        print(f"wrote {args.out / 'validation.csv'} and {args.out / 'correlations.csv'}")
    return 0


def study_command(args: argparse.Namespace) -> int:
    """``segxai nas study``."""
    from segxai.nas.study import StudySettings, run_study

    proxies = _proxy_list(args.proxies, "--proxies")
    search_proxies = _proxy_list(
        args.search_proxies or STUDY_SEARCH["quick" if args.quick else "full"],
        "--search-proxies", _search_proxies())
    env = _setup(args)
    settings = StudySettings(
        architectures=QUICK.get(args, "architectures"), search_proxies=search_proxies,
        seeds=QUICK.get(args, "seeds"),
        population=args.population or _fixed(args, "study_population"),
        iterations=args.iterations if args.iterations is not None
        else _fixed(args, "study_iterations"),
        children=args.children or _fixed(args, "study_children"),
        alpha=args.alpha, lam=args.lam, init_seeds=args.init_seeds,
        resamples=2000 if args.quick else 10_000)
    task = _validation_task(args, env, proxies)
    try:
        res = run_study(env["teacher"], env["probe"], env["budget"], task, settings,
                        seed=args.seed, backend=env["backend"], out_dir=args.out,
                        progress=not args.quiet, device=args.device)
    finally:
        env["backend"].close()
    ref = res["reference"]
    print(f"teacher: {ref['params']} params, val mIoU {ref['val_miou']:.3f}; its architecture "
          f"trained with the schedule: {ref.get('architecture_under_schedule_miou', 'n/a')}")
    for c in res["validation"]["correlations"]:
        print(f"{c['proxy']:>12}: tau {_ci(c, 'kendall_tau')}  rho {_ci(c, 'spearman_rho')}  "
              f"partial tau | params {_ci(c, 'partial_tau')}")
    for t in res["table"]:
        print(f"{t['proxy']:>8} {t['mode']:>16}: params {t['params_pct_mean']:.1f}% "
              f"mIoU {t['miou_pct_mean']:.1f}% (sd {t['miou_pct_sd']:.1f}, "
              f"{t['miou_pct_min']:.1f}-{t['miou_pct_max']:.1f}), >=95 %: {t['reached']}/"
              f"{t['seeds']}, {t['latency_ms_mean']:.2f} ms, search {t['search_s_mean']:.0f} s")
    if args.out is not None:
        print(f"wrote {args.out / 'study.json'} and {args.out / 'table.csv'}")
    return 0


def _ci(c: dict[str, Any], key: str) -> str:
    if c.get(key) is None:
        return "n/a"
    lo, hi = c.get(f"{key}_lo"), c.get(f"{key}_hi")
    if lo is None or hi is None:
        return f"{c[key]:+.3f}"
    return f"{c[key]:+.3f} [{lo:+.3f}, {hi:+.3f}]"


