"""Black-box models: any callable from images to scores, explained with forward passes only.

A :class:`BlackBox` wraps a function that segxai cannot differentiate or look inside: an ONNX
or TFLite interpreter, a remote service, a NumPy pipeline. It is an ``nn.Module`` without
parameters or layers, so every part of segxai can hold it like any model; the perturbation
methods (``occlusion``) explain it, while methods that need gradients or layers refuse it
up front with one error that lists the methods that work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = ["BlackBox", "is_black_box"]

Layout = Literal["NCHW", "NHWC"]
OutputKind = Literal["logits", "probabilities"]
ArrayKind = Literal["torch", "numpy"]


def _shape_text(shape: Sequence[int | None]) -> str:
    return "(" + ", ".join("N" if i == 0 and d is None else ("?" if d is None else str(d))
                           for i, d in enumerate(shape)) + ")"


class BlackBox(nn.Module):
    """A segmentation model known only through a function from images to scores.

    segxai always passes images as ``N×C×H×W`` tensors in the model's input space (see
    ``mean``/``std``); the black box converts them to what ``fn`` takes (torch or NumPy,
    NCHW or NHWC, chunks of a fixed batch size) and its result back to ``N×K×H×W`` logits.

    Probabilities (``output="probabilities"``) are turned back into logits so that scores are
    comparable with those of ordinary models: ``log p`` for a ``K``-class softmax output
    (``softmax(log p) = p``, so a class-logit score becomes a sum of log-probabilities) and
    ``log p − log(1 − p)`` for a one-channel sigmoid output (the exact inverse of the
    sigmoid), computed in float64; ``p`` is clipped to ``[eps, 1 − eps]`` first. The default
    ``eps = 2⁻²⁴`` is the float32 resolution just below 1: a float32 probability cannot tell
    logits beyond about ±16.6 apart, so saturated pixels weigh less in a logit-sum score than
    in the original network; the ``prob_mean`` score is unaffected.

    The black box has no gradients and no layers: gradient-based and layer-based methods
    refuse it with a :class:`~segxai.core.errors.SegxaiError` that lists the methods that
    work (perturbation methods such as ``occlusion``).

    Args:
        fn: the model, ``images -> scores`` (torch tensors or NumPy arrays, see ``array``).
        num_classes: the number of classes ``K`` the output has (``2`` for a one-channel
            sigmoid model); ``None``: taken from the output.
        binary: the output is one sigmoid channel (the foreground); ``None``: one channel
            means binary.
        output: ``"logits"`` or ``"probabilities"`` (see above).
        mean: per-channel input normalisation mean in pixel units, or ``"imagenet"``;
            ``None``: ``fn`` takes pixels in ``[0, 1]``.
        std: per-channel standard deviation, likewise.
        layout: the layout ``fn`` takes: ``"NCHW"`` or ``"NHWC"``.
        output_layout: the layout ``fn`` returns (``None``: as ``layout``).
        array: ``"torch"`` (``fn`` takes float tensors) or ``"numpy"`` (float32 arrays);
            ``fn`` may return either.
        input_shape: the fixed input ``(C, H, W)`` (``None`` entries are free); images of
            another shape raise an error naming ``name`` and the expected shape.
        batch_size: ``fn`` takes exactly this many images per call (a fixed-batch network;
            the last chunk is padded by repeating its last image); ``None``: any number.
        name: what error messages call the model (e.g. its file).
        eps: clipping of probabilities (default ``2⁻²⁴``).

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, K, H', W')`` logits (``K = 1`` for a binary model).

    Example:
        >>> import numpy as np, torch, segxai
        >>> def probs(x):  # NHWC float32 -> NHWC softmax over 2 classes
        ...     z = np.stack([x.mean(-1), 1 - x.mean(-1)], -1)
        ...     e = np.exp(z)
        ...     return e / e.sum(-1, keepdims=True)
        >>> bb = segxai.BlackBox(probs, num_classes=2, output="probabilities",
        ...                      layout="NHWC", array="numpy")
        >>> bb(torch.rand(1, 3, 8, 8)).shape
        torch.Size([1, 2, 8, 8])
    """

    segxai_black_box = True
    fn: Callable[[Any], Any]

    def __init__(self, fn: Callable[[Any], Any], *, num_classes: int | None = None,
                 binary: bool | None = None, output: OutputKind = "logits",
                 mean: Sequence[float] | str | None = None,
                 std: Sequence[float] | str | None = None, layout: Layout = "NCHW",
                 output_layout: Layout | None = None, array: ArrayKind = "torch",
                 input_shape: Sequence[int | None] | None = None,
                 batch_size: int | None = None, name: str = "black-box model",
                 eps: float = 2.0 ** -24) -> None:
        super().__init__()
        if not callable(fn):
            raise SegxaiTypeError(f"fn: expected a callable from images to scores, got "
                                  f"{type(fn).__name__}")
        for value, arg, choices in ((output, "output", ("logits", "probabilities")),
                                    (layout, "layout", ("NCHW", "NHWC")),
                                    (output_layout or layout, "output_layout",
                                     ("NCHW", "NHWC")),
                                    (array, "array", ("torch", "numpy"))):
            if value not in choices:
                raise SegxaiError(f"{arg}: expected one of {', '.join(choices)}, got {value!r}")
        if num_classes is not None and (isinstance(num_classes, bool)
                                        or not isinstance(num_classes, int) or num_classes < 1):
            raise SegxaiError(f"num_classes: expected a positive integer, got {num_classes!r}")
        if binary and num_classes not in (None, 2):
            raise SegxaiError(f"num_classes: expected 2 (or None) for a binary model, got "
                              f"{num_classes}")
        if input_shape is not None and len(input_shape) != 3:
            raise SegxaiError(f"input_shape: expected (C, H, W), got {tuple(input_shape)}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise SegxaiError(f"batch_size: expected a positive integer or None, got "
                              f"{batch_size!r}")
        # kept out of nn.Module's registry: the black box exposes no layers or parameters
        self.__dict__["fn"] = fn
        self.num_classes = num_classes
        self.binary = binary
        self.output = output
        self.layout = layout
        self.output_layout = output_layout or layout
        self.array = array
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.batch_size = batch_size
        self.name = name
        self.eps = float(eps)
        if (mean is None) != (std is None):
            raise SegxaiError("mean/std: expected both or neither, got one of them")
        self.segxai_mean = mean
        self.segxai_std = std

    # ------------------------------------------------------------------ checks
    def _check_input(self, images: Tensor) -> None:
        if not isinstance(images, Tensor) or images.dim() != 4:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise SegxaiError(f"images: expected (N, C, H, W) for {self.name}, got {got}")
        if self.input_shape is None:
            return
        if any(e is not None and e != g for e, g in zip(self.input_shape, images.shape[1:])):
            c, h, w = self.input_shape
            native = ((self.batch_size, c, h, w) if self.layout == "NCHW"
                      else (self.batch_size, h, w, c))
            raise SegxaiError(f"images: expected shape {_shape_text((None, c, h, w))} for "
                              f"{self.name} (its {self.layout} input is "
                              f"{_shape_text(native)}), got {tuple(images.shape)}")

    def _check_output(self, out: Tensor, n: int) -> Tensor:
        if self.binary and out.dim() == 3:
            out = out.unsqueeze(1)
        expect = "N×K×H×W" if self.output_layout == "NCHW" else "N×H×W×K"
        if out.dim() != 4 or out.shape[0] != n:
            raise SegxaiError(f"model output: expected {expect} scores from {self.name} for "
                              f"{n} image(s), got shape {tuple(out.shape)}")
        if self.output_layout == "NHWC":
            out = out.permute(0, 3, 1, 2)
        k = out.shape[1]
        if self.binary is True and k != 1:
            raise SegxaiError(f"model output: expected one channel from the binary model "
                              f"{self.name}, got {k}")
        if self.binary is False and k == 1:
            raise SegxaiError(f"model output: expected {self.num_classes or 'K >= 2'} channels "
                              f"from {self.name} (binary=False), got 1")
        if self.num_classes is not None and k != self.num_classes and not (
                k == 1 and self.num_classes == 2):
            raise SegxaiError(f"model output: expected {self.num_classes} channels "
                              f"(num_classes) from {self.name}, got {k}")
        if not out.is_floating_point():
            raise SegxaiError(f"model output: expected float scores from {self.name}, got "
                              f"{out.dtype} (class labels cannot be explained)")
        return out

    # ------------------------------------------------------------------ forward
    def _call(self, chunk: Tensor) -> Tensor:
        x: Any = chunk.permute(0, 2, 3, 1) if self.layout == "NHWC" else chunk
        if self.array == "numpy":
            x = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
        else:
            x = x.contiguous()
        with torch.no_grad():
            out = self.fn(x)
        if isinstance(out, Tensor):
            return out.detach()
        return torch.from_numpy(np.array(out))

    def forward(self, images: Tensor) -> Tensor:
        """``N×K×H'×W'`` logits (NCHW) for ``N×C×H×W`` images."""
        self._check_input(images)
        x = images.detach()
        n, b = x.shape[0], self.batch_size or x.shape[0]
        outs = []
        for start in range(0, n, b):
            chunk = x[start:start + b]
            pad = b - chunk.shape[0]
            if pad:
                chunk = torch.cat([chunk, chunk[-1:].expand(pad, *chunk.shape[1:])])
            outs.append(self._call(chunk)[:b - pad])
        out = self._check_output(torch.cat(outs), n).to(device=images.device)
        if self.output == "probabilities":
            p = out.double().clamp(self.eps, 1 - self.eps)
            out = torch.log(p) - torch.log1p(-p) if out.shape[1] == 1 else torch.log(p)
        return out.to(images.dtype).contiguous()

    def extra_repr(self) -> str:
        return (f"{self.name}, output={self.output!r}, layout={self.layout!r}, "
                f"input_shape={self.input_shape}")


def is_black_box(model: object) -> bool:
    """Whether ``model`` is a :class:`BlackBox` (or says it is one with
    ``segxai_black_box = True``): no gradients, no layers."""
    return bool(getattr(model, "segxai_black_box", False))
