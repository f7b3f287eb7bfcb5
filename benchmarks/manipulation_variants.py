"""Model manipulation (Heo et al. 2019) variants: held-out pixel agreement and Seg-Grad-CAM's
Pearson correlation with the target frame along the fine-tuning.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/manipulation_variants.py --model DIR
[--variants default train256 ...] [--eval-images 30] [--eval-every 100] [--out FILE.jsonl]``;
pool runs: ``... --summarize S0.jsonl S1.jsonl ... --variants VARIANT``.

Each variant fine-tunes a copy of the model with :func:`segxai.attack.manipulate_model`
(location fooling of Seg-Grad-CAM at the default layer) on ``train_images`` ``shapes`` images
(seed 20000, as ``segxai attack --manipulate``) and, every ``--eval-every`` steps and at the
end, measures on ``--eval-images`` held-out images (seed 10000, as the CLI) the pixel
agreement of the fooled model with the original and the Pearson correlation of the fooled
Seg-Grad-CAM (min-max) with the frame, means with 95 % bootstrap intervals over images, and
the pixel agreement on the first ``--eval-images`` training images (is a shortfall one of
generalisation?). One JSON line per checkpoint goes to ``--out``; a line per variant is
printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segxai.attack.manipulate import ManipulationConfig, evaluate_manipulation, manipulate_model
from segxai.core.adapter import adapt
from segxai.core.intervals import bootstrap_mean
from segxai.data import make_shapes
from segxai.models.zoo import load_model

# name -> (training images, ManipulationConfig overrides); the variants before the
# "pearson-" ones ran with the squared-error fooling term, the default until session 6
MSE: dict[str, Any] = {"fooling_loss": "mse"}
VARIANTS: dict[str, tuple[int, dict[str, Any]]] = {
    "default": (64, dict(MSE)),
    "default-keep300": (64, {**MSE, "keep_only_steps": 300}),
    "train256-keep300": (256, {**MSE, "keep_only_steps": 300}),
    "train256-steps2400-keep300": (256, {**MSE, "steps": 2400, "keep_only_steps": 300}),
    "train256-lam0.15-keep300": (256, {**MSE, "lam": 0.15, "keep_only_steps": 300}),
    "train256-lam0.2-keep300": (256, {**MSE, "lam": 0.2, "keep_only_steps": 300}),
    "train256-lam0.5-keep300": (256, {**MSE, "lam": 0.5, "keep_only_steps": 300}),
    "train256-lam1-keep300": (256, {**MSE, "lam": 1.0, "keep_only_steps": 300}),
    "train256-lam0.5-keep0": (256, {**MSE, "lam": 0.5, "keep_only_steps": 0}),
    "train256-lam1.5-keep0": (256, {**MSE, "lam": 1.5, "keep_only_steps": 0}),
    "train256-lam0.5-steps2400-keep0": (256, {**MSE, "lam": 0.5, "steps": 2400,
                                               "keep_only_steps": 0}),
    "train128-keep300": (128, {**MSE, "keep_only_steps": 300}),
    "train256-warmup100-keep300": (256, {**MSE, "warmup_steps": 100,
                                         "keep_only_steps": 300}),
    "train256-keep300-lr2e-4": (256, {**MSE, "keep_only_steps": 300, "keep_only_lr": 2e-4}),
    "train256-lam0.07-keep300": (256, {**MSE, "lam": 0.07, "keep_only_steps": 300}),
    "train256-batch16-keep300": (256, {**MSE, "batch_size": 16, "keep_only_steps": 300}),
    "train256-T2-keep300": (256, {**MSE, "temperature": 2.0, "keep_only_steps": 300}),
    "train256-T0.5-keep300": (256, {**MSE, "temperature": 0.5, "keep_only_steps": 300}),
    # the Pearson fooling term (the default since session 6)
    "pearson-default": (256, {}),
    "pearson-keep0": (256, {"keep_only_steps": 0}),
    "pearson-lam0.5-keep0": (256, {"lam": 0.5, "keep_only_steps": 0}),
}


def _summary(values: list[float]) -> dict[str, Any]:
    iv = bootstrap_mean(values, seed=0)
    return {"mean": iv.estimate, "ci": [iv.lo, iv.hi], "min": min(values),
            "below_98": sum(v < 0.98 for v in values)}


def measure(model: nn.Module, train: torch.Tensor, held_out: torch.Tensor,
            cfg: ManipulationConfig, fooled: nn.Module) -> dict[str, Any]:
    """Held-out agreement and Seg-Grad-CAM r with the frame; training-image agreement."""
    was = [p.requires_grad for p in fooled.parameters()]
    for p in fooled.parameters():
        p.requires_grad_(False)
    try:
        ev = evaluate_manipulation(model, fooled, held_out, cfg, explainers=("seg-grad-cam",))
        a0, a1 = adapt(model), adapt(fooled)
        with torch.no_grad():
            y0, y1 = a0.predict(train), a1.predict(train)
        train_agree = (y0 == y1).flatten(1).float().mean(1).tolist()
    finally:
        for p, r in zip(fooled.parameters(), was, strict=True):
            p.requires_grad_(r)
    r = ev["explainers"]["seg-grad-cam"]["fooled"]
    return {"agreement": _summary(ev["pixel_agreement"]), "r_frame": _summary(r),
            "r_success": sum(v >= 0.8 for v in r), "train_agreement": _summary(train_agree),
            "per_image_agreement": ev["pixel_agreement"], "per_image_r": r}


def run_variant(name: str, model: nn.Module, held_out: torch.Tensor,
                args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fine-tune one variant, measuring it every ``args.eval_every`` steps and at the end."""
    n_train, overrides = VARIANTS[name]
    train = adapt(model).from_pixels(make_shapes(n_train, size=64,
                                                 seed=20_000 + args.seed).images)
    if args.steps is not None:  # a short smoke run
        overrides = {**overrides, "steps": args.steps,
                     "keep_only_steps": min(overrides.get("keep_only_steps", 0), args.steps)}
    cfg = ManipulationConfig(**overrides).validate()
    total = cfg.steps + cfg.keep_only_steps
    marks = set(range(args.eval_every - 1, total, args.eval_every)) | {cfg.steps - 1, total - 1}
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    eval_seconds = [0.0]

    def on_step(step: int, fooled: nn.Module) -> None:
        if step not in marks:
            return
        t1 = time.perf_counter()
        row = {"variant": name, "step": step + 1, "train_images": n_train,
               **measure(model, train[:args.eval_images], held_out, cfg, fooled),
               "wall_s": t1 - t0 - eval_seconds[0]}
        eval_seconds[0] += time.perf_counter() - t1
        rows.append(row)
        if args.out is not None:
            with args.out.open("a") as fh:
                fh.write(json.dumps({**row, "config": cfg.to_dict()}) + "\n")
        a, r = row["agreement"], row["r_frame"]
        print(f"{name} step {step + 1}: agreement {a['mean']:.4f} [{a['ci'][0]:.4f}, "
              f"{a['ci'][1]:.4f}] (min {a['min']:.3f}, {a['below_98']} < 0.98), r "
              f"{r['mean']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}] "
              f"({row['r_success']} >= 0.8), train agreement "
              f"{row['train_agreement']['mean']:.4f}; {row['wall_s']:.0f} s", flush=True)

    manipulate_model(model, train, cfg, seed=args.seed, on_step=on_step)
    return rows


def summarize(paths: list[Path], variant: str) -> dict[str, Any]:
    """Pool the last checkpoint of ``variant`` over runs (one JSON-lines file per seed):
    each run's mean over its held-out images, a 95 % t-interval over runs (the fooled models
    are the replicates) and the image counts."""
    from scipy import stats

    finals = []
    for path in paths:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if r["variant"] == variant]
        if not rows:
            raise SystemExit(f"--summarize: {path} holds no checkpoint of {variant!r}")
        finals.append(max(rows, key=lambda r: r["step"]))
    out: dict[str, Any] = {"variant": variant, "runs": len(finals),
                           "step": sorted({r["step"] for r in finals})}
    for key, per_image, goal in (("r_frame", "per_image_r", 0.8),
                                 ("agreement", "per_image_agreement", 0.98)):
        means = [r[key]["mean"] for r in finals]
        centre = sum(means) / len(means)
        lo, hi = stats.t.interval(0.95, len(means) - 1, loc=centre, scale=stats.sem(means))
        images = [v for r in finals for v in r[per_image]]
        out[key] = {"mean": centre, "t_ci": [float(lo), float(hi)],
                    "per_run": means, "runs_at_goal": sum(m >= goal for m in means),
                    "images_at_goal": sum(v >= goal for v in images), "images": len(images)}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--summarize", nargs="+", type=Path, default=None, metavar="FILE",
                   help="instead of running: pool the last checkpoint of --variants' first "
                        "variant over these --out files (one per seed) and print JSON")
    p.add_argument("--model", default=None,
                   help="a segxai model spec: a checkpoint directory, builtin (the full "
                        "built-in U-Net) or builtin-quick")
    p.add_argument("--variants", nargs="+", default=["default"], choices=sorted(VARIANTS))
    p.add_argument("--eval-images", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="override the steps (smoke runs)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.summarize is not None:
        print(json.dumps(summarize(args.summarize, args.variants[0]), indent=1))
        return
    if args.model is None:
        p.error("--model is required unless --summarize is given")
    torch.set_num_threads(1)
    model = load_model(args.model, progress=False).model.eval()
    held_out = adapt(model).from_pixels(make_shapes(args.eval_images, size=64,
                                                    seed=10_000 + args.seed).images)
    for name in args.variants:
        run_variant(name, model, held_out, args)


if __name__ == "__main__":
    main()
