"""Explainer protocol and registry.

An explainer is a class with a ``name``, a constructor taking its parameters, and one method
``_explain`` that returns raw maps. Registering it (``@register_explainer("name")``) makes it
available to :func:`explain`, the CLI, the contract tests, the metrics, the attacks, the
architecture search and continual learning.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, overload

import torch
from torch import Tensor

from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.blackbox import is_black_box
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.explanation import CostMeter, Explanation
from segxai.core.target import Target, check_target

__all__ = ["Explainer", "RawMaps", "Wrt", "explain", "get_explainer", "list_explainers",
           "methods_without_gradients", "no_gradients_error", "register_explainer"]

_REGISTRY: dict[str, type[Explainer]] = {}
_E = TypeVar("_E", bound="Explainer")

Wrt = Literal["input", "params"]
"""What differentiable maps keep their graph to: the images, or the model's parameters."""


@dataclass
class RawMaps:
    """What a method computes for one target before it becomes an :class:`Explanation`.

    ``_explain``/``_explain_many`` may also return a plain ``(maps, extras)`` tuple.
    """

    maps: Tensor
    extras: dict[str, Any] = field(default_factory=dict)
    logits: Tensor | None = None
    layers: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, result: RawMaps | tuple[Tensor, dict[str, Any]]) -> RawMaps:
        return result if isinstance(result, RawMaps) else cls(result[0], dict(result[1]))


class Explainer:
    """Base class of all explainers.

    Subclasses set ``name`` (through :func:`register_explainer`), validate their parameters in
    ``__init__`` (store them in ``self.params``) and implement :meth:`_explain`.

    Class attributes:
        differentiable: the maps can keep their graph w.r.t. the input (``create_graph=True``)
            and w.r.t. the parameters (``differentiable_wrt="params"``).
        uses_gradients: needs autograd through the model (False: forward passes suffice).
        uses_layers: needs the model's layers (so not a :class:`~segxai.core.BlackBox`).
    """

    name: ClassVar[str] = ""
    differentiable: ClassVar[bool] = False
    uses_gradients: ClassVar[bool] = True
    uses_layers: ClassVar[bool] = False
    layer: Any = None

    def __init__(self, **params: Any) -> None:
        if params:
            raise SegxaiTypeError(f"{self.name or type(self).__name__}: unknown parameter(s) "
                            f"{sorted(params)}")
        self.params: dict[str, Any] = {}

    # -------------------------------------------------------------- public
    def __call__(self, model: Any, images: Tensor, target: Target, *,
                 create_graph: bool = False, differentiable_wrt: Wrt = "input") -> Explanation:
        """Explain ``target`` for ``images``.

        Args:
            model: a model or :class:`ModelAdapter`.
            images: ``(N, C, H, W)`` float tensor in the model's input space.
            target: a :class:`Target` with one class and ROI per image.
            create_graph: keep the maps differentiable (gradient methods).
            differentiable_wrt: ``"input"`` (default; parameters are frozen, the graph reaches
                the images) or ``"params"`` (implies ``create_graph``; parameters are not
                frozen and the model's train/eval mode is left as the caller set it, so the
                maps can enter a training loss).

        Returns:
            An :class:`Explanation` with ``maps`` of shape ``(N, H, W)``.
        """
        return self.explain_many(model, images, [target], create_graph=create_graph,
                                 differentiable_wrt=differentiable_wrt)[0]

    def explain_many(self, model: Any, images: Tensor, targets: Sequence[Target], *,
                     create_graph: bool = False,
                     differentiable_wrt: Wrt = "input") -> list[Explanation]:
        """Explain several targets of the same images (batched where the method allows)."""
        adapter = adapt(model)
        if is_black_box(adapter.model) and (self.uses_gradients or self.uses_layers):
            need = "gradients through the model" if self.uses_gradients else "the model's layers"
            raise no_gradients_error(self.name, f"a black box ({adapter.model!r})",
                                     black_box=True, need=need)
        images = adapter.check(images)
        if differentiable_wrt not in ("input", "params"):
            raise SegxaiError(f"differentiable_wrt: expected 'input' or 'params', got "
                             f"{differentiable_wrt!r}")
        graph = create_graph or differentiable_wrt == "params"
        if graph and not self.differentiable:
            raise SegxaiError(f"create_graph: the {self.name!r} explainer cannot return "
                             "differentiable maps; use a gradient method (gradient, smoothgrad, "
                             "integrated-gradients, seg-grad-cam, grad-cam++)")
        if not targets:
            raise SegxaiError("targets: expected at least one Target")
        # the class range is checked against the model's output when the method scores it
        checked = [check_target(t).validate(images, adapter.known_num_classes) for t in targets]
        mode = adapter.explaining() if differentiable_wrt == "input" else _keep_mode()
        with mode, CostMeter(adapter) as meter:
            results = self._run(adapter, images, checked, meter=meter, create_graph=graph,
                                wrt=differentiable_wrt)
        out = []
        for t, result in zip(checked, results, strict=True):
            raw = RawMaps.of(result)
            maps, logits = raw.maps, raw.logits
            if not graph:
                maps = maps.detach()
                logits = logits.detach() if logits is not None else None
            out.append(Explanation(maps, self.name, dict(self.params), t, meter.cost,
                                   raw.extras, logits, list(raw.layers)))
        if len(out) > 1:
            for e in out:  # the cost is shared: report each target's share
                e.cost = type(meter.cost)(**{
                    **meter.cost.as_dict(),
                    "forward_passes": meter.cost.forward_passes // len(out),
                    "backward_passes": meter.cost.backward_passes // len(out),
                    "partial_forward_passes": meter.cost.partial_forward_passes // len(out),
                    "seconds": meter.cost.seconds / len(out)})
        return out

    def with_layers(self, layers: Sequence[str]) -> Explainer:
        """A copy explaining the given layer names (e.g. :attr:`Explanation.layers` of an
        earlier call), so that later calls find the same layers by name even if modules are
        swapped in place; ``self`` for methods without layers."""
        if not layers or "layer" not in self.params:
            return self
        pinned: Any = layers[0] if len(layers) == 1 else list(layers)
        clone = copy.copy(self)
        clone.params = {**self.params, "layer": pinned}
        clone.layer = pinned
        return clone

    def _run(self, adapter: ModelAdapter, images: Tensor, targets: list[Target], *,
             meter: CostMeter, create_graph: bool,
             wrt: Wrt) -> Sequence[RawMaps | tuple[Tensor, dict[str, Any]]]:
        """The protocol step the method families override (see ``segxai.explainers.base``)."""
        if wrt == "params":
            raise SegxaiError(f"differentiable_wrt: the {self.name!r} explainer cannot keep a "
                             "graph to the parameters")
        return self._explain_many(adapter, images, targets, meter=meter,
                                  create_graph=create_graph)

    # -------------------------------------------------------------- to implement
    def _explain(self, adapter: ModelAdapter, images: Tensor, target: Target, *,
                 meter: CostMeter,
                 create_graph: bool) -> RawMaps | tuple[Tensor, dict[str, Any]]:
        raise SegxaiTypeError(f"{type(self).__name__}: implement _explain or _explain_many")

    def _explain_many(self, adapter: ModelAdapter, images: Tensor, targets: list[Target], *,
                      meter: CostMeter,
                      create_graph: bool) -> Sequence[RawMaps | tuple[Tensor, dict[str, Any]]]:
        return [self._explain(adapter, images, t, meter=meter, create_graph=create_graph)
                for t in targets]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


@contextlib.contextmanager
def _keep_mode() -> Iterator[None]:
    yield


def register_explainer(name: str) -> Callable[[type[_E]], type[_E]]:
    """Class decorator: register an :class:`Explainer` subclass under ``name``."""

    def deco(cls: type[_E]) -> type[_E]:
        if not (isinstance(cls, type) and issubclass(cls, Explainer)):
            raise SegxaiTypeError("register_explainer: decorate an Explainer subclass")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise SegxaiError(f"method: an explainer named {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_explainers() -> list[str]:
    """Names of all registered explainers, sorted."""
    return sorted(_REGISTRY)


def get_explainer(method: str) -> type[Explainer]:
    """The explainer class registered as ``method``."""
    if method not in _REGISTRY:
        close = difflib.get_close_matches(str(method), list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise SegxaiError(f"method: unknown explainer {method!r}; available: "
                         f"{', '.join(sorted(_REGISTRY))}{hint}")
    return _REGISTRY[method]


@overload
def explain(model: Any, images: Tensor, target: Target, method: str = ..., *,
            create_graph: bool = ..., differentiable_wrt: Wrt = ...,
            **params: Any) -> Explanation: ...
@overload
def explain(model: Any, images: Tensor, target: Sequence[Target], method: str = ..., *,
            create_graph: bool = ..., differentiable_wrt: Wrt = ...,
            **params: Any) -> list[Explanation]: ...
def explain(model: Any, images: Tensor, target: Target | Sequence[Target],
            method: str = "seg-grad-cam", *, create_graph: bool = False,
            differentiable_wrt: Wrt = "input", **params: Any) -> Explanation | list[Explanation]:
    """Explain ``target`` with the registered ``method``.

    Args:
        model: any segmentation model or :class:`ModelAdapter`.
        images: ``(N, C, H, W)`` model-space images.
        target: a :class:`Target`, or a list of them (several classes in one call).
        method: a name from :func:`list_explainers`.
        create_graph: keep maps differentiable w.r.t. the images.
        differentiable_wrt: ``"input"`` or ``"params"`` (maps differentiable w.r.t. the
            model's parameters, for training losses; see :meth:`Explainer.__call__`).
        **params: the explainer's parameters.

    Returns:
        One :class:`Explanation`, or a list for a list of targets.

    Example:
        >>> import torch, segxai
        >>> net = torch.nn.Conv2d(3, 2, 3, padding=1)
        >>> x = torch.rand(1, 3, 16, 16)
        >>> t = segxai.Target.whole_image(1, size=(16, 16))
        >>> segxai.explain(net, x, t, method="gradient").maps.shape
        torch.Size([1, 16, 16])
    """
    explainer = get_explainer(method)(**params)
    if isinstance(target, Target):
        return explainer(model, images, target, create_graph=create_graph,
                         differentiable_wrt=differentiable_wrt)
    if isinstance(target, (list, tuple)):
        return explainer.explain_many(model, images, list(target), create_graph=create_graph,
                                      differentiable_wrt=differentiable_wrt)
    raise SegxaiTypeError(f"target: expected a Target or a list of Targets, got {type(target).__name__}")


def methods_without_gradients(*, black_box: bool = False) -> list[str]:
    """Registered methods that need only forward passes (and, for ``black_box``, no layers)."""
    return [n for n in list_explainers() if not _REGISTRY[n].uses_gradients
            and not (black_box and _REGISTRY[n].uses_layers)]


def no_gradients_error(method: str, got: str, *, black_box: bool = False,
                       need: str = "gradients through the model") -> SegxaiError:
    """The one error of a method that cannot run on a model without gradients (or, for a
    black box, without layers), listing the registered methods that can.

    Args:
        method: the refusing method's name.
        got: what the model is or did (``"a black-box model (...)"``, ``"float labels"``).
        black_box: the model has no layers either (the list leaves out layer methods).
        need: what the method needs.
    """
    works = ", ".join(methods_without_gradients(black_box=black_box)) or "none registered"
    return SegxaiError(f"model: the {method!r} method needs {need}, expected a differentiable "
                       f"PyTorch model, got {got}; the model has no gradients"
                       f"{' and no layers' if black_box else ''}: methods that work on it: "
                       f"{works}")


def make_generator(seed: int | None, device: torch.device | None = None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (draws are moved to the device afterwards so that
    results are identical across devices)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(0 if seed is None else int(seed))
    return g
