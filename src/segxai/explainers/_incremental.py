"""Incremental inference for occlusion (the idea of Krypton: Nakandala et al., SIGMOD 2019).

An occluded window changes only a small box of each early feature map. The model is traced
once per call into a graph of ATen operations (``make_fx`` with real tensors, functionalised so
that in-place operations become ordinary ones; shapes and Python control flow are fixed by the
traced image). :meth:`IncrementalRunner.clean` runs the graph on the clean image and keeps
every activation; :meth:`IncrementalRunner.run` runs a batch of windows and, layer by layer,
recomputes only each window's *footprint*: the box of the layer's output that the window can
change, grown through convolutions and transposed convolutions (kernel, stride, padding,
dilation), max / average pooling, bilinear and nearest up-sampling, point-wise operations
(activations, eval-mode BatchNorm, additions of skip connections) and channel concatenation.
Each box is computed from the clean input activation with the windows' boxes pasted in plus
the layer's halo, so the values are those of the full computation. Any other operation
(global pooling, attention, reshapes, ...) and any layer whose footprint covers the whole map
gets the windows' full maps, so from there on the computation is the ordinary one.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor, fx

from segxai.explainers._fast import fold_graph_batchnorm
from segxai.explainers._patches import (
    PadCache,
    Patch,
    conv_by_parts,
    conv_footprint,
    crop_boxes,
    leaves,
    map_tree,
    pair,
    region,
    transposed_footprint,
    uniform,
    union_box,
)

__all__ = ["IncrementalError", "IncrementalRunner", "trace"]

aten = torch.ops.aten


def _ops(*names: str) -> set[Any]:
    """The ATen overloads named ``packet.overload`` that exist in this PyTorch."""
    found = set()
    for name in names:
        packet, overload = name.split(".")
        op = getattr(getattr(aten, packet, None), overload, None)
        if op is not None:
            found.add(op)
    return found


POINTWISE = _ops(
    "relu.default", "hardtanh.default", "leaky_relu.default", "gelu.default", "silu.default",
    "sigmoid.default", "tanh.default", "hardswish.default", "hardsigmoid.default", "elu.default",
    "clone.default", "alias.default", "detach.default", "clamp.default", "clamp_min.default",
    "clamp_max.default", "_to_copy.default", "neg.default", "add.Tensor", "sub.Tensor",
    "mul.Tensor", "div.Tensor", "add.Scalar", "mul.Scalar", "maximum.default",
    "minimum.default", "native_batch_norm.default",
    "_native_batch_norm_legit_no_training.default")
TRAINING_ARG = {op: 5 for op in _ops("native_batch_norm.default")}
CONV = _ops("convolution.default")
MAX_POOL = _ops("max_pool2d_with_indices.default", "max_pool2d.default")
AVG_POOL = _ops("avg_pool2d.default")
BILINEAR = _ops("upsample_bilinear2d.default", "upsample_bilinear2d.vec")
NEAREST = _ops("upsample_nearest2d.default", "upsample_nearest2d.vec")
CAT = _ops("cat.default")
SIZED = _ops("view.default", "_unsafe_view.default", "reshape.default", "expand.default",
             "as_strided.default", "as_strided_.default")


class IncrementalError(RuntimeError):
    """The traced graph cannot run on a batch of windows (e.g. a hard-coded batch size)."""


def trace(fn: Callable[[Tensor], Any], example: Tensor, *,
          fold_bn: bool = False) -> fx.GraphModule:
    """The ATen graph of ``fn`` on ``example`` (real tensors, no in-place operations); with
    ``fold_bn``, eval-mode BatchNorms that follow a convolution are folded into it
    (:func:`~segxai.explainers._fast.fold_graph_batchnorm`)."""
    from torch.func import functionalize
    from torch.fx.experimental.proxy_tensor import make_fx

    with torch.no_grad():
        gm = make_fx(functionalize(fn, remove="mutations"))(example)
    if fold_bn:
        fold_graph_batchnorm(gm)
    return gm


class IncrementalRunner:
    """Runs a traced model on batches of occlusion windows, recomputing only footprints.

    Args:
        gm: the graph from :func:`trace` (one placeholder: the image).

    Attributes:
        footprints: per convolution (graph node name): ``(map h, map w, box h, box w)`` of the
            last batch.
        full_from: the first operation that received the windows' full maps, with the reason.
    """

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.nodes = list(gm.graph.nodes)
        inputs = [n for n in self.nodes if n.op == "placeholder"]
        if len(inputs) != 1:
            raise ValueError(f"model: expected one input, got {len(inputs)}")
        self.input = inputs[0]
        self.affected: set[fx.Node] = set()
        for n in self.nodes:
            if n.op == "placeholder" or any(a in self.affected for a in n.all_input_nodes):
                self.affected.add(n)
        self.last_use: dict[fx.Node, int] = {}
        for i, n in enumerate(self.nodes):
            for a in n.all_input_nodes:
                self.last_use[a] = i
        self.has_conv = any(n.target in CONV for n in self.affected)
        self.clean_env: dict[fx.Node, Any] = {}
        self.cache: PadCache = {}
        self.footprints: dict[str, tuple[int, int, int, int]] = {}
        self.full_from: str | None = None
        self.work = [0.0, 0.0]  # convolution multiply-adds done, and those of full passes

    def reset(self) -> None:
        """Forget the last image's activations and the statistics (a new call)."""
        self.clean_env, self.cache, self.footprints, self.full_from = {}, {}, {}, None
        self.work = [0.0, 0.0]

    # ------------------------------------------------------------------ clean pass
    def clean(self, x: Tensor) -> Any:
        """Run the graph on the clean ``(1, C, H, W)`` image, keep every activation, return
        the model's output."""
        env: dict[fx.Node, Any] = {}
        out: Any = None
        for n in self.nodes:
            if n.op == "placeholder":
                env[n] = x
            elif n.op == "get_attr":
                env[n] = self._attr(str(n.target))
            elif n.op == "call_function":
                env[n] = n.target(*fx.node.map_arg(n.args, env.__getitem__),
                                  **fx.node.map_arg(n.kwargs, env.__getitem__))
            elif n.op == "output":
                out = fx.node.map_arg(n.args[0], env.__getitem__)
        self.clean_env, self.cache = env, {}
        return out

    def _attr(self, target: str) -> Any:
        obj: Any = self.gm
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def work_fraction(self) -> float:
        """Convolution work done relative to full recomputation (1.0 before any run)."""
        return self.work[0] / self.work[1] if self.work[1] else 1.0

    # ------------------------------------------------------------------ windows
    def run(self, data: Tensor, tops: list[int], lefts: list[int]) -> Any:
        """The model's output for ``B`` occluded copies of the clean image.

        Args:
            data: ``(B, C, h, w)`` contents of the windows (already in model space).
            tops: each window's first row.
            lefts: each window's first column.
        """
        b = len(tops)
        env: dict[fx.Node, Any] = {self.input: Patch(data, list(tops), list(lefts),
                                                     self.clean_env[self.input])}

        def load(a: fx.Node) -> Any:
            return env[a] if a in self.affected else self.clean_env[a]

        out: Any = None
        for i, n in enumerate(self.nodes):
            if n.op == "output":
                out = fx.node.map_arg(n.args[0], lambda a: self._finish(a, load(a), b))
            elif n in self.affected and n.op == "call_function" and n.users:
                value = self._node(n, fx.node.map_arg(n.args, load),
                                   fx.node.map_arg(n.kwargs, load), b)
                if isinstance(value, Patch):
                    value.clean = self.clean_env[n]
                env[n] = value
                for a in n.all_input_nodes:
                    if self.last_use.get(a) == i and a in env:
                        del env[a]
        return out

    def _finish(self, node: fx.Node, value: Any, b: int) -> Any:
        if node not in self.affected:
            return map_tree(value, lambda v: v.expand(b, *v.shape[1:])
                        if isinstance(v, Tensor) and v.dim() > 0 else v)
        return map_tree(value, lambda v: v.full() if isinstance(v, Patch) else v)

    def _node(self, n: fx.Node, args: Any, kwargs: Any, b: int) -> Any:
        t = n.target
        if t is operator.getitem:
            return args[0][args[1]]
        rule = None
        if t in CONV:
            rule = self._conv
        elif t in MAX_POOL or t in AVG_POOL:
            rule = self._pool
        elif t in BILINEAR or t in NEAREST:
            rule = self._upsample
        elif t in POINTWISE or t in CAT:
            rule = self._local
        out = rule(n, args, kwargs) if rule is not None else None
        return out if out is not None else self._generic(n, args, kwargs, b)

    def _generic(self, n: fx.Node, args: Any, kwargs: Any, b: int) -> Any:
        """Any operation, on the windows' full maps."""
        if self.full_from is None and any(isinstance(v, Patch) and not v.is_full
                                          for v in leaves((args, kwargs))):
            self.full_from = f"{n.name}: {n.target} needs whole maps"

        def full(v: Any) -> Any:
            return v.full() if isinstance(v, Patch) else v

        args, kwargs = map_tree(args, full), map_tree(kwargs, full)
        batched = [v for v in leaves((args, kwargs)) if isinstance(v, Tensor) and v.dim() > 0
                   and v.shape[0] == b and b > 1]
        if batched and n.target in SIZED and isinstance(args[1], (list, tuple)) \
                and args[1] and args[1][0] == 1:
            args = (args[0], [b, *args[1][1:]], *args[2:])  # the batch size the trace saw
        out = cast(Callable[..., Any], n.target)(*args, **kwargs)  # fx: a call_function node
        if batched and any(isinstance(r, Tensor) and r.dim() >= 2 and r.shape[0] != b
                           for r in leaves(out)):
            raise IncrementalError(f"{n.name} ({n.target}) does not keep the batch dimension")
        return map_tree(out, lambda r: Patch(r, [0] * b, [0] * b)
                    if isinstance(r, Tensor) and r.dim() == 4 and r.shape[0] == b else r)

    def _out_size(self, n: fx.Node) -> tuple[int, int]:
        c = self.clean_env[n]
        c = c[0] if isinstance(c, (tuple, list)) else c
        return int(c.shape[-2]), int(c.shape[-1])

    # ------------------------------------------------------------------ rules
    def _conv(self, n: fx.Node, args: Any, kwargs: Any) -> Any:
        x, w, bias, stride, padding, dilation, transposed, out_pad, groups = args
        if isinstance(w, Patch) or isinstance(bias, Patch) or w.dim() != 4:
            return None
        (mh, mw) = self._out_size(n)
        if kwargs or not isinstance(x, Patch) or x.is_full:
            self._record(n, mh, mw, mh, mw, w)  # whole maps
            return None
        h, wd = x.size
        k, s, p, d = (w.shape[2], w.shape[3]), pair(stride), pair(padding), pair(dilation)
        assert x.clean is not None
        if transposed and any(d[i] * (k[i] - 1) < s[i] - 1 for i in (0, 1)):
            return None  # outputs between the kernel's taps: not handled
        # the transposed footprint also returns the crop offsets (rows[4], cols[4])
        footprint: Callable[..., tuple[Any, ...]] = (transposed_footprint if transposed
                                                     else conv_footprint)
        rows = footprint(x.tops, h, mh, k[0], s[0], p[0], d[0])
        cols = footprint(x.lefts, wd, mw, k[1], s[1], p[1], d[1])
        self._record(n, mh, mw, rows[1], cols[1], w)
        if rows[1] == mh and cols[1] == mw:
            return self._saturated(n)
        if x.parts is not None and not transposed and groups == 1:
            out, work = conv_by_parts(self.clean_env[n], x.parts, w, rows[:2], cols[:2],
                                      (k, s, p, d))
            self.work[0] += work - rows[1] * cols[1] * w.numel()  # replaces the box's work
            return Patch(out, rows[0], cols[0])
        reg = region(x.clean, x, rows[2], cols[2], rows[3], cols[3], cache=self.cache)
        out = aten.convolution.default(reg, w, bias, list(s), [0, 0], list(d), bool(transposed),
                                       [0, 0], groups)
        if transposed:  # each window's box sits at its own offset in the computed rows
            out = crop_boxes(out, rows[4], cols[4], rows[1], cols[1])
        return Patch(out, rows[0], cols[0])

    def _saturated(self, n: fx.Node) -> None:
        """The footprint covers the whole output: run the layer on whole maps."""
        if self.full_from is None:
            self.full_from = f"{n.name}: the footprint covers the whole map"

    def _record(self, n: fx.Node, mh: int, mw: int, lh: int, lw: int, w: Tensor) -> None:
        self.footprints[n.name] = (mh, mw, lh, lw)
        self.work[0] += lh * lw * w.numel()
        self.work[1] += mh * mw * w.numel()

    def _pool(self, n: fx.Node, args: Any, kwargs: Any) -> Any:
        x = args[0]
        if kwargs or not isinstance(x, Patch) or x.is_full:
            return None
        k = pair(args[1])
        s = pair(args[2] if len(args) > 2 else None, k)
        p = pair(args[3] if len(args) > 3 else 0)
        if n.target in MAX_POOL:
            d = pair(args[4] if len(args) > 4 else 1)
            pad = float("-inf")
            if any(u.users and (u.target is not operator.getitem or u.args[1] != 0)
                   for u in n.users) \
                    and n.target is not aten.max_pool2d.default:
                return None  # the indices are positions in the whole map
        else:
            d, pad = (1, 1), 0.0
            ceil_mode = bool(args[4]) if len(args) > 4 else False
            include_pad = bool(args[5]) if len(args) > 5 else True
            if ceil_mode or (not include_pad and any(p)):
                return None
        (mh, mw), (h, wd) = self._out_size(n), x.size
        rows = conv_footprint(x.tops, h, mh, k[0], s[0], p[0], d[0])
        cols = conv_footprint(x.lefts, wd, mw, k[1], s[1], p[1], d[1])
        if rows[1] == mh and cols[1] == mw:
            return self._saturated(n)
        assert x.clean is not None
        reg = region(x.clean, x, rows[2], cols[2], rows[3], cols[3], pad=pad, cache=self.cache)
        if n.target is aten.max_pool2d_with_indices.default:
            out = aten.max_pool2d_with_indices.default(reg, list(k), list(s), [0, 0], list(d))
            return (Patch(out[0], rows[0], cols[0]), None)
        if n.target is aten.max_pool2d.default:
            return Patch(aten.max_pool2d.default(reg, list(k), list(s), [0, 0], list(d)),
                         rows[0], cols[0])
        extra = list(args[6:7])  # divisor_override
        out = aten.avg_pool2d.default(reg, list(k), list(s), [0, 0], False, True, *extra)
        return Patch(out, rows[0], cols[0])

    def _upsample(self, n: fx.Node, args: Any, kwargs: Any) -> Any:
        x = args[0]
        if kwargs or not isinstance(x, Patch) or x.is_full:
            return None
        assert x.clean is not None
        (mh, mw), (nh, nw) = self._out_size(n), x.clean.shape[-2:]
        if mh % nh or mw % nw:
            return None
        sh, sw = mh // nh, mw // nw
        scales = [v for v in leaves(list(args[2:])) if isinstance(v, float)]
        if any(v not in (float(sh), float(sw)) for v in scales):
            return None
        h, wd = x.size
        if n.target in NEAREST:
            if (sh & (sh - 1)) or (sw & (sw - 1)):
                return None  # 1/s is exact only for powers of two
            out = aten.upsample_nearest2d.default(x.data, [h * sh, wd * sw])
            return Patch(out, [t * sh for t in x.tops], [t * sw for t in x.lefts])
        if args[2]:  # align_corners
            return None
        rows = uniform([max(0, (t - 1) * sh) for t in x.tops],
                       [min(mh, (t + h + 1) * sh) for t in x.tops], mh)
        cols = uniform([max(0, (t - 1) * sw) for t in x.lefts],
                       [min(mw, (t + wd + 1) * sw) for t in x.lefts], mw)
        if rows[1] == mh and cols[1] == mw:
            return self._saturated(n)
        lh, lw = rows[1] // sh + 2, cols[1] // sw + 2
        reg = region(x.clean, x, [o // sh - 1 for o in rows[0]], [o // sw - 1 for o in cols[0]],
                     lh, lw, replicate=True, cache=self.cache)
        out = aten.upsample_bilinear2d.default(reg, [lh * sh, lw * sw], False)
        return Patch(out[:, :, sh:sh + rows[1], sw:sw + cols[1]], rows[0], cols[0])

    def _local(self, n: fx.Node, args: Any, kwargs: Any) -> Any:
        """Point-wise operations and channel concatenation: on the union of the boxes."""
        if n.target in TRAINING_ARG and args[TRAINING_ARG[n.target]]:
            return None
        if n.target in CAT:
            dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
            if any(not isinstance(v, Patch) and (not isinstance(v, Tensor) or v.dim() != 4)
                   for v in args[0]) or dim not in (1, -3):
                return None
        flat = leaves((args, kwargs))
        patches = [v for v in flat if isinstance(v, Patch)]
        if not patches or any(v.is_full for v in patches):
            return None
        size = patches[0].clean.shape[-2:]  # type: ignore[union-attr]
        spatial = [v for v in flat if isinstance(v, Tensor) and v.dim() >= 2
                   and tuple(v.shape[-2:]) != (1, 1)]
        if any(v.dim() != 4 or v.shape[0] != 1 or v.shape[-2:] != size for v in spatial):
            return None
        first = patches[0]
        same = all(p.size == first.size and p.tops == first.tops and p.lefts == first.lefts
                   for p in patches)
        if same and not spatial:
            rows, cols = (first.tops, first.size[0]), (first.lefts, first.size[1])
        else:
            rows = union_box([(p.tops, p.size[0]) for p in patches], int(size[0]))
            cols = union_box([(p.lefts, p.size[1]) for p in patches], int(size[1]))

        def put(v: Any) -> Any:
            if isinstance(v, Patch):
                if same and not spatial:
                    return v.data
                assert v.clean is not None
                return region(v.clean, v, rows[0], cols[0], rows[1], cols[1])
            if isinstance(v, Tensor) and any(v is s for s in spatial):
                return region(v, None, rows[0], cols[0], rows[1], cols[1])
            return v

        fn = cast(Callable[..., Any], n.target)  # fx: a call_function node
        out = fn(*map_tree(args, put), **map_tree(kwargs, put))
        if isinstance(out, (tuple, list)):
            return (Patch(out[0], rows[0], cols[0]), *out[1:])
        parts = [(v, int((v.data if isinstance(v, Patch) else v).shape[1])) for v in args[0]] \
            if n.target in CAT else None
        return Patch(out, rows[0], cols[0], parts=parts)

