"""Benchmark: training NAS students with channels-last (NHWC) against contiguous (NCHW) tensors.

The NAS validation and study train every sampled student with one schedule, so the students'
training is nearly all of their cost. ``TrainConfig(memory_format="channels_last")`` (the NAS
default) keeps weights and batches in NHWC, where oneDNN's depthwise and 5×5 kernels are
faster on CPU. For ``--archs`` architectures drawn as the study draws them inside a band of
``--band`` (parameter counts, default the band of the 483k-parameter built-in teacher), both
formats train ``--steps`` steps of the study's schedule (batch 4, 64×64 ``shapes``) in this one
process, alternating which goes first; the CPU seconds per step and their ratio are printed per
architecture and for the total (what the study would save), beside each run's mean training
loss (the two formats round differently, and Adam's normalised first steps turn rounding-level
gradients into steps of size lr, so the weights are not bit-identical; the losses show that both
learn alike).

Usage::

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_train_memory_format.py \
        [--archs 8] [--steps 40] [--band 72421-120701] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path


def _train_seconds(config: dict, seed: int, data, train_config) -> tuple[float, dict]:
    from segxai.models import train_model
    from segxai.nas.search import build_candidate
    from segxai.nas.space import build_unet

    model = build_candidate(build_unet, config, seed)
    t = time.process_time()
    result = train_model(model, data, None, train_config, progress=False)
    return time.process_time() - t, result.losses[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--band", default="72421-120701",
                    help="LO-HI parameter counts (default: 15-25 %% of the built-in teacher)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="2 architectures, 10 steps")
    ap.add_argument("--out", type=Path, default=None, help="write results.json here")
    args = ap.parse_args(argv)
    if args.quick:
        args.archs, args.steps = 2, 10
    import torch

    from segxai.data import make_shapes
    from segxai.models import TrainConfig
    from segxai.nas import SearchSpace
    from segxai.nas.evolution import Budget
    from segxai.nas.validate import sample_architectures

    torch.set_num_threads(1)
    lo, hi = (int(v) for v in args.band.split("-"))
    space = SearchSpace(num_classes=5, resolution=(64, 64))
    configs = sample_architectures(space, Budget(max_params=hi, min_params=lo), args.archs,
                                   seed=args.seed)
    data = make_shapes(4 * args.steps, size=64, seed=30_000)
    base = TrainConfig(epochs=1, batch_size=4, lr=5e-3, restore_best=False)
    rows = []
    totals = {"contiguous": 0.0, "channels_last": 0.0}
    print(f"{'architecture':>60} {'NCHW s/step':>11} {'NHWC s/step':>11} {'ratio':>6} "
          f"{'loss NCHW':>9} {'loss NHWC':>9}")
    for i, config in enumerate(configs):
        order = ["contiguous", "channels_last"] if i % 2 == 0 else ["channels_last", "contiguous"]
        secs, states = {}, {}
        for fmt in order:
            secs[fmt], states[fmt] = _train_seconds(config, 1, data,
                                                    replace(base, memory_format=fmt))
            totals[fmt] += secs[fmt]
        ratio = secs["contiguous"] / secs["channels_last"]
        name = json.dumps({k: config[k] for k in ("depth", "base_width", "block",
                                                  "kernel_size")})
        print(f"{name:>60} {secs['contiguous'] / args.steps:11.4f} "
              f"{secs['channels_last'] / args.steps:11.4f} {ratio:6.2f} "
              f"{states['contiguous']:9.4f} {states['channels_last']:9.4f}")
        rows.append({"config": config, "nchw_s": secs["contiguous"],
                     "nhwc_s": secs["channels_last"], "ratio": ratio, "loss_nchw": states["contiguous"], "loss_nhwc": states["channels_last"]})
    total = totals["contiguous"] / totals["channels_last"]
    print(f"total over {len(configs)} architectures x {args.steps} steps: NCHW "
          f"{totals['contiguous']:.1f} s, NHWC {totals['channels_last']:.1f} s CPU: "
          f"channels-last {total:.2f}x faster")
    if len(rows) >= 2:
        from segxai.core.intervals import bootstrap_mean

        ci = bootstrap_mean([r["ratio"] for r in rows], seed=0)
        print(f"per-architecture ratio: mean {ci.estimate:.2f}x, 95 % bootstrap interval over "
              f"architectures [{ci.lo:.2f}, {ci.hi:.2f}]")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(
            {"rows": rows, "total_ratio": total, "steps": args.steps, "band": [lo, hi]},
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
