"""``segxai explain``: explain one image with one or more methods → PNG overlays + .npy maps."""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segxai.cli.common import add_common, parse_key_values, write_json

TORCHVISION_MODELS = (
    "fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large",
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain", help="explain a segmentation model's prediction on one image",
        description=(
            "Explain the score of one class over a region of interest (default: the sum of the "
            "class's logits over the pixels the model predicts as that class) with one or more "
            "methods. Writes METHOD.png (overlay) and METHOD.npy (raw map) per method and "
            "explain.json to --out."),
    )
    p.add_argument("--model", default="builtin",
                   help="'builtin' (the cached built-in U-Net, trained on first use), a segxai "
                        "checkpoint directory, or a torchvision model name: "
                        + ", ".join(TORCHVISION_MODELS))
    p.add_argument("--weights", type=Path, default=None,
                   help="state dict (.safetensors or .pt/.pth, loaded with weights_only=True) "
                        "for a torchvision model")
    p.add_argument("--num-classes", type=int, default=21,
                   help="classes of a torchvision model (default 21)")
    p.add_argument("--image", default="sample:0",
                   help="an image file (PNG/JPEG) or 'sample:K' for built-in sample K")
    p.add_argument("--size", type=int, default=None,
                   help="resize the image file to SIZE×SIZE first")
    p.add_argument("--class", dest="class_index", type=int, default=None,
                   help="class to explain (default: the most frequent predicted non-background "
                        "class)")
    p.add_argument("--roi", default="class",
                   help="'class', 'largest_component', 'whole', 'box:x0,y0,x1,y1' or "
                        "'pixel:row,col'")
    p.add_argument("--score", default="logit_sum", choices=("logit_sum", "prob_mean"),
                   help="score explained (default: ROI logit sum)")
    p.add_argument("--method", action="append", default=None,
                   help="explainer (repeatable; default seg-grad-cam); see --list")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="explainer parameter, e.g. n_samples=10 or layer=backbone.16 "
                        "(passed to every chosen method that accepts it)")
    p.add_argument("--top-p", type=float, default=None,
                   help="keep only the top P percent of each map in the overlay")
    p.add_argument("--list", action="store_true", help="list the registered explainers and exit")
    add_common(p, out_default="segxai-explain")
    p.set_defaults(func=run)


def load_model(spec: str, *, weights: Path | None, num_classes: int, device: str, quick: bool,
               progress: bool) -> tuple[torch.nn.Module, Any]:
    """Return ``(model, adapter)`` for a CLI model spec."""
    import segxai

    if spec == "builtin":
        from segxai.models import load_or_train_builtin

        built = load_or_train_builtin(quick=quick, device=device, progress=progress)
        return built.model, segxai.adapt(built.model)
    path = Path(spec)
    if path.is_dir():
        from segxai.models import load_checkpoint

        model = load_checkpoint(path, device=device)
        return model, segxai.adapt(model)
    if spec in TORCHVISION_MODELS:
        from torchvision.models import segmentation

        model = getattr(segmentation, spec)(weights=None, weights_backbone=None,
                                            num_classes=num_classes, aux_loss=None)
        if weights is not None:
            if weights.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(weights))
            else:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=False)
        model.to(device).eval()
        return model, segxai.adapt(model, mean="imagenet", std="imagenet")
    raise ValueError(f"--model: expected 'builtin', a checkpoint directory or one of "
                     f"{', '.join(TORCHVISION_MODELS)}; got {spec!r}")


def load_image(spec: str, adapter: Any, size: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """Model-space image ``(1, 3, H, W)`` and its pixel-space ``(H, W, 3)`` array."""
    if spec.startswith("sample:"):
        from segxai.data import make_shapes

        k = int(spec.split(":", 1)[1])
        ds = make_shapes(k + 1, seed=1234)
        pixels = ds.images[k:k + 1].float()
    else:
        from PIL import Image

        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"--image: no such file {spec!r}")
        img = Image.open(path).convert("RGB")
        if size:
            img = img.resize((size, size), Image.BILINEAR)
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
        box = [int(v) for v in roi[4:].split(",")]
        return segxai.Target.from_box(box, cls, size=(h, w), score=args.score)
    if roi.startswith("pixel:"):
        pix = [int(v) for v in roi[6:].split(",")]
        return segxai.Target.from_pixel(pix, cls, size=(h, w), score=args.score)
    raise ValueError(f"--roi: expected class, largest_component, whole, box:... or pixel:..., "
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
    methods = args.method or ["seg-grad-cam"]
    for m in methods:
        segxai.get_explainer(m)
    params = parse_key_values(args.param, "--param")
    model, adapter = load_model(args.model, weights=args.weights, num_classes=args.num_classes,
                                device=args.device, quick=args.quick, progress=not args.quiet)
    x, pixels = load_image(args.image, adapter, args.size)
    x = x.to(args.device)
    target = _target(args, adapter, x)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for method in tqdm(methods, desc="explain", disable=args.quiet):
        cls = segxai.get_explainer(method)
        accepted = inspect.signature(cls.__init__).parameters
        mparams = {k: v for k, v in params.items() if k in accepted}
        exp = cls(**mparams)(adapter, x, target)
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
