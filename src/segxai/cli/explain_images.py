"""``segxai explain --images``: maps for every image of a folder or glob, resumable and fanned
out over processes or a Ray cluster.

The work is cut into chunks of images × one method (:func:`segxai.core.executor.chunks`);
each task reads its images from the bytes the driver sends (so Ray nodes need no shared
file system), explains them with the same code as a single image (:func:`explain_one`) and
returns the raw maps and the overlay PNGs; the driver writes ``OUT/NAME/METHOD.npy`` and
``OUT/NAME/METHOD.png`` and appends one row per (image, method) to ``OUT/results.jsonl``
through the run store, so a killed run resumes where it stopped. ``OUT/results.csv`` indexes
every map, in image × method order. Each explanation starts from ``torch.manual_seed(seed)``,
so the maps do not depend on the worker or the order.
"""

from __future__ import annotations

import glob
import io
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segxai.core.errors import SegxaiError
from segxai.core.executor import Executor, InProcessExecutor, chunks, worker_state
from segxai.core.progress import ImageProgress
from segxai.core.runstore import RunStore
from segxai.core.target import Score

__all__ = ["IMAGE_EXTENSIONS", "ExplainOptions", "decode_image", "explain_images",
           "explain_one", "list_images", "make_target", "parse_ints"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ROWS = "results"  # OUT/results.jsonl
INDEX_COLUMNS = ("image", "file", "method", "class_index", "roi_pixels", "seconds",
                 "forward_passes", "backward_passes", "npy", "png")


def parse_ints(text: str, option: str, count: int, form: str = "") -> list[int]:
    """``count`` comma-separated integers, else a SegxaiError naming ``option`` (and the
    expected ``form``)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise SegxaiError(f"{option}: expected {count} comma-separated integer(s)"
                          f"{' as ' + form if form else ''}, got {text!r}")
    return values


def list_images(specs: Sequence[str], option: str = "--images") -> list[Path]:
    """The image files named by ``specs``: folders (their image files, sorted), glob patterns
    and files, in order, without repeats.

    Raises:
        SegxaiError: a spec that names nothing, or no image files at all (the message names
            the folder or pattern and the extensions looked for).
    """
    exts = ", ".join(IMAGE_EXTENSIONS)
    files: dict[Path, None] = {}
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            where = f"the folder {path}"
        elif path.is_file():
            found, where = [path], f"the file {path}"
        elif glob.has_magic(spec):
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True)
                           if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS)
            where = f"the pattern {spec!r}"
        else:
            raise SegxaiError(f"{option}: expected a folder, an image file or a glob pattern, "
                              f"got {spec!r}, which does not exist")
        if not found:
            raise SegxaiError(f"{option}: expected image files ({exts}) in {where}, got none")
        files.update(dict.fromkeys(found))
    return list(files)


def image_names(files: Sequence[Path], option: str = "--images") -> list[str]:
    """One output name per file: its path below the files' common folder, without suffix."""
    parents = [str(f.resolve().parent) for f in files]
    root = Path(os.path.commonpath(parents)) if parents else Path(".")
    names: dict[str, Path] = {}
    for f in files:
        name = f.resolve().relative_to(root).with_suffix("").as_posix()
        if name in names:
            raise SegxaiError(f"{option}: expected image files with distinct names, got "
                              f"{names[name]} and {f}")
        names[name] = f
    return list(names)


def check_sizes(files: Sequence[Path], size: int | None, option: str = "--images") -> None:
    """Without ``--size`` every image must have one size (only the headers are read)."""
    if size is not None or len(files) < 2:
        return
    from PIL import Image

    first: tuple[Path, tuple[int, int]] | None = None
    for f in files:
        with Image.open(f) as im:
            wh = im.size
        if first is None:
            first = (f, wh)
        elif wh != first[1]:
            (a, (w0, h0)), (w1, h1) = first, wh
            raise SegxaiError(f"{option}: expected images of one size, got {a} ({w0}x{h0}) and "
                              f"{f} ({w1}x{h1}); pass --size N to resize every image to N x N")


def decode_image(data: bytes, size: int | None, name: str | None = None,
                 option: str = "--image") -> torch.Tensor:
    """Pixels ``(1, 3, H, W)`` in ``[0, 1]`` of an encoded image (resized to ``size``);
    an unreadable, tiny or huge image is a SegxaiError naming ``option`` and ``name``."""
    from segxai.data.folder import read_image

    arr = read_image(data, size or None, what=option, name=name)
    return torch.from_numpy(arr).unsqueeze(0)


def make_target(adapter: Any, x: torch.Tensor, class_index: int | None, roi: str,
                score: Score) -> Any:
    """The target of ``--class``/``--roi``/``--score`` on the model-space image ``x``."""
    import segxai

    h, w = x.shape[-2:]
    cls = class_index
    if cls is None:
        pred = adapter.predict(x)[0]
        counts = torch.bincount(pred.flatten().cpu(), minlength=2)
        counts[0] = 0 if counts[1:].sum() > 0 else counts[0]
        cls = int(counts.argmax())
    if roi in ("class", "largest_component"):
        return segxai.Target.from_prediction(adapter, x, cls, roi=roi, score=score)
    if roi == "whole":
        return segxai.Target.whole_image(cls, size=(h, w), score=score)
    if roi.startswith("box:"):
        box = parse_ints(roi[4:], "--roi", 4, "box:x0,y0,x1,y1")
        if not (0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h):
            raise SegxaiError(f"--roi: expected box:x0,y0,x1,y1 with 0 <= x0 < x1 <= {w} and "
                              f"0 <= y0 < y1 <= {h} (end exclusive), got {roi!r}")
        return segxai.Target.from_box(box, cls, size=(h, w), score=score)
    if roi.startswith("pixel:"):
        pix = parse_ints(roi[6:], "--roi", 2, "pixel:row,col")
        return segxai.Target.from_pixel(pix, cls, size=(h, w), score=score)
    raise SegxaiError(f"--roi: expected class, largest_component, whole, box:... or pixel:..., "
                      f"got {roi!r}")


def _overlay_png(pixels: np.ndarray, shown: torch.Tensor, roi: torch.Tensor, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import segxai

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(segxai.overlay(pixels, shown.cpu()))
    ax.contour(roi.cpu().numpy(), levels=[0.5], colors="white", linewidths=0.8)
    ax.set_title(title)
    ax.axis("off")
    sm = plt.cm.ScalarMappable(cmap="jet", norm=plt.Normalize(float(shown.min()),
                                                              float(shown.max())))
    fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.04)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def explain_one(adapter: Any, x: torch.Tensor, pixels: np.ndarray, target: Any, method: str,
                params: dict[str, Any], top_p: float | None) -> tuple[Any, np.ndarray, bytes]:
    """One method on one image: the Explanation, its raw map ``(H, W)`` and the overlay PNG."""
    import segxai

    exp = segxai.get_explainer(method)(**params)(adapter, x, target)
    shown = exp.thresholded(top_p)[0] if top_p else exp.maps[0]
    png = _overlay_png(pixels, shown, target.roi[0],
                       f"{method} (class {int(target.class_index[0])})")
    return exp, exp.numpy()[0], png


@dataclass
class ExplainOptions:
    """The settings of an ``explain --images`` run (fingerprinted in ``OUT/run.json``)."""

    model: str = "builtin"
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    class_index: int | None = None
    roi: str = "class"
    score: Score = "logit_sum"
    size: int | None = None
    top_p: float | None = None
    seed: int = 0

    def settings(self, methods: Sequence[str]) -> dict[str, Any]:
        return {"model": self.model, "methods": list(methods), "params": self.params,
                "class_index": self.class_index, "roi": self.roi, "score": self.score,
                "size": self.size, "top_p": self.top_p, "seed": self.seed}


@dataclass
class _Shared:
    token: str
    model: Any
    options: ExplainOptions
    device: str


def _worker_adapter(shared: _Shared) -> Any:
    import segxai

    return segxai.adapt(shared.model.to(shared.device))


def explain_chunk(shared: _Shared, item: tuple[str, list[tuple[str, bytes]]]
                  ) -> list[tuple[dict[str, Any], bytes, bytes]]:
    """One method on a chunk of images: ``(row, .npy bytes, .png bytes)`` per image."""
    method, images = item
    opts = shared.options
    adapter = worker_state(shared.token, lambda: _worker_adapter(shared))
    out = []
    for name, data in images:
        pixels = decode_image(data, opts.size, name=name, option="--images")
        x = adapter.from_pixels(pixels).to(shared.device)
        target = make_target(adapter, x, opts.class_index, opts.roi, opts.score)
        torch.manual_seed(opts.seed)
        exp, raw, png = explain_one(adapter, x, pixels[0].permute(1, 2, 0).numpy(), target,
                                    method, opts.params.get(method, {}), opts.top_p)
        buf = io.BytesIO()
        np.save(buf, raw)
        cost = exp.cost.as_dict()
        row = {"image": name, "method": method, "class_index": int(target.class_index[0]),
               "roi_pixels": int(target.roi[0].sum()), "seconds": cost["seconds"],
               "forward_passes": cost["forward_passes"],
               "backward_passes": cost["backward_passes"],
               "npy": f"{name}/{method}.npy", "png": f"{name}/{method}.png"}
        out.append((row, buf.getvalue(), png))
    return out


def explain_images(model: Any, files: Sequence[Path], methods: Sequence[str],
                   options: ExplainOptions, out: Path, *, executor: Executor | None = None,
                   device: str = "cpu", progress: bool = True) -> int:
    """Explain every image in ``files`` with every method into ``out`` (resumable).

    Returns:
        The number of (image, method) maps computed in this call.
    """
    check_sizes(files, options.size)
    names = image_names(files)
    store = RunStore(out, kind="explain", settings=options.settings(methods),
                     mutable=("methods",))
    done = {(str(r["image"]), str(r["method"])): r for r in store.rows(ROWS)}
    executor = executor or InProcessExecutor()
    plan = [(m, chunk) for m in methods
            for chunk in chunks([i for i, n in enumerate(names) if (n, m) not in done],
                                executor.workers)]

    def items() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
        for m, chunk in plan:
            yield m, [(names[i], files[i].read_bytes()) for i in chunk]

    todo = sum(len(c) for _, c in plan)
    bar = ImageProgress(len(names), len(methods), done=len(names) * len(methods) - todo,
                        desc="explain", enabled=progress)
    shared = _Shared(uuid.uuid4().hex, model.cpu() if hasattr(model, "cpu") else model,
                     options, str(device))
    file_of = dict(zip(names, files))
    try:
        for _, results in executor.imap(explain_chunk, shared, items()):
            for row, npy, png in results:
                store.write_bytes(str(row["npy"]), npy)
                store.write_bytes(str(row["png"]), png)
                row["file"] = str(file_of[str(row["image"])])
                store.append_row(ROWS, row)
                done[(str(row["image"]), str(row["method"]))] = row
            bar.update(len(results))
    finally:
        bar.close()
    index = [done[(n, m)] for n in names for m in methods if (n, m) in done]
    store.write_csv("results.csv", index, fieldnames=INDEX_COLUMNS)
    return todo
