"""``segxai attack``: move explanations while keeping the segmentation, and measure it.

Two modes:

* default: attack one differentiable explainer (--method) on --images N validation
  images of the built-in shapes data; writes OUT/attack.json (one record per image with
  target_pearson, original_pearson, pixel_agreement, linf, l2, psnr, seconds and more) and
  OUT/figures/attack_NNNN.png. Finished images are kept in OUT/attack.json and skipped
  when the command is rerun with the same settings.
* --study: the robustness study (the differentiable explainers given by --method, default
  all of them; the beta-smoothing defence; transfer to perturbation explainers); writes
  OUT/study.json and OUT/figures/study_success.png, with per-image checkpoints in
  OUT/study/.

--epsilon is in /255 units when >= 1 (8 = 8/255), else a fraction of the pixel range (0.03).
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
    options_named,
    plain_text,
    user_input,
    write_json,
)
from segxai.cli.grammar import (
    add_method_options,
    add_model_options,
    differentiable_explainers,
    load_cli_model,
    resolve_methods,
    resolve_params,
)
from segxai.core.errors import SegxaiError
from segxai.core.runstore import RunStore

QUICK = QuickDefaults(full={"iterations": 300, "images": 4},
                      quick={"iterations": 60, "images": 1})
DEFAULTS: dict[str, Any] = {"method": "gradient", "target_kind": "shift", "epsilon": "8", "defence_beta": 3.0,
            # SmoothGrad is attacked with a fixed, small number of noise draws
            "params": {"smoothgrad": {"n_samples": 8}}}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "attack", help="explanation attacks: keep the segmentation, move the explanation",
        description=plain_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, what="the model to attack", old=("--checkpoint",))
    sg = DEFAULTS["params"]["smoothgrad"]["n_samples"]
    add_method_options(p, choices=differentiable_explainers(),
                       default=f"{DEFAULTS['method']}; with --study all of them; "
                               f"smoothgrad.n_samples={sg}")
    p.add_argument("--target-kind", default=DEFAULTS["target_kind"],
                   choices=("shift", "mirror", "box", "other-image"),
                   help="where the explanation should go (default %(default)s)")
    p.add_argument("--epsilon", default=DEFAULTS["epsilon"],
                   help="L-infinity radius: >= 1 in /255 units (default %(default)s = "
                        "%(default)s/255), < 1 a fraction")
    p.add_argument("--iterations", type=Range(int, 1), default=None,
                   help=f"Adam steps ({QUICK.help('iterations')})")
    p.add_argument("--lr", type=Range(float, 0, 1, low_open=True), default=None,
                   help="Adam learning rate in pixel units (default: the attack's own)")
    p.add_argument("--images", type=Range(int, 1), default=None,
                   help=f"number of validation images ({QUICK.help('images')})")
    p.add_argument("--study", action="store_true",
                   help="robustness study over the methods with the beta-smoothing defence")
    p.add_argument("--defence-beta", type=Range(float, 0, low_open=True), default=DEFAULTS["defence_beta"],
                   help="beta of the smoothing defence in --study (default %(default)s)")
    add_common(p, out_default="segxai-attack")
    p.set_defaults(func=run)


def _load(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    from segxai.core.adapter import adapt
    from segxai.data import make_shapes

    loaded = load_cli_model(args, seed=args.seed)
    model, names = loaded.model, list(loaded.class_names or [])
    if loaded.builtin is not None:
        images = loaded.builtin.val_data.images[:max(args.images + 1, 2)]
    else:
        data = make_shapes(max(args.images + 1, 2), size=64, seed=10_000 + args.seed)
        images = adapt(model).from_pixels(data.images)
    return model.eval(), images, names


def run(args: argparse.Namespace) -> int:
    import torch

    from segxai.attack import AttackConfig, parse_epsilon
    from segxai.attack.study import StudyConfig

    with options_named("epsilon", "iterations", "lr", "images", "defence_beta"):
        eps = user_input(parse_epsilon, args.epsilon)
        args.images = QUICK.get(args, "images")
        if args.images < 1:
            raise SegxaiError(f"--images: expected an integer >= 1, got {args.images}")
        settings: dict[str, Any] = {"epsilon": eps, "iterations": QUICK.get(args, "iterations")}
        if args.lr is not None:
            settings["lr"] = args.lr
        cfg = user_input(lambda: AttackConfig(**settings).validate())
    choices = differentiable_explainers()
    study_default = [m for m in StudyConfig().methods if m in choices]
    methods = resolve_methods(args.method, choices=choices, one=not args.study,
                              default=study_default if args.study else [DEFAULTS["method"]])
    params = {m: dict(DEFAULTS["params"].get(m, {})) for m in methods}
    if "smoothgrad" in params:  # its noise follows --seed
        params["smoothgrad"]["seed"] = args.seed
    for m, given in resolve_params(args.param, methods).items():
        params[m].update(given)
    check_explainer_params(params)
    torch.manual_seed(args.seed)
    out = Path(args.out)  # created by the run stores, once the model and images are loaded
    if args.study:
        study_cfg = StudyConfig(methods=tuple(methods), target_kind=args.target_kind, attack=cfg,
                                defence_beta=args.defence_beta,
                                explainer_params={m: p for m, p in params.items() if p})
        with options_named("defence_beta"):
            study_cfg = user_input(study_cfg.validate)
        return _run_study(args, study_cfg, out)
    return _run_attack(args, methods[0], cfg, params[methods[0]], out)


def _run_study(args: argparse.Namespace, cfg: Any, out: Path) -> int:
    from segxai.attack.figures import plot_success_rates
    from segxai.attack.study import robustness_study
    from segxai.report.html import save_figure

    model, images, _ = _load(args)
    res = robustness_study(model, images[:args.images], cfg, checkpoint_dir=out / "study",
                           progress=not args.quiet, device=args.device, seed=args.seed)
    write_json(out / "study.json", {"config": res.config, "summary": res.summary,
                                    "records": res.records})
    save_figure(plot_success_rates(res.summary["attacked"], "attack success rate"),
                out / "figures" / "study_success.png")
    if not args.quiet:
        for row in res.summary["attacked"]:
            print(f"{row['method']:>14}: success {row['success_rate']:.2f}, defended "
                  f"{row.get('defended_success_rate', float('nan')):.2f}, target r "
                  f"{row['target_pearson']:.3f}, agreement {row['pixel_agreement']:.4f}")
        for row in res.summary["transferred"]:
            print(f"{row['method']:>14}: transferred from {row['from']}, moved "
                  f"{row['moved']:+.3f} towards the target")
    return 0


def _run_attack(args: argparse.Namespace, method: str, cfg: Any, params: dict[str, Any],
                out: Path) -> int:
    from segxai.attack import attack, make_target_map
    from segxai.attack.figures import plot_attack
    from segxai.attack.study import choose_target
    from segxai.core.adapter import adapt
    from segxai.core.registry import explain
    from segxai.report.html import save_figure

    model, images, _ = _load(args)
    adapter = adapt(model)
    n = args.images
    settings = {"method": method, "target_kind": args.target_kind, "images": n,
                "seed": args.seed, "quick": args.quick, "model": args.model,
                "attack": cfg.to_dict(), "explainer_params": params}
    images = images.to(adapter.device)
    targets = choose_target(adapter, images)  # the first forward: a broken model stops here
    # the run store refuses an --out holding an attack with other settings (names the keys)
    store = RunStore(out, kind="attack", settings=settings)
    fingerprint = store.fingerprint
    path = out / "attack.json"
    done: dict[int, dict[str, Any]] = {}
    if store.resumed and path.exists():
        old = json.loads(path.read_text())
        done = {int(r["index"]): r for r in old.get("records", [])}
    records: list[dict[str, Any]] = []
    for i in range(n):
        if i in done:
            records.append(done[i])
            continue
        x, t = images[i:i + 1], targets[i]
        tmap: Any = args.target_kind
        if args.target_kind == "other-image":
            j = (i + 1) % images.shape[0]
            other = explain(adapter, images[j:j + 1], targets[j], method=method, **params)
            tmap = make_target_map("other-image", other.maps, other_maps=other.maps)
        res = attack(adapter, x, t, method, tmap, cfg, explainer_params=params,
                     progress=not args.quiet)
        rec = {"index": i, "class_index": int(t.class_index[0]), **res.records()[0]}
        records.append(rec)
        fig = plot_attack(adapter.to_pixels(x)[0], adapter.to_pixels(res.x_adv)[0],
                          res.original_map[0], res.target_map[0], res.adversarial_map[0],
                          res.pred_original[0], res.pred_adversarial[0],
                          adapter.num_classes(images),
                          title=f"{method}, {args.target_kind}: target r "
                                f"{rec['target_pearson']:.2f}, agreement "
                                f"{rec['pixel_agreement']:.4f}")
        save_figure(fig, out / "figures" / f"attack_{i:04d}.png")
        write_json(path, {"fingerprint": fingerprint, "settings": settings, "records": records})
        if not args.quiet:
            print(f"image {i}: target r {rec['clean_target_pearson']:.3f} -> "
                  f"{rec['target_pearson']:.3f}, agreement {rec['pixel_agreement']:.4f}, "
                  f"L∞ {rec['linf'] * 255:.2f}/255, {rec['seconds']:.1f} s")
    succ = [r["success"] for r in records]
    write_json(path, {"fingerprint": fingerprint, "settings": settings, "records": records,
                      "summary": {"images": len(records),
                                  "success_rate": sum(succ) / len(succ),
                                  "mean_target_pearson": sum(r["target_pearson"]
                                                             for r in records) / len(records),
                                  "mean_seconds": sum(r["seconds"] for r in records)
                                  / len(records)}})
    return 0
