"""Fan work out: in this process, over local processes, or as tasks on a Ray cluster.

One executor serves every command that spreads work (``segxai evaluate`` and ``segxai
explain`` with ``--workers``/``--ray``, the architecture search). An executor maps a
module-level function ``func(shared, item)`` over ``items``:

* ``shared`` (the model, the settings) is sent once per worker process (local processes:
  the pool's initializer; Ray: one ``ray.put``), each item is one task;
* :meth:`Executor.imap` yields ``(index, result)`` as tasks finish, so the caller can record
  each finished chunk in its run store at once, and pulls items lazily, with at most a few
  tasks per worker in flight (item data, e.g. images, is never all in memory at once);
* :meth:`Executor.map` returns the results in item order.

Results do not depend on the executor as long as ``func`` does not depend on which process
runs it or in which order (segxai's explainers and metrics draw randomness from generators
seeded per image, so they do not).

Local processes use the ``spawn`` start method (safe with threads, CUDA and macOS). The
command-line executors (:func:`make_executor`) run one torch thread per worker, so that the
results do not depend on the number of workers (torch's CPU kernels may round differently
with another thread count); Ray tasks take one CPU (and one GPU when asked) and run one torch
thread.
"""

from __future__ import annotations

import abc
import concurrent.futures as cf
import contextlib
import hashlib
import multiprocessing
import os
import pickle
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from segxai.core.errors import SegxaiError

__all__ = ["Executor", "InProcessExecutor", "ProcessExecutor", "RayExecutor", "available_cores",
           "check_ray_address", "chunks", "make_executor", "single_thread", "worker_state"]

Task = Callable[[Any, Any], Any]

#: Seconds allowed to reach a Ray cluster's address before giving up.
RAY_CONNECT_TIMEOUT = 10.0


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def single_thread(threads: int = 1) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# One entry of per-process state derived from ``shared`` (an adapter, the set of warmed-up
# methods), so that a worker builds it once per run rather than once per task.
_STATE: dict[str, Any] = {}


def worker_state(key: str, build: Callable[[], Any]) -> Any:
    """The state stored under ``key`` in this process, built by ``build()`` on first use.

    Only the latest key is kept, so a long-lived worker (Ray) holds one run's state at most.
    """
    if key not in _STATE:
        _STATE.clear()
        _STATE[key] = build()
    return _STATE[key]


def _clear_state() -> None:
    _STATE.clear()


class Executor(abc.ABC):
    """Base of the executors: ``imap`` is the one method a backend implements.

    Attributes:
        name: ``"local"``, ``"processes"`` or ``"ray"``.
        workers: how many tasks run at once (used to size chunks of work).
    """

    name = "local"
    workers = 1

    @abc.abstractmethod
    def imap(self, func: Task, shared: Any, items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, func(shared, item))`` for every item, in completion order."""

    def map(self, func: Task, shared: Any, items: Sequence[Any], progress: bool = False,
            desc: str = "") -> list[Any]:
        """``[func(shared, item) for item in items]``, computed by this executor.

        Args:
            func: a module-level function of ``(shared, item)``.
            shared: data common to all items.
            items: the work items.
            progress: show a progress bar (one step per item).
            desc: progress-bar label.

        Returns:
            The results, in item order.
        """
        items = list(items)
        out: list[Any] = [None] * len(items)
        bar: Any = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(items), desc=desc, leave=False)
        try:
            for i, result in self.imap(func, shared, items):
                out[i] = result
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return out

    def close(self) -> None:  # noqa: B027 - a no-op default that backends may override
        """Release what the executor holds (nothing by default)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Runs every item in this process, in order.

    Args:
        threads: torch threads while it runs (``None``: the process's setting).
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def pinned(self) -> contextlib.AbstractContextManager[None]:
        """A context running the block with this executor's torch threads."""
        return single_thread(self.threads) if self.threads else contextlib.nullcontext()

    def imap(self, func: Task, shared: Any, items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        try:
            with self.pinned():
                for i, item in enumerate(items):
                    yield i, func(shared, item)
        finally:
            _clear_state()


def chunks(indices: Sequence[int], workers: int, per_worker: int = 2,
           largest: int = 32) -> list[list[int]]:
    """``indices`` cut into consecutive chunks, about ``per_worker`` per worker (at most
    ``largest`` each), so that every worker has work and a finished chunk is checkpointed
    soon."""
    if not indices:
        return []
    size = max(1, min(largest, -(-len(indices) // (max(1, workers) * per_worker))))
    return [list(indices[k:k + size]) for k in range(0, len(indices), size)]


# ---------------------------------------------------------------------- local processes
_SHARED: list[Any] = []


def _init_worker(payload: bytes, threads: int) -> None:
    torch.set_num_threads(threads)
    # ``payload`` was pickled by the parent of this very process (the pool's own channel).
    _SHARED[:] = [pickle.loads(payload)]  # noqa: S301


def _run_in_worker(func: Task, item: Any) -> Any:
    return func(_SHARED[0], item)


def _bounded(submit: Callable[[Any], Any], wait: Callable[[list[Any]], tuple[list[Any], list[Any]]],
             result: Callable[[Any], Any], items: Iterable[Any],
             in_flight: int) -> Iterator[tuple[int, Any]]:
    """Submit items lazily, at most ``in_flight`` at once; yield results as they finish."""
    index: dict[Any, int] = {}
    pending: list[Any] = []
    source = enumerate(items)
    exhausted = False
    while pending or not exhausted:
        while not exhausted and len(pending) < in_flight:
            nxt = next(source, None)
            if nxt is None:
                exhausted = True
                break
            handle = submit(nxt[1])
            index[handle] = nxt[0]
            pending.append(handle)
        if not pending:
            break
        finished, pending = wait(pending)
        for handle in finished:
            yield index.pop(handle), result(handle)


class ProcessExecutor(Executor):
    """Runs items in ``workers`` local processes (``spawn``), ``threads`` torch threads each.

    The pool of processes lives until :meth:`close` (or the end of a ``with`` block) and is
    reused by every :meth:`imap` call whose ``shared`` pickles to the same bytes as the previous
    call's (a checkpointed loop that maps one task chunk by chunk starts its processes once); a
    call with other ``shared`` data starts a new pool.

    Args:
        workers: number of processes (>= 1).
        threads: torch threads per process (``None``: ``max(1, cores // workers)``, faster
            when there are more cores than workers, but torch's CPU kernels may then change
            the last bits of results with the number of workers; see :func:`make_executor`).

    Attributes:
        pools_started: how many pools this executor has started.
    """

    name = "processes"

    def __init__(self, workers: int, threads: int | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise SegxaiError(f"workers: expected an integer >= 1, got {workers!r}")
        self.workers = workers
        self.threads = threads if threads is not None else max(1, available_cores() // workers)
        self.pools_started = 0
        self._pool: cf.ProcessPoolExecutor | None = None
        self._digest = b""

    def _pool_for(self, shared: Any) -> cf.ProcessPoolExecutor:
        payload = pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)
        digest = hashlib.blake2b(payload, digest_size=16).digest()
        if self._pool is None or digest != self._digest:
            self.close()
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(payload, self.threads))
            self._digest = digest
            self.pools_started += 1
        return self._pool

    def imap(self, func: Task, shared: Any, items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        pool = self._pool_for(shared)

        def wait(pending: list[Any]) -> tuple[list[Any], list[Any]]:
            done, rest = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            return [f for f in pending if f in done], [f for f in pending if f in rest]

        finished = False
        try:
            yield from _bounded(lambda item: pool.submit(_run_in_worker, func, item), wait,
                                lambda f: f.result(), items, 2 * self.workers)
            finished = True
        finally:
            if not finished:  # an error, or the caller stopped early: drop the queued tasks
                self.close()

    def close(self) -> None:
        """Stop the worker processes (a later call starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._digest = b""


# ---------------------------------------------------------------------------------- Ray
def _ray_call(func: Task, shared: Any, item: Any, threads: int) -> Any:
    torch.set_num_threads(threads)
    return func(shared, item)


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT,
                      option: str = "--ray") -> None:
    """Raise unless something accepts connections at ``address`` (``HOST:PORT`` or
    ``ray://HOST:PORT``) within ``timeout`` seconds; ``auto`` and ``local`` are not checked.

    ``ray.init`` itself retries an unreachable address for minutes; this check fails fast.
    """
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise SegxaiError(f"{option}: expected a Ray address HOST:PORT, ray://HOST:PORT or "
                          f"auto, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise SegxaiError(f"{option}: expected a running Ray cluster at {address}, got no "
                          f"answer ({reason} within {timeout:g} s); start one with `ray start "
                          "--head` or check the address") from None


class RayExecutor(Executor):
    """Runs items as Ray tasks (one CPU each, and ``num_gpus`` GPUs).

    Args:
        address: a Ray cluster address (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``);
            ``None`` starts (or reuses) a local Ray with ``num_cpus`` CPUs.
        num_cpus: CPUs of a local Ray instance (``None``: Ray's default).
        num_gpus: GPUs per task (1 for CUDA work).
        threads: torch threads per task.

    Raises:
        SegxaiError: ray is not installed, or nothing answers at ``address`` within
            :data:`RAY_CONNECT_TIMEOUT` seconds.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 num_gpus: float = 0, threads: int = 1) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - ray is an optional dependency
            raise SegxaiError("ray: expected the ray package (pip install segxai[ray]), got "
                              "none installed") from exc
        self._ray: Any = ray  # untyped calls
        self._started = False
        self.threads = threads
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False}
            if address is not None:
                check_ray_address(address)
                try:
                    ray.init(address=address, **kwargs)
                except (ConnectionError, RuntimeError) as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise SegxaiError(f"--ray: expected a Ray cluster that accepts this "
                                      f"driver at {address}, got {type(exc).__name__}: "
                                      f"{first}") from exc
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
            self._started = True
        resources: dict[str, float] = self._ray.cluster_resources()
        per_task = "GPU" if num_gpus else "CPU"
        self.workers = max(1, int(resources.get(per_task, 1) / (num_gpus or 1)))
        self._remote = ray.remote(num_cpus=1, num_gpus=num_gpus)(_ray_call)

    def imap(self, func: Task, shared: Any, items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        ray = self._ray
        shared_ref = ray.put(shared)

        def wait(pending: list[Any]) -> tuple[list[Any], list[Any]]:
            done, rest = ray.wait(pending, num_returns=1)
            return list(done), list(rest)

        yield from _bounded(lambda item: self._remote.remote(func, shared_ref, item,
                                                             self.threads),
                            wait, ray.get, items, 2 * self.workers)

    def close(self) -> None:
        """Disconnect from Ray if this executor connected."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
            self._started = False


def make_executor(workers: int | None = None, ray: str | None = None,
                  device: str = "cpu") -> Executor:
    """The executor for ``workers`` local processes or the Ray cluster at ``ray``.

    Every worker (and this process, with ``workers=1``) runs one torch thread: torch's CPU
    kernels can round differently with another thread count (measured: a 1-image U-Net
    forward differs by 7e-9 between 1 and 2 threads), so one thread per worker is what makes
    the results identical for any number of workers. Use as many workers as cores.

    Args:
        workers: local processes (``None``: this process with its own thread setting; 1:
            this process with one torch thread).
        ray: a Ray cluster address (``auto``: the cluster ``ray start`` runs on this machine).
        device: the torch device; ``cuda...`` gives every Ray task one GPU.

    Returns:
        An :class:`InProcessExecutor`, :class:`ProcessExecutor` or :class:`RayExecutor`.

    Raises:
        SegxaiError: ``workers`` < 1, both ``workers`` and ``ray``, or an unreachable Ray.
    """
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise SegxaiError(f"--workers: expected an integer >= 1, got {workers!r}")
    if ray is not None:
        if workers is not None:
            raise SegxaiError(f"--workers: expected no value with --ray (the cluster's CPUs "
                              f"or GPUs set the parallelism), got {workers}")
        return RayExecutor(address=ray, num_gpus=1 if str(device).startswith("cuda") else 0)
    if workers is None:
        return InProcessExecutor()
    if workers == 1:
        return InProcessExecutor(threads=1)
    return ProcessExecutor(workers, threads=1)
