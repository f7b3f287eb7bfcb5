"""ReLU → Softplus(β) surgery for explanation attacks and the β-smoothing defence.

A ReLU network is piecewise linear, so the gradient of a gradient explanation w.r.t. the input
is zero almost everywhere and an attacker has nothing to follow (Dombrowski et al., NeurIPS
2019). Replacing every ReLU by ``softplus_β(x) = log(1 + exp(βx)) / β`` makes the network
smooth; ``β → ∞`` recovers the ReLU. The attack grows β (10 → 100) while optimising and
evaluates the result on the original ReLU model; the β-smoothing defence computes
explanations on a small-β model.

Only activation *modules* can be replaced: ``nn.ReLU`` and ``nn.ReLU6`` (the latter becomes
``softplus_β(x) − softplus_β(x − 6)``, a smooth clipped ramp). Functional calls inside a
``forward`` (``F.relu``, ``torch.relu``, ``x.relu()``) are not reachable from outside the
model and stay ReLUs; other activations (``LeakyReLU``, ``Hardswish``, ``ELU``, ``GELU``,
``SiLU``, ...) are left unchanged (the last three are smooth already). The built-in U-Net uses
``nn.ReLU`` modules only. :func:`count_replaceable` tells how many modules would be swapped.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = ["SoftplusBeta", "SoftplusSwap", "count_replaceable", "softplus_model"]


class SoftplusBeta(nn.Module):
    """``softplus_β(x) = log(1 + exp(βx)) / β`` with a β that can be changed in place.

    Args:
        beta: sharpness (> 0); larger is closer to the ReLU; ``math.inf`` is the exact ReLU
            (or ReLU6), which lets an attack evaluate the original network without leaving
            the :func:`softplus_model` block.
        clip: ``None`` for a ReLU replacement, ``6.0`` for a ReLU6 replacement
            (``softplus_β(x) − softplus_β(x − clip)``).
    """

    def __init__(self, beta: float, clip: float | None = None) -> None:
        super().__init__()
        if not beta > 0:
            raise SegxaiError(f"beta: expected a positive number, got {beta!r}")
        self.beta = float(beta)
        self.clip = None if clip is None else float(clip)

    def forward(self, x: Tensor) -> Tensor:
        if math.isinf(self.beta):
            return F.relu(x) if self.clip is None else x.clamp(0.0, self.clip)
        # threshold: softplus is computed exactly as x where βx > 20 (no overflow)
        y = F.softplus(x, beta=self.beta, threshold=20.0)
        if self.clip is not None:
            y = y - F.softplus(x - self.clip, beta=self.beta, threshold=20.0)
        return y

    def extra_repr(self) -> str:
        return f"beta={self.beta:g}" + (f", clip={self.clip:g}" if self.clip is not None else "")


def _replaceable(module: nn.Module) -> float | None | bool:
    """``None`` for a ReLU (no clip), 6.0 for a ReLU6, ``False`` when not replaceable."""
    if isinstance(module, nn.ReLU6):
        return 6.0
    if isinstance(module, nn.ReLU):
        return None
    return False


def _slots(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, str]]:
    """Every (parent, attribute, module, dotted name) holding a ReLU/ReLU6; a module object
    used in several places (a shared ``self.relu``) yields one slot per place."""
    slots = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent._modules.items():
            if child is not None and _replaceable(child) is not False:
                full = f"{parent_name}.{child_name}" if parent_name else child_name
                slots.append((parent, child_name, child, full))
    return slots


def count_replaceable(model: nn.Module) -> int:
    """How many ``nn.ReLU``/``nn.ReLU6`` slots :func:`softplus_model` would replace."""
    return len(_slots(model))


@dataclass
class SoftplusSwap:
    """Handle returned by :func:`softplus_model`: the inserted modules and their names."""

    modules: list[SoftplusBeta] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def set_beta(self, beta: float) -> None:
        """Change β of every inserted Softplus module."""
        if not beta > 0:
            raise SegxaiError(f"beta: expected a positive number, got {beta!r}")
        for m in self.modules:
            m.beta = float(beta)

    def __len__(self) -> int:
        return len(self.modules)


@contextlib.contextmanager
def softplus_model(model: nn.Module, beta: float = 10.0) -> Iterator[SoftplusSwap]:
    """Replace the model's ReLU/ReLU6 modules by :class:`SoftplusBeta` in place, temporarily.

    The original module objects are put back when the block exits, also when it raises, so
    the model is identical (same objects, same parameters) before and after.

    Args:
        model: the network to smooth (modified in place inside the block only).
        beta: initial β; change it with ``swap.set_beta(beta)``.

    Yields:
        A :class:`SoftplusSwap` (``len(swap) == 0`` if the model has no ReLU modules).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
        >>> with softplus_model(net, beta=5.0) as swap:
        ...     type(net[1]).__name__, len(swap)
        ('SoftplusBeta', 1)
        >>> type(net[1]).__name__
        'ReLU'
    """
    if not isinstance(model, nn.Module):
        raise SegxaiTypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not beta > 0:
        raise SegxaiError(f"beta: expected a positive number, got {beta!r}")
    plan = _slots(model)  # collected first, then swapped
    swap = SoftplusSwap()
    done: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent, name, original, full in plan:
            clip = _replaceable(original)
            new = SoftplusBeta(beta, clip=clip if isinstance(clip, float) else None)
            new.train(original.training)
            setattr(parent, name, new)
            done.append((parent, name, original))
            swap.modules.append(new)
            swap.names.append(full)
        yield swap
    finally:
        for parent, name, original in reversed(done):
            setattr(parent, name, original)
