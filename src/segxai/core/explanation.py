"""The result every explainer returns: raw maps, method, parameters, target and cost."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from segxai.core.errors import SegxaiError
from segxai.core.postprocess import minmax, top_p, zscore
from segxai.core.target import Target

if TYPE_CHECKING:
    from segxai.core.adapter import ModelAdapter

__all__ = ["Cost", "CostMeter", "Explanation"]


@dataclass
class Cost:
    """Compute spent on one explanation call.

    ``forward_passes`` and ``backward_passes`` count images (a batch of 8 counts 8);
    ``partial_forward_passes`` counts images sent through only the part of the network after
    a layer (Seg-Ablation-CAM); ``peak_memory_bytes`` is the CUDA peak where measured.
    """

    forward_passes: int = 0
    backward_passes: int = 0
    seconds: float = 0.0
    partial_forward_passes: int = 0
    peak_memory_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CostMeter:
    """Measures wall time and the adapter's pass counters across a block."""

    def __init__(self, adapter: ModelAdapter) -> None:
        self.adapter = adapter
        self.cost = Cost()

    def __enter__(self) -> CostMeter:
        self._start = self.adapter.counter.snapshot()
        self._t0 = time.perf_counter()
        dev = self.adapter.device
        self._cuda = dev.type == "cuda"
        if self._cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        return self

    def add_backward(self, n: int) -> None:
        self.adapter.counter.backward += int(n)

    def __exit__(self, *exc: object) -> None:
        if self._cuda:
            torch.cuda.synchronize(self.adapter.device)
            self.cost.peak_memory_bytes = int(torch.cuda.max_memory_allocated(self.adapter.device))
        self.cost.seconds = time.perf_counter() - self._t0
        f, b, p = self.adapter.counter.snapshot()
        self.cost.forward_passes = f - self._start[0]
        self.cost.backward_passes = b - self._start[1]
        self.cost.partial_forward_passes = p - self._start[2]


@dataclass
class Explanation:
    """Raw attribution maps and everything needed to interpret and reproduce them.

    Attributes:
        maps: ``(N, H, W)`` float tensor at input resolution, unnormalised.
        method: registry name of the explainer.
        params: the explainer's parameters (JSON-friendly).
        target: the :class:`~segxai.core.target.Target` explained.
        cost: the :class:`Cost` of computing the maps.
        extras: method-specific data (e.g. channel weights, layer-resolution maps).
        logits: ``(N, K, H, W)`` logits of the model's clean forward of the images, when the
            method made one (``None`` for methods that only run perturbed copies, e.g.
            SmoothGrad, Integrated Gradients); they keep their graph when the maps do.
        layers: dotted names of the layers the method explained (empty for input methods).

    Post-processing is explicit: :meth:`normalized`, :meth:`thresholded`.
    """

    maps: Tensor
    method: str
    params: dict[str, Any]
    target: Target
    cost: Cost = field(default_factory=Cost)
    extras: dict[str, Any] = field(default_factory=dict)
    logits: Tensor | None = None
    layers: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def normalized(self, kind: str = "minmax") -> Tensor:
        """Per-image min-max to ``[0, 1]`` (``"minmax"``) or z-score (``"zscore"``)."""
        if kind == "minmax":
            return minmax(self.maps)
        if kind == "zscore":
            return zscore(self.maps)
        raise SegxaiError(f"kind: expected 'minmax' or 'zscore', got {kind!r}")

    def thresholded(self, p: float) -> Tensor:
        """Keep the top ``p`` percent of pixels of each map (others set to 0)."""
        return top_p(self.maps, p)

    def numpy(self) -> np.ndarray:
        return self.maps.detach().cpu().numpy()

    def detach(self) -> Explanation:
        logits = self.logits.detach() if self.logits is not None else None
        return Explanation(self.maps.detach(), self.method, self.params, self.target,
                           self.cost, self.extras, logits, list(self.layers))

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params, "target": self.target.describe(),
                "cost": self.cost.as_dict()}
