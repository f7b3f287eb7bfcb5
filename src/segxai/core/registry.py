"""Explainer protocol and registry.

An explainer is a class with a ``name``, a constructor taking its parameters, and one method
``_explain`` that returns raw maps. Registering it (``@register_explainer("name")``) makes it
available to :func:`explain`, the CLI, the contract tests, the metrics, the attacks, the
architecture search and continual learning.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.explanation import CostMeter, Explanation
from segxai.core.target import Target, check_target

__all__ = ["Explainer", "explain", "get_explainer", "list_explainers", "register_explainer"]

_REGISTRY: dict[str, type[Explainer]] = {}


class Explainer:
    """Base class of all explainers.

    Subclasses set ``name`` (through :func:`register_explainer`), validate their parameters in
    ``__init__`` (store them in ``self.params``) and implement :meth:`_explain`.

    Class attributes:
        differentiable: the maps can keep their graph w.r.t. the input (``create_graph=True``).
        uses_gradients: needs autograd through the model (False: any callable works).
    """

    name: ClassVar[str] = ""
    differentiable: ClassVar[bool] = False
    uses_gradients: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        if params:
            raise TypeError(f"{self.name or type(self).__name__}: unknown parameter(s) "
                            f"{sorted(params)}")
        self.params: dict[str, Any] = {}

    # -------------------------------------------------------------- public
    def __call__(self, model: Any, images: Tensor, target: Target, *,
                 create_graph: bool = False) -> Explanation:
        """Explain ``target`` for ``images``.

        Args:
            model: a model or :class:`ModelAdapter`.
            images: ``(N, C, H, W)`` float tensor in the model's input space.
            target: a :class:`Target` with one class and ROI per image.
            create_graph: keep the maps differentiable w.r.t. ``images`` (gradient methods).

        Returns:
            An :class:`Explanation` with ``maps`` of shape ``(N, H, W)``.
        """
        return self.explain_many(model, images, [target], create_graph=create_graph)[0]

    def explain_many(self, model: Any, images: Tensor, targets: Sequence[Target], *,
                     create_graph: bool = False) -> list[Explanation]:
        """Explain several targets of the same images (batched where the method allows)."""
        adapter = adapt(model)
        images = adapter.check(images)
        if create_graph and not self.differentiable:
            raise ValueError(f"create_graph: the {self.name!r} explainer cannot return "
                             "differentiable maps; use gradient, smoothgrad or seg-grad-cam")
        if not targets:
            raise ValueError("targets: expected at least one Target")
        k = adapter.num_classes(images)
        checked = [check_target(t).validate(images, k) for t in targets]
        with adapter.explaining(), CostMeter(adapter) as meter:
            results = self._explain_many(adapter, images, checked, meter=meter,
                                         create_graph=create_graph)
        out = []
        for t, (maps, extras) in zip(checked, results, strict=True):
            if not create_graph:
                maps = maps.detach()
            out.append(Explanation(maps, self.name, dict(self.params), t, meter.cost, extras))
        if len(out) > 1:
            for e in out:  # the cost is shared: report each target's share
                e.cost = type(meter.cost)(**{
                    **meter.cost.as_dict(),
                    "forward_passes": meter.cost.forward_passes // len(out),
                    "backward_passes": meter.cost.backward_passes // len(out),
                    "partial_forward_passes": meter.cost.partial_forward_passes // len(out),
                    "seconds": meter.cost.seconds / len(out)})
        return out

    # -------------------------------------------------------------- to implement
    def _explain(self, adapter: ModelAdapter, images: Tensor, target: Target, *,
                 meter: CostMeter, create_graph: bool) -> tuple[Tensor, dict[str, Any]]:
        raise TypeError(f"{type(self).__name__}: implement _explain or _explain_many")

    def _explain_many(self, adapter: ModelAdapter, images: Tensor, targets: list[Target], *,
                      meter: CostMeter, create_graph: bool) -> list[tuple[Tensor, dict[str, Any]]]:
        return [self._explain(adapter, images, t, meter=meter, create_graph=create_graph)
                for t in targets]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


def register_explainer(name: str):
    """Class decorator: register an :class:`Explainer` subclass under ``name``."""

    def deco(cls: type[Explainer]) -> type[Explainer]:
        if not (isinstance(cls, type) and issubclass(cls, Explainer)):
            raise TypeError("register_explainer: decorate an Explainer subclass")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method: an explainer named {name!r} is already registered")
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
        raise ValueError(f"method: unknown explainer {method!r}; available: "
                         f"{', '.join(sorted(_REGISTRY))}{hint}")
    return _REGISTRY[method]


def explain(model: Any, images: Tensor, target: Target | Sequence[Target],
            method: str = "seg-grad-cam", *, create_graph: bool = False,
            **params: Any) -> Explanation | list[Explanation]:
    """Explain ``target`` with the registered ``method``.

    Args:
        model: any segmentation model or :class:`ModelAdapter`.
        images: ``(N, C, H, W)`` model-space images.
        target: a :class:`Target`, or a list of them (several classes in one call).
        method: a name from :func:`list_explainers`.
        create_graph: keep maps differentiable w.r.t. the images.
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
        return explainer(model, images, target, create_graph=create_graph)
    if isinstance(target, (list, tuple)):
        return explainer.explain_many(model, images, list(target), create_graph=create_graph)
    raise TypeError(f"target: expected a Target or a list of Targets, got {type(target).__name__}")


def make_generator(seed: int | None, device: torch.device | None = None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (draws are moved to the device afterwards so that
    results are identical across devices)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(0 if seed is None else int(seed))
    return g
