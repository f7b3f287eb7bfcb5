"""Run only the part of a network after a layer ("head-only" recompute).

Seg-Ablation-CAM needs the model's output for many versions of one layer's activation. The
layers before it do not change, so recomputing them is waste. :class:`LayerReplay` records
one clean forward pass with hooks on every sub-module, then plans a *replay* of the model's
own ``forward`` in which

* every module call that finished before the layer started and was made directly by one of
  the layer's ancestors (the "frontier": encoder stages, U-Net skip features, ...) returns
  its cached output, expanded to the batch, without running its inner operations;
* the layer returns the given activations;
* everything else (the ancestors' own code and every call after the layer) runs normally.

This works on any ``nn.Module`` whose control flow does not depend on the data, without
tracing (``torch.fx`` fails on many real models). The plan is verified once: replaying the
clean activation must reproduce the clean output; if it does not (or raises), the replay
falls back to full forward passes with the layer's output replaced, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from segxai.core.adapter import PassCounter, _unwrap
from segxai.core.errors import SegxaiError
from segxai.core.layers import LayerRef, NonTensorOutput, module_name

__all__ = ["LayerReplay"]


class _ReplayMismatch(RuntimeError):
    """The replayed forward called modules in another order than the recorded one."""


class _Call:
    __slots__ = ("end", "module", "output", "parent", "start", "versions")

    def __init__(self, module: nn.Module, parent: _Call | None, start: int) -> None:
        self.module = module
        self.parent = parent
        self.start = start
        self.end = -1
        self.output: Any = None
        self.versions: list[int] = []


def _tensors(obj: Any) -> list[Tensor]:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


def _map(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(_map(v, fn) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map(v, fn) for v in obj)
    if isinstance(obj, dict):
        out = type(obj)() if type(obj) is not dict else {}
        for k, v in obj.items():
            out[k] = _map(v, fn)
        return out
    return obj


class LayerReplay:
    """The model's output for replaced activations of one layer, recomputing only what follows.

    Args:
        model: the module to run (eval mode is the caller's business).
        layer: a sub-module of ``model`` called exactly once per forward.
        image: ``1×C×H×W`` input.
        counter: pass counter (``forward`` for full passes, ``partial_forward`` for replays).
        prepare_input: applied to inputs before the model (e.g. channels-last).

    Attributes:
        output: the raw (unwrapped) clean output ``1×K×h×w``.
        activation: the layer's clean output ``1×C×h×w`` (a copy).
        mode: ``"head-only"`` or ``"full-forward"`` (fallback).
        cached_calls: number of module calls answered from the cache in a replay.
    """

    def __init__(self, model: nn.Module, layer: nn.Module, image: Tensor,
                 counter: PassCounter,
                 prepare_input: Callable[[Tensor], Tensor] | None = None) -> None:
        if layer is model:
            raise SegxaiError("layer: expected a sub-module of the model, got the model itself")
        self.model = model
        self.layer = layer
        self.image = image
        self.counter = counter
        self.prepare_input = prepare_input or (lambda x: x)
        self.materialize = False
        self.fallback_reason: str | None = None
        calls, layer_call, output = self._record(set())
        stale = self._plan(calls, layer_call)
        if stale:  # a frontier output was modified in place after its call: record copies
            calls, layer_call, output = self._record(stale)
            self._plan(calls, layer_call)
        self.output = output
        self.mode = "head-only"
        self._verify()

    # ------------------------------------------------------------------ recording
    def _record(self, clone_keys: set[tuple[int, int]]) -> tuple[list[_Call], _Call, Tensor]:
        calls: list[_Call] = []
        stack: list[_Call] = []
        seq = [0]
        per_module: dict[int, int] = {}
        layer_calls: list[_Call] = []
        handles = []

        def pre(m: nn.Module, _args: Any) -> None:
            seq[0] += 1
            call = _Call(m, stack[-1] if stack else None, seq[0])
            calls.append(call)
            stack.append(call)
            if m is self.layer:
                layer_calls.append(call)

        def post(m: nn.Module, _args: Any, out: Any) -> None:
            seq[0] += 1
            call = stack.pop()
            call.end = seq[0]
            idx = per_module.get(id(m), 0)
            per_module[id(m)] = idx + 1
            if (id(m), idx) in clone_keys:
                out = _map(out, lambda t: t.clone())
            call.output = out
            call.versions = [t._version for t in _tensors(out)]
            if m is self.layer:
                if not isinstance(out, Tensor) or out.dim() != 4:
                    ref = LayerRef(self.layer, module_name(self.model, self.layer))
                    raise NonTensorOutput(ref, out)
                self.activation = out.detach().clone()

        try:
            for m in self.model.modules():
                handles.append(m.register_forward_pre_hook(pre))
                handles.append(m.register_forward_hook(post))
            with torch.no_grad():
                self.counter.forward += self.image.shape[0]
                output = _unwrap(self.model(self.prepare_input(self.image)))
        finally:
            for h in handles:
                h.remove()
        if not layer_calls:
            raise SegxaiError("layer: the layer was not run by the model's forward pass")
        if len(layer_calls) > 1:
            raise SegxaiError(f"layer: the layer runs {len(layer_calls)} times in one forward "
                             "pass; choose a module that is called once")
        # per-call index of each module, in start order, to key the plan
        return calls, layer_calls[0], output.detach()

    def _plan(self, calls: list[_Call], layer_call: _Call) -> set[tuple[int, int]]:
        """Decide what each module call does in a replay; return keys of stale frontier calls."""
        status: dict[int, str] = {}
        plan: dict[int, list[tuple[str, _Call]]] = {}
        end_index: dict[int, int] = {}  # per-module call index in *recorded end order*
        order: dict[int, int] = {}
        for call in sorted(calls, key=lambda c: c.end):
            mid = id(call.module)
            order[id(call)] = end_index.get(mid, 0)
            end_index[mid] = order[id(call)] + 1
        stale: set[tuple[int, int]] = set()
        self._modules: dict[int, nn.Module] = {}
        for call in calls:  # start order: parents come first
            parent_status = "run" if call.parent is None else status[id(call.parent)]
            if parent_status != "run":
                s = "skipped"
            elif call is layer_call:
                s = "layer"
            elif call.end < layer_call.start:
                s = "cached"
                if [t._version for t in _tensors(call.output)] != call.versions:
                    stale.add((id(call.module), order[id(call)]))
            else:
                s = "run"
            status[id(call)] = s
            if s != "skipped":
                plan.setdefault(id(call.module), []).append((s, call))
                self._modules[id(call.module)] = call.module
        self._plan_entries = {mid: [(s, c.output if s == "cached" else None) for s, c in entries]
                              for mid, entries in plan.items()
                              if any(s in ("cached", "layer") for s, _ in entries)}
        self.cached_calls = sum(s == "cached" for e in plan.values() for s, _ in e)
        return stale

    # ------------------------------------------------------------------ running
    def _expand(self, obj: Any, batch: int) -> Any:
        def fn(t: Tensor) -> Tensor:
            if t.dim() == 0 or t.shape[0] != 1:
                return t
            view = t.expand(batch, *t.shape[1:])
            return view.clone() if (self.materialize or batch == 1) else view
        return _map(obj, fn)

    def _replay(self, acts: Tensor) -> Tensor:
        batch = acts.shape[0]
        saved: list[tuple[nn.Module, Any]] = []
        try:
            for mid, entries in self._plan_entries.items():
                module = self._modules[mid]
                saved.append((module, module.__dict__.get("forward")))
                module.forward = self._override(module.forward, entries, acts, batch)
            x = self.image.expand(batch, *self.image.shape[1:])
            return _unwrap(self.model(self.prepare_input(x)))
        finally:
            for module, old in saved:
                if old is None:
                    del module.forward
                else:
                    module.forward = old

    def _override(self, original: Callable[..., Any], entries: list[tuple[str, Any]],
                  acts: Tensor, batch: int) -> Callable[..., Any]:
        state = [0]

        def forward(*args: Any, **kwargs: Any) -> Any:
            k = state[0]
            state[0] += 1
            if k >= len(entries):
                raise _ReplayMismatch("a module was called more often than when recorded")
            what, cached = entries[k]
            if what == "cached":
                return self._expand(cached, batch)
            if what == "layer":
                return acts
            return original(*args, **kwargs)

        return forward

    def _full(self, acts: Tensor) -> Tensor:
        def hook(_m: nn.Module, _i: Any, _o: Any) -> Tensor:
            return acts
        handle = self.layer.register_forward_hook(hook)
        try:
            x = self.image.expand(acts.shape[0], *self.image.shape[1:])
            return _unwrap(self.model(self.prepare_input(x)))
        finally:
            handle.remove()

    def run(self, acts: Tensor) -> Tensor:
        """Raw model outputs ``B×K×h×w`` for the layer activations ``acts`` (``B×C×h×w``)."""
        if acts.shape[1:] != self.activation.shape[1:]:
            raise SegxaiError(f"activations: expected (B, {tuple(self.activation.shape[1:])}), "
                             f"got {tuple(acts.shape)}")
        with torch.inference_mode():
            if self.mode == "head-only":
                self.counter.partial_forward += acts.shape[0]
                return self._replay(acts)
            self.counter.forward += acts.shape[0]
            return self._full(acts)

    def _verify(self) -> None:
        ref = self.output
        scale = float(ref.abs().max()) + 1e-6
        for materialize in (False, True):
            self.materialize = materialize
            try:
                out = self.run(self.activation.expand(2, *self.activation.shape[1:]).clone())
            except Exception as exc:  # any failure of the replay means: cannot split
                self.fallback_reason = f"{type(exc).__name__}: {exc}"
                continue
            diff = float((out - ref).abs().max()) if out.shape[1:] == ref.shape[1:] else 1e30
            if diff <= 1e-4 * scale:
                self.fallback_reason = None
                return
            self.fallback_reason = f"replayed output differs from the clean one by {diff:.3g}"
        self.mode = "full-forward"
        warnings.warn("seg-ablation-cam: the model could not be split at the layer "
                      f"({self.fallback_reason}); running full forward passes instead",
                      RuntimeWarning, stacklevel=3)
