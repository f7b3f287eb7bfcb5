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
* the cost of a head-only forward (after ``backbone.16``) relative to a full forward;
* ``--incremental MODEL`` (repeatable: ``unet`` at 128², ``fcn`` = FCN-ResNet50 at 224²,
  ``deeplabv3`` = DeepLabV3-ResNet50 at 224², all random weights with calibrated BatchNorm):
  occlusion with ``incremental=True`` and with full forwards against Captum ``Occlusion`` at
  ``perturbations_per_eval`` 1 and 16 (window ``--inc-window`` 16, stride ``--inc-stride`` 8,
  black fill), the maps compared with the best Captum setting's, and where the windows'
  footprints cover the whole map.

Usage::

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_perturbation.py
        [--quick] [--reps 3] [--threads 2] [--device cpu] [--json out.json]
        [--incremental unet --incremental fcn --skip-occlusion --skip-ablation]

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
from _common import OutOnly, calibrate, deeplab  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """``((wall seconds, process CPU seconds), result)`` (CUDA work finished before both
    clock readings)."""
    _sync()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    _sync()
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


def calibrated(model: nn.Module, size: int, device: str, seed: int = 0) -> nn.Module:
    """BatchNorm statistics from 2 random batches of 2 (ResNet-50 at 224² is slow on a CPU)."""
    return calibrate(model, size, seed=seed, device=device, batches=2, batch_size=2)


def _unet() -> nn.Module:
    from segxai.models import UNet, UNetConfig

    return UNet(UNetConfig())


def _fcn() -> nn.Module:
    from torchvision.models.segmentation import fcn_resnet50

    return fcn_resnet50(weights=None, weights_backbone=None, num_classes=5)


def _deeplabv3() -> nn.Module:
    from torchvision.models.segmentation import deeplabv3_resnet50

    return deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=5)


# name: (builder, input side, description)
INCREMENTAL_MODELS: dict[str, tuple[Callable[[], nn.Module], int, str]] = {
    "unet": (_unet, 128, "built-in U-Net (depth 3, width 16)"),
    "fcn": (_fcn, 224, "FCN-ResNet50"),
    "deeplabv3": (_deeplabv3, 224, "DeepLabV3-ResNet50"),
}


def logits_of(out: Any) -> torch.Tensor:
    return out["out"] if isinstance(out, dict) else out


def pick_target(model: nn.Module, x: torch.Tensor) -> tuple[Any, int, torch.Tensor]:
    """The ROI of the most predicted class: ``(Target, class, roi)``."""
    import segxai

    with torch.no_grad():
        pred = logits_of(model(x)).argmax(1)
    counts = torch.bincount(pred.flatten().cpu(), minlength=5)
    cls = int(counts.argmax())
    target = segxai.Target.from_mask((pred == cls).cpu(), cls)
    return target, cls, target.roi[0].to(x.device)


def footprint_summary(model: nn.Module, x: torch.Tensor, window: int, stride: int,
                      batch: int) -> str:
    """Where the footprints of one batch of windows (the first ``batch``) saturate."""
    from segxai.core.adapter import ModelAdapter
    from segxai.explainers._fast import prepare
    from segxai.explainers._incremental import IncrementalRunner, trace
    from segxai.explainers.occlusion import window_starts

    fm = prepare(ModelAdapter(model), fold_bn=True, channels_last=True)
    xin = fm.prepare_input(x)
    runner = IncrementalRunner(trace(fm.call, xin))
    side = x.shape[-1]
    corners = [(r, c) for r in window_starts(side, window, stride)
               for c in window_starts(side, window, stride)][:batch]
    with torch.inference_mode():
        runner.clean(xin)
        data = torch.cat([torch.zeros_like(xin[:, :, :window, :window]) for _ in corners])
        runner.run(data, [r for r, _ in corners], [c for _, c in corners])
    convs = list(runner.footprints.items())
    full = [k for k, (mh, mw, lh, lw) in convs if lh == mh and lw == mw]
    parts = [f"{k} {mh}x{mw}: box {lh}x{lw}" for k, (mh, mw, lh, lw) in convs]
    print("  footprints per convolution (first batch):", "; ".join(parts), flush=True)
    first = full[0] if full else "none"
    return (f"conv work {runner.work_fraction():.0%} of full; first conv with a whole-map box: "
            f"{first} (of {len(convs)} convs before the full recomputation); full maps from "
            f"{runner.full_from}")


def load_average() -> str:
    """``uptime``'s load averages (1, 5, 15 min): the machine may be shared."""
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "unknown"


def ratio_spread(num: list[tuple[float, float]], den: list[tuple[float, float]],
                 col: int) -> tuple[float, float, float]:
    """Median, min and max over repetitions of ``num[r] / den[r]`` (wall: col 0, CPU: 1);
    both were timed in the same repetition, back to back, so they saw the same load."""
    ratios = sorted(a[col] / b[col] for a, b in zip(num, den, strict=True))
    return statistics.median(ratios), ratios[0], ratios[-1]


def incremental_rows(name: str, args: argparse.Namespace, reps: int) -> list[dict[str, Any]]:
    """Occlusion (``incremental=args.inc_mode``; one explainer reused across calls, and a new
    one per call as ``segxai.explain`` does) and full forwards vs Captum on one model."""
    from captum.attr import Occlusion as CaptumOcclusion

    import segxai
    from segxai.core.adapter import ModelAdapter

    build, side, desc = INCREMENTAL_MODELS[name]
    torch.manual_seed(0)
    model = calibrated(build(), side, args.device)
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(1)).to(args.device)
    target, cls, roi = pick_target(model, x)
    win, st, mode = args.inc_window, args.inc_stride, args.inc_mode
    mode_arg: Any = {"auto": "auto", "true": True}[mode]
    print(f"{desc}: input {tuple(x.shape)}, class {cls} ({int(roi.sum())} ROI px), window "
          f"{win}, stride {st}, incremental={mode}, device {args.device}, load average "
          f"{load_average()}", flush=True)

    def run_captum(ppe: int) -> np.ndarray:
        def fwd(inp: torch.Tensor) -> torch.Tensor:
            return (logits_of(model(inp))[:, cls] * roi).flatten(1).sum(1)

        with torch.no_grad():
            attr = CaptumOcclusion(fwd).attribute(
                x, sliding_window_shapes=(3, win, win), strides=(3, st, st), baselines=0.0,
                perturbations_per_eval=ppe)
        return attr[0, 0].cpu().numpy()

    settings = {"window": win, "stride": st, "fill": "black", "batch_size": args.inc_batch}
    kept = segxai.get_explainer("occlusion")(incremental=mode_arg, **settings)
    notes: dict[str, str] = {}

    def run_ours(variant: str) -> np.ndarray:
        if variant == "reused":
            e = kept(ModelAdapter(model), x, target)
        else:
            inc = False if variant == "full" else mode_arg
            e = segxai.explain(ModelAdapter(model), x, target, method="occlusion",
                               incremental=inc, **settings)
        notes[variant] = (f"incremental={e.extras['incremental']} "
                          f"({e.extras['incremental_note']})")
        return e.maps[0].cpu().numpy()

    ours = {"segxai, explainer reused (trace kept)": "reused",
            "segxai, new explainer per call": "new", "segxai full forwards": "full"}
    fns: dict[str, Callable[[], Any]] = {k: (lambda v=v: run_ours(v)) for k, v in ours.items()}
    fns["captum ppe=1"] = lambda: run_captum(1)
    fns["captum ppe=16"] = lambda: run_captum(16)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    maps: dict[str, np.ndarray] = {}
    warm_up(model, x)
    for fn in fns.values():  # one untimed call each: the reused explainer traces here
        fn()
    rotated_reps(fns, reps, name, times, maps)
    med = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    peer = min(("captum ppe=1", "captum ppe=16"), key=cpu.__getitem__)
    rng = float(maps[peer].max() - maps[peer].min()) or 1.0

    def diff(a: str, b: str) -> float:
        return float(np.abs(maps[a] - maps[b]).max()) / rng

    where = footprint_summary(model, x, win, st, args.inc_batch)
    rows = []
    for k, variant in ours.items():
        w_med, w_lo, w_hi = ratio_spread(times[peer], times[k], 0)
        c_med, c_lo, c_hi = ratio_spread(times[peer], times[k], 1)
        rows.append({"method": f"occlusion {name} {side}²: {k}", "ours_s": med[k],
                     "peer": f"captum Occlusion {peer[7:]}", "peer_s": med[peer],
                     "speedup": w_med, "ours_cpu_s": cpu[k], "peer_cpu_s": cpu[peer],
                     "cpu_speedup": c_med, "speedup_range": [w_lo, w_hi],
                     "cpu_speedup_range": [c_lo, c_hi], "reps": reps,
                     "agreement": f"max|Δ|/range = {diff(k, peer):.1e}; {notes[variant]}"})
    other = "captum ppe=16" if peer == "captum ppe=1" else "captum ppe=1"
    rows.append({"method": f"(occlusion {name}: other Captum setting)", "ours_s": float("nan"),
                 "peer": f"captum Occlusion {other[7:]}", "peer_s": med[other],
                 "speedup": float("nan"), "ours_cpu_s": float("nan"), "peer_cpu_s": cpu[other],
                 "cpu_speedup": float("nan"), "agreement": f"footprints: {where}"})
    print(f"  load average after {name}: {load_average()}", flush=True)
    return rows


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
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--incremental", action="append", default=[],
                        choices=sorted(INCREMENTAL_MODELS),
                        help="incremental occlusion vs Captum on this model (repeatable)")
    parser.add_argument("--inc-window", type=int, default=16)
    parser.add_argument("--inc-stride", type=int, default=8)
    parser.add_argument("--inc-batch", type=int, default=32, help="segxai batch_size")
    parser.add_argument("--inc-mode", choices=("auto", "true"), default="auto",
                        help="segxai occlusion's incremental setting in --incremental runs")
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
    rows: list[dict[str, Any]] = []
    for name in args.incremental:
        rows.extend(incremental_rows(name, args, reps))
    if args.skip_occlusion and args.skip_ablation:
        print_table(rows, args, size, reps)
        return 0
    model = deeplab(device=args.device)
    torch.manual_seed(1)
    x = torch.rand(1, 3, size, size).to(args.device)
    target, cls, roi = pick_target(model, x)
    print(f"model deeplabv3_mobilenet_v3_large, input {tuple(x.shape)}, class {cls} "
          f"({int(target.roi[0].sum())} ROI pixels), torch threads {args.threads}, "
          f"device {args.device}", flush=True)

    # ------------------------------------------------------------------ occlusion
    if not args.skip_occlusion:
        def captum_fwd(inp: torch.Tensor) -> torch.Tensor:
            return (model(inp)["out"][:, cls] * roi).flatten(1).sum(1)

        def run_captum(ppe: int) -> np.ndarray:
            with torch.no_grad():
                attr = CaptumOcclusion(captum_fwd).attribute(
                    x, sliding_window_shapes=(3, 32, 32), strides=(3, 16, 16), baselines=0.0,
                    perturbations_per_eval=ppe)
            return attr[0, 0].cpu().numpy()

        def run_ours(fast: bool) -> np.ndarray:
            e = segxai.explain(ModelAdapter(model), x, target, method="occlusion", window=32,
                               stride=16, fill="black", batch_size=32, fold_bn=fast,
                               channels_last=fast)
            return e.maps[0].cpu().numpy()

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
        roi_np = roi.cpu().numpy().astype(np.float32)

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
            return e.extras["weights"][0].cpu().numpy()

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

    print_table(rows, args, size, reps)
    return 0


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace, size: int,
                reps: int) -> None:
    print()
    print("| method | ours (s) | peer | peer (s) | speed-up | ours CPU (s) | peer CPU (s) "
          "| CPU speed-up | agreement |")
    print("|---|---|---|---|---|---|---|---|---|")

    def spread(r: dict[str, Any], key: str) -> str:
        lo_hi = r.get(f"{key}_range")
        return f" [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]" if lo_hi else ""

    for r in rows:
        print(f"| {r['method']} | {r['ours_s']:.2f} | {r['peer']} | {r['peer_s']:.2f} | "
              f"{r['speedup']:.2f}x{spread(r, 'speedup')} | {r['ours_cpu_s']:.2f} | "
              f"{r['peer_cpu_s']:.2f} | {r['cpu_speedup']:.2f}x{spread(r, 'cpu_speedup')} | "
              f"{r['agreement']} |")
    print(f"(speed-ups: median [min, max] over the repetitions of the per-repetition ratio; "
          f"load average at the end {load_average()})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"size": size, "reps": reps, "threads": args.threads,
                       "device": args.device, "load_average_end": load_average(),
                       "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
