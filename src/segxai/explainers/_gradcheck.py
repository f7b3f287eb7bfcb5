"""The one check that a model can be differentiated, for every gradient method.

A model that hides its gradients (a forward under ``torch.no_grad``, a runtime wrapped in a
module or a function, integer class labels) would otherwise crash with a raw autograd error
or, worse, give a map that ignores the model. :func:`check_graph` refuses it with the
registry's one error listing the methods that work; :func:`graph_checked` applies it to every
call of the model while a gradient method runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from segxai.core.adapter import ModelAdapter, _unwrap
from segxai.core.errors import SegxaiError
from segxai.core.registry import no_gradients_error

__all__ = ["check_graph", "graph_checked"]


def check_graph(method: str, output: Tensor, inputs: Sequence[object]) -> None:
    """Refuse a forward that cannot be differentiated: integer outputs (class labels), or an
    output without autograd history although an input has one (the model runs under
    ``torch.no_grad`` or leaves PyTorch).

    Raises:
        SegxaiError: :func:`~segxai.core.registry.no_gradients_error`, naming ``method``.
    """
    if not (output.is_floating_point() or output.is_complex()):
        raise no_gradients_error(method, f"an output of {output.dtype} class labels")
    if torch.is_grad_enabled() and not output.requires_grad and any(
            isinstance(t, Tensor) and t.requires_grad for t in inputs):
        raise no_gradients_error(method, "a model whose output carries no autograd history "
                                 "(its forward runs under torch.no_grad or outside PyTorch)")


@contextlib.contextmanager
def graph_checked(adapter: ModelAdapter, method: str) -> Iterator[None]:
    """Inside the block every call of the model goes through :func:`check_graph`, whichever
    way a method calls it: a forward hook on a module, a wrapper around a plain callable."""

    def check(args: Sequence[object], out: object) -> None:
        try:
            output = _unwrap(out)
        except SegxaiError:
            return  # the adapter reports unusable outputs itself
        check_graph(method, output, args)

    module = adapter.module
    if module is None:
        fn = adapter.model

        def checked(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            check(args, out)
            return out

        adapter.model = checked
        try:
            yield
        finally:
            adapter.model = fn
        return
    try:
        handle = module.register_forward_hook(lambda _m, args, out: check(args, out))
    except RuntimeError:  # TorchScript modules take no hooks: the VJP check still applies
        yield
        return
    try:
        yield
    finally:
        handle.remove()
