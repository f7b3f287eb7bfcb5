"""``segxai explain``: explain one image, or every image of a folder or glob (``--images``),
with one or more methods → PNG overlays + .npy maps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segxai.cli.common import (
    Range,
    add_common,
    check_explainer_params,
    options_named,
    write_json,
)
from segxai.cli.explain_images import decode_image, explain_one, make_target, parse_ints
from segxai.cli.fanout import add_fanout_options, cli_executor
from segxai.cli.grammar import (
    add_method_options,
    add_model_options,
    load_cli_model,
    registered_explainers,
    resolve_methods,
    resolve_params,
)
from segxai.core.errors import SegxaiError
from segxai.core.runstore import atomic_write_bytes
from segxai.data.folder import MIN_IMAGE_SIDE

DEFAULTS = {"method": "seg-grad-cam", "image": "sample:0", "roi": "class",
            "score": "logit_sum", "out": "segxai-explain"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain", help="explain a segmentation model's prediction on one image",
        description=(
            "Explain the score of one class over a region of interest (default: the sum of the "
            "class's logits over the pixels the model predicts as that class) with one or more "
            "methods. Writes METHOD.png (overlay) and METHOD.npy (raw map) per method and "
            "explain.json to --out. With --images DIR|GLOB...: OUT/NAME/METHOD.npy and .png "
            "per image, indexed in OUT/results.csv; resumable, and spread over --workers "
            "processes or a --ray cluster."),
    )
    add_model_options(p, what="the model to explain")
    p.add_argument("--image", default=DEFAULTS["image"],
                   help="an image file (PNG/JPEG/BMP/TIFF; grayscale, 16-bit, palette and "
                        "alpha accepted; at least 8x8 pixels) or 'sample:K' for built-in "
                        "sample K >= 0 (default %(default)s)")
    p.add_argument("--images", nargs="+", default=None, metavar="DIR|GLOB|FILE",
                   help="explain every image of these folders, glob patterns or files "
                        "(instead of --image)")
    p.add_argument("--size", type=Range(int, MIN_IMAGE_SIDE), default=None,
                   help="resize the image file(s) to SIZE x SIZE first")
    p.add_argument("--class", dest="class_index", type=Range(int, 0), default=None,
                   help="class to explain (default: the most frequent predicted non-background "
                        "class)")
    p.add_argument("--roi", default=DEFAULTS["roi"],
                   help="'class', 'largest_component', 'whole', 'box:x0,y0,x1,y1' or "
                        "'pixel:row,col' (default %(default)s)")
    p.add_argument("--score", default=DEFAULTS["score"], choices=("logit_sum", "prob_mean"),
                   help="score explained (default %(default)s)")
    add_method_options(p, choices=registered_explainers(), default=DEFAULTS["method"])
    p.add_argument("--top-p", type=Range(float, 0, 100, low_open=True), default=None,
                   help="keep only the top P percent of each map in the overlay")
    p.add_argument("--list", action="store_true", help="list the registered explainers and exit")
    add_fanout_options(p)
    add_common(p, out_default=DEFAULTS["out"])
    p.set_defaults(func=run)


def load_image(spec: str, adapter: Any, size: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """Model-space image ``(1, 3, H, W)`` and its pixel-space ``(H, W, 3)`` array."""
    if spec.startswith("sample:"):
        from segxai.data import make_shapes

        k = parse_ints(spec[7:], "--image", 1)[0]
        if k < 0:
            raise SegxaiError(f"--image: expected 'sample:K' with an integer K >= 0, got {spec!r}")
        ds = make_shapes(k + 1, seed=1234)
        pixels = ds.images[k:k + 1].float()
    else:
        path = Path(spec)
        if not path.is_file():
            raise SegxaiError(f"--image: expected an image file or 'sample:K', got missing "
                              f"file {spec!r}")
        pixels = decode_image(path.read_bytes(), size, name=str(path))
    return adapter.from_pixels(pixels), pixels[0].permute(1, 2, 0).numpy()


def _run_images(args: argparse.Namespace, methods: list[str],
                params: dict[str, dict[str, Any]]) -> int:
    """``--images``: every image × method, resumable, on the executor of --workers/--ray."""
    from segxai.cli.explain_images import ExplainOptions, explain_images, list_images

    files = list_images(args.images)
    options = ExplainOptions(model=str(args.model), params=params,
                             class_index=args.class_index, roi=args.roi, score=args.score,
                             size=args.size, top_p=args.top_p, seed=args.seed)
    executor = cli_executor(args)
    try:
        model = load_cli_model(args).model
        computed = explain_images(model, files, methods, options, args.out,
                                  executor=executor, device=args.device,
                                  progress=not args.quiet)
    finally:
        executor.close()
    print(f"segxai explain: {len(files)} image(s) x {len(methods)} method(s), {computed} "
          f"map(s) computed -> {args.out}/results.csv")
    return 0


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    import segxai

    if args.list:
        for name in segxai.list_explainers():
            doc = (segxai.get_explainer(name).__doc__ or "").strip().splitlines()
            print(f"{name:20s} {doc[0] if doc else ''}")
        return 0
    torch.manual_seed(args.seed)
    methods = resolve_methods(args.method, choices=segxai.list_explainers(),
                              default=[DEFAULTS["method"]])
    params = resolve_params(args.param, methods)
    check_explainer_params(params)
    if args.images is not None:
        return _run_images(args, methods, params)
    if args.workers is not None or args.ray is not None:
        raise SegxaiError("--workers/--ray: expected --images (they spread many images), got "
                          "a single --image")
    adapter = segxai.adapt(load_cli_model(args).model)
    x, pixels = load_image(args.image, adapter, args.size)
    x = x.to(args.device)
    with options_named(class_index="--class", box="--roi", pixel="--roi"):
        target = make_target(adapter, x, args.class_index, args.roi, args.score)
        results = [explain_one(adapter, x, pixels, target, method, params.get(method, {}),
                               args.top_p)
                   for method in tqdm(methods, desc="explain", disable=args.quiet)]
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)  # only once every map is computed: nothing half-way
    records = []
    for method, (exp, raw, png) in zip(methods, results, strict=True):
        np.save(out / f"{method}.npy", raw)
        atomic_write_bytes(out / f"{method}.png", png)
        records.append({**exp.summary(), "png": f"{method}.png", "npy": f"{method}.npy"})
        if not args.quiet:
            c = exp.cost
            print(f"{method}: {c.seconds:.3f} s, {c.forward_passes} forward / "
                  f"{c.backward_passes} backward passes -> {out / (method + '.png')}")
    write_json(out / "explain.json", {"model": args.model, "image": args.image,
                                      "explanations": records})
    return 0
