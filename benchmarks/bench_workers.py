"""Benchmark: ``segxai evaluate`` with 2 worker processes against 1, perturbation methods.

Each run is a fresh ``segxai evaluate`` process (so imports, the spawn of the workers and the
final tables count, as a user sees them) on the same small U-Net checkpoint (random weights,
saved once to a temporary folder), ``--images N`` of the built-in shapes data at
``--size``, the perturbation methods (occlusion, Seg-Ablation-CAM) and ``--steps`` curve
steps. Three settings alternate: no ``--workers`` (one process, torch's default threads),
``--workers 1`` and ``--workers 2`` (one torch thread per process); the medians are compared.
``results.csv`` of ``--workers 2`` must equal that of ``--workers 1`` except the wall-clock
``seconds`` rows.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_workers.py [--images 32] [--reps 1]
        [--workers 2] [--quick]

Goal (issue 17): 2 workers >= 1.7x faster than 1 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _checkpoint(folder: Path) -> Path:
    import torch

    from segxai.models import save_checkpoint
    from segxai.models.unet import UNet, UNetConfig

    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=3, base_width=12, num_classes=5))
    with torch.no_grad():  # a foreground class predicted in most images
        model.head.bias.copy_(torch.tensor([0.0, 0.05, 0.05, 0.05, 0.05]))
    return save_checkpoint(model, folder / "unet")


def _run(ckpt: Path, out: Path, workers: int | None,
         args: argparse.Namespace) -> tuple[float, float]:
    """Wall seconds and CPU seconds (the command and its worker processes) of one run."""
    cmd = [sys.executable, "-m", "segxai.cli", "evaluate", "--quiet", "--model", str(ckpt),
           "--images", str(args.images), "--size", str(args.size), "--steps", str(args.steps),
           "--method", "occlusion", "--method", "seg-ablation-cam", "--no-random-baseline",
           "--param", "occlusion.window=8", "--param", "occlusion.stride=4",
           *(["--workers", str(workers)] if workers else []), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"bench_workers: segxai evaluate failed:\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def _table(out: Path) -> list[str]:
    return [line for line in (out / "results.csv").read_text().splitlines()
            if ",seconds," not in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=1, help="runs of each setting")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4 images (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.images = 4
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = _checkpoint(folder)
        settings: list[int | None] = [None, 1, args.workers]
        times: dict[int | None, list[float]] = {w: [] for w in settings}
        cpus: dict[int | None, list[float]] = {w: [] for w in settings}
        tables: dict[int | None, list[str]] = {}
        for rep in range(args.reps):
            for w in settings:
                out = folder / f"run-{w}-{rep}"
                wall, cpu = _run(ckpt, out, w, args)
                times[w].append(wall)
                cpus[w].append(cpu)
                table = _table(out)
                if tables.setdefault(w, table) != table:
                    raise SystemExit(f"bench_workers: results.csv of --workers {w} changed "
                                     "between repetitions")
                print(f"--workers {w or '(none)'}: {wall:.1f} s wall, {cpu:.1f} s CPU, "
                      f"load average after {os.getloadavg()[0]:.1f}", flush=True)
    if tables[1] != tables[args.workers]:
        raise SystemExit(f"bench_workers: results.csv of --workers {args.workers} differs "
                         "from --workers 1")
    med = {w: statistics.median(v) for w, v in times.items()}
    cpu_med = {w: statistics.median(v) for w, v in cpus.items()}
    cores, load_end = os.cpu_count() or 1, os.getloadavg()
    print(f"cores: {cores}; load average (1, 5, 15 min) at the start: "
          f"{', '.join(f'{v:.1f}' for v in load_start)}; at the end: "
          f"{', '.join(f'{v:.1f}' for v in load_end)}")
    if max(load_start[0], load_end[0]) > 0.5:
        print(f"note: other processes were running (1-minute load average up to "
              f"{max(load_start[0], load_end[0]):.1f} on {cores} cores, of which this benchmark "
              "adds at most its own workers): the workers did not have the cores to "
              "themselves, so the speed-up below says little about an idle machine")
    print(f"images {args.images} x (occlusion, seg-ablation-cam), size {args.size}, "
          f"steps {args.steps}, {args.reps} run(s) each (medians)")
    print("| run | torch threads per process | wall s | CPU s | results.csv as --workers 1 |")
    print("|---|---|---|---|---|")
    same = "identical" if tables[None] == tables[1] else "last digits differ"
    print(f"| no --workers (one process) | torch default | {med[None]:.1f} | "
          f"{cpu_med[None]:.1f} | {same} |")
    print(f"| --workers 1 | 1 | {med[1]:.1f} | {cpu_med[1]:.1f} | identical |")
    print(f"| --workers {args.workers} | 1 | {med[args.workers]:.1f} | "
          f"{cpu_med[args.workers]:.1f} | identical |")
    print(f"speed-up --workers {args.workers} / --workers 1: {med[1] / med[args.workers]:.2f}x "
          "(goal >= 1.7x)")
    print(f"speed-up --workers {args.workers} / no --workers: "
          f"{med[None] / med[args.workers]:.2f}x")


if __name__ == "__main__":
    main()
