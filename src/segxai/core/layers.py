"""Find layers by dotted name and capture their activations with hooks that always go away.

A layer is a sub-module named by its dotted path (``"backbone.16"``). When a module returns a
tuple, list or dict, an index selects one tensor of it: ``"net.C_12[0]"``, ``"head[out]"``
(nested: ``"a[0][1]"``); :class:`LayerRef` holds the module and that index path.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from segxai.core.blackbox import is_black_box
from segxai.core.errors import SegxaiError, SegxaiTypeError

if TYPE_CHECKING:
    from segxai.core.adapter import ModelAdapter

__all__ = ["ActivationStore", "LayerRef", "NonTensorOutput", "capture_activations",
           "default_cam_layer", "find_layer", "find_layer_ref", "layer_names", "layer_param",
           "module_name", "non_tensor_output_error", "resolve_layer_refs", "resolve_layers",
           "split_layer_name"]

_INDEX = re.compile(r"\[\s*(?:'([^']*)'|\"([^\"]*)\"|([^\[\]'\"]+?))\s*\]")


def layer_names(model: nn.Module) -> list[str]:
    """All dotted sub-module names of ``model`` (``""`` excluded)."""
    return [name for name, _ in model.named_modules() if name]


def split_layer_name(name: str) -> tuple[str, tuple[str, ...]]:
    """``"net.C_12[0]"`` → ``("net.C_12", ("0",))``; a name without index → ``(name, ())``.

    Raises:
        SegxaiError: brackets that do not form indices.
    """
    cut = name.find("[")
    if cut < 0:
        return name, ()
    base, rest, keys, pos = name[:cut], name[cut:], [], 0
    for m in _INDEX.finditer(rest):
        if m.start() != pos:
            break
        keys.append(next(g for g in m.groups() if g is not None))
        pos = m.end()
    if not base or pos != len(rest):
        raise SegxaiError(f"layer: expected a dotted name with optional indices such as "
                          f"'block.conv' or 'block[0]', got {name!r}")
    return base, tuple(keys)


@dataclass(frozen=True, eq=False)
class LayerRef:
    """A layer: a sub-module and, for a module that returns a tuple/list/dict, the index path
    of the tensor meant (``()``: the output itself).

    Attributes:
        module: the sub-module whose output is hooked.
        name: the full name, e.g. ``"net.C_12[0]"``.
        path: the indices/keys as written (``("0",)``).
    """

    module: nn.Module
    name: str
    path: tuple[str, ...] = ()

    def select(self, output: object) -> object:
        """The part of ``output`` this layer means."""
        value = output
        for depth, key in enumerate(self.path):
            value = self._child(value, key, depth)
        return value

    def replace(self, output: object, new: object) -> object:
        """``output`` with the selected part replaced by ``new`` (containers rebuilt)."""
        return self._replace(output, self.path, new, 0)

    def _child(self, value: object, key: str, depth: int) -> Any:
        where = self.name.split("[")[0] + "".join(f"[{k}]" for k in self.path[:depth])
        if isinstance(value, dict):
            for k in (key, int(key) if _is_int(key) else key):
                if k in value:
                    return value[k]
        elif isinstance(value, (tuple, list)) and _is_int(key) \
                and -len(value) <= int(key) < len(value):
            return value[int(key)]
        options = _tensor_entries(value, where)
        hint = f"; its tensor-valued entries: {', '.join(options)}" if options else ""
        raise SegxaiError(f"layer: expected an index of the output of {where!r}, got [{key}] "
                          f"for a {type(value).__name__}{hint}")

    def _replace(self, value: Any, path: tuple[str, ...], new: object, depth: int) -> Any:
        if not path:
            return new
        key, rest = path[0], path[1:]
        if isinstance(value, dict):
            k: Any = key if key in value else int(key)
            out = dict(value) if type(value) is dict else type(value)(value)
            out[k] = self._replace(value[k], rest, new, depth + 1)
            return out
        items = list(value)
        i = int(key)
        items[i] = self._replace(items[i], rest, new, depth + 1)
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
            return type(value)(*items)
        return type(value)(items)


def _is_int(key: str) -> bool:
    return bool(re.fullmatch(r"-?\d+", key))


def find_layer_ref(model: nn.Module, layer: str | nn.Module) -> LayerRef:
    """The :class:`LayerRef` for a dotted name (with optional indices) or a module of
    ``model``.

    Raises:
        SegxaiError: the name is unknown (the message lists the closest names) or the module
            is not part of ``model``.
    """
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise SegxaiError("layer: the given module is not a sub-module of the model")
        return LayerRef(layer, module_name(model, layer))
    if not isinstance(layer, str):
        raise SegxaiTypeError(f"layer: expected a dotted name or an nn.Module, got "
                              f"{type(layer).__name__}")
    base, path = split_layer_name(layer)
    modules: dict[str, nn.Module] = dict(model.named_modules())
    if base in modules and base:
        return LayerRef(modules[base], layer, path)
    names = [n for n in modules if n]
    if is_black_box(model) or not names:
        raise SegxaiError(f"layer: expected a model with layers, got {type(model).__name__}, "
                          f"which has none (a black box); use a method without layers")
    close = difflib.get_close_matches(base, names, n=5, cutoff=0.4)
    hint = f"; closest: {', '.join(close)}" if close else f"; some names: {', '.join(names[:8])}"
    raise SegxaiError(f"layer: unknown layer name {base!r}{hint}")


def find_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """Return the sub-module named ``layer`` (dotted, e.g. ``"backbone.16"``) or ``layer`` itself.

    An indexed name (``"block[0]"``) gives the module whose output it indexes.

    Raises:
        ValueError: the name is unknown (the message lists the closest names) or the module is
            not part of ``model``.
    """
    return find_layer_ref(model, layer).module


def module_name(model: nn.Module, module: nn.Module) -> str:
    name: str
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
    """The layer CAM-type explainers explain when none is given (the faithful default).

    In order: a ``segxai_default_layer`` attribute (dotted name); for encoder–decoder nets (a
    ``decoder`` sub-module) the layer feeding the classifier head: the last stage of a
    ``decoder`` ModuleList (segxai's U-Net) or the ``decoder`` itself (smp); else the last
    backbone stage: the last-run, smallest direct child of ``model.backbone`` /
    ``model.encoder`` (torchvision), or the deepest module of the whole model. One probe
    forward of the first image, without gradients. Why (the layer study): docs/evaluation.md.
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

    # a backbone's stages are its direct children (a 1×1 squeeze-excitation gate must not win)
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


def resolve_layer_refs(adapter: ModelAdapter, images: Tensor,
                       layer: str | nn.Module | Sequence[str | nn.Module] | None
                       ) -> list[LayerRef]:
    """:class:`LayerRef` for ``layer``: a dotted name (optionally indexed, ``"block[0]"``), a
    module, a list of them, or ``None`` for the default layer (:func:`default_cam_layer`).

    The default is resolved once per adapter and kept by name in ``adapter.default_layer``
    (a name, not a module, so it follows modules swapped in place, e.g. ReLU → Softplus).

    Raises:
        SegxaiError: the model is a plain callable or a black box, a name is unknown, or the
            list is empty.
    """
    model = adapter.module
    if model is None or is_black_box(model):
        raise SegxaiError("model: layer-based explainers need an nn.Module with layers, got "
                          f"{'a plain callable' if model is None else 'a black box'}")
    if layer is None:
        if adapter.default_layer is None:
            with adapter.explaining():
                adapter.default_layer = module_name(model, default_cam_layer(model, images))
        return [find_layer_ref(model, adapter.default_layer)]
    if isinstance(layer, (str, nn.Module)):
        return [find_layer_ref(model, layer)]
    refs = [find_layer_ref(model, item) for item in layer]
    if not refs:
        raise SegxaiError("layer: expected at least one layer")
    return refs


def resolve_layers(adapter: ModelAdapter, images: Tensor,
                   layer: str | nn.Module | Sequence[str | nn.Module] | None) -> list[nn.Module]:
    """The modules of :func:`resolve_layer_refs`, for methods that replace a module's whole
    output (an indexed name is refused: pick a tensor-valued child instead).

    Raises:
        SegxaiError: as :func:`resolve_layer_refs`, or a name with an index.
    """
    refs = resolve_layer_refs(adapter, images, layer)
    for ref in refs:
        if ref.path:
            raise SegxaiError(f"layer: expected a module whose output is a tensor for this "
                              f"method, got the index {ref.name!r}; pick a tensor-valued child "
                              "module (segxai.layer_names(model) lists them)")
    return [ref.module for ref in refs]


# ---------------------------------------------------------------------------- non-tensor outputs
class NonTensorOutput(SegxaiError):
    """Raised by a hook on a layer whose (selected) output is not an ``(N, C, h, w)``
    tensor; :func:`non_tensor_output_error` turns it into the message with alternatives."""

    def __init__(self, ref: LayerRef, value: object) -> None:
        super().__init__(f"layer: expected an (N, C, h, w) tensor output, got {_kind(value)} "
                         f"from {ref.name!r}")
        self.ref = ref
        self.value = value


def _kind(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def _tensor_entries(value: object, prefix: str, depth: int = 2) -> list[str]:
    """Indexed names of the ``(N, C, h, w)`` tensors inside a tuple/list/dict output."""
    if isinstance(value, dict):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, (tuple, list)):
        items = list(enumerate(value))
    else:
        return []
    out = []
    for key, item in items:
        name = f"{prefix}[{key}]"
        if isinstance(item, Tensor) and item.dim() == 4:
            out.append(name)
        elif depth > 1:
            out.extend(_tensor_entries(item, name, depth - 1))
    return out


def _tensor_children(model: nn.Module, module: nn.Module, run: Callable[[], object],
                     limit: int = 8) -> list[str]:
    """Names of ``module``'s sub-modules whose output was an ``(N, C, h, w)`` tensor in one
    probe forward (``run``), the last ``limit`` executed (those nearest the output)."""
    import torch

    prefix = module_name(model, module)
    seen: list[str] = []
    handles = []
    for name, sub in module.named_modules():
        if not name:
            continue
        full = f"{prefix}.{name}" if prefix else name

        def hook(_m: nn.Module, _i: object, out: object, full: str = full) -> None:
            if isinstance(out, Tensor) and out.dim() == 4 and full not in seen:
                seen.append(full)
        handles.append(sub.register_forward_hook(hook))
    try:
        with torch.no_grad():
            run()
    except Exception:  # noqa: BLE001 - only a hint for an error message; the error follows
        pass
    finally:
        for h in handles:
            h.remove()
    return seen[-limit:]


def non_tensor_output_error(model: nn.Module, err: NonTensorOutput,
                            run: Callable[[], object] | None = None, *,
                            indices: bool = True) -> SegxaiError:
    """The error for a layer whose output is not a tensor, listing what can be used
    instead: the tensor-valued indices of its output (``"block[0]"``; unless ``indices`` is
    false, for methods that replace a module's whole output) and, with a probe forward
    ``run``, its tensor-valued sub-modules (``"block.conv"``)."""
    options = _tensor_entries(err.value, err.ref.name) if indices else []
    if run is not None:
        options += _tensor_children(model, err.ref.module, run)
    hint = (f"; use one of its tensor-valued indices or children instead: {', '.join(options)}"
            if options else "; choose a layer that returns an (N, C, h, w) tensor")
    return SegxaiError(f"layer: expected an (N, C, h, w) tensor output, got {_kind(err.value)} "
                       f"from {err.ref.name!r}{hint}")


def layer_param(layer: Any) -> Any:
    """A JSON-friendly description of a ``layer`` argument (names kept, modules by type)."""
    if layer is None or isinstance(layer, str):
        return layer
    if isinstance(layer, nn.Module):
        return type(layer).__name__
    return [layer_param(item) for item in layer]
