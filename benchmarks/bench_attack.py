"""Explanation attacks on the built-in U-Net: the cost of one attack step, and target
Pearson, pixel agreement, L∞ and seconds of whole attacks.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_attack.py [--images 3]
[--iterations 300] [--methods gradient smoothgrad seg-grad-cam] [--quick] [--out DIR]``

``--step-cost`` (issue 15, goal < 4×): the median time of one attack step (the explanation
built with ``create_graph=True`` on the Softplus network, the loss, its input gradient —
the double backward — and the Adam update) divided by the median time of one forward and
backward of the model (the input gradient of the summed logits) on the same batch, per
method, for ``--batch-sizes``; the per-image cost of a step at each batch size shows what
batching saves.

Goal (issue 6): the gradient explanation moved to a shifted target with Pearson >= 0.8 at pixel
agreement >= 99 % and ε = 8/255, in <= 60 s per image on 2 cores. One row per
(method, image) and a mean per method are printed; ``--out`` also writes ``bench_attack.json``.
``--quick`` uses the quick built-in model (the full one is trained and cached on first use);
``--checkpoint DIR`` benchmarks an already cached checkpoint directory instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from segxai.attack import AttackConfig, attack, softplus_model
from segxai.attack.evaluation import choose_target, make_explainer
from segxai.attack.loss import attack_loss
from segxai.attack.targets import shift_map
from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.registry import Explainer
from segxai.core.target import Target
from segxai.data import make_shapes
from segxai.models import load_checkpoint, load_or_train_builtin


def _median_seconds(fn: Callable[[], object], reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _forward_backward(adapter: ModelAdapter, x: torch.Tensor) -> None:
    u = x.clone().requires_grad_(True)
    torch.autograd.grad(adapter(u).sum(), u)


def _attack_step(adapter: ModelAdapter, exp: Explainer, u: torch.Tensor, x: torch.Tensor,
                 targets: Target, h_t: torch.Tensor, probs: torch.Tensor,
                 opt: torch.optim.Optimizer) -> None:
    loss = attack_loss(adapter, exp, u, x, targets, h_t, probs, AttackConfig()).total.sum()
    (g,) = torch.autograd.grad(loss, u)
    u.grad = g
    opt.step()
    u.grad = None


def step_cost(model: torch.nn.Module, images: torch.Tensor, methods: list[str],
              batch_sizes: list[int], reps: int) -> list[dict[str, float | int | str]]:
    """Seconds of one attack step and of one forward+backward, and their ratio."""
    adapter = adapt(model)
    rows: list[dict[str, float | int | str]] = []
    for b in batch_sizes:
        x = images[:b]
        targets = choose_target(adapter, x)

        with adapter.explaining(), adapter.frozen_parameters():
            base = _median_seconds(partial(_forward_backward, adapter, x), reps)
        for method in methods:
            params = {"n_samples": 8} if method == "smoothgrad" else (
                {"n_steps": 8} if method == "integrated-gradients" else {})
            exp = make_explainer(method, params)
            clean = exp(adapter, x, targets)
            exp = exp.with_layers(clean.layers)
            h_t = shift_map(clean.maps.detach())
            probs = adapter.probabilities(adapter(x)).detach()
            u = x.clone().requires_grad_(True)
            opt = torch.optim.Adam([u], lr=1e-3)
            step = partial(_attack_step, adapter, exp, u, x, targets, h_t, probs, opt)
            with adapter.explaining(), adapter.frozen_parameters(), \
                    softplus_model(model, 10.0):
                sec = _median_seconds(step, reps)
            rows.append({"method": method, "batch": b, "forward_backward_s": base,
                         "step_s": sec, "ratio": sec / base, "step_s_per_image": sec / b})
            print(f"{method:>20} batch {b:>3}: step {sec * 1000:8.1f} ms, forward+backward "
                  f"{base * 1000:7.1f} ms, ratio {sec / base:5.2f}x, "
                  f"{sec / b * 1000:6.1f} ms per image", flush=True)
    return rows


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
    parser.add_argument("--step-cost", action="store_true",
                        help="measure one attack step against one forward+backward and exit")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--reps", type=int, default=5)
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
    if args.step_cost:
        pool = make_shapes(max(args.batch_sizes), size=64, seed=10_000).images \
            if args.checkpoint is not None else built.val_data.images
        costs = step_cost(model, pool, args.methods, args.batch_sizes, args.reps)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "bench_attack_step.json").write_text(json.dumps(
                {"model": name, "threads": torch.get_num_threads(), "rows": costs}, indent=2))
        return
    targets = choose_target(model, images)
    settings = {"iterations": args.iterations}
    if args.lr is not None:
        settings["lr"] = args.lr
    if args.loss is not None:
        settings["explanation_loss"] = args.loss
    cfg = AttackConfig(**settings).validate()
    print(f"model: {name}, {args.images} images, torch threads {torch.get_num_threads()}, config "
          f"{cfg.to_dict()}")
    rows: list[dict[str, Any]] = []
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
