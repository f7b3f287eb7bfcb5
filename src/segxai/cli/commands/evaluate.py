"""``segxai evaluate``: methods × images → tidy metric table, summary and figures (resumable)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segxai.cli.common import (
    QuickDefaults,
    Range,
    add_common,
    check_explainer_params,
    options_named,
    write_json,
)
from segxai.cli.fanout import add_fanout_options, cli_executor
from segxai.cli.grammar import (
    add_deprecated,
    add_method_options,
    add_model_options,
    load_cli_model,
    registered_explainers,
    resolve_methods,
    resolve_params,
)
from segxai.core.errors import SegxaiError

QUICK = QuickDefaults(full={"images": 8, "steps": 100}, quick={"images": 2, "steps": 20})
SUBSTRATES = ("road", "dataset-mean", "mean", "blur", "black", "noise")


def register(sub: argparse._SubParsersAction) -> None:
    from segxai.evaluate import EvalConfig

    p = sub.add_parser(
        "evaluate", help="evaluate explanation methods: faithfulness, cost, localisation, ...",
        description=(
            "Evaluate explanation methods on images: deletion/insertion and context-only "
            "deletion AUC, cost (seconds, forward/backward passes), pointing games, "
            "sparseness, complexity and optionally max-sensitivity. Writes OUT/results.csv "
            "(image, method, metric, value), OUT/summary.md, OUT/summary.json and "
            "OUT/figures/*.png. Finished (image, method) pairs are checkpointed in "
            "OUT/progress.jsonl, so an interrupted run resumes where it stopped. --workers N and "
            "--ray [ADDRESS] spread the pairs over processes or a Ray cluster (chunks of "
            "images x method) with results identical to one process."),
    )
    add_model_options(p, what="the model whose explanations are evaluated",
                      old=("--checkpoint",))
    add_method_options(p, choices=registered_explainers(), default="every registered one",
                       old_list="--methods")
    p.add_argument("--images", type=Range(int, 1), default=None,
                   help=f"number of images ({QUICK.help('images')})")
    p.add_argument("--steps", type=Range(int, 1), default=None,
                   help=f"deletion/insertion steps ({QUICK.help('steps')})")
    p.add_argument("--data", default="shapes",
                   help="'shapes' (the built-in validation images), 'context-bias', or a folder "
                        "(ROOT/images + ROOT/masks, or plain image files; default "
                        "%(default)s)")
    p.add_argument("--size", type=Range(int, 16), default=64,
                   help="image size of generated/folder data (default %(default)s)")
    base = EvalConfig()
    p.add_argument("--batch-size", type=Range(int, 1), default=base.batch_size,
                   help="images per forward in the curves (default %(default)s)")
    p.add_argument("--score", default=base.score, choices=("prob_mean", "logit_ratio", "iou"),
                   help="score tracked along the curves (default %(default)s)")
    p.add_argument("--deletion-substrate", default=base.deletion_substrate, choices=SUBSTRATES,
                   help="what deleted pixels become (default %(default)s)")
    p.add_argument("--insertion-substrate", default=base.insertion_substrate,
                   choices=SUBSTRATES, help="what insertion starts from (default %(default)s)")
    p.add_argument("--tolerance", type=Range(float, 0), default=base.pointing_tolerance,
                   help="pointing-game tolerance in pixels (default %(default)s)")
    p.add_argument("--sensitivity-samples", type=Range(int, 0),
                   default=base.sensitivity_samples,
                   help="max-sensitivity samples per explanation (0 = skip; costly; default "
                        "%(default)s)")
    p.add_argument("--no-random-baseline", action="store_true",
                   help="do not evaluate the random-baseline pseudo-method")
    p.add_argument("--context-bias", action="store_true",
                   help="also run the context-bias benchmark (CBD/CBL per method) and the "
                        "bias sanity protocol on the context-bias dataset, with a model trained "
                        "on its biased split (--bias-model, else one is trained and cached "
                        "in OUT/biased-model)")
    p.add_argument("--bias-model", default=None, metavar="SPEC",
                   help="a model trained on the context-bias data, in any --model form (for "
                        "--context-bias)")
    add_deprecated(p, "--bias-checkpoint", dest="bias_model", new="--bias-model")
    p.add_argument("--layers", default=None, metavar="all|NAME,...",
                   help="layer study: run the CAM-type methods (seg-grad-cam, hirescam, "
                        "xgradcam, grad-cam++, seg-ablation-cam, or those given by --method) "
                        "at every stage of the model ('all') or at the named stages; writes "
                        "OUT/layers.json and OUT/figures/layers.png (metric vs depth, 95 %% "
                        "intervals)")
    p.add_argument("--study", default=None, choices=("rq1",),
                   help="run a whole study: 'rq1' trains (once) the "
                        "U-Net, the U-Net without skips and LRASPP-MobileNetV3 on the built-in "
                        "data and writes OUT/rq1.md and OUT/rq1.json (resumable; models cached in "
                        "the user cache; --quick: 3 images, 8 steps, 4 methods; --images N: N "
                        "images in the main table, N/10 in the layer study and the "
                        "substrate comparison, N/2 in the context-bias part; --steps and --method/--param "
                        "replace the study's steps and methods; --workers/--ray spread the "
                        "training and the pairs)")
    add_fanout_options(p)
    add_common(p, out_default="segxai-evaluate")
    p.set_defaults(func=run)


def _load_plain_folder(root: Path, size: int) -> tuple[torch.Tensor, list[str]]:
    from PIL import Image

    from segxai.cli.explain_images import list_images

    files = list_images([str(root)], option="--data")
    arrs = []
    im: Image.Image
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
            arrs.append(torch.from_numpy(arr).permute(2, 0, 1))
    return torch.stack(arrs), [f.stem for f in files]


def _data(args: argparse.Namespace, n: int, model: torch.nn.Module,
          built: Any) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """Model-space images (the model's own input normalisation applied), masks, names."""
    from segxai.core.adapter import adapt

    to_model = adapt(model).from_pixels
    if args.data in ("shapes", "context-bias"):
        from segxai.data import make_context_bias, make_shapes

        if args.data == "shapes" and built is not None:
            ds = built.val_data
        elif args.data == "shapes":
            ds = make_shapes(max(4 * n, 16), size=args.size, seed=10_000 + args.seed)
        else:
            ds = make_context_bias(max(4 * n, 16), size=args.size, seed=10_000 + args.seed)
        from segxai.evaluate import select_images

        images = to_model(ds.images)
        keep = select_images(model, images, n, device=args.device)
        return images[keep], ds.masks[keep], [str(i) for i in keep]
    root = Path(args.data)
    if not root.is_dir():
        raise SegxaiError(f"--data: expected 'shapes', 'context-bias' or a folder, got "
                          f"{args.data!r}")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        from segxai.data.folder import load_folder

        ds = load_folder(root, size=args.size)
        names = ds.meta.get("names") if isinstance(getattr(ds, "meta", None), dict) else None
        names = list(names)[:n] if names else None
        return to_model(ds.images[:n]), ds.masks[:n], names
    images, names = _load_plain_folder(root, args.size)
    return to_model(images[:n]), None, names[:n]


def _biased_model(args: argparse.Namespace, out: Path) -> torch.nn.Module:
    """The model for the context-bias benchmark: ``--bias-model``, else a U-Net trained
    on the biased split (cue beside every object of the bias class), cached in
    ``OUT/biased-model`` (training itself resumes from ``OUT/biased-model-train``)."""
    from segxai.models import load_checkpoint, save_checkpoint
    from segxai.models.zoo import load_model

    if args.bias_model is not None:
        return load_model(args.bias_model, device=args.device).model
    ckpt = out / "biased-model"
    if (ckpt / "model.safetensors").is_file():
        return load_checkpoint(ckpt, device=args.device)
    from segxai.data import make_context_bias
    from segxai.evaluate import train_bias_model

    model = train_bias_model(out / "biased-model-train", quick=args.quick, size=args.size,
                             seed=args.seed, device=args.device, progress=not args.quiet)
    names = make_context_bias(1, size=args.size, seed=args.seed, bias_prob=1.0).class_names
    save_checkpoint(model, ckpt, class_names=list(names))
    return model


def _run_study(args: argparse.Namespace) -> int:
    """``--study rq1``: the whole RQ1 study into ``--out``."""
    import time
    from dataclasses import replace

    from segxai.evaluate import RANDOM_BASELINE
    from segxai.evaluate.rq1 import Rq1Config, run_rq1

    cfg = Rq1Config.quick_config(seed=args.seed) if args.quick else Rq1Config(seed=args.seed)
    if args.images is not None:
        cfg = cfg.sized(args.images)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    if args.method:
        methods = [m for m in resolve_methods(args.method, choices=registered_explainers(),
                                              default=cfg.methods) if m != RANDOM_BASELINE]
        params = {m: p for m, p in cfg.method_params.items() if m in methods}
        for m, p in resolve_params(args.param, methods).items():
            params[m] = {**params.get(m, {}), **p}
        cfg = replace(cfg, methods=tuple(methods), method_params=params)
    t0 = time.perf_counter()
    executor = cli_executor(args)
    try:
        run_rq1(args.out, cfg, device=args.device, progress=not args.quiet, executor=executor)
    finally:
        executor.close()
    if not args.quiet:
        print((args.out / "rq1.md").read_text())
    print(f"segxai evaluate --study rq1: {time.perf_counter() - t0:.0f} s -> {args.out}/rq1.md")
    return 0


def _run_layers(args: argparse.Namespace, model: torch.nn.Module, images: torch.Tensor,
                masks: torch.Tensor | None, names: list[str] | None, config: Any,
                executor: Any = None) -> int:
    """``--layers``: the layer study of the CAM-type methods (or those of ``--method``)."""
    from segxai.evaluate.layer_study import CAM_METHODS, layer_study
    from segxai.evaluate.tables import format_row

    layers = "all" if args.layers.strip() == "all" else [
        x.strip() for x in args.layers.split(",") if x.strip()]
    methods = [m for m in (config.methods or CAM_METHODS) if m != "random-baseline"]
    study = layer_study(model, images, masks, layers=layers, methods=methods, config=config,
                        out_dir=args.out, image_ids=names, device=args.device,
                        progress=not args.quiet, executor=executor)
    if not args.quiet:
        for e in study.table:
            if e["metric"] in ("deletion_auc", "insertion_auc"):
                mean, diff = format_row(e)
                print(f"{e['method']:36s} {e['metric']:14s} {mean:26s} {diff}")
    print(f"segxai evaluate --layers: {len(study.stages)} stage(s), default layer "
          f"{study.default_layer} -> {args.out}/layers.json")
    return 1 if study.result.failures else 0


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")

    from segxai.evaluate import RANDOM_BASELINE, EvalConfig, evaluate_methods

    torch.manual_seed(args.seed)
    if args.study is not None:
        return _run_study(args)
    n, steps = QUICK.get(args, "images"), QUICK.get(args, "steps")
    if n < 1:
        raise SegxaiError(f"--images: expected an integer >= 1, got {n}")
    registered = registered_explainers()
    methods = resolve_methods(args.method, choices=registered, default=registered,
                              extra=(RANDOM_BASELINE,))
    params = resolve_params(args.param, [m for m in methods if m != RANDOM_BASELINE])
    check_explainer_params(params)
    config = EvalConfig(
        methods=methods if args.method else None, method_params=params, steps=steps,
        batch_size=args.batch_size, score=args.score,
        deletion_substrate=args.deletion_substrate,
        insertion_substrate=args.insertion_substrate, pointing_tolerance=args.tolerance,
        sensitivity_samples=args.sensitivity_samples,
        random_baseline=not args.no_random_baseline, seed=args.seed)
    executor = cli_executor(args)
    try:
        loaded = load_cli_model(args)
        model, built = loaded.model, loaded.builtin
        with options_named(root="--data", size="--size"):
            images, masks, names = _data(args, n, model, built)
        out: Path = args.out
        if args.layers is not None:
            return _run_layers(args, model, images, masks, names, config, executor)
        result = evaluate_methods(model, images, masks, config=config, out_dir=out,
                                  image_ids=names, device=args.device,
                                  progress=not args.quiet, executor=executor)
    finally:
        executor.close()
    if args.context_bias:
        from segxai.evaluate import bias_sanity, context_bias_benchmark
        from segxai.evaluate.context_bias import bias_test_sets

        bias_model = _biased_model(args, out)
        n_test = 24 if args.quick else 200
        biased, unbiased = bias_test_sets(n_test, size=args.size, seed=20_000 + args.seed)
        rows = context_bias_benchmark(
            bias_model, biased,
            [m for m in config.resolved_methods() if m != "random-baseline"],
            params=config.method_params, max_images=n, progress=not args.quiet)
        sanity = bias_sanity(bias_model, biased, unbiased, int(biased.bias_class))
        write_json(out / "context_bias.json", {"benchmark": rows, "sanity": sanity})
        if not args.quiet:
            print(json.dumps({"context_bias": rows, "learned_bias": sanity["learned_bias"],
                              "bias_class_drop": sanity["bias_class_drop"]}, indent=1))
    if not args.quiet:
        print((out / "summary.md").read_text())
    print(f"segxai evaluate: {result.computed} pair(s) computed, "
          f"{len(result.rows)} rows, {len(result.failures)} failure(s) -> {out}/results.csv")
    return 1 if result.failures else 0
