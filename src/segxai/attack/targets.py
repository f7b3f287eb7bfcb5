"""Target maps for explanation attacks: where the attacker wants the explanation to move.

Every function returns ``(N, H, W)`` maps normalised to sum 1 (:func:`normalize_map`).

* ``shift``: the original map translated (zero fill, not circular) by ``(dy, dx)`` pixels;
  by default a quarter of the image in each direction, towards the side with more room
  (judged from the map's centre of mass), so the moved mass stays in the image.
* ``mirror``: the original map flipped left-right (``axis="horizontal"``) or up-down.
* ``box``: uniform mass in a box far from the explained region: among boxes of a third of the
  image on a grid, the one with the least ROI overlap and the least original-map mass.
* ``other-image``: the explanation of another image (computed by the caller and passed in).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from segxai.attack.metrics import normalize_map
from segxai.core.checks import check_choice
from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = ["TARGET_KINDS", "box_map", "make_target_map", "mirror_map", "shift_map"]

TARGET_KINDS = ("shift", "mirror", "box", "other-image")


def _maps(maps: Tensor) -> Tensor:
    if not isinstance(maps, Tensor):
        raise SegxaiTypeError(f"maps: expected a tensor (N, H, W), got {type(maps).__name__}")
    if maps.dim() == 2:
        maps = maps.unsqueeze(0)
    if maps.dim() != 3:
        raise SegxaiError(f"maps: expected (N, H, W), got shape {tuple(maps.shape)}")
    return maps.detach()


def _translate(m: Tensor, dy: int, dx: int) -> Tensor:
    h, w = m.shape
    out = torch.zeros_like(m)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y = slice(max(0, -dy), h - max(0, dy))
    dst_y = slice(max(0, dy), h - max(0, -dy))
    src_x = slice(max(0, -dx), w - max(0, dx))
    dst_x = slice(max(0, dx), w - max(0, -dx))
    out[dst_y, dst_x] = m[src_y, src_x]
    return out


def shift_map(maps: Tensor, shift: Sequence[int] | None = None) -> Tensor:
    """The maps translated by ``shift = (dy, dx)`` pixels (zero fill), normalised to sum 1.

    Args:
        maps: ``(N, H, W)`` or ``(H, W)`` original maps.
        shift: pixels down and right (negative: up/left); ``None`` moves each map by a quarter
            of the image height and width towards the side with more room.
    """
    m = normalize_map(_maps(maps))
    n, h, w = m.shape
    out = []
    for i in range(n):
        if shift is None:
            ys = torch.arange(h, dtype=m.dtype, device=m.device)
            xs = torch.arange(w, dtype=m.dtype, device=m.device)
            cy = float((m[i].sum(1) * ys).sum())
            cx = float((m[i].sum(0) * xs).sum())
            dy = h // 4 if cy < (h - 1) / 2 else -(h // 4)
            dx = w // 4 if cx < (w - 1) / 2 else -(w // 4)
        else:
            if len(shift) != 2:
                raise SegxaiError(f"shift: expected (dy, dx), got {shift!r}")
            dy, dx = int(shift[0]), int(shift[1])
            if dy == 0 and dx == 0:
                raise SegxaiError("shift: (0, 0) leaves the map where it is")
        out.append(_translate(m[i], dy, dx))
    shifted = torch.stack(out)
    if bool((shifted.flatten(1).sum(1) <= 0).any()):
        raise SegxaiError(f"shift: {shift} moves a whole map out of the image")
    return normalize_map(shifted)


def mirror_map(maps: Tensor, axis: str = "horizontal") -> Tensor:
    """The maps mirrored left-right (``"horizontal"``) or up-down (``"vertical"``)."""
    check_choice(axis, "axis", ("horizontal", "vertical"))
    m = normalize_map(_maps(maps))
    return m.flip(-1 if axis == "horizontal" else -2)


def box_map(maps: Tensor, roi: Tensor | None = None,
            box: Sequence[int] | None = None) -> Tensor:
    """Uniform mass inside a box, normalised to sum 1.

    Args:
        maps: ``(N, H, W)`` original maps (used to place the default box and for the shape).
        roi: ``(N, H, W)`` explained region; the default box avoids it.
        box: ``(x0, y0, x1, y1)`` pixels (end exclusive) for every image; ``None`` chooses,
            per image, the box of size ``H/3 × W/3`` on a grid of stride ``H/12`` that has the
            least ROI overlap, then the least original-map mass.
    """
    m = normalize_map(_maps(maps))
    n, h, w = m.shape
    out = torch.zeros_like(m)
    if box is not None:
        if len(box) != 4:
            raise SegxaiError(f"box: expected (x0, y0, x1, y1), got {box!r}")
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            raise SegxaiError(f"box: empty inside an image of size {(h, w)}: {tuple(box)}")
        out[:, y0:y1, x0:x1] = 1.0
        return normalize_map(out)
    bh, bw = max(1, h // 3), max(1, w // 3)
    sy, sx = max(1, h // 12), max(1, w // 12)
    if roi is None:
        roi = torch.zeros_like(m)
    else:
        roi = _maps(roi).to(m)
        if roi.shape != m.shape:
            raise SegxaiError(f"roi: expected shape {tuple(m.shape)}, got {tuple(roi.shape)}")
    # box sums of ROI and map at every grid position (average pooling × area)
    roi_sum = F.avg_pool2d(roi.unsqueeze(1), (bh, bw), stride=(sy, sx))[:, 0]
    map_sum = F.avg_pool2d(m.unsqueeze(1), (bh, bw), stride=(sy, sx))[:, 0]
    score = roi_sum * 1e6 + map_sum * (h * w)  # ROI overlap first, map mass second
    for i in range(n):
        flat = int(score[i].flatten().argmin())
        gy, gx = divmod(flat, score.shape[2])
        y0, x0 = gy * sy, gx * sx
        out[i, y0:y0 + bh, x0:x0 + bw] = 1.0
    return normalize_map(out)


def make_target_map(kind: str, original_maps: Tensor, *, roi: Tensor | None = None,
                    shift: Sequence[int] | None = None, box: Sequence[int] | None = None,
                    axis: str = "horizontal", other_maps: Tensor | None = None) -> Tensor:
    """A target map of the given ``kind`` (see the module docstring), normalised to sum 1.

    Args:
        kind: ``"shift"``, ``"mirror"``, ``"box"`` or ``"other-image"``.
        original_maps: ``(N, H, W)`` explanations of the clean images.
        roi: the explained ROI (used by ``"box"``).
        shift: ``(dy, dx)`` for ``"shift"``.
        box: ``(x0, y0, x1, y1)`` for ``"box"``.
        axis: mirror axis for ``"mirror"``.
        other_maps: ``(N, H, W)`` explanations of other images for ``"other-image"``.

    Returns:
        ``(N, H, W)`` maps, each summing to 1.
    """
    check_choice(kind, "target_kind", TARGET_KINDS)
    original_maps = _maps(original_maps)
    if kind == "shift":
        return shift_map(original_maps, shift)
    if kind == "mirror":
        return mirror_map(original_maps, axis)
    if kind == "box":
        return box_map(original_maps, roi, box)
    if other_maps is None:
        raise SegxaiError("other_maps: the 'other-image' target needs the explanations of the "
                         "other images")
    other = _maps(other_maps)
    if other.shape != original_maps.shape:
        raise SegxaiError(f"other_maps: expected shape {tuple(original_maps.shape)}, got "
                         f"{tuple(other.shape)}")
    return normalize_map(other)
