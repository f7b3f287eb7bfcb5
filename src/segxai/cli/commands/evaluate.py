"""``segxai evaluate``: methods × images → tidy metric table, summary and figures (resumable)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segxai.cli.common import add_common, parse_key_values, write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="evaluate explanation methods: faithfulness, cost, localisation, ...",
        description=(
            "Evaluate explanation methods on images: deletion/insertion and context-only "
            "deletion AUC, cost (seconds, forward/backward passes), pointing games, "
            "sparseness, complexity and optionally max-sensitivity. Writes OUT/results.csv "
            "(image, method, metric, value), OUT/summary.md, OUT/summary.json and "
            "OUT/figures/*.png. Finished (image, method) pairs are checkpointed in "
            "OUT/progress.jsonl, so an interrupted run resumes where it stopped."),
    )
    p.add_argument("--methods", default=None,
                   help="comma-separated explainers (default: every registered one)")
    p.add_argument("--images", type=int, default=None,
                   help="number of images (default 8; 2 with --quick)")
    p.add_argument("--steps", type=int, default=None,
                   help="deletion/insertion steps (default 100; 20 with --quick)")
    p.add_argument("--data", default="shapes",
                   help="'shapes' (the built-in validation images), 'context-bias', or a folder "
                        "(ROOT/images + ROOT/masks, or plain image files)")
    p.add_argument("--size", type=int, default=64, help="image size of generated/folder data")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="a saved segxai model directory (default: the cached built-in model)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward in the curves")
    p.add_argument("--score", default="prob_mean", choices=("prob_mean", "logit_ratio", "iou"),
                   help="score tracked along the curves")
    p.add_argument("--deletion-substrate", default="mean",
                   choices=("black", "mean", "blur", "noise"))
    p.add_argument("--insertion-substrate", default="blur",
                   choices=("black", "mean", "blur", "noise"))
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="pointing-game tolerance in pixels")
    p.add_argument("--sensitivity-samples", type=int, default=0,
                   help="max-sensitivity samples per explanation (0 = skip; costly)")
    p.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="explainer parameter, e.g. smoothgrad.n_samples=10 (repeatable)")
    p.add_argument("--no-random-baseline", action="store_true",
                   help="do not evaluate the random-baseline pseudo-method")
    p.add_argument("--context-bias", action="store_true",
                   help="also run the context-bias benchmark (CBD/CBL per method) and the "
                        "bias sanity protocol on the context-bias dataset, with a model trained "
                        "on its biased split (--bias-checkpoint, else one is trained and cached "
                        "in OUT/biased-model)")
    p.add_argument("--bias-checkpoint", type=Path, default=None,
                   help="a segxai model trained on the context-bias data (for --context-bias)")
    add_common(p, out_default="segxai-evaluate")
    p.set_defaults(func=run)


def _parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_key_values(items, "--param").items():
        if "." not in key:
            raise ValueError(f"--param: expected METHOD.KEY=VALUE, got {key!r}")
        method, name = key.rsplit(".", 1)
        out.setdefault(method.strip(), {})[name.strip()] = value
    return out


def _load_plain_folder(root: Path, size: int) -> tuple[torch.Tensor, list[str]]:
    from PIL import Image

    files = sorted(p for p in root.iterdir()
                   if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        raise FileNotFoundError(f"--data: no images in {root}")
    arrs = []
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB").resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
            arrs.append(torch.from_numpy(arr).permute(2, 0, 1))
    return torch.stack(arrs), [f.stem for f in files]


def _model(args: argparse.Namespace, quick: bool) -> tuple[torch.nn.Module, Any]:
    """(model, builtin or None)."""
    if args.checkpoint is not None:
        from segxai.models import load_checkpoint

        return load_checkpoint(args.checkpoint, device=args.device), None
    from segxai.models import load_or_train_builtin

    built = load_or_train_builtin(quick=quick, device=args.device, progress=not args.quiet)
    return built.model, built


def _data(args: argparse.Namespace, n: int, model: torch.nn.Module,
          built: Any) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    if args.data in ("shapes", "context-bias"):
        from segxai.data import make_context_bias, make_shapes

        if args.data == "shapes" and built is not None:
            ds = built.val_data
        elif args.data == "shapes":
            ds = make_shapes(max(4 * n, 16), size=args.size, seed=10_000 + args.seed)
        else:
            ds = make_context_bias(max(4 * n, 16), size=args.size, seed=10_000 + args.seed)
        from segxai.evaluate import select_images

        keep = select_images(model, ds.images, n, device=args.device)
        return ds.images[keep], ds.masks[keep], [str(i) for i in keep]
    root = Path(args.data)
    if not root.is_dir():
        raise FileNotFoundError(f"--data: expected 'shapes', 'context-bias' or a folder, got "
                                f"{args.data!r}")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        from segxai.data.folder import load_folder

        ds = load_folder(root, size=args.size)
        names = ds.meta.get("names") if isinstance(getattr(ds, "meta", None), dict) else None
        names = list(names)[:n] if names else None
        return ds.images[:n], ds.masks[:n], names
    images, names = _load_plain_folder(root, args.size)
    return images[:n], None, names[:n]


def _biased_model(args: argparse.Namespace, out: Path) -> torch.nn.Module:
    """The model for the context-bias benchmark: ``--bias-checkpoint``, else a U-Net trained
    on the biased split (cue beside every object of the bias class), cached in
    ``OUT/biased-model`` (training itself resumes from ``OUT/biased-model-train``)."""
    from segxai.models import load_checkpoint, save_checkpoint

    if args.bias_checkpoint is not None:
        return load_checkpoint(args.bias_checkpoint, device=args.device)
    ckpt = out / "biased-model"
    if (ckpt / "model.safetensors").is_file():
        return load_checkpoint(ckpt, device=args.device)
    from segxai.data import make_context_bias
    from segxai.models.train import TrainConfig, train_model
    from segxai.models.unet import UNet, UNetConfig

    n_train, epochs, width = (300, 4, 8) if args.quick else (800, 8, 12)
    train = make_context_bias(n_train, size=args.size, seed=args.seed, bias_prob=1.0)
    val = make_context_bias(100, size=args.size, seed=args.seed + 1, bias_prob=1.0)
    torch.manual_seed(args.seed)
    model = UNet(UNetConfig(depth=3, base_width=width, num_classes=len(train.class_names)))
    train_model(model, train, val,
                TrainConfig(epochs=epochs, batch_size=16, lr=3e-3, seed=args.seed),
                out_dir=out / "biased-model-train", device=args.device,
                progress=not args.quiet)
    save_checkpoint(model, ckpt, class_names=list(train.class_names))
    return model.eval()


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")

    from segxai.evaluate import EvalConfig, evaluate_methods

    torch.manual_seed(args.seed)
    n = args.images if args.images is not None else (2 if args.quick else 8)
    steps = args.steps if args.steps is not None else (20 if args.quick else 100)
    if n < 1:
        raise ValueError(f"--images: expected an integer >= 1, got {n}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    config = EvalConfig(
        methods=methods, method_params=_parse_params(args.param), steps=steps,
        batch_size=args.batch_size, score=args.score,
        deletion_substrate=args.deletion_substrate,
        insertion_substrate=args.insertion_substrate, pointing_tolerance=args.tolerance,
        sensitivity_samples=args.sensitivity_samples,
        random_baseline=not args.no_random_baseline, seed=args.seed)
    config.resolved_methods()  # fail on unknown names before loading anything
    model, built = _model(args, args.quick)
    images, masks, names = _data(args, n, model, built)
    out: Path = args.out
    result = evaluate_methods(model, images, masks, config=config, out_dir=out,
                              image_ids=names, device=args.device, progress=not args.quiet)
    if args.context_bias:
        from segxai.data import make_context_bias
        from segxai.evaluate import bias_sanity, context_bias_benchmark

        bias_model = _biased_model(args, out)
        n_test = 24 if args.quick else 200
        biased = make_context_bias(n_test, size=args.size, seed=20_000 + args.seed,
                                   bias_prob=1.0)
        unbiased = make_context_bias(n_test, size=args.size, seed=20_000 + args.seed,
                                     unbiased=True)
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
