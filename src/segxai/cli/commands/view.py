"""``segxai view``: an interactive viewer in the browser (a local Gradio page).

Pick an image (the built-in samples, the IMAGES given, or an upload), click an object to
explain the predicted class under the pointer (ROI = its connected region) or give a box,
choose methods and parameters, and compare the overlays, deletion/insertion curves and cost;
the maps (PNG, NPY) and a JSON record can be downloaded. The page binds to 127.0.0.1 unless
--host says otherwise. Needs the optional extra: pip install 'segxai[viewer]'.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segxai.cli.common import Range, plain_text
from segxai.cli.grammar import (
    add_method_options,
    add_model_options,
    registered_explainers,
    resolve_methods,
)
from segxai.core.errors import SegxaiError

DEFAULT_METHOD = "seg-grad-cam"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="explore explanations interactively in the browser",
                       description=plain_text(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="image files or folders (default: the built-in samples)")
    add_model_options(p, what="the model to explain")
    add_method_options(p, choices=registered_explainers(), default=DEFAULT_METHOD, params=False)
    p.add_argument("--size", type=Range(int, 8), default=None,
                   help="resize every image to SIZE x SIZE (e.g. 256 for a fixed-size network)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    p.add_argument("--port", type=Range(int, 1, 65535), default=7860,
                   help="port (default %(default)s)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the downloadable files (default: a temporary folder)")
    p.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="the quick built-in model")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise SegxaiError("view: expected the optional dependency gradio, got it missing; "
                          "install it with pip install 'segxai[viewer]'") from None
    from segxai.viewer import (
        ViewerApp,
        builtin_samples,
        images_from_paths,
        launch,
        load_viewer_model,
    )

    if not 0 <= args.port < 65536:
        raise SegxaiError(f"--port: expected 0..65535, got {args.port}")
    methods = resolve_methods(args.method, choices=registered_explainers(),
                              default=[DEFAULT_METHOD])
    images = (images_from_paths(args.images, args.size) if args.images
              else builtin_samples(args.size))
    model = load_viewer_model(args.model, weights=args.weights, num_classes=args.num_classes,
                              size=args.size, device=args.device, quick=args.quick,
                              progress=not args.quiet)
    viewer = ViewerApp(model, images, out_dir=args.out, methods=methods)
    if not args.quiet:
        print(f"segxai view: http://{args.host}:{args.port} (Ctrl+C stops)")
    launch(viewer, host=args.host, port=args.port, block=True, quiet=args.quiet)
    return 0
