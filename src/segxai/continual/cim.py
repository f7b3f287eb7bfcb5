"""CIM exemplars (Luo et al., CVPR 2023): a box at full resolution plus the rest of the
example at ``1/√r`` per side, stored so that it costs ``a + (1 − a)/r`` full exemplars.

The low-resolution copy keeps only the low pixels that are visible after replay: a low pixel
whose whole nearest-neighbour footprint lies inside the box is overwritten by the box and is
not stored (:func:`outside_low_pixels`). The kept low pixels are stored as flat arrays
(``(3, n)`` image, ``(n,)`` mask); the box coordinates in ``meta`` determine which they are.
With ``a`` the box's area fraction, the stored pixels are ``a·HW + (1 − a)·HW/r`` up to the
rounding of the footprints at the box border: CIM's cost formula, in real bytes.

Box sources (all use the same storage, so they compare at the same byte budget):
``saliency-box`` (min-max CAM > τ, :func:`~segxai.continual.compress.saliency_box`),
``prob-box`` (the same on the class-probability map), ``gt-box`` (the tight box of the
exemplar's class in its ground-truth mask: the location a segmentation label gives for free)
and ``random-box`` (a box of the saliency box's height and width at a uniformly random place).
"""

from __future__ import annotations

import numpy as np

from segxai.continual.resample import low_size, nearest_resize

__all__ = ["box_exemplar", "box_of_mask", "outside_low_pixels", "random_box",
           "reconstruct_box"]


def _covered(n_out: int, n_low: int, lo: int, hi: int) -> np.ndarray:
    """Per low index along one axis: every output index sampling it lies in ``[lo, hi)``."""
    src = np.minimum(((np.arange(n_out) + 0.5) * n_low / n_out).astype(np.int64), n_low - 1)
    inside = (np.arange(n_out) >= lo) & (np.arange(n_out) < hi)
    covered = np.ones(n_low, dtype=bool)
    np.logical_and.at(covered, src, inside)
    return covered


def outside_low_pixels(size: tuple[int, int], low: tuple[int, int],
                       box: tuple[int, int, int, int]) -> np.ndarray:
    """``(h_low, w_low)`` bool: low pixels still visible after the box is pasted back."""
    h, w = size
    y0, y1, x0, x1 = box
    rows = _covered(h, low[0], y0, y1)
    cols = _covered(w, low[1], x0, x1)
    return ~(rows[:, None] & cols[None, :])


def box_of_mask(mask: np.ndarray, cls: int) -> tuple[int, int, int, int]:
    """Tight box ``(y0, y1, x0, x1)`` around the pixels of class ``cls`` (empty if none)."""
    on = mask == int(cls)
    if not on.any():
        return 0, 0, 0, 0
    rows, cols = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def random_box(box: tuple[int, int, int, int], size: tuple[int, int],
               rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box of ``box``'s height and width placed uniformly at random inside ``size``."""
    bh, bw = box[1] - box[0], box[3] - box[2]
    y = int(rng.integers(0, size[0] - bh + 1))
    x = int(rng.integers(0, size[1] - bw + 1))
    return y, y + bh, x, x + bw


def box_exemplar(image: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int], *,
                 task: int, cls: int, r: float) -> dict[str, np.ndarray]:
    """The arrays of a CIM exemplar (box at full resolution + visible low pixels).

    ``meta`` is ``[task, cls, y0, y1, x0, x1, h_low, w_low]`` (``uint16``). A box whose
    exemplar would cost at least a whole one is widened to the whole image and stored
    without low copy (``meta`` then ends at ``x1``); so is every box when ``r = 1``.
    """
    h, w = mask.shape
    size = low_size(h, w, r)
    y0, y1, x0, x1 = box
    keep = outside_low_pixels((h, w), size, (y0, y1, x0, x1))
    if size == (h, w) or (y1 - y0) * (x1 - x0) + int(keep.sum()) + 1 >= h * w:
        return {"image": image.copy(), "mask": mask.copy(),
                "low_image": np.zeros((image.shape[0], 0), dtype=np.uint8),
                "low_mask": np.zeros((0,), dtype=np.uint8),
                "meta": np.array([task, cls, 0, h, 0, w], dtype=np.uint16)}
    low_image = nearest_resize(image, size)[:, keep]
    low_mask = nearest_resize(mask, size)[keep]
    return {"image": image[:, y0:y1, x0:x1].copy(), "mask": mask[y0:y1, x0:x1].copy(),
            "low_image": np.ascontiguousarray(low_image),
            "low_mask": np.ascontiguousarray(low_mask),
            "meta": np.array([task, cls, y0, y1, x0, x1, *size], dtype=np.uint16)}


def reconstruct_box(arrays: dict[str, np.ndarray], size: tuple[int, int],
                    ignore: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Full-size image and mask of a :func:`box_exemplar` (low pixels not stored are
    under the box, so the result does not depend on their fill)."""
    h, w = size
    y0, y1, x0, x1 = (int(v) for v in arrays["meta"][2:6])
    channels = arrays["image"].shape[0]
    if arrays["low_mask"].size == 0:
        image = np.zeros((channels, h, w), dtype=np.uint8)
        mask = np.full((h, w), ignore, dtype=np.uint8)
    else:
        low = (int(arrays["meta"][6]), int(arrays["meta"][7]))
        keep = outside_low_pixels((h, w), low, (y0, y1, x0, x1))
        low_img = np.zeros((channels, *low), dtype=np.uint8)
        low_msk = np.full(low, ignore, dtype=np.uint8)
        low_img[:, keep] = arrays["low_image"]
        low_msk[keep] = arrays["low_mask"]
        image, mask = nearest_resize(low_img, size), nearest_resize(low_msk, size)
    image[:, y0:y1, x0:x1] = arrays["image"]
    mask[y0:y1, x0:x1] = arrays["mask"]
    return image, mask
