"""``segxai demo``: train (first use) or load the built-in U-Net, explain sample images with
every registered explainer, and write a self-contained HTML report.

The model is cached under ``$SEGXAI_CACHE`` (default ``~/.cache/segxai``); the report goes to
``./segxai-report/index.html`` unless ``--out`` says otherwise. ``--quick`` uses a small model
and reduced budgets (about a minute including training).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segxai.cli.common import Range, add_common, plain_text, write_json
from segxai.core.errors import SegxaiError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="train/load the built-in model, explain samples, write an HTML report",
        description=plain_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p, out_default="segxai-report")
    p.add_argument("--cache", type=Path, default=None,
                   help="model cache directory (default $SEGXAI_CACHE or ~/.cache/segxai)")
    p.add_argument("--images", type=Range(int, 1), default=4, help="sample images to explain (default %(default)s)")
    p.add_argument("--sections", default=None,
                   help="comma-separated section modules to run (default: all), "
                        "e.g. s00_overview,s10_explainers")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from segxai.report.demo import discover_sections, run_demo

    only = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    if only:  # checked before the model is loaded or anything is written
        names = sorted(m.__name__.rsplit(".", 1)[-1] for m in discover_sections())
        unknown = [o for o in only if o not in names]
        if unknown:
            raise SegxaiError(f"--sections: expected names from {', '.join(names)}, got "
                              f"unknown {', '.join(unknown)}")
    result = run_demo(args.out, quick=args.quick, device=args.device, seed=args.seed,
                      progress=not args.quiet, cache_dir=args.cache, n_images=args.images,
                      only=only)
    write_json(Path(args.out) / "run.json", {
        "index": str(result.index), "seconds": result.seconds,
        "model_seconds": result.model_seconds,
        "sections": [{"title": t, "seconds": s, "ok": ok} for t, s, ok in result.sections],
        "failures": result.failures, "quick": bool(args.quick)})
    if not args.quiet:
        for title, seconds, ok in result.sections:
            print(f"  {'ok    ' if ok else 'FAILED'} {seconds:7.1f} s  {title}")
        print(f"segxai demo: wrote {result.index} in {result.seconds:.1f} s "
              f"(model {result.model_seconds:.1f} s)")
    if result.failures:
        print("segxai demo: failures: " + "; ".join(result.failures))
        return 1
    return 0
