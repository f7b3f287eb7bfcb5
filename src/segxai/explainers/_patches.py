"""Windows of feature maps for incremental occlusion: boxes and their assembly.

A :class:`Patch` holds, for a batch of occlusion windows, the part of one feature map that a
window can change (its *footprint*): one ``h×w`` box per window at rows ``tops[b]`` and
columns ``lefts[b]``, all boxes of one batch the same size. Everything outside a window's box
equals the clean activation. :func:`region` reads any box of the perturbed map (clean values
with the patch pasted in, and a padding value or the nearest border value outside the map);
the ``*_footprint`` functions grow boxes through one layer along one axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PadCache", "Patch", "add_boxes", "conv_by_parts", "conv_footprint", "crop_boxes",
           "leaves", "map_tree", "pair", "region", "transposed_footprint", "uniform",
           "union_box"]


@dataclass
class Patch:
    """Per-window boxes of one ``B``-window batch of a ``(1, C, H, W)`` feature map.

    Attributes:
        data: ``(B, C, h, w)`` values inside the boxes.
        tops: row of each box in the map.
        lefts: column of each box in the map.
        clean: the clean ``(1, C, H, W)`` activation (the values outside the boxes).
        parts: for a channel concatenation, its inputs (patches, or clean tensors for inputs
            the windows do not change) and their channel counts.
    """

    data: Tensor
    tops: list[int]
    lefts: list[int]
    clean: Tensor | None = field(default=None, repr=False)
    parts: list[tuple[Any, int]] | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.data.shape[-2]), int(self.data.shape[-1])

    @property
    def is_full(self) -> bool:
        """Whether the boxes are the whole map (then ``data`` is the batch of maps)."""
        if self.clean is None:
            return True
        return self.size == tuple(self.clean.shape[-2:])

    def full(self) -> Tensor:
        """The ``(B, C, H, W)`` perturbed maps."""
        if self.is_full:
            return self.data
        assert self.clean is not None
        h, w = self.clean.shape[-2:]
        b = len(self.tops)
        return region(self.clean, self, [0] * b, [0] * b, int(h), int(w))


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def uniform(lo: list[int], hi: list[int], m: int) -> tuple[list[int], int]:
    """One box length ``L`` for all windows covering ``[lo_b, hi_b)`` inside ``[0, m)``:
    ``(starts, L)``, each box shifted back inside the map where needed; ``L = m`` when the
    footprint covers the whole map."""
    length = max(h - lo_b for lo_b, h in zip(lo, hi))
    if length >= m:
        return [0] * len(lo), m
    return [min(lo_b, m - length) for lo_b in lo], length


def conv_footprint(tops: list[int], h: int, m: int, k: int, s: int, p: int,
                   d: int) -> tuple[list[int], int, list[int], int]:
    """Outputs of a sliding window (kernel ``k``, stride ``s``, padding ``p``, dilation ``d``)
    that can change when input rows ``[t, t + h)`` change, for each ``t`` in ``tops``.

    Returns:
        ``(out_starts, L, in_starts, in_len)``: the output boxes (length ``L`` of ``m``) and
        the input rows (possibly outside the map: padding) that compute them exactly.
    """
    lo = [max(0, _ceil_div(t - d * (k - 1) + p, s)) for t in tops]
    hi = [min(m, (t + h - 1 + p) // s + 1) for t in tops]
    starts, length = uniform(lo, hi, m)
    return starts, length, [o * s - p for o in starts], (length - 1) * s + d * (k - 1) + 1


def transposed_footprint(tops: list[int], h: int, m: int, k: int, s: int, p: int,
                         d: int) -> tuple[list[int], int, list[int], int, list[int]]:
    """:func:`conv_footprint` for a transposed convolution; also returns each window's offset
    of its output box in the output of the transposed convolution of its input rows."""
    lo = [max(0, t * s - p) for t in tops]
    hi = [min(m, (t + h - 1) * s - p + d * (k - 1) + 1) for t in tops]
    starts, length = uniform(lo, hi, m)
    first = [(o + p - d * (k - 1)) // s for o in starts]
    last = [(o + length - 1 + p) // s for o in starts]
    in_len = max(b - a + 1 for a, b in zip(first, last))
    offsets = [o + p - a * s for o, a in zip(starts, first)]
    return starts, length, first, in_len, offsets


def union_box(boxes: list[tuple[list[int], int]], m: int) -> tuple[list[int], int]:
    """One box per window covering the given boxes ``(starts, length)`` of each input."""
    lo = [min(b[0][i] for b in boxes) for i in range(len(boxes[0][0]))]
    hi = [max(b[0][i] + b[1] for b in boxes) for i in range(len(boxes[0][0]))]
    return uniform(lo, hi, m)


PadCache = dict[tuple[int, int, int, int, int, float], Tensor]


def _padded(clean: Tensor, pads: tuple[int, int, int, int], value: float,
            cache: PadCache | None) -> Tensor:
    if not any(pads):
        return clean
    key = (id(clean), *pads, value)
    hit = None if cache is None else cache.get(key)
    if hit is None:
        hit = F.pad(clean, pads, value=value)
        if cache is not None:
            cache[key] = hit
    return hit


def _channels_last(t: Tensor) -> bool:
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous()


def _spatial(t: Tensor, cl: bool) -> Tensor:
    """The view whose last dimensions are ``(H, W, C)`` (channels-last) or ``(C, H, W)``:
    copies between slices of channels-last maps are several times faster through the former
    (its rows are contiguous)."""
    return t.movedim(-3, -1) if cl else t


def _box(t: Tensor, cl: bool, r: int, c: int, h: int, w: int) -> Tensor:
    """Rows ``r:r+h`` and columns ``c:c+w`` of a :func:`_spatial` view."""
    return t[..., r:r + h, c:c + w, :] if cl else t[..., r:r + h, c:c + w]


def region(clean: Tensor, patch: Patch | None, tops: list[int], lefts: list[int], hh: int,
           ww: int, pad: float = 0.0, replicate: bool = False,
           cache: PadCache | None = None) -> Tensor:
    """The ``(B, C, hh, ww)`` boxes at rows ``tops``, columns ``lefts`` of the perturbed maps.

    The boxes are stacked slices of the (padded) clean map, and the windows' patches are
    pasted with one copy per group of windows whose patch sits at the same offset in its box
    (usually one or a few groups). A channels-last map is copied through its ``H×W×C`` view,
    whose rows are contiguous (measured 4-5x faster than copying the ``C×H×W`` view).

    Args:
        clean: the clean ``(1, C, H, W)`` map.
        patch: the windows' changed boxes (``None``: the clean map, expanded to ``B``).
        tops: first row of each box (negative or beyond the map: padding).
        lefts: first column of each box.
        hh: box height.
        ww: box width.
        pad: value outside the map (0 for convolutions, ``-inf`` for max pooling).
        replicate: outside the map, repeat the nearest border value of the perturbed map
            (bilinear up-sampling clamps its source coordinates).
        cache: padded clean maps, kept while the clean image stays the same (its keys are
            the clean tensors' ids, so the caller must keep those tensors alive).
    """
    h, w = int(clean.shape[-2]), int(clean.shape[-1])
    pt, pl = max(0, -min(tops)), max(0, -min(lefts))
    pb, pr = max(0, max(tops) + hh - h), max(0, max(lefts) + ww - w)
    base = _padded(clean, (pl, pr, pt, pb), pad, cache)[0]
    cl = _channels_last(clean)
    rdim = 0 if cl else 1  # the row dimension of one box (H×W×C or C×H×W view)
    src = _spatial(base, cl)

    def box(t: Tensor, r: int, c: int, bh: int, bw: int) -> Tensor:
        return _box(t, cl, r, c, bh, bw)

    if len(set(tops)) == 1 and len(set(lefts)) == 1:
        one = box(src, tops[0] + pt, lefts[0] + pl, hh, ww)
        out = one.unsqueeze(0).expand(len(tops), *one.shape).contiguous()
    else:
        out = torch.stack([box(src, t + pt, le + pl, hh, ww) for t, le in zip(tops, lefts)])
    if patch is not None:
        _paste(out, tops, lefts, _spatial(patch.data, cl), patch.tops, patch.lefts, cl)
    if replicate:
        for b, (t, le) in enumerate(zip(tops, lefts)):
            _replicate_border(out[b], t, le, h, w, rdim)
    return out.movedim(-1, -3) if cl else out


def _replicate_border(box: Tensor, top: int, left: int, h: int, w: int, rdim: int) -> None:
    """Overwrite the part of one box (rows at dimension ``rdim``, columns at ``rdim + 1``; at
    ``top, left`` of an ``h×w`` map) outside the map with the nearest in-map row / column, in
    place."""
    cdim = rdim + 1
    hh, ww = box.shape[rdim], box.shape[cdim]

    def fill(dim: int, start: int, length: int, source: int) -> None:
        part = box.narrow(dim, start, length)
        part.copy_(box.narrow(dim, source, 1).expand_as(part))

    if top < 0:
        fill(rdim, 0, -top, -top)
    if top + hh > h:
        fill(rdim, h - top, top + hh - h, h - top - 1)
    if left < 0:
        fill(cdim, 0, -left, -left)
    if left + ww > w:
        fill(cdim, w - left, left + ww - w, w - left - 1)


def _paste(dst: Tensor, dst_tops: list[int], dst_lefts: list[int], src: Tensor,
           src_tops: list[int], src_lefts: list[int], cl: bool, add: bool = False) -> None:
    """Copy (or add) window ``b``'s box of ``src`` into its box of ``dst`` where they overlap
    (both :func:`_spatial` views of ``(B, ...)`` boxes placed in map coordinates), in place:
    one operation for the windows that share the relative offset, one per window else."""
    rdim = dst.dim() - (3 if cl else 2)
    (dh, dw), (sh, sw) = dst.shape[rdim:rdim + 2], src.shape[rdim:rdim + 2]
    n = len(dst_tops)
    groups: dict[tuple[int, ...], list[int]] = {}
    for b in range(n):
        r0, r1 = max(dst_tops[b], src_tops[b]), min(dst_tops[b] + dh, src_tops[b] + sh)
        c0, c1 = max(dst_lefts[b], src_lefts[b]), min(dst_lefts[b] + dw, src_lefts[b] + sw)
        if r0 < r1 and c0 < c1:
            key = (r0 - dst_tops[b], c0 - dst_lefts[b], r0 - src_tops[b], c0 - src_lefts[b],
                   r1 - r0, c1 - c0)
            groups.setdefault(key, []).append(b)
    for (dr, dc, sr, sc, nr, nc), idx in groups.items():
        pairs = ([(dst, src)] if len(idx) == n else [(dst[b], src[b]) for b in idx])
        for d, s in pairs:
            target, part = _box(d, cl, dr, dc, nr, nc), _box(s, cl, sr, sc, nr, nc)
            if add:
                target.add_(part)
            else:
                target.copy_(part)


def add_boxes(dst: Tensor, dst_tops: list[int], dst_lefts: list[int], src: Tensor,
              src_tops: list[int], src_lefts: list[int]) -> None:
    """``dst[b] += src[b]`` where window ``b``'s box of ``src`` overlaps its box of ``dst``
    (``(B, C, h, w)`` boxes placed in map coordinates), in place."""
    cl = _channels_last(dst) and _channels_last(src)
    _paste(_spatial(dst, cl), dst_tops, dst_lefts, _spatial(src, cl), src_tops, src_lefts, cl,
           add=True)


def conv_by_parts(clean_out: Tensor, parts: list[tuple[Any, int]], weight: Tensor,
                  rows: tuple[list[int], int], cols: tuple[list[int], int],
                  geometry: tuple[tuple[int, int], ...]) -> tuple[Tensor, float]:
    """A convolution (``groups=1``) of a channel concatenation on the windows' output boxes,
    computed as the clean output plus, for each input of the concatenation that the windows
    change, the convolution of its change (zero outside its patch) on that input's own
    footprint. Exact by linearity; it saves the work of the inputs whose patches are smaller
    than the concatenation's box (a U-Net skip connection next to the up-sampled path).

    Args:
        clean_out: the clean ``(1, O, M, N)`` output of the convolution.
        parts: the concatenation's inputs and channel counts (:attr:`Patch.parts`).
        weight: the ``(O, C, kh, kw)`` weight.
        rows: the output boxes' first rows and height.
        cols: the output boxes' first columns and width.
        geometry: ``(kernel, stride, padding, dilation)``, each a pair.

    Returns:
        ``(B, O, h, w)`` output boxes, and the multiply-adds done relative to one output pixel
        of the whole convolution (``Σ box area · weights``).
    """
    k, s, p, d = geometry
    mh, mw = int(clean_out.shape[-2]), int(clean_out.shape[-1])
    out = region(clean_out, None, rows[0], cols[0], rows[1], cols[1])
    work, first = 0.0, 0
    for value, channels in parts:
        w = weight[:, first:first + channels]
        first += channels
        if not isinstance(value, Patch):
            continue  # an input the windows do not change: no change to convolve
        assert value.clean is not None
        ph, pw = value.size
        pr = conv_footprint(value.tops, ph, mh, k[0], s[0], p[0], d[0])
        pc = conv_footprint(value.lefts, pw, mw, k[1], s[1], p[1], d[1])
        change = value.data - region(value.clean, None, value.tops, value.lefts, ph, pw)
        fmt = torch.channels_last if _channels_last(change) else torch.contiguous_format
        grown = torch.empty((change.shape[0], channels, pr[3], pc[3]), dtype=change.dtype,
                            device=change.device, memory_format=fmt).zero_()
        add_boxes(grown, pr[2], pc[2], change, value.tops, value.lefts)
        delta = torch.ops.aten.convolution.default(grown, w, None, list(s), [0, 0], list(d),
                                                   False, [0, 0], 1)
        add_boxes(out, rows[0], cols[0], delta, pr[0], pc[0])
        work += pr[1] * pc[1] * w.numel()
    return out, work


def map_tree(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to the leaves of nested lists, tuples and dicts."""
    if isinstance(value, (list, tuple)):
        return type(value)(map_tree(v, fn) for v in value) if type(value) in (list, tuple) \
            else [map_tree(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: map_tree(v, fn) for k, v in value.items()}
    return fn(value)


def leaves(value: Any) -> list[Any]:
    """The leaves of nested lists, tuples and dicts."""
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in leaves(v)]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaves(v)]
    return [value]


def pair(v: Any, default: Any = None) -> tuple[int, int]:
    """An ATen size argument (int, ``[k]`` or ``[kh, kw]``; empty: ``default``) as a pair."""
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def crop_boxes(full: Tensor, rows: list[int], cols: list[int], lh: int, lw: int) -> Tensor:
    """Each window's ``lh×lw`` box at its own offset in ``full`` (one slice when they agree)."""
    if len(set(rows)) == 1 and len(set(cols)) == 1:
        return full[:, :, rows[0]:rows[0] + lh, cols[0]:cols[0] + lw]
    return torch.stack([full[b, :, r:r + lh, c:c + lw]
                        for b, (r, c) in enumerate(zip(rows, cols))])
