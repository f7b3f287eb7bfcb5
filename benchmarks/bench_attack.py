"""Explanation attacks on the built-in U-Net: target Pearson, pixel agreement, L∞ and seconds.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_attack.py [--images 3]
[--iterations 300] [--methods gradient smoothgrad seg-grad-cam] [--quick] [--out DIR]``

Goal (issue 6): the gradient explanation moved to a shifted target with Pearson >= 0.8 at pixel
agreement >= 99 % and ε = 8/255, in <= 60 s per image on 2 cores. One row per
(method, image) and a mean per method are printed; ``--out`` also writes ``bench_attack.json``.
``--quick`` uses the quick built-in model (the full one is trained and cached on first use);
``--checkpoint DIR`` benchmarks an already cached checkpoint directory instead.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from segxai.attack import AttackConfig, attack
from segxai.attack.study import choose_target
from segxai.data import make_shapes
from segxai.models import load_checkpoint, load_or_train_builtin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--loss", default=None, choices=("mse", "pearson"))
    parser.add_argument("--methods", nargs="+", default=["gradient", "smoothgrad", "seg-grad-cam"])
    parser.add_argument("--target-kind", default="shift")
    parser.add_argument("--smoothgrad-samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a cached built-in checkpoint directory instead of "
                             "load_or_train_builtin (images: shapes seed 10000, the built-in "
                             "validation split)")
    parser.add_argument("--val-size", type=int, default=200,
                        help="size of the validation split the images come from")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.checkpoint is not None:
        model = load_checkpoint(args.checkpoint).eval()
        images = make_shapes(args.val_size, size=64, seed=10_000).images[:args.images]
        name = f"checkpoint {args.checkpoint}"
    else:
        built = load_or_train_builtin(quick=args.quick, progress=True)
        model = built.model.eval()
        images = built.val_data.images[:args.images]
        name = (f"built-in {'quick' if args.quick else 'full'} (val mIoU "
                f"{built.val_miou:.3f})")
    targets = choose_target(model, images)
    settings = {"iterations": args.iterations}
    if args.lr is not None:
        settings["lr"] = args.lr
    if args.loss is not None:
        settings["explanation_loss"] = args.loss
    cfg = AttackConfig(**settings).validate()
    print(f"model: {name}, {args.images} images, torch threads {torch.get_num_threads()}, config "
          f"{cfg.to_dict()}")
    rows = []
    for method in args.methods:
        params = {"n_samples": args.smoothgrad_samples} if method == "smoothgrad" else None
        for i in range(args.images):
            t0 = time.perf_counter()
            res = attack(model, images[i:i + 1], targets[i], method, args.target_kind, cfg,
                         explainer_params=params)
            sec = time.perf_counter() - t0
            m = {k: v[0] for k, v in res.metrics.items()}
            rows.append({"method": method, "image": i, "class": int(targets.class_index[i]),
                         "seconds": sec, **m})
            print(f"{method:>13} img {i}: target r {m['clean_target_pearson']:+.3f} -> "
                  f"{m['target_pearson']:+.3f}, agreement {m['pixel_agreement']:.4f}, "
                  f"L∞ {m['linf'] * 255:.2f}/255, PSNR {m['psnr']:.1f} dB, {sec:.1f} s, "
                  f"success {m['success']}", flush=True)
    print("\nmethod         success  target_r  agreement  seconds/image")
    summary = []
    for method in args.methods:
        rs = [r for r in rows if r["method"] == method]
        s = {"method": method, "images": len(rs),
             "success_rate": sum(r["success"] for r in rs) / len(rs),
             "target_pearson": sum(r["target_pearson"] for r in rs) / len(rs),
             "pixel_agreement": sum(r["pixel_agreement"] for r in rs) / len(rs),
             "seconds": sum(r["seconds"] for r in rs) / len(rs)}
        summary.append(s)
        print(f"{method:<14} {s['success_rate']:.2f}     {s['target_pearson']:+.3f}    "
              f"{s['pixel_agreement']:.4f}     {s['seconds']:.1f}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_attack.json").write_text(json.dumps(
            {"config": cfg.to_dict(), "quick_model": args.quick, "rows": rows,
             "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
