"""Synthetic segmentation data generated deterministically from a seed (no downloads).

``shapes``: 1-4 objects (disc, square, triangle, ring) on a textured, noisy RGB background.
Objects sit in the cells of a 2×2 grid (with jitter, so neighbours may touch or overlap a
little); shape, size, rotation and colour are random, so the class is given by the *shape*
alone, never by the colour.

``context-bias``: the same scenes, but one class (the *bias class*) is accompanied, with
probability ``bias_prob``, by a *cue*: a checkerboard tile of a fixed colour pair in a free
grid cell beside it (sharing an edge with the object's cell). The cue is labelled background;
it is context that predicts the class. The unbiased split never contains the cue. This follows
the design of the TextureMNIST benchmark of Grid Saliency (Hoyer et al., NeurIPS 2019), where
a bias texture fills one background tile of a biased digit; each sample also carries the
object, context and cue masks as ground truth for context explanations and bias detection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from segxai.core.errors import SegxaiError
from segxai.data.dataset import SegDataset

__all__ = [
    "CUE_COLOURS",
    "RADIUS",
    "SHAPES_CLASSES",
    "ContextBiasDataset",
    "make_context_bias",
    "make_shapes",
]

SHAPES_CLASSES: list[str] = ["background", "disc", "square", "triangle", "ring"]
CUE_COLOURS: tuple[tuple[float, float, float], tuple[float, float, float]] = (
    (1.0, 0.85, 0.0), (0.1, 0.1, 0.9))
"""The two colours of the context-bias cue's checkerboard (pixel space)."""

RADIUS: tuple[float, float] = (0.10, 0.17)
"""Default range of the object radius as a fraction of the image size."""
_GRID = 2  # objects live in the cells of a 2×2 grid
_ADJACENT = {0: (1, 2), 1: (0, 3), 2: (0, 3), 3: (1, 2)}  # cells sharing an edge (row-major)


# ---------------------------------------------------------------------------- validation
def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SegxaiError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_prob(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise SegxaiError(f"{name}: expected a probability in [0, 1], got {value!r}")
    return float(value)


def _check_radius(radius: object) -> tuple[float, float]:
    try:
        # a non-iterable radius raises TypeError, turned into the SegxaiError below
        lo, hi = (float(r) for r in cast(Iterable[Any], radius))
    except (TypeError, ValueError):
        raise SegxaiError(f"radius: expected (low, high) fractions of the size, got {radius!r}") \
            from None
    if not 0 < lo <= hi <= 0.25:
        raise SegxaiError(f"radius: expected 0 < low <= high <= 0.25, got {radius!r}")
    return lo, hi


def _check_scene(n: object, size: object, min_size: int, min_objects: object,
                 max_objects: object, noise: object) -> tuple[int, int, int, int]:
    """The common arguments of the scene generators, checked: ``(n, size, min, max)``."""
    n = _check_int(n, "n", 1)
    size = _check_int(size, "size", min_size)
    min_objects = _check_int(min_objects, "min_objects", 1)
    max_objects = _check_int(max_objects, "max_objects", min_objects)
    if max_objects > _GRID * _GRID:
        raise SegxaiError(f"max_objects: expected at most {_GRID * _GRID}, got {max_objects}")
    if not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise SegxaiError(f"noise: expected a number in [0, 1], got {noise!r}")
    return n, size, min_objects, max_objects


def _class_ids(classes: Sequence[str | int] | None) -> np.ndarray:
    if classes is None:
        return np.arange(1, len(SHAPES_CLASSES))
    ids = []
    for c in classes:
        if isinstance(c, str):
            if c not in SHAPES_CLASSES[1:]:
                raise SegxaiError(f"classes: unknown shape {c!r}; expected names from "
                                 f"{SHAPES_CLASSES[1:]} or ids 1-{len(SHAPES_CLASSES) - 1}")
            ids.append(SHAPES_CLASSES.index(c))
        elif isinstance(c, (int, np.integer)) and 1 <= int(c) < len(SHAPES_CLASSES):
            ids.append(int(c))
        else:
            raise SegxaiError(f"classes: expected shape names or ids 1-{len(SHAPES_CLASSES) - 1},"
                             f" got {c!r}")
    if not ids:
        raise SegxaiError("classes: expected at least one shape class")
    return np.array(sorted(set(ids)))


# ---------------------------------------------------------------------------- layout
@dataclass
class _Layout:
    """Per-image object slots: class id (0 = empty), grid cell, and the cue cell (-1 = none)."""

    cls: np.ndarray  # (n, 4) int
    cell: np.ndarray  # (n, 4) int
    cue_cell: np.ndarray  # (n,) int


def _draw_layout(rng: np.random.Generator, n: int, class_ids: np.ndarray, min_objects: int,
                 max_objects: int) -> _Layout:
    counts = rng.integers(min_objects, max_objects + 1, size=n)
    cells = np.argsort(rng.random((n, _GRID * _GRID)), axis=1)
    cls = class_ids[rng.integers(0, len(class_ids), size=(n, _GRID * _GRID))]
    cls = np.where(np.arange(_GRID * _GRID)[None, :] < counts[:, None], cls, 0)
    return _Layout(cls=cls, cell=cells, cue_cell=np.full(n, -1))


def _place_cues(rng: np.random.Generator, layout: _Layout, bias_class: int, bias_prob: float,
                cue_elsewhere_prob: float) -> None:
    """Put the cue beside a bias-class object with probability ``bias_prob`` (and in a free cell
    of an image without the class with probability ``cue_elsewhere_prob``)."""
    n: int = layout.cls.shape[0]
    u = rng.random(n)
    pick = rng.random(n)
    for i in range(n):
        present = layout.cls[i] > 0
        occupied = set(layout.cell[i][present].tolist())
        free = [c for c in range(_GRID * _GRID) if c not in occupied]
        has_bias = bool((layout.cls[i] == bias_class).any())
        if has_bias and u[i] < bias_prob:
            slot = int(np.flatnonzero(layout.cls[i] == bias_class)[0])
            bias_cell = int(layout.cell[i, slot])
            options = [c for c in free if c in _ADJACENT[bias_cell]]
            if not options:
                # the only free cell is diagonal: move the bias object next to it (swap cells)
                target = free[0]
                swap_cell = _ADJACENT[target][int(pick[i] * 2)]
                other = int(np.flatnonzero(layout.cell[i] == swap_cell)[0])
                layout.cell[i, slot], layout.cell[i, other] = swap_cell, bias_cell
                options = [target]
            layout.cue_cell[i] = options[int(pick[i] * len(options))]
        elif not has_bias and free and u[i] < cue_elsewhere_prob:
            layout.cue_cell[i] = free[int(pick[i] * len(free))]


# ---------------------------------------------------------------------------- rendering
def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(size, dtype=np.float32) + 0.5
    return c[None, :, None], c[None, None, :]  # yy (1,H,1), xx (1,1,W)


def _background(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    base = rng.uniform(0.1, 0.9, size=(n, 3)).astype(np.float32)
    yy, xx = _coords(size)
    img = np.broadcast_to(base[:, :, None, None], (n, 3, size, size)).copy()
    # two oriented sinusoidal gratings of random colour: a coarse one (2-6 cycles per image)
    # and a fine one (8-14 cycles), so that the background is textured at every scale while
    # objects are flat
    for cycles, amps in (((2.0, 6.0), (0.0, 0.10)), ((8.0, 14.0), (0.05, 0.12))):
        theta = rng.uniform(0, np.pi, size=n).astype(np.float32)[:, None, None]
        freq = rng.uniform(*cycles, size=n).astype(np.float32)[:, None, None] / size
        phase = rng.uniform(0, 2 * np.pi, size=n).astype(np.float32)[:, None, None]
        amp = rng.uniform(*amps, size=n).astype(np.float32)
        direction = rng.normal(size=(n, 3)).astype(np.float32)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True) + 1e-6
        wave = np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
        img += (amp[:, None] * direction)[:, :, None, None] * wave[:, None]
    return img, base


def _shape_masks(kind: np.ndarray, cy: np.ndarray, cx: np.ndarray, r: np.ndarray,
                 theta: np.ndarray, size: int) -> np.ndarray:
    """Boolean masks (n, H, W) of one object per image; ``kind`` holds class ids (0 = none)."""
    yy, xx = _coords(size)
    dy = yy - cy[:, None, None]
    dx = xx - cx[:, None, None]
    rr = r[:, None, None]
    th = theta[:, None, None]
    dist2 = dx * dx + dy * dy
    disc = dist2 <= rr * rr
    u = dx * np.cos(th) + dy * np.sin(th)
    v = -dx * np.sin(th) + dy * np.cos(th)
    half = 0.85 * rr
    square = (np.abs(u) <= half) & (np.abs(v) <= half)
    circum = 1.3 * rr  # equilateral triangle: inside all three half-planes at the inradius
    tri = np.ones_like(disc)
    for j in range(3):
        a = th + 2 * np.pi * j / 3
        tri &= (dx * np.cos(a) + dy * np.sin(a)) <= circum / 2
    ring = disc & (dist2 >= (0.5 * rr) ** 2)
    k = kind[:, None, None]
    return ((k == 1) & disc) | ((k == 2) & square) | ((k == 3) & tri) | ((k == 4) & ring)


def _render(rng: np.random.Generator, layout: _Layout, size: int, noise: float,
            radius_range: tuple[float, float] = (0.10, 0.17), chunk: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, slots = layout.cls.shape
    cell = size / _GRID
    # all random draws up front (independent of chunking)
    radius = rng.uniform(radius_range[0], radius_range[1], size=(n, slots)).astype(np.float32) * size
    jitter = rng.uniform(0.3, 0.7, size=(n, slots, 2)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi, size=(n, slots)).astype(np.float32)
    delta = rng.uniform(0.3, 0.55, size=(n, slots, 3)).astype(np.float32)
    cue_jitter = rng.uniform(-0.08, 0.08, size=(n, 2)).astype(np.float32)
    bg_seeds = rng.integers(0, 2**31 - 1, size=(n + chunk - 1) // chunk)
    noise_seeds = rng.integers(0, 2**31 - 1, size=(n + chunk - 1) // chunk)

    images = np.empty((n, 3, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=np.int64)
    cues = np.zeros((n, size, size), dtype=bool)
    yy, xx = _coords(size)
    for ci, start in enumerate(range(0, n, chunk)):
        sl = slice(start, min(n, start + chunk))
        m = sl.stop - sl.start
        img, base = _background(np.random.default_rng(bg_seeds[ci]), m, size)
        lab = np.zeros((m, size, size), dtype=np.int64)
        # cue tile (drawn first: objects never overlap it, it sits in a free cell)
        cc = layout.cue_cell[sl]
        has = cc >= 0
        if has.any():
            row, col = np.where(has, cc // _GRID, 0), np.where(has, cc % _GRID, 0)
            cy: np.ndarray = (row + 0.5 + cue_jitter[sl, 0]) * cell
            cx: np.ndarray = (col + 0.5 + cue_jitter[sl, 1]) * cell
            half = 0.32 * cell
            inside = ((np.abs(yy - cy[:, None, None]) <= half)
                      & (np.abs(xx - cx[:, None, None]) <= half) & has[:, None, None])
            period = max(2, size // 16)
            checker = ((np.floor(yy / period) + np.floor(xx / period)) % 2 == 0)
            checker = np.broadcast_to(checker, inside.shape)
            c0 = np.array(CUE_COLOURS[0], dtype=np.float32)[None, :, None, None]
            c1 = np.array(CUE_COLOURS[1], dtype=np.float32)[None, :, None, None]
            tile = np.where(checker[:, None], c0, c1)
            img = np.where(inside[:, None], tile, img)
            cues[sl] = inside
        for s in range(slots):
            kind = layout.cls[sl, s]
            if not (kind > 0).any():
                continue
            cel = layout.cell[sl, s]
            cy = (cel // _GRID + jitter[sl, s, 0]) * cell
            cx = (cel % _GRID + jitter[sl, s, 1]) * cell
            shape = _shape_masks(kind, cy, cx, radius[sl, s], theta[sl, s], size)
            colour = np.where(base < 0.5, base + delta[sl, s], base - delta[sl, s])
            img = np.where(shape[:, None], colour[:, :, None, None], img)
            lab = np.where(shape, kind[:, None, None], lab)
        img += np.random.default_rng(noise_seeds[ci]).normal(
            0.0, noise, size=img.shape).astype(np.float32)
        images[sl] = np.clip(img, 0.0, 1.0)
        masks[sl] = lab
        cues[sl] &= lab == 0  # an object drawn over the tile's edge hides that part of the cue
    return images, masks, cues


# ---------------------------------------------------------------------------- public API
def make_shapes(n: int, size: int = 64, seed: int = 0, *, min_objects: int = 1,
                max_objects: int = 4, classes: Sequence[str | int] | None = None,
                noise: float = 0.04, radius: tuple[float, float] = RADIUS) -> SegDataset:
    """The ``shapes`` dataset: shapes of four classes on textured, noisy backgrounds.

    Args:
        n: number of images.
        size: height = width in pixels (>= 16).
        seed: the dataset is a deterministic function of all arguments.
        min_objects: fewest objects per image (>= 1).
        max_objects: most objects per image (<= 4, one per cell of a 2×2 grid).
        classes: shape classes that may appear (names or ids; default all four). Class ids
            always follow :data:`SHAPES_CLASSES`.
        noise: standard deviation of the per-pixel Gaussian noise.
        radius: range of the object radius as a fraction of ``size`` (within ``(0, 0.25]``).

    Returns:
        A :class:`SegDataset` with ``class_names == SHAPES_CLASSES``.

    Example:
        >>> ds = make_shapes(4, size=32, seed=1)
        >>> tuple(ds.images.shape), ds.masks.dtype, int(ds.masks.max()) <= 4
        ((4, 3, 32, 32), torch.int64, True)
    """
    n, size, min_objects, max_objects = _check_scene(n, size, 16, min_objects, max_objects,
                                                     noise)
    ids = _class_ids(classes)
    radius = _check_radius(radius)
    rng = np.random.default_rng([int(seed), 1])
    layout = _draw_layout(rng, n, ids, min_objects, max_objects)
    images, masks, _ = _render(rng, layout, size, float(noise), radius)
    meta = {"generator": "shapes", "n": n, "size": size, "seed": int(seed),
            "min_objects": min_objects, "max_objects": max_objects,
            "classes": [int(i) for i in ids], "noise": float(noise), "radius": list(radius)}
    return SegDataset(torch.from_numpy(images), torch.from_numpy(masks), list(SHAPES_CLASSES),
                      name="shapes", meta=meta)


@dataclass(repr=False)
class ContextBiasDataset(SegDataset):
    """A :class:`SegDataset` with the ground truth of the context-bias benchmark.

    Attributes:
        object_masks: ``(N, H, W)`` bool, pixels of any object (``masks > 0``).
        context_masks: ``(N, H, W)`` bool, everything that is not an object (includes the cue).
        cue_masks: ``(N, H, W)`` bool, pixels of the cue tile (all False where absent).
        is_biased: ``(N,)`` bool, the image shows the cue.
        bias_class: class id that co-occurs with the cue.
        bias_prob: probability of the cue in an image that contains the bias class.
    """

    object_masks: Tensor | None = None
    context_masks: Tensor | None = None
    cue_masks: Tensor | None = None
    is_biased: Tensor | None = None
    bias_class: int = 3
    bias_prob: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        n, h, w = self.masks.shape
        for name in ("object_masks", "context_masks", "cue_masks"):
            v = getattr(self, name)
            if not isinstance(v, Tensor) or tuple(v.shape) != (n, h, w):
                raise SegxaiError(f"{name}: expected a bool tensor of shape {(n, h, w)}")
            setattr(self, name, v.bool())
        if not isinstance(self.is_biased, Tensor) or tuple(self.is_biased.shape) != (n,):
            raise SegxaiError(f"is_biased: expected a bool tensor of shape ({n},)")
        self.is_biased = self.is_biased.bool()


def make_context_bias(n: int, size: int = 64, seed: int = 0, *,
                      bias_class: str | int = "triangle", bias_prob: float = 0.9,
                      unbiased: bool = False, cue_removed: bool = False,
                      cue_elsewhere_prob: float = 0.0,
                      min_objects: int = 1, max_objects: int = 3, noise: float = 0.04,
                      radius: tuple[float, float] = RADIUS) -> ContextBiasDataset:
    """The ``context-bias`` dataset: ``shapes`` where one class co-occurs with a context cue.

    Args:
        n: number of images.
        size: height = width in pixels (>= 16).
        seed: the dataset is a deterministic function of all arguments.
        bias_class: the class (name or id) the cue accompanies.
        bias_prob: probability that an image containing ``bias_class`` shows the cue in a grid
            cell beside the object.
        unbiased: the unbiased (test) split: the cue never appears.
        cue_removed: the same images as with ``cue_removed=False`` (same objects, background
            and noise) but with the cue tile left out: the paired counterfactual that
            isolates the cue's effect (:func:`segxai.evaluate.bias_sanity`).
        cue_elsewhere_prob: probability of the cue in an image *without* the bias class (0 =
            an exclusive, strong bias).
        min_objects: fewest objects per image (>= 1).
        max_objects: most objects per image (<= 3, so that a cell is free for the cue).
        noise: standard deviation of the per-pixel Gaussian noise.
        radius: range of the object radius as a fraction of ``size``.

    Returns:
        A :class:`ContextBiasDataset`.

    Example:
        >>> ds = make_context_bias(8, size=32, seed=0, bias_prob=1.0)
        >>> bool((ds.cue_masks & ds.object_masks).any())
        False
    """
    n = _check_int(n, "n", 1)
    size = _check_int(size, "size", 16)
    min_objects = _check_int(min_objects, "min_objects", 1)
    max_objects = _check_int(max_objects, "max_objects", min_objects)
    if max_objects > _GRID * _GRID - 1:
        raise SegxaiError(f"max_objects: expected at most {_GRID * _GRID - 1} (a cell must stay "
                         f"free for the cue), got {max_objects}")
    bias_prob = _check_prob(bias_prob, "bias_prob")
    cue_elsewhere_prob = _check_prob(cue_elsewhere_prob, "cue_elsewhere_prob")
    if not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
        raise SegxaiError(f"noise: expected a number in [0, 1], got {noise!r}")
    bias_id = int(_class_ids([bias_class])[0])
    radius = _check_radius(radius)
    rng = np.random.default_rng([int(seed), 2, int(bool(unbiased))])
    layout = _draw_layout(rng, n, _class_ids(None), min_objects, max_objects)
    if not unbiased:
        _place_cues(rng, layout, bias_id, bias_prob, cue_elsewhere_prob)
        if cue_removed:  # same draws as the biased images, the tile just not painted
            layout.cue_cell[:] = -1
    images, masks, cues = _render(rng, layout, size, float(noise), radius)
    masks_t = torch.from_numpy(masks)
    obj = masks_t > 0
    cue_t = torch.from_numpy(cues)
    meta = {"generator": "context-bias", "n": n, "size": size, "seed": int(seed),
            "bias_class": bias_id, "bias_prob": bias_prob, "unbiased": bool(unbiased),
            "cue_removed": bool(cue_removed),
            "cue_elsewhere_prob": cue_elsewhere_prob, "min_objects": min_objects,
            "max_objects": max_objects, "noise": float(noise), "radius": list(radius)}
    return ContextBiasDataset(
        torch.from_numpy(images), masks_t, list(SHAPES_CLASSES), name="context-bias",
        meta=meta, object_masks=obj, context_masks=~obj, cue_masks=cue_t,
        is_biased=cue_t.flatten(1).any(dim=1), bias_class=bias_id, bias_prob=bias_prob)
