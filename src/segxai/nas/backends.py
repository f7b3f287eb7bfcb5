"""Where candidates are scored and trained: in-process (default) or as Ray tasks.

The backends are the executors of :mod:`segxai.core.executor` (one fan-out for the search,
``segxai evaluate`` and ``segxai explain``): a backend maps a module-level function
``func(shared, item)`` over ``items``; ``shared`` (the probe batch, teacher maps, ...) is sent
to Ray once per call (``ray.put``), each item becomes one task. Ray tasks run with one torch
thread, and the scoring functions pin one thread themselves (:func:`single_thread`), so
results are bit-identical to the in-process backend.
"""

from __future__ import annotations

from segxai.core.errors import SegxaiError
from segxai.core.executor import InProcessExecutor, RayExecutor, single_thread

__all__ = ["InProcessBackend", "RayBackend", "make_backend", "single_thread"]

InProcessBackend = InProcessExecutor
RayBackend = RayExecutor


def make_backend(name: str = "local", address: str | None = None,
                 num_cpus: int | None = None) -> InProcessExecutor | RayExecutor:
    """``"local"`` (in-process) or ``"ray"``.

    Args:
        name: backend name.
        address: Ray cluster address (Ray only).
        num_cpus: CPUs for a local Ray (Ray only).

    Returns:
        The backend.
    """
    if name == "local":
        return InProcessBackend()
    if name == "ray":
        return RayBackend(address=address, num_cpus=num_cpus)
    raise SegxaiError(f"backend: expected 'local' or 'ray', got {name!r}")
