"""Benchmark: segxai occlusion and Seg-Ablation-CAM against Captum and pytorch-grad-cam.

Model: torchvision ``deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
num_classes=5)`` with BatchNorm statistics calibrated once on random data (so that outputs
are not constant), input ``1×3×256×256``, target = the ROI logit sum of the most predicted
non-trivial class. All methods run in one process, interleaved (the order rotates each
repetition) after a warm-up (batched forwards in both memory formats); the table shows the
medians of wall and process CPU time, and how well the maps agree (maps of the last
repetition).

* occlusion: window 32, stride 16, baseline 0 (black; the model has no input normalisation),
  against Captum ``Occlusion`` at ``perturbations_per_eval`` 1 and 16;
* seg-ablation-cam: layer ``backbone.16`` (960 channels), ablation value 0, batch 32,
  against pytorch-grad-cam ``AblationCAM`` (batch 32) with the same ablation value (its
  default would be ``min − 1e7`` for this pre-ReLU layer) and a ``SemanticSegmentationTarget``;
* the cost of a head-only forward (after ``backbone.16``) relative to a full forward.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_perturbation.py [--quick] [--reps 3]
        [--threads 2] [--json out.json]

``--quick`` uses a 128×128 input, one timed repetition and 96 ablated channels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import OutOnly, deeplab  # noqa: E402


def build_model(seed: int = 0) -> nn.Module:
    return deeplab(seed=seed)


def timed(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """``((wall seconds, process CPU seconds), result)``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - t0, time.process_time() - c0), out


def rotated_reps(fns: dict[str, Callable[[], Any]], reps: int, label: str,
                 times: dict[str, list[tuple[float, float]]], results: dict[str, Any]) -> None:
    """Run every function ``reps`` times, rotating the order each repetition."""
    for rep in range(reps):
        keys = list(fns)
        keys = keys[rep % len(keys):] + keys[:rep % len(keys)]
        for k in keys:
            dt, results[k] = timed(fns[k])
            times[k].append(dt)
            print(f"  {label} rep {rep}: {k}: {dt[0]:.2f} s wall, {dt[1]:.2f} s CPU", flush=True)


def warm_up(model: nn.Module, x: torch.Tensor) -> None:
    """A few batched forwards in both memory formats (allocator, oneDNN kernel caches)."""
    xb = x.expand(8, -1, -1, -1).contiguous()
    with torch.no_grad():
        for fmt in (torch.contiguous_format, torch.channels_last):
            model.to(memory_format=fmt)
            model(xb.contiguous(memory_format=fmt))
    model.to(memory_format=torch.contiguous_format)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller run (128², 96 channels)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--skip-ablation", action="store_true")
    parser.add_argument("--skip-occlusion", action="store_true")
    parser.add_argument("--plain-variants", action="store_true",
                        help="also time segxai with fold_bn/channels_last off")
    args = parser.parse_args(argv)

    from captum.attr import Occlusion as CaptumOcclusion
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.ablation_layer import AblationLayer
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    import segxai
    from segxai.core.adapter import ModelAdapter
    from segxai.explainers._fast import prepare
    from segxai.explainers._split import LayerReplay

    torch.set_num_threads(args.threads)
    size = 128 if args.quick else 256
    reps = args.reps or (1 if args.quick else 3)
    channels = 96 if args.quick else None
    model = build_model()
    torch.manual_seed(1)
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        pred = model(x)["out"].argmax(1)
    counts = torch.bincount(pred.flatten(), minlength=5)
    cls = int(counts.argmax())
    target = segxai.Target.from_mask(pred == cls, cls)
    roi = target.roi[0]
    print(f"model deeplabv3_mobilenet_v3_large, input {tuple(x.shape)}, class {cls} "
          f"({int(counts[cls])} ROI pixels), torch threads {args.threads}", flush=True)
    rows: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ occlusion
    if not args.skip_occlusion:
        def captum_fwd(inp: torch.Tensor) -> torch.Tensor:
            return (model(inp)["out"][:, cls] * roi).flatten(1).sum(1)

        def run_captum(ppe: int) -> np.ndarray:
            with torch.no_grad():
                attr = CaptumOcclusion(captum_fwd).attribute(
                    x, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), baselines=0.0,
                    perturbations_per_eval=ppe)
            return attr[0, 0].numpy()

        def run_ours(fast: bool) -> np.ndarray:
            e = segxai.explain(ModelAdapter(model), x, target, method="occlusion", window=32,
                               stride=16, fill="black", batch_size=32, fold_bn=fast,
                               channels_last=fast)
            return e.maps[0].numpy()

        occ = {"segxai occlusion (defaults: fold_bn + channels_last)": lambda: run_ours(True),
               "captum Occlusion ppe=1": lambda: run_captum(1),
               "captum Occlusion ppe=16": lambda: run_captum(16)}
        if args.plain_variants:
            occ["segxai occlusion (fold_bn/channels_last off)"] = lambda: run_ours(False)
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in occ}
        maps: dict[str, np.ndarray] = {}
        warm_up(model, x)
        rotated_reps(occ, reps, "occlusion", times, maps)
        med = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
        cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
        best_peer = min(("captum Occlusion ppe=1", "captum Occlusion ppe=16"), key=med.get)
        ref = maps[best_peer]
        rng = float(ref.max() - ref.min()) or 1.0
        for k in occ:
            if k.startswith("segxai"):
                diff = float(np.abs(maps[k] - ref).max()) / rng
                rows.append({"method": k, "ours_s": med[k], "peer": best_peer,
                             "peer_s": med[best_peer], "speedup": med[best_peer] / med[k],
                             "ours_cpu_s": cpu[k], "peer_cpu_s": cpu[best_peer],
                             "cpu_speedup": cpu[best_peer] / cpu[k],
                             "agreement": f"max|Δ|/range = {diff:.2e}"})
        other = "captum Occlusion ppe=1" if best_peer.endswith("16") else "captum Occlusion ppe=16"
        rows.append({"method": "(other Captum setting)", "ours_s": float("nan"), "peer": other,
                     "peer_s": med[other], "speedup": float("nan"), "ours_cpu_s": float("nan"),
                     "peer_cpu_s": cpu[other], "cpu_speedup": float("nan"),
                     "agreement": "-"})

    # ------------------------------------------------------------------ ablation
    if not args.skip_ablation:
        layer_name = "backbone.16"
        wrapped = OutOnly(model).eval()
        layer = dict(model.named_modules())[layer_name]

        class ZeroAblation(AblationLayer):
            """pytorch-grad-cam's ablation layer with the ablation value fixed to 0."""

            def __call__(self, x: torch.Tensor) -> torch.Tensor:
                output = self.activations
                for i in range(output.size(0)):
                    output[i, self.indices[i], :] = 0
                return output

        class RecordingAblationCAM(AblationCAM):
            def get_cam_weights(self, *a: Any, **k: Any) -> np.ndarray:
                self.recorded = super().get_cam_weights(*a, **k)
                return self.recorded

        n_ch = 960 if channels is None else channels
        roi_np = roi.numpy().astype(np.float32)

        def run_gradcam() -> np.ndarray:
            cam = RecordingAblationCAM(model=wrapped, target_layers=[layer],
                                       ablation_layer=ZeroAblation(), batch_size=32)
            if channels is not None:  # ablate only the first `channels` channels
                cam.ratio_channels_to_ablate = 1.0
                orig = cam.ablation_layer.activations_to_be_ablated

                def first(acts: Any, ratio: float = 1.0) -> np.ndarray:
                    orig(acts, ratio)
                    cam.ablation_layer.indices = np.int32(range(n_ch))
                    return cam.ablation_layer.indices
                cam.ablation_layer.activations_to_be_ablated = first
            cam(input_tensor=x, targets=[SemanticSegmentationTarget(cls, roi_np)])
            w = np.asarray(cam.recorded)[0]
            return w[:n_ch]

        def run_ours_abl(fast: bool) -> np.ndarray:
            e = segxai.explain(ModelAdapter(model), x, target, method="seg-ablation-cam",
                               layer=layer_name, mode="full", value=0.0, guard="none",
                               batch_size=32, channels=channels, fold_bn=fast,
                               channels_last=fast)
            assert e.extras["split"] == ["head-only"], e.extras["split"]
            return e.extras["weights"][0].numpy()

        abl = {"segxai seg-ablation-cam (defaults: fold_bn + channels_last)":
               lambda: run_ours_abl(True),
               "pytorch-grad-cam AblationCAM": run_gradcam}
        if args.plain_variants:
            abl["segxai seg-ablation-cam (fold_bn/channels_last off)"] = \
                lambda: run_ours_abl(False)
        times = {k: [] for k in abl}
        weights: dict[str, np.ndarray] = {}
        warm_up(model, x)
        rotated_reps(abl, reps, "ablation", times, weights)
        med = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
        cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
        peer = "pytorch-grad-cam AblationCAM"
        for k in abl:
            if k.startswith("segxai"):
                corr = float(np.corrcoef(weights[k], weights[peer])[0, 1])
                rows.append({"method": k, "ours_s": med[k], "peer": peer, "peer_s": med[peer],
                             "speedup": med[peer] / med[k], "ours_cpu_s": cpu[k],
                             "peer_cpu_s": cpu[peer], "cpu_speedup": cpu[peer] / cpu[k],
                             "agreement": f"weight corr = {corr:.6f}"})

        # head-only vs full forward, batch 32, on the fast model
        adapter = ModelAdapter(model)
        with adapter.explaining():
            fm = prepare(adapter, fold_bn=True, channels_last=True)
            assert fm.module is not None
            replay = LayerReplay(fm.module, fm.find(layer_name), x, adapter.counter,
                                 fm.prepare_input)
            acts = replay.activation.expand(32, -1, -1, -1).clone()
            xb = x.expand(32, -1, -1, -1).contiguous()
            replay.run(acts)
            fm.raw(xb)
            t_head, t_full = [], []
            for _ in range(max(reps, 3)):
                t_head.append(timed(lambda: replay.run(acts))[0])
                t_full.append(timed(lambda: fm.raw(xb))[0])
        h_w, f_w = (statistics.median(t[0] for t in t_head),
                    statistics.median(t[0] for t in t_full))
        h_c, f_c = (statistics.median(t[1] for t in t_head),
                    statistics.median(t[1] for t in t_full))
        rows.append({"method": "head-only forward after backbone.16 (batch 32, fast model)",
                     "ours_s": h_w, "peer": "full forward (batch 32, fast model)",
                     "peer_s": f_w, "speedup": f_w / h_w, "ours_cpu_s": h_c, "peer_cpu_s": f_c,
                     "cpu_speedup": f_c / h_c,
                     "agreement": f"cost ratio {h_w / f_w:.2f}x wall, {h_c / f_c:.2f}x CPU"})

    # ------------------------------------------------------------------ table
    print()
    print("| method | ours (s) | peer | peer (s) | speed-up | ours CPU (s) | peer CPU (s) "
          "| CPU speed-up | agreement |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['ours_s']:.2f} | {r['peer']} | {r['peer_s']:.2f} | "
              f"{r['speedup']:.2f}x | {r['ours_cpu_s']:.2f} | {r['peer_cpu_s']:.2f} | "
              f"{r['cpu_speedup']:.2f}x | {r['agreement']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"size": size, "reps": reps, "threads": args.threads, "rows": rows}, fh,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
