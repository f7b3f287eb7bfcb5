"""A model's stages in execution order: where along the network an explanation can be taken.

RQ1 asks which layer gives faithful explanations. :func:`model_stages` names, for one model,
the layers worth asking about, in the order the forward pass runs them, with their resolution:

* built-in U-Net (with or without skips): ``encoder.0 … encoder.{d-1}``, ``bottleneck``,
  ``decoder.0 … decoder.{d-1}``;
* models with a ``backbone`` (torchvision FCN, DeepLabV3, LRASPP): the backbone's stages,
  ``kind="encoder"``. A stage ends where the next backbone block changes the resolution, or
  at a block named ``layerN`` (ResNet's stages, which keep one resolution when dilated), or
  at the backbone's last block: ResNet gives the stem ``relu`` and ``layer1 … layer4``,
  MobileNetV3 the last block of each resolution;
* a model with a ``segxai_stages`` attribute (``((name, kind), ...)``, e.g. the converted
  MediaPipe selfie network, whose operators all sit in one ``ModuleDict``): those;
* anything else: its top-level modules with an ``(N, C, h, w)`` output (``kind="module"``).

In every case the layer that feeds the classifier is marked (``feeds_head=True``) and added
(``kind="head_input"``) if it is not already a listed stage. The classifier is the last
executed convolution (outside any ``aux`` branch) whose output has as many channels as the
model's logits; its input is traced to the outermost module that produced it, passing through
dropout and identity layers (FCN: ``classifier.2``, DeepLabV3: ``classifier.3``, U-Net: the last
decoder stage). Where the input is made outside any module (LRASPP multiplies and resizes
``cbr``'s output), the last module run before the classifier with the same channel count and
a spatial output larger than 1×1 stands in (LRASPP: ``classifier.cbr``).

Everything is found by one forward of the first image with hooks, in eval mode, without
gradients; the model's train/eval flags are restored afterwards.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from segxai.core.checks import check_images
from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = ["Stage", "StageKind", "model_stages"]

StageKind = Literal["encoder", "bottleneck", "decoder", "head_input", "module"]

_PASS_THROUGH = (nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.Dropout3d, nn.AlphaDropout,
                 nn.Identity)


@dataclass(frozen=True)
class Stage:
    """One stage of a model, as seen on the probe image.

    Attributes:
        name: dotted module name (for ``find_layer`` and the explainers' ``layer=``).
        kind: ``"encoder"``, ``"bottleneck"``, ``"decoder"``, ``"head_input"`` or ``"module"``.
        depth: position in execution order among the listed stages (0 = first run).
        channels: output channels.
        size: output ``(h, w)`` on the probe.
        stride: probe height divided by the output height (1 = full resolution).
        feeds_head: this layer's output is the classifier's input.
    """

    name: str
    kind: str
    depth: int
    channels: int
    size: tuple[int, int]
    stride: float
    feeds_head: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        d = asdict(self)
        d["size"] = list(self.size)
        return d


@dataclass
class _Call:
    name: str
    module: nn.Module
    order: int
    inputs: tuple[Any, ...]
    output: Any


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, dict):
        value = value.get("out", next(iter(value.values()), None))
        return value if isinstance(value, Tensor) else None
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


def _spatial(value: Any) -> Tensor | None:
    t = value if isinstance(value, Tensor) else None
    return t if t is not None and t.dim() == 4 else None


def _unwrap(model: object) -> nn.Module:
    inner = getattr(model, "module", None)  # a segxai ModelAdapter
    if not isinstance(model, nn.Module) and isinstance(inner, nn.Module):
        return inner
    if not isinstance(model, nn.Module):
        raise SegxaiTypeError(f"model: expected an nn.Module or a ModelAdapter around one, got "
                              f"{type(model).__name__}")
    return model


def _probe(model: nn.Module, image: Tensor) -> tuple[list[_Call], Any]:
    """Run ``model`` once on ``image`` with a hook on every sub-module (first call kept)."""
    calls: dict[str, _Call] = {}
    counter = [0]
    handles = []

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any, name: str) -> None:
        counter[0] += 1
        if name not in calls:
            calls[name] = _Call(name, module, counter[0], inputs, output)

    modes = {m: m.training for m in model.modules()}
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(
                    lambda m, i, o, name=name: hook(m, i, o, name)))
        model.eval()
        with torch.no_grad():
            output = model(image)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.train(mode)
    return sorted(calls.values(), key=lambda c: c.order), output


def _outermost(calls: list[_Call]) -> _Call:
    """The first-run call among those not inside another call's module."""
    names = [c.name for c in calls]
    top = [c for c in calls if not any(c.name.startswith(o + ".") for o in names if o != c.name)]
    return min(top, key=lambda c: c.order)


def _producer(calls: list[_Call], tensor: Tensor, before: int) -> _Call | None:
    """The outermost module that returned ``tensor`` (before order ``before``), skipping
    dropout and identity layers back to what fed them."""
    found = [c for c in calls if c.order < before and c.output is tensor]
    if not found:
        return None
    best = _outermost(found)
    if isinstance(best.module, _PASS_THROUGH) and best.inputs and \
            isinstance(best.inputs[0], Tensor):
        return _producer(calls, best.inputs[0], best.order) or best
    return best


def _head_input(calls: list[_Call], logits: Tensor | None) -> _Call | None:
    if logits is None or logits.dim() != 4:
        return None
    k = logits.shape[1]
    heads = [c for c in calls if isinstance(c.module, nn.Conv2d) and "aux" not in c.name
             and _spatial(c.output) is not None and c.output.shape[1] == k]
    if not heads:
        return None
    head = heads[-1]
    x = head.inputs[0] if head.inputs and isinstance(head.inputs[0], Tensor) else None
    if x is None:
        return None
    found = _producer(calls, x, head.order)
    if found is not None:
        return found
    similar = [c for c in calls if c.order < head.order and "aux" not in c.name
               and _spatial(c.output) is not None and c.output.shape[1] == x.shape[1]
               and c.output.shape[-2] * c.output.shape[-1] > 1]
    if not similar:
        return None
    return _producer(calls, similar[-1].output, head.order) or similar[-1]


def _unet_names(model: nn.Module) -> list[tuple[str, str]] | None:
    enc, dec = getattr(model, "encoder", None), getattr(model, "decoder", None)
    if not (isinstance(enc, nn.ModuleList) and isinstance(dec, nn.ModuleList)
            and isinstance(getattr(model, "bottleneck", None), nn.Module)):
        return None
    return ([(f"encoder.{i}", "encoder") for i in range(len(enc))] + [("bottleneck", "bottleneck")]
            + [(f"decoder.{i}", "decoder") for i in range(len(dec))])


def _backbone_names(calls: list[_Call]) -> list[tuple[str, str]]:
    blocks = [c for c in calls if re.fullmatch(r"backbone\.[^.]+", c.name)
              and _spatial(c.output) is not None]
    out = []
    for i, c in enumerate(blocks):
        last = i == len(blocks) - 1
        resized = not last and blocks[i + 1].output.shape[-2:] != c.output.shape[-2:]
        if last or resized or re.fullmatch(r"backbone\.layer\d+", c.name):
            out.append((c.name, "encoder"))
    return out


def model_stages(model: nn.Module, images: Tensor) -> list[Stage]:
    """List ``model``'s stages in execution order (see the module docstring for the rules).

    Args:
        model: an ``nn.Module`` (or a ``ModelAdapter`` around one) returning logits, or a dict
            with ``"out"`` (torchvision).
        images: ``(N, C, H, W)`` input; only the first image is run.

    Returns:
        The stages, ``depth`` 0, 1, … in execution order.

    Raises:
        SegxaiError: the model has no layer with an ``(N, C, h, w)`` output.

    Example:
        >>> from segxai.models import UNet, UNetConfig
        >>> net = UNet(UNetConfig(depth=2, base_width=4, num_classes=3))
        >>> [(s.name, s.kind, s.stride) for s in model_stages(net, torch.rand(1, 3, 16, 16))]
        ... # doctest: +NORMALIZE_WHITESPACE
        [('encoder.0', 'encoder', 1.0), ('encoder.1', 'encoder', 2.0),
         ('bottleneck', 'bottleneck', 4.0), ('decoder.0', 'decoder', 2.0),
         ('decoder.1', 'decoder', 1.0)]
    """
    module = _unwrap(model)
    check_images(images)
    calls, output = _probe(module, images[:1])
    by_name = {c.name: c for c in calls}
    spatial = [c for c in calls if _spatial(c.output) is not None]
    if not spatial:
        raise SegxaiError(f"model: expected at least one layer with an (N, C, h, w) output, got "
                          f"none in {type(module).__name__}")
    head_in = _head_input(calls, _first_tensor(output))
    declared = getattr(module, "segxai_stages", None)  # ((name, kind), ...) set by the model
    names = [(str(n), str(k)) for n, k in declared] if declared else _unet_names(module)
    if names is None and isinstance(getattr(module, "backbone", None), nn.Module):
        names = _backbone_names(calls)
    if names is None:
        # top-level modules, leaving out those that hold the classifier (run after its input)
        after = {c.name for c in calls if head_in is not None and c.order > head_in.order
                 and isinstance(c.module, nn.Conv2d)}
        names = [(c.name, "module") for c in spatial if "." not in c.name
                 and not any(a == c.name or a.startswith(c.name + ".") for a in after)]
    picked = [(by_name[n], kind) for n, kind in names
              if n in by_name and _spatial(by_name[n].output) is not None]
    if head_in is not None and not any(c.name == head_in.name for c, _ in picked) \
            and _spatial(head_in.output) is not None:
        picked.append((head_in, "head_input"))
    if not picked:
        raise SegxaiError(f"model: expected a sub-module with an (N, C, h, w) output besides "
                          f"the classifier, got none in {type(module).__name__}")
    picked.sort(key=lambda ck: ck[0].order)
    height = images.shape[-2]
    return [Stage(c.name, kind, depth, int(c.output.shape[1]),
                  (int(c.output.shape[-2]), int(c.output.shape[-1])),
                  float(height) / float(c.output.shape[-2]),
                  head_in is not None and c.name == head_in.name)
            for depth, (c, kind) in enumerate(picked)]
