"""Find layers by dotted name and capture their activations with hooks that always go away."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from segxai.core.errors import SegxaiError, SegxaiTypeError

if TYPE_CHECKING:
    from segxai.core.adapter import ModelAdapter

__all__ = ["ActivationStore", "capture_activations", "default_cam_layer", "find_layer",
           "layer_names", "layer_param", "module_name", "resolve_layers"]


def layer_names(model: nn.Module) -> list[str]:
    """All dotted sub-module names of ``model`` (``""`` excluded)."""
    return [name for name, _ in model.named_modules() if name]


def find_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """Return the sub-module named ``layer`` (dotted, e.g. ``"backbone.16"``) or ``layer`` itself.

    Raises:
        ValueError: the name is unknown (the message lists the closest names) or the module is
            not part of ``model``.
    """
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise SegxaiError("layer: the given module is not a sub-module of the model")
        return layer
    if not isinstance(layer, str):
        raise SegxaiTypeError(f"layer: expected a dotted name or an nn.Module, got {type(layer).__name__}")
    modules = dict(model.named_modules())
    if layer in modules and layer:
        return modules[layer]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.4)
    hint = f"; closest: {', '.join(close)}" if close else f"; some names: {', '.join(names[:8])}"
    raise SegxaiError(f"layer: unknown layer name {layer!r}{hint}")


def module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    return module.__class__.__name__


class ActivationStore:
    """Outputs of hooked layers, in hook order, for the most recent forward pass."""

    def __init__(self, n: int) -> None:
        self.outputs: list[Tensor | None] = [None] * n

    def __getitem__(self, i: int) -> Tensor:
        out = self.outputs[i]
        if out is None:
            raise RuntimeError("layer: the hooked layer was not run by the model's forward pass")
        return out


def _first_tensor(output: object) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, dict):
        for v in output.values():
            if isinstance(v, Tensor):
                return v
    raise SegxaiError("layer: the layer's output is not a tensor; choose a layer that "
                     "returns an (N, C, h, w) tensor")


@contextlib.contextmanager
def capture_activations(modules: Sequence[nn.Module]) -> Iterator[ActivationStore]:
    """Record each module's output (a tensor N×C×h×w) during forwards inside the block.

    Hooks are removed on exit, also when the block raises.
    """
    store = ActivationStore(len(modules))
    handles = []
    try:
        for i, module in enumerate(modules):
            def hook(_m: nn.Module, _inp: object, out: object, i: int = i) -> None:
                t = _first_tensor(out)
                if t.dim() != 4:
                    raise SegxaiError(f"layer: expected an (N, C, h, w) activation, got shape "
                                     f"{tuple(t.shape)}; choose a convolutional layer")
                store.outputs[i] = t
            handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()


def default_cam_layer(model: nn.Module, images: Tensor) -> nn.Module:
    """The layer the CAM-type explainers explain when none is given (the *faithful default*).

    The rule (supported by the layer study, docs/evaluation.md "Which layer"), in order:

    1. a ``segxai_default_layer`` attribute (dotted name) on the model;
    2. encoder–decoder networks (a ``decoder`` sub-module): the layer that feeds the classifier
       head, i.e. the last stage of a ``decoder`` ``ModuleList`` (segxai's U-Net, with or
       without skips) or the ``decoder`` module itself (segmentation_models_pytorch);
    3. otherwise the last backbone stage: the deepest (smallest spatial output, last
       executed) module inside ``model.backbone`` or ``model.encoder`` when present
       (torchvision FCN/DeepLabV3/LRASPP), else inside the whole model; found with one probe
       forward of the first image, without gradients.

    The bottleneck of a skip-connected U-Net is *not* the default: it carries context while
    the object evidence reaches the head through the skips, and its maps were measured
    worse than random on deletion.
    """
    import torch

    name = getattr(model, "segxai_default_layer", None)
    if isinstance(name, str):
        return find_layer(model, name)
    decoder = getattr(model, "decoder", None)
    if isinstance(decoder, nn.ModuleList) and len(decoder) > 0:
        return decoder[-1]
    if isinstance(decoder, nn.Module) and not isinstance(decoder, nn.ModuleList):
        return decoder
    root = model
    for attr in ("backbone", "encoder"):
        sub = getattr(model, attr, None)
        if isinstance(sub, nn.Module):
            root = sub
            break
    seen: list[tuple[int, int, nn.Module]] = []
    handles = []
    order = [0]

    def hook(m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, Tensor) and out.dim() == 4 and m is not model:
            order[0] += 1
            seen.append((out.shape[-2] * out.shape[-1], order[0], m))

    # a backbone's stages are its direct children (a squeeze-excitation gate inside one is
    # 1×1 and must not win); the whole model is searched module by module
    hooked = list(root.children()) if root is not model else list(root.modules())
    try:
        for m in hooked:
            handles.append(m.register_forward_hook(hook))
        with torch.no_grad():
            model(images[:1])
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise SegxaiError("layer: could not find a convolutional layer; pass layer=...")
    spatial = [s for s in seen if s[0] > 1] or seen
    smallest = min(s[0] for s in spatial)
    return max((s for s in spatial if s[0] == smallest), key=lambda s: s[1])[2]


def resolve_layers(adapter: ModelAdapter, images: Tensor,
                   layer: str | nn.Module | Sequence[str | nn.Module] | None) -> list[nn.Module]:
    """Modules for ``layer``: a dotted name, a module, a list of them, or ``None`` for the
    default layer (:func:`default_cam_layer`).

    The default is resolved once per adapter and kept by name in ``adapter.default_layer``
    (a name, not a module, so it follows modules swapped in place, e.g. ReLU → Softplus).

    Raises:
        ValueError: the adapter wraps a plain callable, a name is unknown, or the list is empty.
    """
    model = adapter.module
    if model is None:
        raise SegxaiError("model: layer-based explainers need an nn.Module, not a plain callable")
    if layer is None:
        if adapter.default_layer is None:
            with adapter.explaining():
                adapter.default_layer = module_name(model, default_cam_layer(model, images))
        return [find_layer(model, adapter.default_layer)]
    if isinstance(layer, (str, nn.Module)):
        return [find_layer(model, layer)]
    layers = [find_layer(model, item) for item in layer]
    if not layers:
        raise SegxaiError("layer: expected at least one layer")
    return layers


def layer_param(layer: Any) -> Any:
    """A JSON-friendly description of a ``layer`` argument (names kept, modules by type)."""
    if layer is None or isinstance(layer, str):
        return layer
    if isinstance(layer, nn.Module):
        return type(layer).__name__
    return [layer_param(item) for item in layer]
