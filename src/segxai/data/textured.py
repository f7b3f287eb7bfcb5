"""``textured-shapes``: a harder synthetic set with 16 foreground classes (shape × fill).

Four shapes (disc, square, triangle, ring, as in ``shapes``) times four fills (solid, stripes,
checker, dots): the class of an object is the pair, so a model must see both its outline and
its texture, and a compressed (downsampled) copy can lose the fill. Up to four objects sit in
the cells of a 2×2 grid on the textured background of ``shapes``; stripe angle, pattern
period, colours, size and rotation are random. Generated deterministically from a seed; the
default ``shapes`` set is unchanged. Default 128×128 pixels (the continual study's harder
protocol, docs/continual.md).
"""

from __future__ import annotations

import numpy as np
import torch

from segxai.data.dataset import SegDataset
from segxai.data.synthetic import (
    _GRID,
    SHAPES_CLASSES,
    _background,
    _check_scene,
    _coords,
    _draw_layout,
    _shape_masks,
)

__all__ = ["FILLS", "TEXTURED_CLASSES", "make_textured_shapes"]

FILLS: list[str] = ["solid", "stripes", "checker", "dots"]
TEXTURED_CLASSES: list[str] = ["background", *(f"{s}-{f}" for s in SHAPES_CLASSES[1:]
                                               for f in FILLS)]
"""Class names: ``background``, then ``disc-solid, disc-stripes, …, ring-dots`` (id =
``4 · (shape − 1) + fill + 1``)."""


def _fill_pattern(fill: np.ndarray, theta: np.ndarray, period: np.ndarray,
                  size: int) -> np.ndarray:
    """``(n, H, W)`` bool: where the fill shows its second colour (never for ``solid``)."""
    yy, xx = _coords(size)
    th, p = theta[:, None, None], period[:, None, None]
    u = xx * np.cos(th) + yy * np.sin(th)
    v = -xx * np.sin(th) + yy * np.cos(th)
    stripes = np.floor(u / p) % 2 == 0
    checker = (np.floor(u / p) + np.floor(v / p)) % 2 == 0
    du, dv = (u / p) % 2 - 1, (v / p) % 2 - 1
    dots = du * du + dv * dv <= 0.35
    f = fill[:, None, None]
    return ((f == 1) & stripes) | ((f == 2) & checker) | ((f == 3) & dots)


def make_textured_shapes(n: int, size: int = 128, seed: int = 0, *, min_objects: int = 1,
                         max_objects: int = 4, noise: float = 0.03) -> SegDataset:
    """The ``textured-shapes`` dataset (16 foreground classes: shape × fill).

    Args:
        n: number of images.
        size: height = width in pixels (>= 32).
        seed: the dataset is a deterministic function of all arguments.
        min_objects: fewest objects per image (>= 1).
        max_objects: most objects per image (<= 4).
        noise: standard deviation of the per-pixel Gaussian noise, in [0, 1].

    Returns:
        A :class:`SegDataset` with ``class_names == TEXTURED_CLASSES``.

    Example:
        >>> ds = make_textured_shapes(2, size=32, seed=1)
        >>> tuple(ds.images.shape), int(ds.masks.max()) <= 16
        ((2, 3, 32, 32), True)
    """
    n, size, min_objects, max_objects = _check_scene(n, size, 32, min_objects, max_objects,
                                                     noise)
    rng = np.random.default_rng([int(seed), 7])
    layout = _draw_layout(rng, n, np.arange(1, len(TEXTURED_CLASSES)), min_objects,
                          max_objects)
    slots = layout.cls.shape[1]
    cell = size / _GRID
    radius = rng.uniform(0.13, 0.2, size=(n, slots)).astype(np.float32) * size
    jitter = rng.uniform(0.35, 0.65, size=(n, slots, 2)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi, size=(n, slots)).astype(np.float32)
    pattern_theta = rng.uniform(0, np.pi, size=(n, slots)).astype(np.float32)
    period = rng.uniform(0.035, 0.05, size=(n, slots)).astype(np.float32) * size
    delta = rng.uniform(0.3, 0.55, size=(n, slots, 3)).astype(np.float32)
    contrast = rng.uniform(0.25, 0.4, size=(n, slots)).astype(np.float32)
    img, base = _background(rng, n, size)
    lab = np.zeros((n, size, size), dtype=np.int64)
    for s in range(slots):
        cls = layout.cls[:, s]
        shape_id = np.where(cls > 0, (cls - 1) // len(FILLS) + 1, 0)
        fill = np.where(cls > 0, (cls - 1) % len(FILLS), 0)
        cel = layout.cell[:, s]
        cy = (cel // _GRID + jitter[:, s, 0]) * cell
        cx = (cel % _GRID + jitter[:, s, 1]) * cell
        shape = _shape_masks(shape_id, cy, cx, radius[:, s], theta[:, s], size)
        colour = np.where(base < 0.5, base + delta[:, s], base - delta[:, s])
        second = np.clip(colour - np.sign(colour - 0.5) * contrast[:, s, None], 0.0, 1.0)
        pattern = _fill_pattern(fill, pattern_theta[:, s], period[:, s], size)
        obj = np.where(pattern[:, None], second[:, :, None, None], colour[:, :, None, None])
        img = np.where(shape[:, None], obj, img)
        lab = np.where(shape, cls[:, None, None], lab)
    img += rng.normal(0.0, noise, size=img.shape).astype(np.float32)
    meta = {"generator": "textured-shapes", "n": n, "size": size, "seed": int(seed),
            "min_objects": min_objects, "max_objects": max_objects, "noise": float(noise)}
    return SegDataset(torch.from_numpy(np.clip(img, 0.0, 1.0).astype(np.float32)),
                      torch.from_numpy(lab), list(TEXTURED_CLASSES), name="textured-shapes",
                      meta=meta)
