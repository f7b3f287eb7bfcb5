"""Load a segmentation dataset from a folder: ``images/NAME.png`` + ``masks/NAME.png``.

Masks are single-channel PNGs of class ids (mode ``L``, ``P`` or ``I``). Class names come from
``class_names``, else from ``ROOT/classes.txt`` (one name per line, id = line number), else
they are ``background, class1, ...`` up to the largest id found.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from segxai.core.errors import SegxaiError
from segxai.data.dataset import SegDataset

__all__ = ["IMAGE_SUFFIXES", "load_folder"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _read_image(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    im: Image.Image
    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0


def _read_mask(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    im: Image.Image
    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16", "1"):
            raise SegxaiError(f"masks: {path.name} has mode {im.mode}; expected a single-channel "
                             "PNG of class ids (mode L, P or I), not a colour image")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.NEAREST)
        return np.asarray(im).astype(np.int64)


def load_folder(root: str | Path, class_names: Sequence[str] | None = None, *,
                size: int | None = None, ignore_index: int | None = 255) -> SegDataset:
    """Read ``root/images/NAME.*`` with ``root/masks/NAME.png`` into a :class:`SegDataset`.

    Args:
        root: the folder holding ``images/`` and ``masks/``.
        class_names: names of the classes (id = position); default from ``root/classes.txt``
            or generic names.
        size: resize every pair to ``size × size`` (bilinear images, nearest masks); ``None``
            requires all images to have the same size.
        ignore_index: a mask value meaning "unlabelled" (kept as is, skipped in losses and
            metrics); ``None`` treats every value as a class id.

    Returns:
        The dataset, samples sorted by name; ``meta["names"]`` lists the names.

    Raises:
        FileNotFoundError: ``root``, ``images/`` or ``masks/`` is missing or empty.
        ValueError: an image without a mask or a mask without an image, an image and mask of
            different sizes, images of different sizes without ``size``, or class ids outside
            the class names.
    """
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (root, img_dir, mask_dir):
        if not d.is_dir():
            raise FileNotFoundError(f"root: expected a folder with images/ and masks/, "
                                    f"{d} does not exist")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise SegxaiError(f"size: expected None or an integer >= 1, got {size!r}")
    images = {p.stem: p for p in sorted(img_dir.iterdir())
              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in sorted(mask_dir.iterdir())
             if p.is_file() and p.suffix.lower() == ".png"}
    if not images:
        raise FileNotFoundError(f"root: no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}")
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask or no_image:
        parts = []
        if no_mask:
            parts.append(f"images without a mask in masks/: {', '.join(no_mask[:10])}")
        if no_image:
            parts.append(f"masks without an image in images/: {', '.join(no_image[:10])}")
        raise SegxaiError(f"root: unpaired files in {root}: " + "; ".join(parts))
    names = sorted(images)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for name in names:
        x = _read_image(images[name], size)
        y = _read_mask(masks[name], size)
        if x.shape[1:] != y.shape:
            raise SegxaiError(f"masks: {masks[name].name} is {y.shape[1]}×{y.shape[0]} but "
                             f"{images[name].name} is {x.shape[2]}×{x.shape[1]} (width×height)")
        if xs and x.shape != xs[0].shape:
            raise SegxaiError(f"images: {images[name].name} is {x.shape[2]}×{x.shape[1]} but "
                             f"{images[names[0]].name} is {xs[0].shape[2]}×{xs[0].shape[1]}; "
                             "pass size=... to resize them all")
        xs.append(x)
        ys.append(y)
    mask_arr = np.stack(ys)
    ids = np.unique(mask_arr)
    if ignore_index is not None:
        ids = ids[ids != ignore_index]
    if class_names is None and (root / "classes.txt").is_file():
        class_names = [line.strip() for line in
                       (root / "classes.txt").read_text(encoding="utf-8").splitlines()
                       if line.strip()]
    if class_names is None:
        k = int(ids.max()) + 1 if ids.size else 1
        class_names = ["background"] + [f"class{i}" for i in range(1, max(k, 2))]
    class_names = [str(c) for c in class_names]
    bad = ids[(ids < 0) | (ids >= len(class_names))]
    if bad.size:
        where = [n for n, y in zip(names, ys) if np.isin(y, bad).any()]
        raise SegxaiError(f"masks: unknown class id(s) {bad.tolist()} (classes are 0-"
                         f"{len(class_names) - 1}: {class_names}) in {', '.join(where[:10])}")
    return SegDataset(torch.from_numpy(np.stack(xs)), torch.from_numpy(mask_arr), class_names,
                      name=root.name or "folder", ignore_index=ignore_index,
                      meta={"root": str(root), "names": names})
