"""SmoothGrad vs Captum's NoiseTunnel(Saliency): the same n, σ and batch size, with repeats.

Model and target as ``bench_core.py`` (calibrated DeepLabV3-MobileNetV3, 5 classes, ROI logit
sum of the most predicted class), SmoothGrad with ``aggregate="abs_mean"`` (Captum's
``abs=True``: the mean of |∂S/∂x|) and NoiseTunnel ``nt_type="smoothgrad"`` with
``stdevs = noise · (max x − min x)``. The calls run interleaved in one process, the order
rotated every round, after one warm-up call each; each round gives the ratio NoiseTunnel /
segxai of two back-to-back calls (same load), and the table shows the median and the range
of those ratios, for wall and process CPU time, with the load average.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_smoothgrad.py [--rounds 9]
[--threads 1] [--size 256] [--n 8] [--batch 8]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import OutOnly, corr, deeplab  # noqa: E402

import segxai  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n", type=int, default=8, help="noisy samples")
    parser.add_argument("--batch", type=int, default=8, help="noisy samples per pass")
    parser.add_argument("--noise", type=float, default=0.15)
    args = parser.parse_args()
    from captum.attr import NoiseTunnel, Saliency

    torch.set_num_threads(args.threads)
    model = deeplab(size=args.size)
    wrapped = OutOnly(model).eval()
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = model(x)["out"].argmax(1)[0]
    cls = int(torch.bincount(pred.flatten(), minlength=5).argmax())
    roi = (pred == cls).float()
    target = segxai.Target.from_mask(pred == cls, cls)
    sigma = args.noise * float(x.max() - x.min())

    def score(inp: torch.Tensor) -> torch.Tensor:
        return (wrapped(inp)[:, cls] * roi).flatten(1).sum(1)

    tunnel = NoiseTunnel(Saliency(score))
    common = {"n_samples": args.n, "noise": args.noise, "batch_size": args.batch,
              "aggregate": "abs_mean"}
    ours = segxai.get_explainer("smoothgrad")(**common)
    plain = segxai.get_explainer("smoothgrad")(channels_last=False, **common)
    fns: dict[str, Callable[[], torch.Tensor]] = {
        "segxai smoothgrad": lambda: ours(model, x, target).maps[0],
        "segxai smoothgrad channels_last=False": lambda: plain(model, x, target).maps[0],
        "captum NoiseTunnel": lambda: tunnel.attribute(
            x, nt_type="smoothgrad", nt_samples=args.n, stdevs=sigma,
            nt_samples_batch_size=args.batch, abs=True)[0].amax(0),
    }
    load_start = " ".join(f"{v:.1f}" for v in os.getloadavg())
    maps = {k: fn().detach() for k, fn in fns.items()}  # warm-up
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(args.rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[k]()
            times[k].append((time.perf_counter() - t0, time.process_time() - c0))
    load_end = " ".join(f"{v:.1f}" for v in os.getloadavg())
    peer = "captum NoiseTunnel"
    print(f"deeplabv3_mobilenet_v3_large 1x3x{args.size}x{args.size}, class {cls}, n={args.n}, "
          f"batch {args.batch}, σ={args.noise}·range, torch threads {args.threads}, "
          f"{args.rounds} rounds; load average at start {load_start}, at end {load_end}")
    print("| segxai variant | ours s (median wall / CPU) | NoiseTunnel s | ratio wall: median "
          "[min, max] | ratio CPU: median [min, max] | agreement |")
    print("|---|---|---|---|---|---|")
    for k in keys[:2]:
        cells = []
        for col in (0, 1):
            ratios = sorted(p[col] / o[col] for p, o in zip(times[peer], times[k], strict=True))
            cells.append(f"{statistics.median(ratios):.2f}x [{ratios[0]:.2f}, {ratios[-1]:.2f}]")
        med = [statistics.median(t[c] for t in times[k]) for c in (0, 1)]
        pmed = [statistics.median(t[c] for t in times[peer]) for c in (0, 1)]
        print(f"| {k} | {med[0]:.2f} / {med[1]:.2f} | {pmed[0]:.2f} / {pmed[1]:.2f} | "
              f"{cells[0]} | {cells[1]} | r={corr(maps[k], maps[peer]):.4f} vs NoiseTunnel "
              f"(different draws); r={corr(maps[k], maps[keys[1]]):.6f} vs contiguous |")


if __name__ == "__main__":
    main()
