"""Load a segmentation dataset from a folder: ``images/NAME.png`` + ``masks/NAME.png``.

Masks are single-channel PNGs of class ids (mode ``L``, ``P`` or ``I``). Class names come from
``class_names``, else from ``ROOT/classes.txt`` (one name per line, id = line number), else
they are ``background, class1, ...`` up to the largest id found.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segxai.core.errors import SegxaiError, SegxaiFileNotFoundError
from segxai.data.dataset import SegDataset

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "MIN_IMAGE_SIDE", "load_folder", "read_image",
           "read_mask"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


#: smallest image side accepted (smaller images cannot hold a segmentation worth explaining)
MIN_IMAGE_SIDE = 8
#: largest image accepted, in pixels (a guard against decompression bombs: a small file that
#: would decode to gigabytes); PIL's own default limit
MAX_IMAGE_PIXELS = 89_478_485
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _open(path: Path | bytes, what: str, *, decode: bool = True,
          name: str | None = None) -> Any:
    """Open a file (or encoded ``bytes`` called ``name``) with PIL, checked: readable, not a
    decompression bomb and (with ``decode``) fully decodable."""
    import io
    import warnings

    from PIL import Image

    if isinstance(path, bytes):
        data: bytes | None = path
        path = Path(name or "<image bytes>")
    else:
        data = None
        if not path.is_file():
            raise SegxaiError(f"{what}: expected an image file, got missing file {str(path)!r}")
    if (len(data) if data is not None else path.stat().st_size) == 0:
        raise SegxaiError(f"{what}: expected an image file, got the empty file {str(path)!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data) if data is not None else path)
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            im.close()
            raise SegxaiError(f"{what}: expected an image of at most {MAX_IMAGE_PIXELS} pixels, "
                              f"got {w}×{h} in {str(path)!r} (a decompression bomb?)")
        if decode:
            im.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SegxaiError(f"{what}: expected an image of at most {MAX_IMAGE_PIXELS} pixels, "
                          f"got a larger one in {str(path)!r} ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, SegxaiError):
            raise
        raise SegxaiError(f"{what}: expected a readable image file (PNG, JPEG, BMP, TIFF), got "
                          f"{str(path)!r} which cannot be decoded ({exc})") from None
    return im


def _check_side(im: Any, path: Path, what: str) -> None:
    w, h = im.size
    if min(w, h) < MIN_IMAGE_SIDE:
        raise SegxaiError(f"{what}: expected an image of at least {MIN_IMAGE_SIDE}×"
                          f"{MIN_IMAGE_SIDE} pixels, got {w}×{h} in {str(path)!r}")


def _to_rgb(im: Any) -> Any:
    """Any PIL mode as a PIL ``RGB`` image (the common case, unchanged by PIL's conversion)
    or, where that conversion would lose information, an ``H×W×3`` float32 array in
    ``[0, 1]``: 16-bit images scaled by 65535 (not clipped at 255) and transparent pixels
    composited over black (colour × alpha)."""
    if im.mode in _SIXTEEN_BIT:
        arr = np.asarray(im, dtype=np.float64)
        top = 255.0 if im.mode == "I" and arr.max() <= 255 else 65535.0
        gray = np.clip(arr / top, 0.0, 1.0).astype(np.float32)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode == "F":
        gray = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if "transparency" in im.info or im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        return rgba[:, :, :3] * rgba[:, :, 3:4]
    return im.convert("RGB")


def read_image(path: str | Path | bytes, size: int | None = None, *, what: str = "image",
               name: str | None = None) -> np.ndarray:
    """Read an image file (or its encoded bytes) as a ``3×H×W`` float32 array in ``[0, 1]``.

    Grayscale and palette images become RGB; 16-bit images are scaled by 65535; transparent
    pixels are composited over black.

    Args:
        path: the image file.
        size: resize to ``size × size`` (bilinear) after reading; ``None`` keeps the size.
        what: the argument or option named in error messages.
        name: the file name shown in error messages when ``path`` is bytes.

    Raises:
        SegxaiError: the file is missing, empty, not a decodable image, larger than
            :data:`MAX_IMAGE_PIXELS` or smaller than :data:`MIN_IMAGE_SIDE` per side (each
            message names the file).
    """
    from PIL import Image

    source = path if isinstance(path, bytes) else Path(path)
    shown = Path(name or "<image bytes>") if isinstance(path, bytes) else Path(path)
    im = _open(source, what, name=name)
    with im:
        _check_side(im, shown, what)
        rgb = _to_rgb(im)
    if isinstance(rgb, np.ndarray):
        if size is not None and rgb.shape[:2] != (size, size):
            rgb = np.stack([np.asarray(Image.fromarray(rgb[:, :, c], mode="F")
                                       .resize((size, size), Image.Resampling.BILINEAR))
                            for c in range(3)], axis=2)
        return np.ascontiguousarray(np.clip(rgb, 0.0, 1.0).transpose(2, 0, 1), np.float32)
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0


def read_mask(path: str | Path, size: int | None = None, *,
              what: str = "masks") -> np.ndarray:
    """Read a mask file of class ids (single channel: mode ``L``, ``P``, ``I`` or ``1``) as an
    ``H×W`` int64 array, resized to ``size × size`` (nearest) if given.

    Raises:
        SegxaiError: the file is missing, empty, not decodable, too large, or a colour image.
    """
    from PIL import Image

    path = Path(path)
    im = _open(path, what)
    with im:
        if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
            raise SegxaiError(f"{what}: {path.name} has mode {im.mode}; expected a "
                              "single-channel PNG of class ids (mode L, P or I), not a colour "
                              "image")
        if size is not None and im.size != (size, size):
            return np.asarray(im.resize((size, size), Image.Resampling.NEAREST)).astype(np.int64)
        return np.asarray(im).astype(np.int64)


def _image_size(path: Path, what: str) -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header."""
    im = _open(path, what, decode=False)
    with im:
        return im.size


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
        SegxaiFileNotFoundError: ``root``, ``images/`` or ``masks/`` is missing or empty
            (also a ``FileNotFoundError``).
        SegxaiError: a file that is not a readable image (naming it), an image without a mask or a mask without an image, an image and mask of
            different sizes, images of different sizes without ``size``, or class ids outside
            the class names.
    """
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (root, img_dir, mask_dir):
        if not d.is_dir():
            raise SegxaiFileNotFoundError(f"root: expected a folder with images/ and masks/, "
                                    f"{d} does not exist")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise SegxaiError(f"size: expected None or an integer >= 1, got {size!r}")
    images = {p.stem: p for p in sorted(img_dir.iterdir())
              if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in sorted(mask_dir.iterdir())
             if p.is_file() and p.suffix.lower() == ".png"}
    if not images:
        raise SegxaiFileNotFoundError(f"root: no images ({', '.join(IMAGE_SUFFIXES)}) in {img_dir}")
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
        image_wh, mask_wh = _image_size(images[name], "images"), _image_size(masks[name], "masks")
        if image_wh != mask_wh:  # checked before any resize, like train's folders
            raise SegxaiError(f"masks: {masks[name].name} is {mask_wh[0]}×{mask_wh[1]} but "
                              f"{images[name].name} is {image_wh[0]}×{image_wh[1]} "
                              "(width×height); expected a mask of its image's size")
        x = read_image(images[name], size, what="images")
        y = read_mask(masks[name], size)
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
