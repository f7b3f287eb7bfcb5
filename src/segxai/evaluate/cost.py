"""Cost of an explanation as metrics beside faithfulness (recorded by the explainers)."""

from __future__ import annotations

from segxai.core.errors import SegxaiTypeError
from segxai.core.explanation import Explanation

__all__ = ["cost_metrics"]


def cost_metrics(explanation: Explanation) -> dict[str, float]:
    """``seconds``, ``forward_passes``, ``backward_passes``, ``partial_forward_passes`` and,
    where measured (CUDA), ``peak_memory_bytes`` of one explanation call.

    Args:
        explanation: an :class:`~segxai.core.explanation.Explanation`.

    Returns:
        Metric name → value.
    """
    if not isinstance(explanation, Explanation):
        raise SegxaiTypeError(f"explanation: expected a segxai Explanation, got "
                        f"{type(explanation).__name__}")
    c = explanation.cost
    out = {"seconds": float(c.seconds), "forward_passes": float(c.forward_passes),
           "backward_passes": float(c.backward_passes),
           "partial_forward_passes": float(c.partial_forward_passes)}
    if c.peak_memory_bytes is not None:
        out["peak_memory_bytes"] = float(c.peak_memory_bytes)
    return out
