"""``segxai nas search|validate|train``: explanation-guided architecture search (CAM-NAS-style).

* ``search``: evolutionary search of a small U-Net student whose explanation maps match the
  teacher's (or any baseline proxy); writes ``search.json`` and resumes ``search_state.json``.
* ``validate``: sample architectures under the budget, train each with one identical schedule and
  correlate every proxy with trained mIoU (``validation.csv``, ``correlations.csv``).
* ``study``: the reference, searches per proxy, winners and the validation in one resumable run.
* ``train``: train the searched student (optionally with distillation and saliency matching)
  and compare it with the teacher (and a random-search winner): ``metrics.json``, checkpoint.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from segxai.cli.common import (
    QuickDefaults,
    Range,
    add_common,
    check_explainer_params,
    plain_text,
    write_json,
)
from segxai.cli.fanout import add_fanout_options, cli_executor
from segxai.cli.grammar import (
    add_method_options,
    add_model_options,
    load_cli_model,
    registered_explainers,
    resolve_methods,
    resolve_params,
)
from segxai.core.checks import check_choice
from segxai.core.errors import SegxaiError

QUICK = QuickDefaults(
    full={"population": 32, "iterations": 60, "children": 8, "probe_images": 8,
          "fewshot_steps": 50, "architectures": 60, "train_images": 500, "epochs": 12,
          "val_images": 100, "seeds": 3, "study_population": 16, "study_iterations": 12,
          "study_children": 4},
    quick={"population": 8, "iterations": 4, "children": 4, "probe_images": 4,
           "fewshot_steps": 10, "architectures": 4, "train_images": 48, "epochs": 1,
           "val_images": 32, "seeds": 3, "study_population": 4, "study_iterations": 1,
           "study_children": 2})
STUDY_SEARCH = {"full": "cam-gram,cam,params,random", "quick": "cam,params"}
DEFAULTS: dict[str, Any] = {"proxy": "cam", "method": "seg-grad-cam", "band": "0.15-0.25",
            "proxies": "cam,cam-abs,cam-gram,cam-l2,params,flops,synflow,naswot,grad-norm,zen,"
                       "diswot,random"}


def _fixed(args: argparse.Namespace, name: str) -> Any:
    """A size without its own option that depends on ``--quick``."""
    return (QUICK.quick if args.quick else QUICK.full)[name]


def _proxies() -> tuple[str, ...]:
    from segxai.nas import PROXIES

    return tuple(PROXIES)


def _search_proxies() -> tuple[str, ...]:
    from segxai.nas.search import RANKED

    return (*_proxies(), *RANKED)


def _add_shared(p: argparse.ArgumentParser, out_default: str) -> None:
    add_common(p, out_default=out_default)
    add_model_options(p, what="the teacher", old=("--teacher",), default="builtin-quick")
    p.add_argument("--proxy", default=DEFAULTS["proxy"],
                   help=f"fitness, larger = better: one of {', '.join(_search_proxies())} "
                        "(default %(default)s)")
    p.add_argument("--population", type=Range(int, 1), default=None,
                   help=f"population size N ({QUICK.help('population')})")
    p.add_argument("--iterations", type=Range(int, 0), default=None,
                   help=f"iterations T ({QUICK.help('iterations')})")
    p.add_argument("--children", type=Range(int, 1), default=None,
                   help="children scored per iteration (one batch; fans out on Ray; "
                        f"{QUICK.help('children')})")
    p.add_argument("--band", default=DEFAULTS["band"], metavar="LO-HI",
                   help="size band: students have LO to HI times the teacher's parameters, "
                        "0 < LO <= HI <= 1; F0 and every child stay inside (default "
                        "%(default)s)")
    p.add_argument("--budget-params", type=Range(float, 0, low_open=True), default=None,
                   help="a further upper limit on parameters: a count, or a fraction (<= 1) of "
                        "the teacher's")
    p.add_argument("--init-seeds", type=Range(int, 1), default=3,
                   help="initialisations averaged by the CAM proxies (default %(default)s)")
    p.add_argument("--budget-flops", type=Range(float, 0, low_open=True), default=None,
                   help="FLOP budget per image: a count or a fraction (<= 1) of the teacher's")
    p.add_argument("--budget-depth", type=Range(int, 1), default=None, help="maximal depth")
    add_fanout_options(p)
    p.add_argument("--backend", default="local", choices=("local", "ray"),
                   help="score/train candidates in-process or as Ray tasks (default "
                        "%(default)s)")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: local Ray)")
    p.add_argument("--num-cpus", type=Range(int, 1), default=None,
                   help="CPUs of a local Ray instance")
    add_method_options(p, choices=registered_explainers(),
                       default=f"{DEFAULTS['method']}; the explainer of the CAM fitness, "
                               "same for teacher and students", one=True,
                       old_param="--method-param")
    p.add_argument("--probe-images", type=Range(int, 1), default=None,
                   help=f"probe images ({QUICK.help('probe_images')})")
    p.add_argument("--fewshot-steps", type=Range(int, 0), default=None,
                   help=f"distillation steps of cam-fewshot ({QUICK.help('fewshot_steps')})")
    p.add_argument("--crossover", type=Range(float, 0, 1), default=0.0,
                   help="crossover probability (default %(default)s)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("nas", help="explanation-guided architecture search for small students",
                       description=plain_text(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    nsub = p.add_subparsers(dest="nas_command", metavar="{search,validate,train,study}")
    s = nsub.add_parser("search", help="evolutionary search (writes search.json)")
    _add_shared(s, "segxai-nas-search")
    s.add_argument("--random-search", action="store_true",
                   help="sample children uniformly instead of evolving (baseline)")
    s.set_defaults(func=run_search_cmd)
    v = nsub.add_parser("validate", help="proxy vs trained mIoU (validation.csv, correlations.csv)")
    _add_shared(v, "segxai-nas-validate")
    _add_validation(v)
    v.set_defaults(func=run_validate_cmd)
    t = nsub.add_parser("train", help="train the searched student (metrics.json + checkpoint)")
    _add_shared(t, "segxai-nas-train")
    t.add_argument("--search", type=Path, default=None,
                   help="a 'nas search' output directory (its best config is trained); default: "
                        "run a search first")
    t.add_argument("--config", default=None, help="a UNetConfig as JSON (instead of --search)")
    t.add_argument("--baseline-search", type=Path, default=None,
                   help="another search directory (e.g. --proxy random) trained for comparison")
    t.add_argument("--alpha", type=Range(float, 0), default=0.0,
                   help="distillation weight (default %(default)s)")
    t.add_argument("--lam", type=Range(float, 0), default=0.0,
                   help="saliency-matching weight lambda (default %(default)s)")
    t.add_argument("--epochs", type=Range(int, 1), default=None,
                   help="epochs (default: the teacher's recipe)")
    t.set_defaults(func=run_train_cmd)
    st = nsub.add_parser("study", help="validation + searches per proxy + winners, one "
                                       "resumable run (study.json, table.csv)")
    _add_shared(st, "segxai-nas-study")
    _add_validation(st)
    st.add_argument("--search-proxies", default=None,
                    help="proxies searched with, each with --seeds seeds (default "
                         f"{STUDY_SEARCH['full']}; {STUDY_SEARCH['quick']} with --quick)")
    st.add_argument("--seeds", type=Range(int, 1), default=None,
                    help=f"search seeds per proxy ({QUICK.help('seeds')})")
    st.add_argument("--alpha", type=Range(float, 0), default=0.5,
                    help="distillation weight of the CAM winners' second training "
                         "(default %(default)s)")
    st.add_argument("--lam", type=Range(float, 0), default=1.0,
                    help="saliency-matching weight of that training (default %(default)s)")
    st.set_defaults(func=run_study_cmd)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _add_validation(v: argparse.ArgumentParser) -> None:
    """Options of the validation schedule (validate and study)."""
    v.add_argument("--architectures", type=Range(int, 2), default=None,
                   help=f"architectures sampled under the budget ({QUICK.help('architectures')})")
    v.add_argument("--proxies", default=DEFAULTS["proxies"],
                   help="comma-separated proxies to validate (default %(default)s)")
    v.add_argument("--train-images", type=Range(int, 1), default=None,
                   help=f"training images of the identical schedule ({QUICK.help('train_images')})")
    v.add_argument("--epochs", type=Range(int, 1), default=None,
                   help=f"epochs of the identical schedule ({QUICK.help('epochs')})")
    v.add_argument("--batch-size", type=Range(int, 1), default=4,
                   help="batch size of the identical schedule (default %(default)s)")
    v.add_argument("--lr", type=Range(float, 0, low_open=True), default=5e-3,
                   help="peak learning rate of the identical schedule (default %(default)s; "
                        "with the default 500 images x 8 epochs x batch 4 the teacher's "
                        "architecture reaches val mIoU >= 0.9 from scratch, see docs/nas.md)")


# ---------------------------------------------------------------------------------- setup
def _teacher(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(teacher model, builtin or None)``."""
    loaded = load_cli_model(args)
    return loaded.model.eval(), loaded.builtin


def _budget(args: argparse.Namespace, teacher: Any, shape: tuple[int, int, int],
            num_classes: int) -> Any:
    from segxai.nas import Budget
    from segxai.nas.counting import network_counts

    def resolve(value: float | None, full: int) -> int | None:
        if value is None:
            return None
        if value <= 0:
            raise SegxaiError(f"budget: expected a positive count or fraction, got {value}")
        return int(value * full) if value <= 1 else int(value)

    from segxai.nas import SearchSpace
    from segxai.nas.band import band_budget, parse_band

    counts = network_counts(teacher, shape)
    lo, hi = parse_band(args.band)
    space = SearchSpace(in_channels=shape[0], num_classes=num_classes, resolution=shape[1:])
    flops = resolve(args.budget_flops, counts["flops"])
    budget = band_budget(lo, hi, counts["params"], space, max_flops=flops,
                         max_depth=args.budget_depth)
    params = resolve(args.budget_params, counts["params"])
    if params is not None and params < (budget.max_params or params):
        budget = Budget(max_params=params, max_flops=flops, max_depth=args.budget_depth,
                        min_params=budget.min_params)
    _check_budget_admits(budget, num_classes, shape, counts)
    return budget


def _check_budget_admits(budget: Any, num_classes: int, shape: tuple[int, int, int],
                         teacher: dict[str, int]) -> None:
    """Refuse, before any work, a budget that no student of the search space fits."""
    from segxai.nas import SearchSpace
    from segxai.nas.validate import sample_architectures

    space = SearchSpace(in_channels=shape[0], num_classes=num_classes, resolution=shape[1:])
    try:
        sample_architectures(space, budget, 1, seed=0, max_draws=2000)
    except SegxaiError:
        raise SegxaiError(
            f"--band/--budget-params/--budget-flops/--budget-depth: expected a budget some "
            f"student fits, got min_params={budget.min_params}, "
            f"max_params={budget.max_params}, max_flops={budget.max_flops}, "
            f"max_depth={budget.max_depth} (the teacher has {teacher['params']} parameters, "
            f"{teacher['flops']} FLOPs); no architecture in 2000 draws fits") from None


def _method(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The one explainer of the CAM fitness and its parameters."""
    (method,) = resolve_methods(args.method, choices=registered_explainers(),
                                default=[DEFAULTS["method"]], one=True)
    params = resolve_params(args.param, [method])
    check_explainer_params(params)
    return method, params.get(method, {})


def _setup(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from segxai.nas import make_backend, make_probe

    check_choice(args.proxy, "--proxy", _search_proxies())
    method, params = _method(args)
    torch.set_num_threads(1)
    teacher, builtin = _teacher(args)
    size = 64
    if builtin is not None:
        size = int(builtin.val_data.images.shape[-1])
    fewshot = QUICK.get(args, "fewshot_steps")
    probe = make_probe(teacher, n_probe=QUICK.get(args, "probe_images"),
                       n_distill=16 if args.quick else 32, size=size, seed=args.seed,
                       method=method, method_params=params, device=args.device)
    budget = _budget(args, teacher, probe.input_shape, probe.num_classes)
    teacher_params = sum(p.numel() for p in teacher.parameters())
    if args.workers is not None or args.ray is not None:
        if args.backend != "local":
            raise SegxaiError(f"--backend: expected local with --workers/--ray, got "
                              f"{args.backend!r}")
        backend = cli_executor(args)
    else:
        backend = make_backend(args.backend, address=args.ray_address, num_cpus=args.num_cpus)
    return {"teacher": teacher, "builtin": builtin, "probe": probe, "fewshot": fewshot,
            "budget": budget, "backend": backend, "teacher_params": teacher_params,
            "population": QUICK.get(args, "population"),
            "iterations": QUICK.get(args, "iterations"),
            "children": QUICK.get(args, "children"), "size": size}


def _search(args: argparse.Namespace, env: dict[str, Any], out: Path | None,
            random_search: bool = False) -> dict[str, Any]:
    from segxai.nas import run_search

    return run_search(env["teacher"], env["probe"], proxy=args.proxy,
                      population=env["population"], iterations=env["iterations"],
                      children_per_iteration=env["children"], budget=env["budget"],
                      seed=args.seed, crossover_prob=args.crossover, random_search=random_search,
                      backend=env["backend"], out_dir=out, progress=not args.quiet,
                      fewshot_steps=env["fewshot"], init_seeds=args.init_seeds,
                      device=args.device)


# ---------------------------------------------------------------------------------- commands
def run_search_cmd(args: argparse.Namespace) -> int:
    env = _setup(args)
    try:
        summary = _search(args, env, args.out, random_search=args.random_search)
    finally:
        env["backend"].close()
    b = summary["best"]
    print(f"best ({args.proxy}): score {b['score']:.4g}, params {b['params']} "
          f"({b['params'] / summary['teacher']['params']:.1%} of the teacher), "
          f"FLOPs {b['flops']}, {summary['candidates_scored']} candidates in "
          f"{summary['seconds']:.1f} s")
    if args.out is not None:
        print(f"wrote {args.out / 'search.json'}")
    return 0


def run_validate_cmd(args: argparse.Namespace) -> int:
    from segxai.cli.commands._nas_study import validate_command

    return validate_command(args)


def run_study_cmd(args: argparse.Namespace) -> int:
    from segxai.cli.commands._nas_study import study_command

    return study_command(args)


def _load_best(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "search.json"
    if not path.is_file():
        raise SegxaiError(f"--search: expected a 'segxai nas search' output directory, got "
                          f"{str(directory)!r} without search.json")
    try:
        best = json.loads(path.read_text(encoding="utf-8"))["best"]["config"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise SegxaiError(f"--search: expected a 'segxai nas search' search.json with a best "
                          f"config, got {str(path)!r} ({type(exc).__name__}: {exc})") from None
    if not isinstance(best, dict):
        raise SegxaiError(f"--search: expected a config object as best in {str(path)!r}, got "
                          f"{type(best).__name__}")
    return best


def run_train_cmd(args: argparse.Namespace) -> int:
    import torch

    from segxai.data import make_shapes
    from segxai.models import TrainConfig, builtin_recipe, save_checkpoint
    from segxai.nas import (
        StudentConfig,
        build_unet,
        cpu_latency_ms,
        train_student,
    )
    from segxai.nas.search import build_candidate
    from segxai.nas.state import derive_seed

    if args.config is not None and args.search is not None:
        raise SegxaiError("--config/--search: expected one of them, got both")
    if args.config is not None:  # checked before any work
        try:
            config = json.loads(args.config)
        except json.JSONDecodeError as exc:
            raise SegxaiError(f"--config: expected a UNetConfig as JSON, got "
                              f"{args.config!r} ({exc})") from exc
        from segxai.models.unet import UNetConfig

        try:
            UNetConfig.from_dict(config)
        except SegxaiError as exc:
            raise SegxaiError(f"--config: expected a valid UNetConfig, got {exc}") from exc
    env = _setup(args)
    teacher, builtin = env["teacher"], env["builtin"]
    try:
        if args.config is None and args.search is not None:
            config = _load_best(args.search)
        elif args.config is None:
            config = _search(args, env, args.out / "search" if args.out else None)["best"]["config"]
    finally:
        env["backend"].close()
    recipe = builtin_recipe(quick=args.quick, seed=args.seed)
    train_data = make_shapes(recipe.n_train, size=env["size"], seed=args.seed)
    val_data = builtin.val_data if builtin is not None else make_shapes(
        recipe.n_val, size=env["size"], seed=args.seed + 10_000)
    tc = recipe.train
    tc = TrainConfig(**{**tc.to_dict(), "patience": None, "restore_best": False,
                        "epochs": args.epochs or tc.epochs})
    sc = StudentConfig(alpha=args.alpha, lam=args.lam)
    from segxai.models import evaluate_miou

    shape = env["probe"].input_shape
    from segxai.nas.counting import network_counts

    tcount = network_counts(teacher, shape)
    rows: list[dict[str, Any]] = [{"model": "teacher", "params": tcount["params"], "flops": tcount["flops"],
             "val_miou": evaluate_miou(teacher, val_data, device=args.device),
             "cpu_latency_ms": cpu_latency_ms(teacher, shape), "config": None}]
    entries = [("student", config)]
    if args.baseline_search is not None:
        entries.append(("baseline", _load_best(args.baseline_search)))
    models = {}
    for name, cfg in entries:
        torch.set_num_threads(1)
        model = build_candidate(build_unet, cfg, derive_seed(args.seed, "student", name))
        res = train_student(model, train_data, tc, teacher=teacher, student_config=sc,
                            val_data=val_data, device=args.device, progress=not args.quiet)
        models[name] = model
        counts = network_counts(model, shape)
        rows.append({"model": name, "params": counts["params"],
                     "flops": counts["flops"], "val_miou": res["val_miou"],
                     "cpu_latency_ms": cpu_latency_ms(model, shape),
                     "train_seconds": res["seconds"], "config": cfg})
    t = rows[0]
    for r in rows[1:]:
        r["params_ratio"] = r["params"] / t["params"]
        r["miou_ratio"] = r["val_miou"] / t["val_miou"] if t["val_miou"] else None
    print(json.dumps([{k: v for k, v in r.items() if k != "config"} for r in rows], indent=1))
    if args.out is not None:
        save_checkpoint(models["student"], args.out / "student",
                        class_names=val_data.class_names, extra={"student": sc.to_dict()})
        write_json(args.out / "metrics.json", {"models": rows, "student_config": sc.to_dict(),
                                                "train": tc.to_dict()})
        print(f"wrote {args.out / 'metrics.json'}")
    return 0
