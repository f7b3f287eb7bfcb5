"""Exemplar compressors for replay memories: full, downsampled, saliency patch, saliency box.

Every compressor turns one training example (a ``uint8`` image ``(3, H, W)`` and a ``uint8``
label mask ``(H, W)``) into a dictionary of **real** ``uint8``/``uint16`` arrays, the only
thing a memory keeps; its size is the sum of the arrays' ``nbytes``. :func:`reconstruct` turns
the arrays back into a full-size image and mask for replay.

Strategies (research notes part B):

* ``full``: the whole image and mask (experience replay, ER).
* ``downsample``: the whole image and mask at ``1/√r`` per side (nearest neighbour), upsampled
  (nearest) at replay.
* ``saliency-patch`` (EPR-like, Saha & Roy 2023): the ``p × p`` window with the largest mean
  saliency (stride 1) at full resolution, plus its top-left corner; replayed on a zero canvas
  whose label is ``255`` (ignore) outside the patch.
* ``saliency-box`` (CIM-like, Luo et al. CVPR 2023): the tight box around the pixels whose
  min-max-normalised saliency exceeds ``τ`` at full resolution, plus the rest of the example
  at ``1/√r`` per side (nearest; only the low pixels visible outside the box are stored), so
  an exemplar costs CIM's ``a + (1 − a)/r`` full exemplars (:mod:`segxai.continual.cim`);
  replay pastes the box back onto the nearest-upsampled rest. When that would reach 1 the
  box is widened to the whole image (stored once, no low copy).
* Controls with the same storage: ``prob-box`` (box from the model's class-probability map
  instead of the CAM), ``gt-box`` (tight box of the class in the ground truth) and
  ``random-box`` (the saliency box's size at a random place).

Masks are only ever resampled by nearest neighbour, so they never hold interpolated class ids.
Every exemplar also stores ``meta`` (``uint16``: task, class, then the coordinates), which is
counted in its bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segxai.continual.cim import box_exemplar, box_of_mask, random_box, reconstruct_box
from segxai.continual.resample import low_size, nearest_resize
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.postprocess import minmax

__all__ = [
    "BOX_STRATEGIES",
    "COMPRESSED_STRATEGIES",
    "SALIENCY_STRATEGIES",
    "STRATEGIES",
    "compress",
    "exemplar_nbytes",
    "low_size",
    "nearest_resize",
    "reconstruct",
    "saliency_box",
    "saliency_patch",
    "patch_size_for",
]

STRATEGIES = ("none", "full", "downsample", "saliency-patch", "saliency-box", "prob-box",
              "random-box", "gt-box")
COMPRESSED_STRATEGIES = STRATEGIES[1:]
BOX_STRATEGIES = ("saliency-box", "prob-box", "random-box", "gt-box")
SALIENCY_STRATEGIES = ("saliency-patch", "saliency-box", "prob-box", "random-box")
"""Strategies that need a saliency map (``prob-box``: the class-probability map;
``random-box``: the saliency box's size)."""
IGNORE = 255


def patch_size_for(h: int, w: int, r: float) -> tuple[int, int]:
    """Default EPR patch size: the same area fraction ``1/r`` as ``downsample`` keeps."""
    return low_size(h, w, r)


def _minmax(sal: np.ndarray) -> np.ndarray:
    """One ``(H, W)`` map min-max scaled with :func:`~segxai.core.postprocess.minmax`."""
    sal = np.asarray(sal, dtype=np.float64)
    if not np.isfinite(sal).all():
        raise SegxaiError("saliency: contains NaN or Inf values")
    return minmax(sal[None])[0]


def saliency_box(saliency: np.ndarray, tau: float = 0.6) -> tuple[int, int, int, int]:
    """CIM box: the tight box around all pixels whose min-max-normalised saliency is ``> τ``.

    Args:
        saliency: ``(H, W)`` map (any scale).
        tau: threshold in ``[0, 1)``.

    Returns:
        ``(y0, y1, x0, x1)`` (end exclusive); ``(0, 0, 0, 0)`` when no pixel passes (a flat map).
    """
    if saliency.ndim != 2:
        raise SegxaiError(f"saliency: expected an (H, W) map, got shape {saliency.shape}")
    if not 0.0 <= float(tau) < 1.0:
        raise SegxaiError(f"tau: expected a threshold in [0, 1), got {tau!r}")
    on = _minmax(saliency) > tau
    if not on.any():
        return 0, 0, 0, 0
    rows = np.flatnonzero(on.any(1))
    cols = np.flatnonzero(on.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def saliency_patch(saliency: np.ndarray, patch: tuple[int, int]) -> tuple[int, int]:
    """EPR patch: top-left corner of the ``(p_h, p_w)`` window with the largest mean saliency.

    All windows inside the image at stride 1 are scored with an integral image; ties go to the
    first window in row-major order.

    Args:
        saliency: ``(H, W)`` map.
        patch: ``(p_h, p_w)`` window size, at most the image size.

    Returns:
        ``(u, v)``: row and column of the window's top-left pixel.
    """
    if saliency.ndim != 2:
        raise SegxaiError(f"saliency: expected an (H, W) map, got shape {saliency.shape}")
    h, w = saliency.shape
    ph, pw = int(patch[0]), int(patch[1])
    if not (1 <= ph <= h and 1 <= pw <= w):
        raise SegxaiError(f"patch: expected a size between (1, 1) and {(h, w)}, got {patch!r}")
    sal = _minmax(saliency)
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    integral[1:, 1:] = sal.cumsum(0).cumsum(1)
    sums = (integral[ph:, pw:] - integral[:-ph, pw:] - integral[ph:, :-pw]
            + integral[:-ph, :-pw])
    # round away float noise so equal windows tie exactly (first one wins)
    sums = np.round(sums, 9)
    u, v = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(u), int(v)


def _check_example(image: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise SegxaiTypeError("image: expected a uint8 array (C, H, W)")
    if not isinstance(mask, np.ndarray) or mask.dtype != np.uint8 or mask.ndim != 2:
        raise SegxaiTypeError("mask: expected a uint8 array (H, W)")
    if image.shape[1:] != mask.shape:
        raise SegxaiError(f"mask: expected shape {image.shape[1:]} to match image, got {mask.shape}")
    return int(mask.shape[0]), int(mask.shape[1])


def compress(image: np.ndarray, mask: np.ndarray, strategy: str, *, task: int, cls: int,
             saliency: np.ndarray | None = None, r: float = 4.0, tau: float = 0.6,
             patch: tuple[int, int] | None = None,
             rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Compress one example into the arrays a memory stores.

    Args:
        image: ``uint8`` ``(3, H, W)``.
        mask: ``uint8`` ``(H, W)`` label map (255 = ignore).
        strategy: one of :data:`COMPRESSED_STRATEGIES`.
        task: task id the exemplar was stored in.
        cls: the class the exemplar was selected for.
        saliency: ``(H, W)`` map, needed by the two saliency strategies.
        r: area compression ratio of ``downsample`` and of the area outside the box.
        tau: box threshold of ``saliency-box``.
        patch: ``(p_h, p_w)`` of ``saliency-patch`` (default :func:`patch_size_for`).
        rng: places the ``random-box`` (default: seeded by ``task`` and ``cls``).

    Returns:
        ``{"image": ..., "mask": ..., "meta": uint16 [task, cls, coords...]}`` plus, for
        ``saliency-box``, ``"low_image"`` and ``"low_mask"``.
    """
    h, w = _check_example(image, mask)
    if strategy not in COMPRESSED_STRATEGIES:
        raise SegxaiError(f"strategy: expected one of {COMPRESSED_STRATEGIES}, got {strategy!r}")
    if not (0 <= int(task) < 65536 and 0 <= int(cls) < 65536):
        raise ValueError(f"task/cls: expected values in [0, 65535], got {task}, {cls}")
    if strategy in SALIENCY_STRATEGIES:
        if saliency is None or saliency.shape != (h, w):
            raise SegxaiError(f"saliency: strategy {strategy!r} needs an ({h}, {w}) map")
    if strategy == "full":
        return {"image": image.copy(), "mask": mask.copy(),
                "meta": np.array([task, cls], dtype=np.uint16)}
    if strategy == "downsample":
        size = low_size(h, w, r)
        return {"image": np.ascontiguousarray(nearest_resize(image, size)),
                "mask": np.ascontiguousarray(nearest_resize(mask, size)),
                "meta": np.array([task, cls], dtype=np.uint16)}
    if strategy == "gt-box":
        return box_exemplar(image, mask, box_of_mask(mask, cls), task=task, cls=cls, r=r)
    assert saliency is not None  # the saliency strategies checked it above
    if strategy == "saliency-patch":
        ph, pw = patch if patch is not None else patch_size_for(h, w, r)
        u, v = saliency_patch(saliency, (ph, pw))
        return {"image": image[:, u:u + ph, v:v + pw].copy(),
                "mask": mask[u:u + ph, v:v + pw].copy(),
                "meta": np.array([task, cls, u, v], dtype=np.uint16)}
    box = saliency_box(saliency, tau)
    if strategy == "random-box":
        box = random_box(box, (h, w), rng if rng is not None
                         else np.random.default_rng([int(task), int(cls)]))
    return box_exemplar(image, mask, box, task=task, cls=cls, r=r)


def exemplar_nbytes(arrays: dict[str, np.ndarray]) -> int:
    """Bytes of one stored exemplar: the sum of its arrays' ``nbytes``."""
    return int(sum(int(a.nbytes) for a in arrays.values()))


def reconstruct(arrays: dict[str, np.ndarray], strategy: str,
                size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild the full-size ``uint8`` image ``(3, H, W)`` and mask ``(H, W)`` for replay.

    Args:
        arrays: what :func:`compress` returned (or the memory reloaded).
        strategy: the strategy that compressed it.
        size: ``(H, W)`` of the original example.

    Returns:
        ``(image, mask)``; outside an EPR patch the image is 0 and the mask 255 (ignore).
    """
    h, w = int(size[0]), int(size[1])
    if strategy == "full":
        return arrays["image"].copy(), arrays["mask"].copy()
    if strategy == "downsample":
        return nearest_resize(arrays["image"], (h, w)), nearest_resize(arrays["mask"], (h, w))
    meta = arrays["meta"].astype(np.int64)
    if strategy == "saliency-patch":
        u, v = int(meta[2]), int(meta[3])
        ph, pw = arrays["mask"].shape
        image = np.zeros((arrays["image"].shape[0], h, w), dtype=np.uint8)
        mask = np.full((h, w), IGNORE, dtype=np.uint8)
        image[:, u:u + ph, v:v + pw] = arrays["image"]
        mask[u:u + ph, v:v + pw] = arrays["mask"]
        return image, mask
    if strategy in BOX_STRATEGIES:
        return reconstruct_box(arrays, (h, w), IGNORE)
    raise SegxaiError(f"strategy: expected one of {COMPRESSED_STRATEGIES}, got {strategy!r}")


def describe(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Shapes and bytes of an exemplar's arrays (for the JSON index)."""
    return {k: {"shape": list(a.shape), "dtype": str(a.dtype)} for k, a in arrays.items()}
