"""Where candidates are scored and trained: in-process (default) or as Ray tasks.

A backend maps a module-level function ``func(shared, item)`` over ``items``. ``shared`` (the
probe batch, teacher maps, ...) is sent to Ray once per call (``ray.put``), each item becomes
one task. Workers run with one torch thread so that results are bit-identical to the
in-process backend, which also scores with one thread (see :func:`single_thread`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from segxai.core.errors import SegxaiError

__all__ = ["InProcessBackend", "RayBackend", "make_backend", "single_thread"]


@contextlib.contextmanager
def single_thread(threads: int = 1) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class InProcessBackend:
    """Runs every item in this process, in order."""

    name = "local"

    def map(self, func: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any],
            progress: bool = False, desc: str = "") -> list[Any]:
        """``[func(shared, item) for item in items]``.

        Args:
            func: a function of ``(shared, item)``.
            shared: data common to all items.
            items: the work items.
            progress: show a progress bar.
            desc: progress-bar label.

        Returns:
            The results, in item order.
        """
        iterator: Any = items
        if progress:
            from tqdm.auto import tqdm
            iterator = tqdm(items, desc=desc, leave=False)
        return [func(shared, item) for item in iterator]

    def close(self) -> None:
        """Nothing to release."""


def _ray_call(func: Callable[[Any, Any], Any], shared: Any, item: Any) -> Any:
    torch.set_num_threads(1)
    return func(shared, item)


class RayBackend:
    """Fans items out as Ray tasks (one CPU each).

    Args:
        address: a Ray cluster address (``ray://...`` or ``auto``); ``None`` starts (or reuses)
            a local Ray with ``num_cpus`` CPUs.
        num_cpus: CPUs of a local Ray instance (``None``: Ray's default).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is an optional dependency
            raise SegxaiError("backend: 'ray' needs the ray package (pip install segxai[ray])") \
                from exc
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address is not None:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
            self._started = True
        self._remote = ray.remote(num_cpus=1)(_ray_call)

    def map(self, func: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any],
            progress: bool = False, desc: str = "") -> list[Any]:
        """Run ``func(shared, item)`` for every item as Ray tasks; results in item order."""
        ray = self._ray
        if not items:
            return []
        shared_ref = ray.put(shared)
        refs = [self._remote.remote(func, shared_ref, item) for item in items]
        if not progress:
            return list(ray.get(refs))
        from tqdm.auto import tqdm
        pending = list(refs)
        with tqdm(total=len(refs), desc=desc, leave=False) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                bar.update(len(done))
        return list(ray.get(refs))

    def close(self) -> None:
        """Shut Ray down if this backend started it."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False


def make_backend(name: str = "local", address: str | None = None,
                 num_cpus: int | None = None) -> InProcessBackend | RayBackend:
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
