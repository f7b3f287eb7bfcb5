"""Peak memory of each explainer (and of the Captum peers) on one image, one process each.

Every method runs in a fresh subprocess, so that peaks do not mix: on CPU the peak resident
set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and its growth over the process
after building the model and the input; on CUDA ``torch.cuda.max_memory_allocated`` during
the method (and the growth over the allocation before it). Model: torchvision
deeplabv3_mobilenet_v3_large (random weights, BatchNorm calibrated as in the other
benchmarks), input ``1×3×S×S`` (default 512), target = the ROI of the most predicted class.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_memory.py [--size 512]
[--device cpu|cuda] [--methods gradient,smoothgrad,...] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import OutOnly, deeplab  # noqa: E402

# name: (explainer or peer, parameters)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "gradient": ("gradient", {}),
    "smoothgrad n=8": ("smoothgrad", {"n_samples": 8, "batch_size": 8}),
    "integrated-gradients n=16": ("integrated-gradients", {"n_steps": 16, "batch_size": 16}),
    "seg-grad-cam": ("seg-grad-cam", {"layer": "backbone.16"}),
    "grad-cam++": ("grad-cam++", {"layer": "backbone.16"}),
    "occlusion w64 s64 (incremental)": ("occlusion", {"window": 64, "stride": 64,
                                                      "batch_size": 16, "incremental": True}),
    "occlusion w64 s64 (full forwards)": ("occlusion", {"window": 64, "stride": 64,
                                                        "batch_size": 16,
                                                        "incremental": False}),
    "seg-ablation-cam 64 channels": ("seg-ablation-cam", {"layer": "backbone.16",
                                                          "channels": 64, "batch_size": 16}),
    "captum Saliency": ("captum-saliency", {}),
    "captum NoiseTunnel n=8": ("captum-noisetunnel", {"n": 8}),
    "captum Occlusion w64 s64 ppe=16": ("captum-occlusion", {"window": 64, "ppe": 16}),
}


def _rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(name: str, size: int, device: str) -> dict[str, Any]:
    """Build the model and input, run one method once, report the peaks."""
    import segxai

    kind, params = METHODS[name]
    model = deeplab(size=128, device=device)  # calibration size only; runs at `size`
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        pred = model(x)["out"].argmax(1)
    cls = int(torch.bincount(pred.flatten().cpu(), minlength=5).argmax())
    target = segxai.Target.from_mask((pred == cls).cpu(), cls)
    roi = target.roi[0].to(device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = _rss_mib()
    t0 = time.perf_counter()
    if kind.startswith("captum"):
        _run_captum(kind, params, OutOnly(model).eval(), x, cls, roi)
    else:
        segxai.get_explainer(kind)(**params)(model, x, target)
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _rss_mib()
    return {"method": name, "device": device, "size": size, "peak_mib": peak,
            "growth_mib": peak - before, "seconds": time.perf_counter() - t0}


def _run_captum(kind: str, params: dict[str, Any], model: torch.nn.Module, x: torch.Tensor,
                cls: int, roi: torch.Tensor) -> None:
    from captum.attr import NoiseTunnel, Occlusion, Saliency

    def score(inp: torch.Tensor) -> torch.Tensor:
        return (model(inp)[:, cls] * roi).flatten(1).sum(1)

    if kind == "captum-saliency":
        Saliency(score).attribute(x, abs=True)
    elif kind == "captum-noisetunnel":
        sigma = 0.15 * float(x.max() - x.min())
        NoiseTunnel(Saliency(score)).attribute(x, nt_type="smoothgrad", nt_samples=params["n"],
                                               stdevs=sigma, nt_samples_batch_size=params["n"],
                                               abs=True)
    else:
        w = params["window"]
        with torch.no_grad():
            Occlusion(score).attribute(x, sliding_window_shapes=(3, w, w), strides=(3, w, w),
                                       baselines=0.0, perturbations_per_eval=params["ppe"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated names (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child is not None:
        print(json.dumps(child(args.child, args.size, args.device)))
        return 0
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; expected some of {list(METHODS)}")
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--child", name, "--size", str(args.size),
               "--device", args.device, "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{name}: failed\n{done.stderr[-2000:]}", file=sys.stderr, flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  {name}: peak {row['peak_mib']:.0f} MiB (+{row['growth_mib']:.0f}), "
              f"{row['seconds']:.1f} s", flush=True)
    what = "CUDA max_memory_allocated" if args.device.startswith("cuda") else "peak RSS"
    print(f"\ninput 1x3x{args.size}x{args.size}, device {args.device}, one process per method")
    print(f"| method | {what} (MiB) | growth during the method (MiB) | seconds |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['peak_mib']:.0f} | {r['growth_mib']:.0f} | "
              f"{r['seconds']:.1f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0 if len(rows) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
