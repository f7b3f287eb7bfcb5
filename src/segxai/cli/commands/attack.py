"""``segxai attack``: move explanations while keeping the segmentation, and measure it.

Two modes:

* default: attack one differentiable explainer (--method) on --images N validation
  images of the built-in shapes data; writes OUT/attack.json (one record per image with
  target_pearson, original_pearson, pixel_agreement, linf, l2, psnr, seconds and more) and
  OUT/figures/attack_NNNN.png. Finished images are kept in OUT/attack.json and skipped
  when the command is rerun with the same settings.
* --study: the robustness map (the differentiable explainers given by --method, default
  all of them, at every --epsilons value, with --preset's attack, default dombrowski: 1,500
  Adam steps, valid-range clamp; transfer to occlusion and Seg-Ablation-CAM; the
  beta-smoothing and SmoothGrad defences against a non-adaptive and an adaptive attacker);
  writes OUT/study.json (rows, and the summary with 95 % bootstrap intervals over images),
  OUT/study.csv and OUT/figures/robustness_*.png; resumable from OUT/study/.
* --manipulate location|topk: the model-manipulation control (Heo et al. 2019): fine-tune
  the model so that Seg-Grad-CAM goes to a frame around the image (location) or leaves its
  top-10 % region (topk) while the segmentation is kept; writes OUT/manipulation.json
  (pixel agreement, mIoU, each explainer's map before and after, with intervals).

--epsilon is in /255 units when >= 1 (8 = 8/255), else a fraction of the pixel range (0.03);
"none" = no ball, the valid range only. --target-kind other-image (default) takes the same
explainer's map of the next image as the target (Dombrowski et al.).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
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
# --study / --manipulate sizes (full: the issue's study; quick: about a minute)
# --study/--manipulate sizes (the map's settings: MapConfig() and quick_map_config())
STUDY_QUICK: dict[str, Any] = {"images": 4, "steps": 30, "train_images": 16,
                               "keep_only_steps": 5}
STUDY_FULL: dict[str, Any] = {"images": 30, "steps": 1200, "train_images": 256,
                              "keep_only_steps": 200}
# the model attacked by default: the full built-in U-Net, but the quick one for --study,
# whose map of five explainers is sized for it (docs/attack.md, "Sizing")
DEFAULT_MODEL, STUDY_MODEL = "builtin", "builtin-quick"
DEFAULTS: dict[str, Any] = {"method": "gradient", "target_kind": "other-image", "epsilon": "8",
            "defence_beta": 3.0,
            # SmoothGrad is attacked with a fixed, small number of noise draws
            "params": {"smoothgrad": {"n_samples": 8}}}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "attack", help="explanation attacks: keep the segmentation, move the explanation",
        description=plain_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(p, what="the model to attack", old=("--checkpoint",), default=None,
                      default_text=f"{DEFAULT_MODEL}; {STUDY_MODEL} with --study, sized "
                                   "to an hour on two cores")
    sg = DEFAULTS["params"]["smoothgrad"]["n_samples"]
    add_method_options(p, choices=differentiable_explainers(),
                       default=f"{DEFAULTS['method']}; with --study all of them; "
                               f"smoothgrad.n_samples={sg}")
    p.add_argument("--preset", default=None, choices=("dombrowski", "none"),
                   help="attack settings: dombrowski = 1,500 Adam steps, lr 2e-4 in "
                        "normalised units, valid-range clamp only (default: none for one "
                        "attack and for --study --quick (30 steps of lr 2e-2), dombrowski "
                        "for --study)")
    p.add_argument("--epsilons", default=None,
                   help="--study: comma-separated ε values in /255 units or none, for "
                        "every method (default 8; 2,4,8,16,32,none with --full-map; 8,none "
                        "with --quick)")
    p.add_argument("--no-adaptive", action="store_true",
                   help="--study: skip the adaptive β-smoothing attacker (an attack as "
                        "costly as the gradient's; the non-adaptive defences still run)")
    p.add_argument("--full-map", action="store_true",
                   help="--study: the issue's full map, every method at every ε on every "
                        "image (default: sized to under an hour on one core: ε = 8/255, the "
                        "gradient on --images images, the CAMs on 16, SmoothGrad and "
                        "Integrated Gradients on 2)")
    p.add_argument("--batch-size", type=Range(int, 1), default=None,
                   help="--study: images attacked together (default 16; 4 with --quick)")
    p.add_argument("--manipulate", default=None, choices=("location", "topk"),
                   help="model-manipulation control (Heo et al. 2019) instead of an input "
                        "attack")
    p.add_argument("--steps", type=Range(int, 1), default=None,
                   help=f"--manipulate: Adam steps (default {STUDY_FULL['steps']}; "
                        f"{STUDY_QUICK['steps']} with --quick)")
    p.add_argument("--train-images", type=Range(int, 1), default=None,
                   help=f"--manipulate: shapes images to fine-tune on (default "
                        f"{STUDY_FULL['train_images']}; {STUDY_QUICK['train_images']} with "
                        f"--quick)")
    p.add_argument("--lam", type=Range(float, 0, low_open=True), default=None,
                   help="--manipulate: weight of the fooling loss (default: "
                        "ManipulationConfig's, 0.15)")
    p.add_argument("--fooling-loss", default=None, choices=("pearson", "mse"),
                   help="--manipulate location: the fooling term, pearson (1 - Pearson r of "
                        "the CAM with the frame) or mse (the squared error of the "
                        "max-scaled map, the default before session 6) (default: "
                        "ManipulationConfig's, pearson)")
    p.add_argument("--keep-only-steps", type=Range(int, 0), default=None,
                   help=f"--manipulate: steps with the keep term alone after --steps "
                        f"(default {STUDY_FULL['keep_only_steps']}; "
                        f"{STUDY_QUICK['keep_only_steps']} with --quick)")
    p.add_argument("--target-kind", default=DEFAULTS["target_kind"],
                   choices=("shift", "mirror", "box", "other-image"),
                   help="where the explanation should go (default %(default)s)")
    p.add_argument("--epsilon", default=DEFAULTS["epsilon"],
                   help="L-infinity radius: >= 1 in /255 units (default %(default)s = "
                        "%(default)s/255), < 1 a fraction")
    p.add_argument("--iterations", type=Range(int, 1), default=None,
                   help=f"Adam steps ({QUICK.help('iterations')})")
    p.add_argument("--lr", type=Range(float, 0, 1, low_open=True), default=None,
                   help="Adam learning rate in pixel units (default: the attack's own); "
                        "with --manipulate of the fine-tuning (default: "
                        "ManipulationConfig's, 1e-3 with cosine decay)")
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


def resolve_model(args: argparse.Namespace) -> str:
    """Fill in the default ``--model``: the quick built-in U-Net for ``--study``, the full one
    otherwise; an explicit ``--model`` is kept."""
    if args.model is None:
        args.model = STUDY_MODEL if args.study else DEFAULT_MODEL
    return str(args.model)


def run(args: argparse.Namespace) -> int:
    import torch

    from segxai.attack import AttackConfig, parse_epsilon
    from segxai.attack.robustness import MapConfig, quick_map_config, study_map_config

    resolve_model(args)
    if args.manipulate is not None:
        return _run_manipulate(args, Path(args.out))
    with options_named("epsilon", "iterations", "lr", "images", "defence_beta", "preset"):
        eps = None if str(args.epsilon).lower() == "none" else \
            user_input(parse_epsilon, args.epsilon)
        base = quick_map_config() if args.quick else \
            MapConfig() if args.full_map else study_map_config()
        if args.study:
            args.images = args.images or (STUDY_QUICK if args.quick else STUDY_FULL)["images"]
        else:
            args.images = QUICK.get(args, "images")
        # the study's attack settings given on the command line (over its preset)
        overrides: dict[str, Any] = {k: v for k, v in (("iterations", args.iterations),
                                                       ("lr", args.lr)) if v is not None}
        settings: dict[str, Any] = {"epsilon": eps, "iterations": QUICK.get(args, "iterations"),
                                    **overrides}
        preset = args.preset or "none"
        cfg = user_input(lambda: AttackConfig.preset(preset, **settings) if preset != "none"
                         else AttackConfig(**settings).validate())
    choices = differentiable_explainers()
    study_default = [m for m in base.methods if m in choices]
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
        with options_named("epsilons", "defence_beta", "preset", "batch_size",
                           epsilon="--epsilons"):
            epsilons = _epsilons(args.epsilons) if args.epsilons else list(base.epsilons)
            if args.epsilons:  # the given ε apply to every method
                base = replace(base, method_epsilons={})
            defence = 8 / 255 if 8 / 255 in epsilons else epsilons[0]
            map_cfg = replace(
                base, methods=tuple(methods), epsilons=tuple(epsilons),
                preset=args.preset or base.preset,
                attack_overrides={**base.attack_overrides, **overrides},
                target_kind=args.target_kind, batch_size=args.batch_size or base.batch_size,
                defence_beta=args.defence_beta, defence_epsilon=defence,
                adaptive=base.adaptive and not args.no_adaptive,
                explainer_params={**base.explainer_params,
                                  **{m: p for m, p in params.items() if p}})
            map_cfg = user_input(map_cfg.validate)
        return _run_study(args, map_cfg, out)
    return _run_attack(args, methods[0], cfg, params[methods[0]], out)


def _epsilons(text: str) -> list[float | None]:
    from segxai.attack import parse_epsilon

    out: list[float | None] = []
    for item in text.split(","):
        item = item.strip()
        out.append(None if item.lower() == "none" else parse_epsilon(item))
    if len(set(out)) != len(out):
        raise SegxaiError(f"--epsilons: expected distinct values, got {text!r}")
    return out


def _run_study(args: argparse.Namespace, cfg: Any, out: Path) -> int:
    from segxai.attack.figures import plot_robustness_map
    from segxai.attack.robustness import robustness_map
    from segxai.report.html import save_figure

    model, images, _ = _load(args)
    res = robustness_map(model, images[:args.images], cfg, checkpoint_dir=out / "study",
                         progress=not args.quiet, device=args.device, seed=args.seed)
    write_json(out / "study.json", {"config": res["config"], "summary": res["summary"],
                                    "rows": res["rows"], "seconds": res["seconds"]})
    cols = ["part", "method", "eps", "images", "success", "success_ci", "target_pearson",
            "target_pearson_ci", "target_ssim", "target_mse", "pixel_agreement", "linf",
            "seconds"]
    lines = [",".join(cols)] + [",".join(_cell(r.get(c)) for c in cols) for r in res["summary"]]
    (out / "study.csv").write_text("\n".join(lines) + "\n")
    for metric in ("target_pearson", "success", "target_ssim", "target_mse"):
        save_figure(plot_robustness_map(res["summary"], metric, title=f"{metric} vs ε"),
                    out / "figures" / f"robustness_{metric}.png")
    save_figure(plot_robustness_map(res["summary"], "target_pearson", part="transfer",
                                    title="transfer of the gradient attack"),
                out / "figures" / "robustness_transfer.png")
    if not args.quiet:
        for r in res["summary"]:
            ci = r.get("target_pearson_ci")
            print(f"{r['part']:>22} {r['method']:>20} ε {r['eps']:>8}: success "
                  f"{r['success']:.2f}, target r {r['target_pearson']:.3f}"
                  + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                  + f", agreement {r['pixel_agreement']:.4f}")
    return 0


def _cell(v: Any) -> str:
    if isinstance(v, list):
        return f"[{v[0]:.4g} {v[1]:.4g}]"
    return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))


def _run_manipulate(args: argparse.Namespace, out: Path) -> int:
    from segxai.attack.manipulate import (
        ManipulationConfig,
        evaluate_manipulation,
        manipulate_model,
    )
    from segxai.data import make_shapes

    size = STUDY_QUICK if args.quick else STUDY_FULL
    steps = args.steps or size["steps"]
    n_eval = args.images or size["images"]
    lr = args.lr if args.lr is not None else ManipulationConfig.lr
    lam = args.lam if args.lam is not None else ManipulationConfig.lam
    n_train = args.train_images or size["train_images"]
    keep_only = size["keep_only_steps"] if args.keep_only_steps is None \
        else args.keep_only_steps
    fooling = args.fooling_loss or ManipulationConfig.fooling_loss
    settings = {"kind": args.manipulate, "steps": steps, "lam": lam, "lr": lr,
                "fooling_loss": fooling,
                "keep_only_steps": keep_only, "images": n_eval, "train_images": n_train,
                "seed": args.seed, "model": args.model}
    loaded = load_cli_model(args, seed=args.seed)
    RunStore(out, kind="attack-manipulate", settings=settings)
    model = loaded.model.eval()
    from segxai.core.adapter import adapt

    adapter = adapt(model)
    train = adapter.from_pixels(make_shapes(n_train, size=64,
                                            seed=20_000 + args.seed).images)
    if loaded.builtin is not None:
        images = loaded.builtin.val_data.images[:n_eval]
        labels = loaded.builtin.val_data.masks[:n_eval]
    else:
        data = make_shapes(n_eval, size=64, seed=10_000 + args.seed)
        images, labels = adapter.from_pixels(data.images), None
    with options_named("lam", "steps"):
        res = user_input(manipulate_model, model, train, kind=args.manipulate, steps=steps,
                         lam=lam, lr=lr, keep_only_steps=keep_only, fooling_loss=fooling,
                         seed=args.seed,
                         progress=not args.quiet)
    ev = evaluate_manipulation(model, res.model, images, res.config, labels=labels)
    summary: dict[str, Any] = {}
    for key in ("pixel_agreement", "miou_vs_clean", "miou_gt_clean", "miou_gt_fooled"):
        if key in ev:
            summary[key] = _mean_ci(ev[key])
    for name, e in ev["explainers"].items():
        summary[name] = {k: _mean_ci([float(v) for v in e[k]])
                         for k in ("clean", "fooled", "original_pearson", "success")}
    write_json(out / "manipulation.json", {"settings": settings, "config": res.config.to_dict(),
                                           "summary": summary, "per_image": ev,
                                           "history": res.history, "seconds": res.seconds})
    if not args.quiet:
        print(json.dumps(summary, indent=1))
    return 0


def _mean_ci(values: list[float]) -> dict[str, Any]:
    from segxai.attack.robustness import bootstrap_ci

    mean = sum(values) / len(values)
    return {"mean": mean, "ci": list(bootstrap_ci(values)) if len(values) >= 2 else None,
            "n": len(values)}


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
