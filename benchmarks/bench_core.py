"""Gradient explainers vs Captum and pytorch-grad-cam on the same model, input, class and ROI.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_core.py [--rounds 5] [--threads 2]
[--device cpu|cuda]`` (on CUDA every timed call ends with a synchronisation).

Prints one row per pair: our median seconds, the peer's, the ratio (peer / ours; > 1 means
segxai is faster) and the agreement of the maps (Pearson correlation; for exact pairs also the
max absolute difference relative to the map's range).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import OutOnly, corr, deeplab, interleaved, max_rel_diff  # noqa: E402

import segxai  # noqa: E402


def synced(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` followed by a CUDA synchronisation (so that timings include the kernels)."""
    def run() -> object:
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--nt-samples", type=int, default=8)
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    model = deeplab(size=args.size, device=args.device)
    wrapped = OutOnly(model).eval()
    x = torch.rand(1, 3, args.size, args.size,
                   generator=torch.Generator().manual_seed(1)).to(args.device)
    with torch.no_grad():
        pred = model(x)["out"].argmax(1)[0]
    counts = torch.bincount(pred.flatten().cpu(), minlength=5)
    # the most frequent predicted class whose Grad-CAM is not all-negative (a map of zeros
    # after the ReLU would make the agreement meaningless)
    cls = None
    for c in counts.argsort(descending=True).tolist():
        if counts[c] == 0:
            break
        trial = segxai.Target.from_mask((pred == c).cpu(), c)
        if float(segxai.explain(model, x, trial, layer="backbone.16").maps.max()) > 0:
            cls = c
            break
    if cls is None:
        raise SystemExit("no predicted class with a non-zero Grad-CAM; try another --size")
    roi = (pred == cls)
    target = segxai.Target.from_mask(roi.cpu(), cls)
    roi_f = roi.float()
    layer = model.backbone["16"]

    def score_fn(inp: torch.Tensor) -> torch.Tensor:
        return (wrapped(inp)[:, cls] * roi_f).flatten(1).sum(1)

    sigma = 0.15 * float(x.max() - x.min())
    saliency = Saliency(score_fn)
    tunnel = NoiseTunnel(Saliency(score_fn))
    lgc = LayerGradCam(score_fn, layer)
    gc = GradCAM(model=wrapped, target_layers=[layer])
    gc_target = [SemanticSegmentationTarget(cls, roi_f.cpu().numpy())]
    gcpp = GradCAMPlusPlus(model=wrapped, target_layers=[layer])
    ig = IntegratedGradients(score_fn)

    ours_grad = segxai.get_explainer("gradient")()
    ours_sg = segxai.get_explainer("smoothgrad")(n_samples=args.nt_samples, noise=0.15,
                                                 batch_size=args.nt_samples,
                                                 aggregate="abs_mean")
    ours_cam = segxai.get_explainer("seg-grad-cam")(layer="backbone.16")
    ours_ig = segxai.get_explainer("integrated-gradients")(n_steps=args.ig_steps,
                                                           batch_size=args.ig_steps)
    ours_gcpp = segxai.get_explainer("grad-cam++")(layer="backbone.16")

    fns = {
        "segxai gradient": lambda: ours_grad(model, x, target),
        "captum Saliency": lambda: saliency.attribute(x, abs=True),
        "segxai smoothgrad": lambda: ours_sg(model, x, target),
        "captum NoiseTunnel": lambda: tunnel.attribute(
            x, nt_type="smoothgrad", nt_samples=args.nt_samples, stdevs=sigma,
            nt_samples_batch_size=args.nt_samples, abs=True),
        "segxai seg-grad-cam": lambda: ours_cam(model, x, target),
        "grad-cam GradCAM": lambda: gc(input_tensor=x, targets=gc_target),
        "captum LayerGradCam": lambda: lgc.attribute(x, relu_attributions=True),
        "segxai integrated-gradients": lambda: ours_ig(model, x, target),
        "captum IntegratedGradients": lambda: ig.attribute(
            x, baselines=torch.zeros_like(x), n_steps=args.ig_steps,
            internal_batch_size=args.ig_steps),
        "segxai grad-cam++": lambda: ours_gcpp(model, x, target),
        "grad-cam GradCAMPlusPlus": lambda: gcpp(input_tensor=x, targets=gc_target),
    }
    # K targets in one call vs K separate calls
    k_targets = [segxai.Target.from_mask(roi.cpu(), c) for c in range(5)]
    fns["segxai seg-grad-cam K=5 one call"] = lambda: ours_cam.explain_many(model, x, k_targets)
    fns["segxai seg-grad-cam K=5 separate"] = lambda: [ours_cam(model, x, t) for t in k_targets]
    fns["segxai gradient K=5 one call"] = lambda: ours_grad.explain_many(model, x, k_targets)
    fns["segxai gradient K=5 separate"] = lambda: [ours_grad(model, x, t) for t in k_targets]
    if args.device.startswith("cuda"):
        fns = {k: synced(f) for k, f in fns.items()}
    t = interleaved(fns, rounds=args.rounds)

    # agreement (on the CPU)
    g_ours = ours_grad(model, x, target).maps[0]
    g_cap = saliency.attribute(x, abs=True)[0].amax(0)
    sg_ours = ours_sg(model, x, target).maps[0]
    sg_cap = tunnel.attribute(x, nt_type="smoothgrad", nt_samples=args.nt_samples, stdevs=sigma,
                              nt_samples_batch_size=args.nt_samples, abs=True)[0].amax(0)
    cam_ours = ours_cam(model, x, target).maps[0]
    cam_gc = torch.from_numpy(gc(input_tensor=x, targets=gc_target)[0])
    cam_lgc = torch.nn.functional.interpolate(lgc.attribute(x, relu_attributions=True),
                                              size=x.shape[-2:], mode="bilinear",
                                              align_corners=False)[0, 0]
    ig_ours = ours_ig(model, x, target).maps[0]
    ig_cap = ig.attribute(x, baselines=torch.zeros_like(x), n_steps=args.ig_steps,
                          internal_batch_size=args.ig_steps)[0].sum(0)
    gcpp_ours = ours_gcpp(model, x, target).maps[0]
    gcpp_peer = torch.from_numpy(gcpp(input_tensor=x, targets=gc_target)[0])

    g_ours, g_cap, sg_ours, sg_cap, cam_ours, cam_gc, cam_lgc, ig_ours, ig_cap, gcpp_ours, \
        gcpp_peer = (m.detach().cpu() for m in (g_ours, g_cap, sg_ours, sg_cap, cam_ours, cam_gc,
                                                cam_lgc, ig_ours, ig_cap, gcpp_ours, gcpp_peer))

    rows = [
        ("gradient", "captum Saliency", t["segxai gradient"], t["captum Saliency"],
         f"r={corr(g_ours, g_cap):.6f}, maxdiff={max_rel_diff(g_ours, g_cap):.1e}"),
        (f"smoothgrad n={args.nt_samples}", "captum NoiseTunnel", t["segxai smoothgrad"],
         t["captum NoiseTunnel"], f"r={corr(sg_ours, sg_cap):.4f} (different noise draws)"),
        ("seg-grad-cam", "grad-cam GradCAM", t["segxai seg-grad-cam"], t["grad-cam GradCAM"],
         f"r={corr(cam_ours, cam_gc):.6f}"),
        ("seg-grad-cam", "captum LayerGradCam", t["segxai seg-grad-cam"],
         t["captum LayerGradCam"], f"r={corr(cam_ours, cam_lgc):.6f}"),
        (f"integrated-gradients n={args.ig_steps}", "captum IntegratedGradients",
         t["segxai integrated-gradients"], t["captum IntegratedGradients"],
         f"r={corr(ig_ours, ig_cap):.6f}, maxdiff={max_rel_diff(ig_ours, ig_cap):.1e}"),
        ("grad-cam++", "grad-cam GradCAMPlusPlus", t["segxai grad-cam++"],
         t["grad-cam GradCAMPlusPlus"],
         f"r={corr(gcpp_ours, gcpp_peer):.6f} (peer min-max + cv2 resize)"),
        ("seg-grad-cam K=5, one call", "seg-grad-cam 5 calls",
         t["segxai seg-grad-cam K=5 one call"], t["segxai seg-grad-cam K=5 separate"], "same maps"),
        ("gradient K=5, one call", "gradient 5 calls", t["segxai gradient K=5 one call"],
         t["segxai gradient K=5 separate"], "same maps"),
    ]
    print(f"model deeplabv3_mobilenet_v3_large (5 classes), input 1x3x{args.size}x{args.size}, "
          f"class {cls}, ROI {int(roi.sum())} px, torch threads {args.threads}, "
          f"device {args.device}, "
          f"{args.rounds} interleaved rounds (median)")
    print("| ours | peer | ours s | peer s | peer/ours | agreement |")
    print("|---|---|---|---|---|---|")
    for ours, peer, a, b, agree in rows:
        print(f"| {ours} | {peer} | {a:.3f} | {b:.3f} | {b / a:.2f}x | {agree} |")
    gc.__exit__(None, None, None)
    gcpp.__exit__(None, None, None)


if __name__ == "__main__":
    main()
