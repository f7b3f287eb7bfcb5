"""``segxai continual``: class-incremental segmentation with saliency-compressed replay.

Runs every memory strategy × seed × task on the built-in ``shapes`` data under one byte budget
and writes ``results.csv``, ``summary.json`` / ``summary.csv`` and two plots into ``--out``;
a killed run resumes from its last completed task (same ``--out``, same options).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segxai.cli.common import Range, add_common, options_named, user_input
from segxai.cli.grammar import add_method_options, registered_explainers, resolve_methods
from segxai.core.errors import SegxaiError

DEFAULT_OUT = Path("segxai-continual")


def _strategies(text: str) -> list[str]:
    from segxai.continual.compress import STRATEGIES

    items = [s.strip() for s in text.split(",") if s.strip()]
    if text.strip() == "all":
        return list(STRATEGIES)
    bad = [s for s in items if s not in STRATEGIES]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {', '.join(STRATEGIES)} (or 'all'), got {text!r}")
    return items


def _strategies_or_joint(text: str) -> list[str]:
    """:func:`_strategies`, also accepting ``joint`` (with --study: keep the upper bound)."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    rest = ",".join(s for s in items if s != "joint")
    return [*(_strategies(rest) if rest else []), *(["joint"] if "joint" in items else [])]


def _seeds(text: str) -> str:
    if not all(part.strip().isdigit() for part in text.split(",")):
        raise argparse.ArgumentTypeError(f"expected a count >= 1 like 3 or a list of seeds >= 0 "
                                         f"like 0,1,2, got {text!r}")
    return text


def resolve_seeds(text: str | None, base: int, default_count: int) -> list[int]:
    """``"3"`` → ``[base, base + 1, base + 2]``; ``"0,4,7"`` → that list; None → the default
    count starting at ``base``."""
    if text is None:
        return [base + i for i in range(default_count)]
    parts = [int(p) for p in text.split(",")]
    if len(parts) == 1:
        if parts[0] < 1:
            raise SegxaiError(f"--seeds: expected a count >= 1, got {parts[0]}")
        return [base + i for i in range(parts[0])]
    return parts


def register(subparsers: Any) -> None:
    from segxai.continual.experiment import ContinualConfig, quick_config

    full, quick = ContinualConfig(), quick_config()

    def default(name: str) -> str:
        a, b = getattr(full, name), getattr(quick, name)
        return f"default {a}" + (f"; {b} with --quick" if a != b else "")

    p = subparsers.add_parser(
        "continual",
        help="class-incremental segmentation with saliency-compressed replay (RQ3)",
        description=(
            "Class-incremental segmentation on the built-in shapes data (overlapped protocol, "
            "background shift) with a replay memory under a real byte budget. Strategies: "
            "none (fine-tuning), full, downsample (1/sqrt(r) per side), saliency-patch "
            "(EPR-like) and saliency-box (CIM-like). Writes OUT/results.csv (strategy, seed, "
            "task, miou_old, miou_new, miou_all, forgetting, exemplars, bytes), summary.json/"
            ".csv and plots; re-running with the same --out resumes."),
    )
    add_common(p)  # --out defaults to segxai-continual (segxai-continual-quick with --quick)
    p.add_argument("--strategies", type=_strategies_or_joint, default=None,
                   help="comma-separated strategies or 'all' (default: all)")
    p.add_argument("--seeds", type=_seeds, default=None,
                   help="number of seeds starting at --seed, or a comma list (default 3; "
                        "--quick: 1)")
    p.add_argument("--budget-bytes", type=Range(int, 0), default=None,
                   help=f"memory budget in bytes, 20 full exemplars incl. 4 B meta "
                        f"({default('budget_bytes')})")
    p.add_argument("--tasks", default=None,
                   help="task split: counts like 2-1-1 or ids like 1,2/3/4 (default 2-1-1)")
    p.add_argument("--epochs", type=Range(int, 1), default=None,
                   help=f"epochs per incremental task ({default('epochs')})")
    p.add_argument("--base-epochs", type=Range(int, 1), default=None,
                   help="epochs of task 0 (trained once per seed, shared by all strategies; "
                        f"{default('base_epochs')})")
    add_method_options(p, choices=registered_explainers(), params=False,
                       default=f"{full.explainer}; the saliency of the saliency strategies",
                       one=True, old_single="--explainer")
    p.add_argument("--ratio", type=Range(float, 0, 1, high_open=True), default=None,
                   help=f"fraction of each batch replayed from memory ({default('ratio')})")
    p.add_argument("--tau", type=Range(float, 0, 1, low_open=True, high_open=True), default=None,
                   help=f"saliency-box threshold ({default('tau')})")
    p.add_argument("--r", type=Range(float, 1), default=None,
                   help="compression ratio: downsample / outside the box / patch area "
                        f"({default('r')})")
    p.add_argument("--patch", type=Range(int, 1), default=None,
                   help="saliency-patch side in pixels (default size/sqrt(r))")
    p.add_argument("--saliency-on", choices=("selected", "present"), default=None,
                   help="saliency of the exemplar's own class or of every class in it "
                        f"({default('saliency_on')})")
    p.add_argument("--distill", type=Range(float, 0), default=None,
                   help=f"MiB unbiased distillation weight, 0 = off ({default('distill')})")
    p.add_argument("--n-train", type=Range(int, 1), default=None,
                   help=f"training images per seed ({default('n_train')})")
    p.add_argument("--size", type=Range(int, 16), default=None,
                   help=f"image side in pixels ({default('size')})")
    p.add_argument("--study", choices=("rq3",), default=None,
                   help="run a whole study: rq3 = every strategy and control at r = 4 and 16, "
                        "random and herding selection, 10 paired seeds, strong base enforced, "
                        "intervals (--quick: 2 seeds, 32 px); --strategies and --r are set by "
                        "the study")
    p.add_argument("--arms", default=None,
                   help="with --study rq3: comma-separated arms to run (r4, r16, r4-herding; "
                        "default all); --strategies then keeps only those strategies in each "
                        "arm")
    p.add_argument("--lr", type=Range(float, 0, low_open=True), default=None,
                   help="peak Adam learning rate (default 0.003; rq3: 0.01)")
    p.add_argument("--batch-size", type=Range(int, 1), default=None,
                   help="images per step, replay included (default 16; rq3: 8)")
    p.add_argument("--dataset", choices=("shapes", "textured-shapes"), default=None,
                   help="shapes (4 classes, default) or textured-shapes (16: shape x fill)")
    p.add_argument("--selection", choices=("random", "herding"), default=None,
                   help="exemplar selection (default random)")
    p.add_argument("--replay-labels", choices=("unbiased", "ignore", "stored"), default=None,
                   help="background of a replayed mask for classes learned after it was stored:"
                        " may be any of them (unbiased, default), ignored, or background "
                        "(stored, the biased baseline)")
    p.add_argument("--unbiased-ce", action=argparse.BooleanOptionalAction, default=None,
                   help="MiB unbiased cross-entropy on the current images (with --distill 10: "
                        "MiB; default off, rq3: on)")
    p.add_argument("--base-target", type=Range(float, 0, 1, low_open=True), default=None,
                   help="task 0 trains until every base class has this validation IoU "
                        "(rounds of --base-epochs, at most --base-rounds); weaker seeds are "
                        "excluded and reported (default off; rq3: 0.7)")
    p.add_argument("--base-rounds", type=Range(int, 1), default=None,
                   help="most rounds of task-0 training (default 1; rq3: 4)")
    p.add_argument("--task-target", type=Range(float, 0, 1, low_open=True), default=None,
                   help="each incremental task trains in rounds of --epochs until every new "
                        "class has this validation IoU (at most --task-rounds); a task that "
                        "does not is kept and reported (default off; rq3: 0.7)")
    p.add_argument("--task-rounds", type=Range(int, 1), default=None,
                   help="most rounds of an incremental task (default 1; rq3: 3)")
    p.add_argument("--joint", action="store_true", default=None,
                   help="also train on all labels at once (the upper bound)")
    p.add_argument("--workers", type=Range(int, 1), default=1,
                   help="processes running seeds in parallel (results do not depend on it; "
                        "default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``segxai continual``."""
    from segxai.continual.config import class_names
    from segxai.continual.experiment import (
        ContinualConfig,
        load_results,
        quick_config,
        run_experiment,
        summarise,
    )
    from segxai.continual.scenario import parse_tasks
    from segxai.continual.study import format_rq3, rq3_configs, run_rq3

    overrides: dict[str, Any] = {}
    if args.strategies is not None:
        if "joint" in args.strategies and args.study is None:
            raise SegxaiError("--strategies: 'joint' is a study arm; use --joint without --study")
        overrides["strategies"] = args.strategies
    if args.method:
        (overrides["explainer"],) = resolve_methods(args.method, choices=registered_explainers(),
                                                    default=[], one=True)
    for name in ("epochs", "base_epochs", "ratio", "tau", "r", "patch", "distill", "n_train",
                 "size", "saliency_on", "dataset", "selection", "replay_labels", "unbiased_ce",
                 "base_target", "base_rounds", "joint", "lr", "batch_size", "task_target",
                 "task_rounds"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.budget_bytes is not None:
        overrides["budget_bytes"] = args.budget_bytes
    names = ("strategies", "seeds", "budget_bytes", "tasks", "epochs", "base_epochs", "ratio",
             "tau", "r", "patch", "saliency_on", "distill", "n_train", "size", "dataset",
             "selection", "replay_labels", "unbiased_ce", "base_target", "base_rounds", "joint",
             "lr", "batch_size", "arms", "task_target", "task_rounds")
    with options_named(*names, explainer="--method"):
        if args.tasks is not None:
            n_classes = len(class_names(args.dataset or "shapes"))
            overrides["tasks"] = user_input(parse_tasks, args.tasks, n_classes)
        if args.study is not None:
            for fixed in ("r", "joint"):
                if fixed in overrides:
                    raise SegxaiError(f"--{fixed}: expected no value with --study (the study "
                                      "sets it)")
            keep = overrides.pop("strategies", None)
            overrides["seeds"] = resolve_seeds(args.seeds, args.seed, 2 if args.quick else 10)
            arms = None if args.arms is None else [a.strip() for a in args.arms.split(",")]
            configs = user_input(rq3_configs, args.quick, arms, keep, **overrides)
        else:
            overrides["seeds"] = resolve_seeds(args.seeds, args.seed, 1 if args.quick else 3)
            config = user_input(quick_config if args.quick else ContinualConfig, **overrides)
    out = Path(args.out) if args.out is not None else DEFAULT_OUT
    if args.study is not None and args.out is None:
        out = out.with_name(f"{out.name}-{args.study}")
    if args.quick and args.out is None:
        out = out.with_name(out.name + "-quick")
    if args.workers < 1:
        raise SegxaiError(f"--workers: expected an integer >= 1, got {args.workers}")
    if args.study is not None:
        analysis = run_rq3(configs, out, workers=args.workers, device=args.device,
                           progress=not args.quiet)
        print(format_rq3(analysis))
        print(f"results: {out / 'rq3.json'}, {out / 'rq3_seeds.csv'}, {out / 'rq3_pairs.csv'}")
        return 0
    run_experiment(config, out, device=args.device, progress=not args.quiet,
                   workers=args.workers)

    summary = summarise(load_results(out, config), config)
    print(f"final task {summary['final_task']} (mean ± std over {len(config.seeds)} seed(s)), "
          f"budget {config.budget_bytes} B:")
    print(f"{'strategy':<15}{'old mIoU':>16}{'new mIoU':>16}{'all mIoU':>16}{'forget':>10}"
          f"{'exemplars':>11}{'bytes':>10}")
    for e in summary["table"]:
        print(f"{e['strategy']:<15}"
              f"{100 * e['miou_old']:>9.1f} ± {100 * e['miou_old_std']:<4.1f}"
              f"{100 * e['miou_new']:>9.1f} ± {100 * e['miou_new_std']:<4.1f}"
              f"{100 * e['miou_all']:>9.1f} ± {100 * e['miou_all_std']:<4.1f}"
              f"{100 * e['forgetting']:>10.1f}{e['exemplars']:>11.1f}{e['bytes']:>10.0f}")
    print(f"results: {out / 'results.csv'}")
    return 0
