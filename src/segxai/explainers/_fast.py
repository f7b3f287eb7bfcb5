"""The fast inference path shared by the perturbation explainers.

Perturbation methods (occlusion, Seg-Ablation-CAM) only need forward passes. This module
runs them

* without autograd (``torch.inference_mode``);
* on batches of perturbations;
* optionally on a **deep copy** of the model whose BatchNorm layers are folded into the
  preceding convolutions (the user's model is never modified);
* optionally in channels-last memory format (faster convolutions on many CPUs and GPUs);
* reducing only the requested class's channel before upsampling and the ROI sum.

The results equal the plain path up to float rounding (the tests check ``rtol=1e-4`` of the
map's range for BatchNorm folding and channels-last).
"""

from __future__ import annotations

import copy
import itertools
import operator
import warnings
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from segxai.core.adapter import ModelAdapter, _unwrap
from segxai.core.errors import SegxaiError

__all__ = ["SCORE_KINDS", "FastModel", "ReusedCopy", "fold_batchnorm", "fold_graph_batchnorm",
           "prepare", "score_batch"]

SCORE_KINDS = ("logit_sum", "prob_mean", "iou")


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d)
            and bn.running_mean is not None and bn.running_var is not None
            and not bn.training and conv.out_channels == bn.num_features)


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place: ``W' = W·s``, ``b' = (b−μ)·s + β``
    with ``s = γ / sqrt(σ² + ε)``."""
    assert bn.running_var is not None and bn.running_mean is not None
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    else:
        conv.bias.copy_(bias.to(conv.bias.dtype))


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """A deep copy of ``model`` (in eval mode) with every ``Conv2d → BatchNorm2d`` pair that
    sits next to each other in an ``nn.Sequential`` folded into the convolution.

    The BatchNorm is replaced by ``nn.Identity`` at the same name, so dotted layer names stay
    valid. Pairs in custom modules (convolution and normalisation as separate attributes) are
    left alone: without the module's data flow it is not known that the convolution's output
    feeds only the BatchNorm.

    Args:
        model: the model; not modified.

    Returns:
        ``(copy, number_of_folded_pairs)``.
    """
    clone = copy.deepcopy(model)
    clone.eval()
    folded = 0
    for module in clone.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for a, b in zip(names[:-1], names[1:], strict=True):
            conv, bn = module._modules[a], module._modules[b]
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                    and _foldable(conv, bn)):
                _fold_pair(conv, bn)
                module._modules[b] = nn.Identity()
                folded += 1
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone, folded


class FastModel:
    """Forward-only runner for one explanation call.

    Attributes:
        adapter: the user's adapter (its pass counters are updated).
        module: the module actually run (the user's, or a folded / channels-last copy).
        copied: whether ``module`` is a copy.
        folded: number of folded Conv-BN pairs.
        channels_last: inputs are converted to channels-last.
    """

    def __init__(self, adapter: ModelAdapter, module: nn.Module | None, copied: bool,
                 folded: int, channels_last: bool) -> None:
        self.adapter = adapter
        self.module = module
        self.copied = copied
        self.folded = folded
        self.channels_last = channels_last

    @property
    def call(self) -> Callable[[Tensor], Any]:
        return self.module if self.module is not None else self.adapter.model

    def prepare_input(self, images: Tensor) -> Tensor:
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def raw(self, images: Tensor) -> Tensor:
        """The unwrapped model output for ``images`` (no autograd; counts forward passes)."""
        with torch.inference_mode():
            return self.output(self.call(self.prepare_input(images)), images.shape[0])

    def output(self, out: Any, n: int) -> Tensor:
        """The unwrapped output ``out`` of the model for ``n`` images computed another way
        (e.g. incrementally); counts ``n`` forward passes."""
        self.adapter.counter.forward += n
        return self.adapter.learn(_unwrap(out))

    def find(self, name: str) -> nn.Module:
        """The module named ``name`` in the module that is run."""
        assert self.module is not None
        return dict(self.module.named_modules())[name]

    def describe(self) -> dict[str, Any]:
        return {"copied": self.copied, "folded_batchnorms": self.folded,
                "channels_last": self.channels_last}


def _stateless(module: nn.Module) -> bool:
    return next(module.parameters(), None) is None and next(module.buffers(), None) is None


def prepare(adapter: ModelAdapter, *, fold_bn: bool = False,
            channels_last: bool = False) -> FastModel:
    """Build the :class:`FastModel` for ``adapter``.

    Args:
        adapter: the model adapter.
        fold_bn: run a deep copy with BatchNorm folded into convolutions.
        channels_last: run a copy in channels-last memory format.

    Returns:
        The runner. A plain callable, or a module without parameters and buffers (a
        :class:`~segxai.core.BlackBox`, a wrapper of another runtime: nothing to fold or
        convert), is run as is, quietly. If the model cannot be deep-copied, the original
        is run with a warning.
    """
    module = adapter.module
    if module is None or not (fold_bn or channels_last) or _stateless(module):
        return FastModel(adapter, module, False, 0, False)
    try:
        if fold_bn:
            clone, folded = fold_batchnorm(module)
        else:
            clone, folded = copy.deepcopy(module), 0
            clone.eval()
            for p in clone.parameters():
                p.requires_grad_(False)
    except Exception as exc:  # deepcopy of arbitrary user models can fail in many ways
        warnings.warn(f"fast path: the model could not be copied ({exc}); running it without "
                      "BatchNorm folding or channels-last", RuntimeWarning, stacklevel=3)
        return FastModel(adapter, module, False, 0, False)
    if channels_last:
        clone = clone.to(memory_format=torch.channels_last)
    return FastModel(adapter, clone, True, folded, channels_last)


def _fingerprint(module: nn.Module) -> tuple[tuple[int, int, int], ...]:
    """Identity, storage and version of every parameter and buffer: changes when a tensor is
    modified in place (optimiser steps, ``load_state_dict``), replaced or re-pointed."""
    return tuple((id(t), t.data_ptr(), t._version)
                 for t in itertools.chain(module.parameters(), module.buffers()))


class ReusedCopy:
    """The fast copy of the last model a caller explained, kept across calls.

    Held by the caller (an explainer instance), never in a global cache: it keeps the folded /
    channels-last copy of the last ``nn.Module`` (a weak reference to the user's module tells
    whether the next call has the same one) and ``derived`` data computed from the copy (the
    traced graph of incremental occlusion). Both are rebuilt when another module, other
    options, or a parameter or buffer changed (replaced, or modified in place: the fingerprint
    holds each tensor's identity, storage and version counter).
    """

    def __init__(self) -> None:
        self._ref: weakref.ref[nn.Module] | None = None
        self._key: Any = None
        self._clone: nn.Module | None = None
        self._folded = 0
        self.derived: dict[str, Any] = {}
        self.reused = False

    def prepare(self, adapter: ModelAdapter, *, fold_bn: bool,
                channels_last: bool) -> FastModel:
        """:func:`prepare`, reusing the copy of the previous call when still valid (then
        ``reused`` is True and ``derived`` is kept)."""
        module = adapter.module
        key = None if module is None else (fold_bn, channels_last, _fingerprint(module))
        if (self._clone is not None and self._ref is not None and self._ref() is module
                and key == self._key):
            self.reused = True
            return FastModel(adapter, self._clone, True, self._folded, channels_last)
        self.release()
        fm = prepare(adapter, fold_bn=fold_bn, channels_last=channels_last)
        if fm.copied and module is not None:
            self._ref, self._key, self._clone = weakref.ref(module), key, fm.module
            self._folded = fm.folded
        return fm

    def release(self) -> None:
        """Forget the copy and what was derived from it."""
        self._ref, self._key, self._clone, self._folded = None, None, None, 0
        self.derived, self.reused = {}, False

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a pickled or copied explainer starts afresh (weak references do not pickle)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.release()


def _only_user(node: fx.Node, user: fx.Node) -> bool:
    return list(node.users) == [user]


def fold_graph_batchnorm(gm: fx.GraphModule) -> int:
    """Fold every eval-mode ``native_batch_norm`` whose input is a convolution used only by
    it into that convolution, in the traced ATen graph ``gm`` (in place; the folded weights
    are new constants of ``gm``, the model's own parameters are not modified).

    This catches the pairs :func:`fold_batchnorm` cannot see (convolution and normalisation
    as attributes of a custom module, e.g. torchvision's ResNet blocks). Unused nodes are
    removed afterwards.

    Returns:
        The number of folded pairs.
    """
    ops = {getattr(torch.ops.aten, n).default for n in
           ("native_batch_norm", "_native_batch_norm_legit_no_training")
           if hasattr(torch.ops.aten, n)}
    conv_op = torch.ops.aten.convolution.default

    def const(n: Any) -> Tensor | None:
        if n is None:
            return None
        if not isinstance(n, fx.Node) or n.op != "get_attr":
            raise LookupError
        obj: Any = gm
        for part in str(n.target).split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, Tensor):
            raise LookupError
        return obj

    folded = 0
    for bn in list(gm.graph.nodes):
        if bn.op != "call_function" or bn.target not in ops:
            continue
        training = bn.target is torch.ops.aten.native_batch_norm.default and bool(bn.args[5])
        conv = bn.args[0]
        if training or not isinstance(conv, fx.Node) or conv.target is not conv_op \
                or not _only_user(conv, bn) or conv.args[6]:  # transposed: not folded
            continue
        if any(u.target is not operator.getitem or (u.args[1] != 0 and u.users)
               for u in bn.users):
            continue
        try:
            weight, bias = const(conv.args[1]), const(conv.args[2])
            gamma, beta, mean, var = (const(a) for a in bn.args[1:5])
        except LookupError:
            continue
        if weight is None or mean is None or var is None:
            continue
        eps = float(bn.args[-1])
        with torch.no_grad():
            scale = torch.rsqrt(var.double() + eps)
            if gamma is not None:
                scale = scale * gamma.double()
            b = (bias.double() if bias is not None else torch.zeros_like(scale)) - mean.double()
            b = b * scale + (beta.double() if beta is not None else 0.0)
            fmt = (torch.channels_last if weight.is_contiguous(memory_format=torch.channels_last)
                   and not weight.is_contiguous() else torch.contiguous_format)
            w_new = (weight.double() * scale.view(-1, 1, 1, 1)).to(weight.dtype)
            w_new = w_new.contiguous(memory_format=fmt)
            b_new = b.to(weight.dtype)
        names: list[str] = []
        for value in (w_new, b_new):
            name = f"_bn_folded_{folded}_{len(names)}"
            gm.register_buffer(name, value)
            names.append(name)
        with gm.graph.inserting_before(conv):
            w_node, b_node = (gm.graph.get_attr(n) for n in names)
        conv.args = (conv.args[0], w_node, b_node, *conv.args[3:])
        for u in list(bn.users):
            if u.args[1] == 0:
                u.replace_all_uses_with(conv)
            gm.graph.erase_node(u)
        gm.graph.erase_node(bn)
        folded += 1
    if folded:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return folded


def _upsample(out: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    if tuple(out.shape[-2:]) == tuple(size):
        return out
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(out, size=size, mode=mode, **kwargs)


def score_batch(adapter: ModelAdapter, out: Tensor, class_index: int, roi: Tensor,
                kind: str, size: tuple[int, int], ref_mask: Tensor | None = None) -> Tensor:
    """Scores ``(B,)`` of a batch of raw outputs of perturbed copies of one image.

    Args:
        adapter: gives the upsampling mode and the binary (one-channel) convention.
        out: raw model output ``B×K×h×w`` (``K = 1`` for a sigmoid model).
        class_index: the class explained.
        roi: ``(H, W)`` ROI weights.
        kind: ``"logit_sum"`` (``Σ roi·logit_c``; only channel ``c`` is upsampled),
            ``"prob_mean"`` (mean class probability over the ROI) or ``"iou"`` (IoU of the
            predicted class-``c`` mask with ``ref_mask``; 1 when both are empty).
        size: input size ``(H, W)``.
        ref_mask: ``(H, W)`` bool, the class mask of the clean prediction (for ``"iou"``).

    Returns:
        ``(B,)`` float tensor.
    """
    if out.dim() != 4:
        raise SegxaiError(f"model output: expected N×K×h×w logits, got shape {tuple(out.shape)}")
    k = max(2, out.shape[1])
    if class_index >= k:
        raise SegxaiError(f"class_index: expected classes below {k} (the model's number of "
                          f"classes), got {class_index}")
    roi = roi.to(device=out.device, dtype=out.dtype)
    if kind == "logit_sum":
        if out.shape[1] == 1:
            chan = out if class_index == 1 else -out
        else:
            chan = out[:, class_index:class_index + 1]
        chan = _upsample(chan, size, adapter.upsample_mode)
        return (chan[:, 0] * roi).flatten(1).sum(1)
    logits = adapter.to_logits(out, size)
    if kind == "prob_mean":
        probs = torch.sigmoid(logits[:, class_index]) if adapter.binary \
            else logits.softmax(1)[:, class_index]
        return (probs * roi).flatten(1).sum(1) / roi.sum()
    if kind == "iou":
        if ref_mask is None:
            raise SegxaiError("score: 'iou' needs the clean prediction's class mask")
        pred = logits.argmax(1) == class_index
        ref = ref_mask.to(pred.device).unsqueeze(0)
        inter = (pred & ref).flatten(1).sum(1).to(out.dtype)
        union = (pred | ref).flatten(1).sum(1).to(out.dtype)
        return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    raise SegxaiError(f"score: expected one of {', '.join(SCORE_KINDS)}, got {kind!r}")
