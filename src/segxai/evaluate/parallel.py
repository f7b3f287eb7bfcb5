"""The evaluation's (image, method) pairs on an executor: chunks of images × one method.

:func:`compute_parallel` is what :func:`~segxai.evaluate.evaluate_methods` runs when it is
given a :class:`~segxai.core.executor.Executor` with workers (local processes or a Ray
cluster). Each task evaluates one chunk of images with one method, with exactly the code of
the in-process run (:func:`segxai.evaluate.runner._compute`), each image seeded by its place
in the whole run; finished pairs come back to the driver, which appends them to the run
store's rows as each chunk finishes (a killed run resumes from there). ``results.csv`` is
built from the rows in image × method order, so it does not depend on which worker
finished first.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from segxai.core.adapter import adapt
from segxai.core.executor import Executor, chunks, worker_state
from segxai.core.runstore import RunStore
from segxai.evaluate.config import EvalConfig

__all__ = ["compute_parallel"]


@dataclass
class _Shared:
    """What every task of one run needs (sent once per worker)."""

    token: str
    model: Any
    config: EvalConfig
    device: str


def _worker_adapter(shared: _Shared) -> tuple[Any, set[str]]:
    adapter = adapt(shared.model)
    if adapter.module is not None:
        adapter.module.to(shared.device)
    return adapter, set()


def evaluate_chunk(shared: _Shared, item: tuple[str, list[int], Tensor, Tensor | None,
                                                list[str]]) -> list[dict[str, Any]]:
    """Evaluate one method on a chunk of images; the finished pairs' records, in order.

    Args:
        shared: the run's model, settings and device.
        item: ``(method, positions in the run, images, masks or None, image ids)``.
    """
    from segxai.evaluate.runner import _compute

    method, positions, images, masks, ids = item
    adapter, warmed = worker_state(shared.token, lambda: _worker_adapter(shared))
    done: dict[tuple[str, str], dict[str, Any]] = {}
    _compute(adapter, images, masks, ids, [(k, method) for k in range(len(ids))],
             shared.config, None, done, None, warmed=warmed, positions=positions)
    return [done[(image, method)] for image in ids]


def _cpu_copy(model: Any) -> Any:
    """``model`` as it can be sent to another process: its parameters on the CPU."""
    module = getattr(model, "module", model)
    params = list(module.parameters()) if hasattr(module, "parameters") else []
    if all(p.device.type == "cpu" for p in params):
        return model
    return copy.deepcopy(model).to("cpu")


def compute_parallel(executor: Executor, model: Any, images: Tensor, masks: Tensor | None,
                     ids: list[str], todo: list[tuple[int, str]], config: EvalConfig,
                     store: RunStore | None, done: dict[tuple[str, str], dict[str, Any]],
                     bar: Any, device: str = "cpu") -> int:
    """Evaluate the ``todo`` pairs on ``executor`` into ``done`` (and the store's rows).

    Args:
        executor: where the chunks run.
        model: the model (or adapter); sent to every worker with its parameters on the CPU.
        images: ``(N, C, H, W)`` model-space images of the whole run.
        masks: ``(N, H, W)`` class ids or ``None``.
        ids: the images' names.
        todo: ``(image index, method)`` pairs still to compute.
        config: the run's settings.
        store: the run store (rows appended as chunks finish) or ``None``.
        done: finished records by ``(image id, method)``; updated.
        bar: progress (one update per pair) or ``None``.
        device: the torch device in the workers.

    Returns:
        The number of pairs computed.
    """
    from segxai.evaluate.runner import PROGRESS

    methods = list(dict.fromkeys(m for _, m in todo))
    plan = [(m, chunk) for m in methods
            for chunk in chunks([i for i, mm in todo if mm == m], executor.workers)]

    def items() -> Iterator[tuple[str, list[int], Tensor, Tensor | None, list[str]]]:
        for m, chunk in plan:
            yield (m, chunk, images[chunk].cpu(),
                   None if masks is None else masks[chunk].cpu(), [ids[i] for i in chunk])

    shared = _Shared(uuid.uuid4().hex, _cpu_copy(model), config, str(device))
    for _, records in executor.imap(evaluate_chunk, shared, items()):
        for rec in records:
            done[(str(rec["image"]), str(rec["method"]))] = rec
            if store is not None:
                store.append_row(PROGRESS, rec)
        if bar is not None:
            bar.update(len(records))
    return len(todo)
