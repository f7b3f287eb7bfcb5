"""``segxai explain``: explain one image with one or more methods → PNG overlays + .npy maps."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segxai.cli.common import add_common, write_json
from segxai.cli.grammar import (
    add_method_options,
    add_model_options,
    load_cli_model,
    registered_explainers,
    resolve_methods,
    resolve_params,
)
from segxai.core.errors import SegxaiError

DEFAULTS = {"method": "seg-grad-cam", "image": "sample:0", "roi": "class",
            "score": "logit_sum", "out": "segxai-explain"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain", help="explain a segmentation model's prediction on one image",
        description=(
            "Explain the score of one class over a region of interest (default: the sum of the "
            "class's logits over the pixels the model predicts as that class) with one or more "
            "methods. Writes METHOD.png (overlay) and METHOD.npy (raw map) per method and "
            "explain.json to --out."),
    )
    add_model_options(p, what="the model to explain")
    p.add_argument("--image", default=DEFAULTS["image"],
                   help="an image file (PNG/JPEG) or 'sample:K' for built-in sample K "
                        "(default %(default)s)")
    p.add_argument("--size", type=int, default=None,
                   help="resize the image file to SIZE x SIZE first")
    p.add_argument("--class", dest="class_index", type=int, default=None,
                   help="class to explain (default: the most frequent predicted non-background "
                        "class)")
    p.add_argument("--roi", default=DEFAULTS["roi"],
                   help="'class', 'largest_component', 'whole', 'box:x0,y0,x1,y1' or "
                        "'pixel:row,col' (default %(default)s)")
    p.add_argument("--score", default=DEFAULTS["score"], choices=("logit_sum", "prob_mean"),
                   help="score explained (default %(default)s)")
    add_method_options(p, choices=registered_explainers(), default=DEFAULTS["method"])
    p.add_argument("--top-p", type=float, default=None,
                   help="keep only the top P percent of each map in the overlay")
    p.add_argument("--list", action="store_true", help="list the registered explainers and exit")
    add_common(p, out_default=DEFAULTS["out"])
    p.set_defaults(func=run)


def _ints(text: str, option: str, count: int) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise SegxaiError(f"{option}: expected {count} comma-separated integer(s), got {text!r}")
    return values


def load_image(spec: str, adapter: Any, size: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """Model-space image ``(1, 3, H, W)`` and its pixel-space ``(H, W, 3)`` array."""
    if spec.startswith("sample:"):
        from segxai.data import make_shapes

        k = _ints(spec[7:], "--image", 1)[0]
        ds = make_shapes(k + 1, seed=1234)
        pixels = ds.images[k:k + 1].float()
    else:
        from PIL import Image

        path = Path(spec)
        if not path.is_file():
            raise SegxaiError(f"--image: expected an image file or 'sample:K', got missing "
                              f"file {spec!r}")
        img = Image.open(path).convert("RGB")
        if size:
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        pixels = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)
    return adapter.from_pixels(pixels), pixels[0].permute(1, 2, 0).numpy()


def _target(args: argparse.Namespace, adapter: Any, x: torch.Tensor):
    import segxai

    h, w = x.shape[-2:]
    cls = args.class_index
    if cls is None:
        pred = adapter.predict(x)[0]
        counts = torch.bincount(pred.flatten().cpu(), minlength=2)
        counts[0] = 0 if counts[1:].sum() > 0 else counts[0]
        cls = int(counts.argmax())
    roi = args.roi
    if roi in ("class", "largest_component"):
        return segxai.Target.from_prediction(adapter, x, cls, roi=roi, score=args.score)
    if roi == "whole":
        return segxai.Target.whole_image(cls, size=(h, w), score=args.score)
    if roi.startswith("box:"):
        box = _ints(roi[4:], "--roi", 4)
        return segxai.Target.from_box(box, cls, size=(h, w), score=args.score)
    if roi.startswith("pixel:"):
        pix = _ints(roi[6:], "--roi", 2)
        return segxai.Target.from_pixel(pix, cls, size=(h, w), score=args.score)
    raise SegxaiError(f"--roi: expected class, largest_component, whole, box:... or pixel:..., "
                     f"got {roi!r}")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    adapter = segxai.adapt(load_cli_model(args).model)
    x, pixels = load_image(args.image, adapter, args.size)
    x = x.to(args.device)
    target = _target(args, adapter, x)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for method in tqdm(methods, desc="explain", disable=args.quiet):
        exp = segxai.get_explainer(method)(**params.get(method, {}))(adapter, x, target)
        raw = exp.numpy()[0]
        shown = exp.thresholded(args.top_p)[0] if args.top_p else exp.maps[0]
        np.save(out / f"{method}.npy", raw)
        fig, ax = plt.subplots(figsize=(4, 4))
        im = ax.imshow(segxai.overlay(pixels, shown.cpu()))
        ax.contour(target.roi[0].cpu().numpy(), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(f"{method} (class {int(target.class_index[0])})")
        ax.axis("off")
        sm = plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(float(shown.min()),
                                                                  float(shown.max())))
        fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.04)
        del im
        fig.savefig(out / f"{method}.png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        records.append({**exp.summary(), "png": f"{method}.png", "npy": f"{method}.npy"})
        if not args.quiet:
            c = exp.cost
            print(f"{method}: {c.seconds:.3f} s, {c.forward_passes} forward / "
                  f"{c.backward_passes} backward passes -> {out / (method + '.png')}")
    write_json(out / "explain.json", {"model": args.model, "image": args.image,
                                      "explanations": records})
    return 0
