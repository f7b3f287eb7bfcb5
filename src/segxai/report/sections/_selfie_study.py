"""Faithfulness of explanations of MediaPipe's selfie network on bundled photographs.

The question (issue 16): do Seg-Grad-CAM, the gradient and occlusion on the selfie network
beat a random ranking of the pixels on deletion for the class *person*? And which layer is
faithful for Seg-Grad-CAM on this architecture?

Protocol, fixed before measuring:

* images: every photograph of :data:`segxai.data.real.PHOTOGRAPHS` that is installed, at
  256×256 (the model's input size);
* target: class *person*, ROI = the pixels the network predicts as person on the clean image;
  **an image is used when that ROI covers at least** :data:`PERSON_MIN_SHARE` **of it** (the
  others have no person to explain and are listed as excluded, with their share);
* metrics: the library's defaults (``EvalConfig``): deletion with ROAD's noisy linear
  imputation, insertion from a blurred copy, score = mean person probability over the ROI;
  ``steps`` curve steps (:data:`STEPS`: the default 100 costs about a minute per curve pair at
  256×256 with ROAD on one core);
* baseline: the random ranking on the same images; per method the paired difference with a
  95 % bootstrap interval and the exact one-sided sign-flip p-value
  (:func:`segxai.evaluate.tables.interval_table`);
* the layer study: Seg-Grad-CAM at every stage of ``segxai_stages`` (``seg-grad-cam@LAYER``).

Run it with ``python -m segxai.report.sections._selfie_study --out DIR`` (resumable; ``--quick``
for three photographs, 8 steps, two layers); it writes ``DIR/selfie_study.json`` and
``DIR/selfie_study.md``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["MAIN_METHODS", "PARAMS", "PERSON_MIN_SHARE", "STEPS", "SelfieStudy",
           "add_one_sided", "contrasts", "main", "markdown", "person_shares", "selfie_study",
           "smoothed_gradient_check", "usable_photographs"]

PERSON = 1
PERSON_MIN_SHARE = 0.01
"""An image is used when the network predicts at least this share of its pixels as person."""
STEPS = 10
MAIN_METHODS = ("gradient", "occlusion")
"""Besides Seg-Grad-CAM, which runs at every stage (its default layer among them)."""
PARAMS: dict[str, dict[str, Any]] = {"occlusion": {"window": 32, "stride": 16}}
"""Occlusion's default 8×8 window with stride 4 needs 3,969 forwards at 256×256; a 32×32
window (1/8 of the side) with half overlap needs 225. Other methods keep their defaults."""
METRICS = ("deletion_auc", "insertion_auc")
QUICK_PHOTOS = ("astronaut", "camera", "grace_hopper")


def person_shares(model: Any, images: torch.Tensor) -> list[float]:
    """Share of each image's pixels the model predicts as person."""
    from segxai.core.adapter import adapt

    with torch.no_grad():
        pred = adapt(model).predict(images)
    return [float(s) for s in (pred == PERSON).flatten(1).float().mean(1)]


def usable_photographs(model: Any, names: Sequence[str] | None = None, size: int = 256
                       ) -> tuple[torch.Tensor, list[str], dict[str, float], dict[str, float]]:
    """The installed photographs with a predicted person (:data:`PERSON_MIN_SHARE`).

    Returns:
        ``(images, names, shares of the used, shares of the excluded)``.
    """
    from segxai.data.real import load_photographs

    photos = load_photographs(None if names is None else list(names), size=size)
    shares = person_shares(model, photos.images)
    keep = [i for i, s in enumerate(shares) if s >= PERSON_MIN_SHARE]
    used = {photos.names[i]: shares[i] for i in keep}
    excluded = {n: s for n, s in zip(photos.names, shares) if n not in used}
    return photos.images[keep], list(used), used, excluded


@dataclass
class SelfieStudy:
    """A finished study: settings, image lists, the interval tables and timings."""

    settings: dict[str, Any]
    used: dict[str, float]
    excluded: dict[str, float]
    default_layer: str
    methods: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    seconds: float
    contrasts: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dict(vars(self))


def _run(net: Any, images: torch.Tensor, ids: list[str], methods: list[str], steps: int,
         seed: int, out_dir: Path | None, progress: bool) -> list[dict[str, Any]]:
    from segxai.evaluate.config import EvalConfig
    from segxai.evaluate.runner import evaluate_methods

    config = EvalConfig(methods=methods, method_params={m: dict(PARAMS[m]) for m in methods
                                                        if m in PARAMS},
                        steps=steps, context_deletion=False, seed=seed)
    return evaluate_methods(net, images, None, config=config, out_dir=out_dir, image_ids=ids,
                            progress=progress, write_figures=False).rows


def add_one_sided(rows: Sequence[dict[str, Any]], table: list[dict[str, Any]],
                  baseline: str = "random-baseline") -> None:
    """Add ``p_one_sided`` to each entry with a baseline difference: the exact sign-flip
    p-value of "better than the baseline" (deletion: lower, insertion: higher), the question
    this study asks; ``p_value`` stays the two-sided one."""
    from segxai.core.intervals import Alternative, sign_flip_test
    from segxai.evaluate.config import METRIC_DIRECTION
    from segxai.evaluate.tables import per_image

    for e in table:
        if "diff" not in e:
            continue
        vals, base = per_image(rows, e["method"], e["metric"]), per_image(rows, baseline,
                                                                           e["metric"])
        common = sorted(set(vals) & set(base))
        alt: Alternative = "less" if METRIC_DIRECTION[e["metric"]] < 0 else "greater"
        e["p_one_sided"] = sign_flip_test([vals[i] - base[i] for i in common],
                                          alternative=alt, permutations=100_000)[0]


def contrasts(rows: Sequence[dict[str, Any]], methods: Sequence[str], reference: str,
              seed: int = 0) -> list[dict[str, Any]]:
    """Per method and metric, the paired difference ``method − reference`` (95 % interval,
    two-sided p), on the images both have."""
    from segxai.core.intervals import paired_difference
    from segxai.evaluate.tables import per_image

    out = []
    for metric in METRICS:
        ref = per_image(rows, reference, metric)
        for m in methods:
            vals = per_image(rows, m, metric)
            common = sorted(set(vals) & set(ref))
            if m == reference or len(common) < 2:
                continue
            pd = paired_difference([vals[i] for i in common], [ref[i] for i in common],
                                   seed=seed)
            d = pd.difference
            out.append({"method": m, "reference": reference, "metric": metric,
                        "n": len(common), "diff": d.estimate, "diff_lo": d.lo,
                        "diff_hi": d.hi, "p_value": pd.p_value})
    return out


def selfie_study(out_dir: str | Path | None = None, *, names: Sequence[str] | None = None,
                 steps: int = STEPS, layers: str | Sequence[str] = "all",
                 first_layers: Sequence[str] = ("layers.add_4", "layers.add_13"),
                 layer_images: int = 6, methods: Sequence[str] = MAIN_METHODS, seed: int = 0,
                 progress: bool = False, model: Any = None) -> SelfieStudy:
    """Run the study (see the module docstring) in two parts.

    Part 1 (``OUT/methods``): ``methods`` and Seg-Grad-CAM at the default layer and at
    ``first_layers`` on every usable photograph. Part 2 (``OUT/layers``): Seg-Grad-CAM at the
    other stages on the first ``layer_images`` usable photographs; the layer table compares
    every stage on those images.

    Args:
        out_dir: run directory (resumable; ``None`` keeps everything in memory).
        names: photographs (default: all of :data:`~segxai.data.real.PHOTOGRAPHS`).
        steps: deletion/insertion steps.
        layers: ``"all"`` stages of the model, or stage names, for Seg-Grad-CAM.
        first_layers: stages run on every image in part 1 (with the default layer).
        layer_images: images of part 2.
        methods: the other methods.
        seed: seed of the random baseline, ROAD's noise and the bootstrap.
        progress: show a progress bar.
        model: the network (default :func:`segxai.models.selfie`).

    Returns:
        A :class:`SelfieStudy`.
    """
    from segxai.core.runstore import atomic_write_json, atomic_write_text, to_jsonable
    from segxai.evaluate.config import RANDOM_BASELINE, EvalConfig
    from segxai.evaluate.layer_study import default_layer_name, layer_methods, layer_table
    from segxai.evaluate.tables import interval_table
    from segxai.models.mediapipe_selfie import selfie

    t0 = time.perf_counter()
    net = selfie() if model is None else model
    images, ids, used, excluded = usable_photographs(net, names)
    cam, stages = layer_methods(net, images, layers, methods=["seg-grad-cam"])
    default = default_layer_name(net, images)
    wanted = {f"seg-grad-cam@{n}" for n in (default, *first_layers)}
    first = [m for m in cam if m in wanted] + sorted(wanted - set(cam))  # stage order
    rest = [m for m in cam if m not in first]
    out = Path(out_dir) if out_dir is not None else None
    rows = _run(net, images, ids, [*methods, *first], steps, seed,
                None if out is None else out / "methods", progress)
    k = min(layer_images, len(ids))
    layer_ids = set(ids[:k])
    if rest:
        rows += [r for r in _run(net, images[:k], ids[:k], rest, steps, seed,
                                 None if out is None else out / "layers", progress)
                 if r["method"] != RANDOM_BASELINE]
    table = interval_table(rows, [*methods, f"seg-grad-cam@{default}", RANDOM_BASELINE],
                           METRICS, seed=seed)
    layer_rows = layer_table([r for r in rows if r["image"] in layer_ids], stages,
                             ["seg-grad-cam"], METRICS, default_layer=default, seed=seed)
    add_one_sided(rows, table)
    add_one_sided([r for r in rows if r["image"] in layer_ids], layer_rows)
    versus = contrasts(rows, first, f"seg-grad-cam@{default}", seed=seed)
    defaults = EvalConfig()
    settings = {"steps": steps, "score": defaults.score,
                "deletion_substrate": defaults.deletion_substrate,
                "insertion_substrate": defaults.insertion_substrate, "params": PARAMS,
                "person_min_share": PERSON_MIN_SHARE, "size": 256, "seed": seed,
                "layer_images": ids[:k], "torch_threads": torch.get_num_threads()}
    study = SelfieStudy(settings, used, excluded, default, table, layer_rows,
                        time.perf_counter() - t0, versus)
    if out is not None:
        atomic_write_json(out / "selfie_study.json", to_jsonable(study.to_dict()))
        atomic_write_text(out / "selfie_study.md", markdown(study))
    return study


def _fmt(e: dict[str, Any]) -> tuple[str, str]:
    mean = f"{e['mean']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}]"
    if "diff" not in e:
        return mean, "-"
    mark = {True: " ✓", False: " ✗", None: ""}[e.get("beats_baseline")]
    return mean, (f"{e['diff']:+.3f} [{e['diff_lo']:+.3f}, {e['diff_hi']:+.3f}] "
                  f"p={e['p_value']:.2g}, one-sided {e.get('p_one_sided', float('nan')):.2g}"
                  f"{mark}")


def markdown(study: SelfieStudy) -> str:
    """The study's tables as Markdown (✓ / ✗: the paired interval excludes 0 on the better /
    worse side)."""
    s = study.settings
    lines = [f"Images: {len(study.used)} photographs with a predicted person "
             f"(≥ {100 * s['person_min_share']:.0f} % of the pixels): "
             + ", ".join(f"{n} {100 * v:.0f} %" for n, v in study.used.items()) + ". Excluded: "
             + (", ".join(f"{n} {100 * v:.1f} %" for n, v in study.excluded.items()) or "none")
             + f". Steps {s['steps']}, deletion {s['deletion_substrate']}, insertion "
             f"{s['insertion_substrate']}, score {s['score']}; {study.seconds:.0f} s.", ""]
    for title, rows, key in (("Methods", study.methods, "method"),
                             (f"Seg-Grad-CAM per layer ({len(s['layer_images'])} images: "
                              f"{', '.join(s['layer_images'])})", study.layers, "layer")):
        lines += [f"**{title}** (default layer `{study.default_layer}`)", "",
                  f"| {key} | metric | mean [95 % CI] | − random [95 % CI], p (two-sided, "
                  "one-sided) |",
                  "|---|---|---|---|"]
        for e in rows:
            if e.get(key) is None:
                continue
            mean, diff = _fmt(e)
            lines.append(f"| {e[key]} | {e['metric']} | {mean} | {diff} |")
        lines.append("")
    if study.contrasts:
        lines += ["**Seg-Grad-CAM layers against the default layer** (paired, all images)", "",
                  "| method | metric | − default [95 % CI] | p (two-sided) |", "|---|---|---|---|"]
        lines += [f"| {c['method']} | {c['metric']} | {c['diff']:+.3f} [{c['diff_lo']:+.3f}, "
                  f"{c['diff_hi']:+.3f}] | {c['p_value']:.2g} |" for c in study.contrasts]
    return "\n".join(lines)


def smoothed_gradient_check(out_dir: str | Path, sigmas: Sequence[float] = (2.0, 4.0),
                            steps: int = STEPS, seed: int = 0,
                            model: Any = None) -> dict[str, Any]:
    """A diagnostic after the study (not part of its protocol): the gradient map blurred by a
    Gaussian of each ``sigma`` (pixels; kernel ``6σ + 1``) and scored by deletion like the
    study's maps, against the study's random rows (``OUT/methods``, which must exist).

    If the blurred map beats random by much more than the raw one, the ranking holds the
    evidence and its pixel-level scatter is what ROAD re-imputes. Writes
    ``OUT/gradient_check.json`` and returns its content.
    """
    import json

    from segxai.core.adapter import adapt
    from segxai.core.intervals import paired_difference
    from segxai.core.ops import gaussian_blur
    from segxai.core.registry import get_explainer
    from segxai.core.runstore import atomic_write_json, to_jsonable
    from segxai.core.target import Target
    from segxai.evaluate.curves import deletion_insertion
    from segxai.models.mediapipe_selfie import selfie

    out = Path(out_dir)
    base: dict[str, float] = {}
    for line in (out / "methods" / "progress.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["method"] == "random-baseline" and "metrics" in rec:
            base[rec["image"]] = float(rec["metrics"]["deletion_auc"])
    adapter = adapt(selfie() if model is None else model)
    images, ids, _, _ = usable_photographs(adapter.module)
    aucs: dict[float, dict[str, float]] = {float(sg): {} for sg in sigmas}
    for i, name in enumerate(ids):
        x = images[i:i + 1]
        target = Target.from_prediction(adapter, x, PERSON, roi="class")
        grad = get_explainer("gradient")()(adapter, x, target).maps.abs()
        for sg in aucs:
            smooth = gaussian_blur(grad[:, None], sigma=sg, kernel_size=int(6 * sg) | 1)[:, 0]
            dele, _ = deletion_insertion(adapter, x, target, smooth, steps=steps, seed=seed)
            aucs[sg][name] = float(dele.auc[0])
    result: dict[str, Any] = {"steps": steps, "images": ids, "per_image": aucs, "vs_random": {}}
    for sg, vals in aucs.items():
        common = [n for n in ids if n in base]
        pd = paired_difference([vals[n] for n in common], [base[n] for n in common],
                               alternative="less", seed=seed)
        d = pd.difference
        result["vs_random"][sg] = {"n": len(common), "mean": sum(vals.values()) / len(vals),
                                   "diff": d.estimate, "diff_lo": d.lo, "diff_hi": d.hi,
                                   "p_one_sided": pd.p_value}
    atomic_write_json(out / "gradient_check.json", to_jsonable(result))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m segxai.report.sections._selfie_study --out DIR [--quick] [--steps T]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="run directory (resumable)")
    parser.add_argument("--quick", action="store_true",
                        help="three photographs, 8 steps, two layers")
    parser.add_argument("--steps", type=int, default=None, help=f"default {STEPS}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gradient-check", action="store_true",
                        help="after the study: the blurred-gradient diagnostic "
                             "(OUT/gradient_check.json)")
    args = parser.parse_args(argv)
    quick = args.quick
    steps = args.steps or (8 if quick else STEPS)
    study = selfie_study(args.out, names=QUICK_PHOTOS if quick else None, steps=steps,
                         layers=["layers.add_4", "layers.add_13"] if quick else "all",
                         progress=True)
    print(markdown(study))
    if args.gradient_check:
        check = smoothed_gradient_check(args.out, steps=steps, seed=args.seed)
        for sg, v in check["vs_random"].items():
            print(f"gradient blurred with sigma {sg}: deletion − random {v['diff']:+.3f} "
                  f"[{v['diff_lo']:+.3f}, {v['diff_hi']:+.3f}], one-sided p {v['p_one_sided']:.2g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
