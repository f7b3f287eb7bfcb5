"""Benchmark: a 100-step deletion + insertion curve pair vs the batched forwards it needs.

Model: torchvision ``deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
num_classes=5)`` with BatchNorm statistics calibrated once on random data; input 1×3×256×256.
The curve pair needs 2·100 + 1 forwards (the clean forward is shared); the baseline is 200
batched forwards of ready-made images under ``torch.inference_mode``. Target: ratio <= 1.2.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_deletion.py [--device cpu] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import deeplab  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build_model(device: str) -> torch.nn.Module:
    return deeplab(device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()

    import segxai
    from segxai.evaluate import deletion_insertion

    model = build_model(args.device)
    adapter = segxai.adapt(model, mean="imagenet", std="imagenet")
    gen = torch.Generator().manual_seed(2)
    x = adapter.from_pixels(torch.rand(1, 3, 256, 256, generator=gen)).to(args.device)
    maps = torch.rand(1, 256, 256, generator=gen)
    target = segxai.Target.from_prediction(adapter, x, int(adapter.predict(x)[0, 0, 0]))
    n_forwards = 2 * args.steps
    batch = x.expand(args.batch_size, -1, -1, -1).contiguous()

    def baseline() -> float:
        _sync(args.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            done = 0
            while done < n_forwards:
                m = min(args.batch_size, n_forwards - done)
                adapter.logits(batch[:m])
                done += m
        _sync(args.device)
        return time.perf_counter() - t0

    def curves() -> tuple[float, int]:
        _sync(args.device)
        f0 = adapter.counter.forward
        t0 = time.perf_counter()
        deletion_insertion(adapter, x, target, maps, steps=args.steps,
                           batch_size=args.batch_size)
        _sync(args.device)
        return time.perf_counter() - t0, adapter.counter.forward - f0

    baseline()  # warm-up
    curves()
    base_t, curve_t, fwd = [], [], 0
    for _ in range(args.repeats):  # interleaved, so that load changes hit both alike
        base_t.append(baseline())
        t, fwd = curves()
        curve_t.append(t)
    b, c = statistics.median(base_t), statistics.median(curve_t)
    print(f"device: {args.device}; torch threads: {torch.get_num_threads()}; "
          f"batch size {args.batch_size}; repeats {args.repeats} (medians)")
    print(f"baseline: {n_forwards} batched forwards        {b:8.3f} s  (all: "
          + ", ".join(f"{v:.3f}" for v in base_t) + ")")
    print(f"curves:   {args.steps}-step deletion + insertion {c:8.3f} s  ({fwd} forwards; all: "
          + ", ".join(f"{v:.3f}" for v in curve_t) + ")")
    print(f"ratio curves / baseline: {c / b:.3f} (target <= 1.2)")


if __name__ == "__main__":
    main()
