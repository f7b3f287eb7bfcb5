"""Model adapter: one calling convention for every segmentation model.

Any ``nn.Module`` (or plain callable) whose forward returns

* a tensor ``N×K×h×w``;
* a dict with ``"out"`` (torchvision; ``"aux"`` is ignored);
* an object with ``.logits`` (Hugging Face style);
* a tuple or list (the first element is used);

is turned into a function ``images (N×C×H×W) -> logits (N×K×H×W)`` at the input resolution.
Lower-resolution logits are upsampled bilinearly (``align_corners=False``), which is what
torchvision's segmentation models do internally. A one-channel (sigmoid) model becomes a
two-class model whose class 1 is the foreground logit and class 0 its negation.

The adapter also knows the input normalisation ``(pixel - mean) / std`` so that perturbations
(fills, noise, valid ranges) can be defined in pixel space ``[0, 1]``.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segxai.core.checks import (
    check_images,
    check_model_output,
    smallest_varying_side,
    spatially_constant,
)
from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = ["ModelAdapter", "adapt"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PassCounter:
    """Counts images sent forward and backward through the model (a batch of 8 counts 8)."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0
        self.partial_forward = 0

    def snapshot(self) -> tuple[int, int, int]:
        return self.forward, self.backward, self.partial_forward


def _unwrap(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, dict):
        if "out" in output:
            return cast(Tensor, output["out"])  # the model's contract; not checked here
        if "logits" in output:
            return cast(Tensor, output["logits"])  # the model's contract; not checked here
        raise SegxaiError("model output: a dict output needs an 'out' or 'logits' entry, got "
                         f"keys {sorted(output)}")
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output:
        return _unwrap(output[0])
    raise SegxaiError("model output: expected a tensor N×K×h×w, a dict with 'out', an object "
                     f"with .logits or a tuple; got {type(output).__name__}")


@contextlib.contextmanager
def _hooks_silenced(module: nn.Module | None) -> Iterator[None]:
    """Forward hooks off inside the block (restored after): a probe forward must not overwrite
    the activations an explainer's hooks captured from the real forward."""
    if module is None:
        yield
        return
    saved = [(m, m._forward_hooks, m._forward_pre_hooks) for m in module.modules()]
    try:
        for m, _, _ in saved:  # torch offers no public switch for registered hooks
            m._forward_hooks = OrderedDict()
            m._forward_pre_hooks = OrderedDict()
        yield
    finally:
        for m, hooks, pre_hooks in saved:
            m._forward_hooks = hooks
            m._forward_pre_hooks = pre_hooks


class ModelAdapter:
    """Wrap a segmentation model so that every explainer can call it the same way.

    Args:
        model: an ``nn.Module`` or any callable mapping ``N×C×H×W`` images to logits.
        mean: per-channel mean of the input normalisation in pixel units (``[0, 1]``), or
            ``"imagenet"``; ``None`` means the model takes pixels in ``[0, 1]`` directly.
        std: per-channel standard deviation, likewise.
        device: move the model there (``None`` keeps it where it is).
        upsample_mode: interpolation for lower-resolution logits (default ``"bilinear"``).

    Example:
        >>> import torch
        >>> net = torch.nn.Conv2d(3, 4, 1)
        >>> adapter = ModelAdapter(net)
        >>> adapter(torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 4, 8, 8])
    """

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Any],
        mean: Sequence[float] | str | None = None,
        std: Sequence[float] | str | None = None,
        device: str | torch.device | None = None,
        upsample_mode: str = "bilinear",
    ) -> None:
        if isinstance(model, ModelAdapter):
            raise SegxaiTypeError("model: already a ModelAdapter; pass it directly")
        if not callable(model):
            raise SegxaiTypeError(f"model: expected an nn.Module or callable, got {type(model).__name__}")
        if mean == "imagenet":
            mean = IMAGENET_MEAN
        if std == "imagenet":
            std = IMAGENET_STD
        self.model = model
        if device is not None and isinstance(model, nn.Module):
            model.to(device)
        self.mean = tuple(float(m) for m in mean) if mean is not None else None
        self.std = tuple(float(s) for s in std) if std is not None else None
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean/std: give both or neither")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise SegxaiError(f"std: expected positive values, got {self.std}")
        self.upsample_mode = upsample_mode
        self.counter = PassCounter()
        # learnt from the first model output this adapter sees (no cache keyed by the model)
        self._binary: bool | None = None
        self._num_classes: int | None = None
        self.default_layer: str | None = None
        """Dotted name of the layer-based explainers' default layer, once resolved."""
        self._position_free = False  # output shown not to depend on pixel position at all

    # ------------------------------------------------------------------ placement
    @property
    def module(self) -> nn.Module | None:
        return self.model if isinstance(self.model, nn.Module) else None

    @property
    def device(self) -> torch.device:
        if self.module is not None:
            for p in self.module.parameters():
                return p.device
            for b in self.module.buffers():
                return b.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ forward
    def raw(self, images: Tensor) -> Tensor:
        """The model's own output tensor (unwrapped, not upsampled, not made 2-class)."""
        self.counter.forward += images.shape[0]
        return self.learn(_unwrap(self.model(images)))

    def learn(self, out: Tensor) -> Tensor:
        """Record the number of classes and the one-channel convention from a raw model
        output ``N×K×h×w`` (the first one seen wins); return ``out`` unchanged."""
        if self._num_classes is None and isinstance(out, Tensor) and out.dim() == 4:
            self._binary = out.shape[1] == 1
            self._num_classes = 2 if self._binary else int(out.shape[1])
        return out

    @property
    def binary(self) -> bool:
        """Whether the model has one (sigmoid) output channel, viewed as two classes.

        Known from the first forward through this adapter (any explainer, metric or
        :meth:`num_classes` makes one); reading it earlier raises.
        """
        if self._binary is None:
            raise RuntimeError("adapter.binary: unknown before the first forward pass through "
                               "the adapter (call adapter.num_classes(images) first)")
        return self._binary

    @property
    def known_num_classes(self) -> int | None:
        """The number of classes if a forward pass has shown it, else ``None``."""
        return self._num_classes

    def logits(self, images: Tensor) -> Tensor:
        """Logits ``N×K×H×W`` at the input resolution."""
        out = self.raw(images)
        if out.dim() >= 1 and out.shape[0] != images.shape[0]:
            raise SegxaiError(f"model output: expected {images.shape[0]} image(s) in the batch "
                              f"like the input, got shape {tuple(out.shape)}")
        logits = self.to_logits(out, images.shape[-2:])
        self._check_not_degenerate(images, logits)
        return logits

    def _check_not_degenerate(self, images: Tensor, logits: Tensor) -> None:
        """Raise if a varying image gives logits constant over the image while the model's
        output does vary with position on larger images: the image is then smaller than the
        model's downsampling and the map would be a constant."""
        if self._position_free or images.shape[-1] * images.shape[-2] < 2 \
                or not spatially_constant(logits) or spatially_constant(images):
            return
        with torch.no_grad(), self.explaining(), _hooks_silenced(self.module):
            side = smallest_varying_side(lambda x: _unwrap(self.model(x)), images)
        if side is None:
            self._position_free = True  # e.g. a global-pooling head: constant by design
            return
        h, w = int(images.shape[-2]), int(images.shape[-1])
        raise SegxaiError(f"images: expected images of at least {side}×{side} pixels for this "
                          f"model, got {h}×{w}: the image is smaller than the model's "
                          "downsampling and every pixel gets the same logits")

    __call__ = logits

    def to_logits(self, out: Tensor, size: Sequence[int]) -> Tensor:
        """Turn a raw output into ``N×K×H×W`` logits at ``size`` (upsample, 1→2 channels)."""
        check_model_output(out, size)
        self.learn(out)
        if out.shape[1] == 1:
            out = torch.cat([-out, out], dim=1)
        if tuple(out.shape[-2:]) != tuple(size):
            kwargs = {"align_corners": False} if self.upsample_mode in ("bilinear", "bicubic") else {}
            out = F.interpolate(out, size=tuple(size), mode=self.upsample_mode, **kwargs)
        return out

    def probabilities(self, logits: Tensor) -> Tensor:
        """Class probabilities; for a one-channel model ``sigmoid(±logit)``."""
        if self.binary:
            return torch.sigmoid(logits)
        return logits.softmax(dim=1)

    def num_classes(self, images: Tensor | None = None) -> int:
        """Number of classes K (one probe forward the first time if unknown)."""
        if self._num_classes is None:
            if images is None:
                raise SegxaiError("images: needed once to infer the number of classes")
            with torch.no_grad(), self.explaining():
                self.logits(images[:1].to(self.device))
            self.counter.forward -= 1
        assert self._num_classes is not None
        return self._num_classes

    def predict(self, images: Tensor) -> Tensor:
        """Arg-max class map ``N×H×W`` (no gradients, eval mode)."""
        with torch.no_grad(), self.explaining():
            return self.logits(images).argmax(dim=1)

    # ------------------------------------------------------------------ modes
    @contextlib.contextmanager
    def explaining(self) -> Iterator[None]:
        """Eval mode inside the block; the previous train/eval flags are restored after."""
        module = self.module
        if module is None:
            yield
            return
        flags = {m: m.training for m in module.modules()}
        module.eval()
        try:
            yield
        finally:
            for m, flag in flags.items():
                m.training = flag

    @contextlib.contextmanager
    def frozen_parameters(self) -> Iterator[None]:
        """Parameters do not require grad inside the block (restored after), so that a
        forward records autograd history only from tensors the explainer marks."""
        module = self.module
        if module is None:
            yield
            return
        flags = [(p, p.requires_grad) for p in module.parameters()]
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            yield
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)

    # ------------------------------------------------------------------ pixel space
    def _stats(self, ref: Tensor) -> tuple[Tensor, Tensor]:
        c = ref.shape[1]
        mean = torch.tensor(self.mean if self.mean else (0.0,) * c, dtype=ref.dtype,
                            device=ref.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std if self.std else (1.0,) * c, dtype=ref.dtype,
                           device=ref.device).view(1, -1, 1, 1)
        if mean.shape[1] != c:
            raise SegxaiError(f"images: the adapter's mean/std have {mean.shape[1]} channels "
                             f"but the images have {c}")
        return mean, std

    def to_pixels(self, images: Tensor) -> Tensor:
        """Model-space images → pixel space ``[0, 1]``."""
        mean, std = self._stats(images)
        return images * std + mean

    def from_pixels(self, pixels: Tensor) -> Tensor:
        """Pixel space ``[0, 1]`` → model-space images."""
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def pixel_bounds(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Model-space images of pixel value 0 and 1 (``1×C×1×1``), the valid range."""
        mean, std = self._stats(images)
        return (0 - mean) / std, (1 - mean) / std

    def colour(self, rgb: Sequence[float] | float, images: Tensor) -> Tensor:
        """A pixel-space colour (one value or one per channel) in model space, ``1×C×1×1``."""
        c = images.shape[1]
        vals = [float(rgb)] * c if isinstance(rgb, (int, float)) else [float(v) for v in rgb]
        if len(vals) != c:
            raise SegxaiError(f"fill colour: expected {c} channel values, got {len(vals)}")
        px = torch.tensor(vals, dtype=images.dtype, device=images.device).view(1, c, 1, 1)
        return self.from_pixels(px)

    def expected_channels(self) -> int | None:
        """Input channels of the model's first convolution, if it has one."""
        module = self.module
        if module is None:
            return None
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                return int(m.in_channels)
        return None

    def check(self, images: Tensor) -> Tensor:
        """Validate images (finite float N×C×H×W, channels matching the model's first
        convolution) and move them to the model's device."""
        check_images(images, channels=self.expected_channels())
        return images.to(self.device)

    def __repr__(self) -> str:
        name = type(self.model).__name__
        return f"ModelAdapter({name}, mean={self.mean}, std={self.std})"


def adapt(model: nn.Module | ModelAdapter | Callable[[Tensor], Any], **kwargs: Any) -> ModelAdapter:
    """Return ``model`` as a :class:`ModelAdapter` (unchanged if it already is one).

    A model may carry its own normalisation as ``model.segxai_mean``/``model.segxai_std``.
    """
    if isinstance(model, ModelAdapter):
        if kwargs:
            raise SegxaiError("adapt: options given for a model that is already a ModelAdapter")
        return model
    if "mean" not in kwargs and hasattr(model, "segxai_mean"):
        kwargs["mean"] = model.segxai_mean
        kwargs["std"] = getattr(model, "segxai_std", None)  # missing: ModelAdapter says so
    return ModelAdapter(model, **kwargs)
