"""One seed of the continual experiment: the shared base task, then every strategy's tasks,
checkpointed per task through the experiment's :class:`~segxai.core.runstore.RunStore`.

Files (relative to the store)::

    base/seed{s}/                   model.safetensors + base.json: the model after task 0
                                    (shared by all strategies: task 0 has no memory yet, so
                                    its training is the same for all)
    runs/{strategy}/seed{s}/        state.json (task done, IoUs, rows), model_t{t}.safetensors,
                                    memory_t{t}/memory.npz + memory.json
    rows.jsonl                      one row per completed (strategy, seed, task), appended
                                    after its checkpoint (``RunStore.on_row`` sees each)

The per-task randomness is derived from ``(seed, task)`` and every task starts a fresh
optimiser, so a run resumed from the last completed task ends with the same numbers as an
uninterrupted one.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from segxai.continual.config import ContinualConfig
from segxai.continual.learner import build_memory, evaluate_ious, mib_init, train_task
from segxai.continual.memory import ReplayMemory
from segxai.continual.metrics import task_metrics
from segxai.continual.scenario import eval_masks, seen_classes, task_indices, task_masks
from segxai.continual.summary import write_results
from segxai.core.runstore import RunStore

__all__ = ["base_is_strong", "classes_reach", "open_store", "run_seed", "task_is_learned"]


def open_store(config: ContinualConfig, out: str | Path) -> RunStore:
    """The experiment's store (kind ``"continual"``; other settings there are refused)."""
    return RunStore(out, kind="continual", settings=config.to_dict())


def _nan_to_none(values: Any) -> Any:
    if isinstance(values, float) and math.isnan(values):
        return None
    if isinstance(values, (list, tuple)):
        return [_nan_to_none(v) for v in values]
    return values


def _none_to_nan(values: list[Any]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def _make_model(config: ContinualConfig, seed: int) -> nn.Module:
    from segxai.models.unet import UNet, UNetConfig

    torch.manual_seed(int(seed))
    return UNet(UNetConfig.from_dict(config.model))


def _data(config: ContinualConfig, seed: int) -> tuple[Any, Any]:
    from segxai.data import make_shapes
    from segxai.data.textured import make_textured_shapes

    make = make_textured_shapes if config.dataset == "textured-shapes" else make_shapes
    train = make(config.n_train, size=config.size, seed=10_000 + int(seed))
    val = make(config.n_val, size=config.size, seed=99_991)
    return train, val


def _task_data(train: Any, config: ContinualConfig, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = task_indices(train.masks, config.tasks, t)
    return train.images[idx], task_masks(train.masks[idx], config.tasks, t)


def _row(strategy: str, seed: int, t: int, metrics: dict[str, float],
         memory: ReplayMemory) -> dict[str, Any]:
    return {"strategy": strategy, "seed": seed, "task": t, **metrics,
            "exemplars": len(memory), "bytes": memory.nbytes}


def classes_reach(iou: np.ndarray, classes: list[int], target: float | None) -> bool:
    """Every class in ``classes`` has validation IoU >= ``target`` (a class without a
    validation pixel, NaN, does not); True when ``target`` is None."""
    if target is None:
        return True
    values = np.array([iou[c] for c in classes], dtype=np.float64)
    return bool(np.all(np.nan_to_num(values, nan=0.0) >= float(target)))


def base_is_strong(config: ContinualConfig, iou: np.ndarray) -> bool:
    """Every base class reaches ``config.base_target`` validation IoU (True without one)."""
    return classes_reach(iou, config.tasks[0], config.base_target)


def task_is_learned(config: ContinualConfig, t: int, iou: np.ndarray) -> bool:
    """Every class of incremental task ``t`` reaches ``config.task_target`` validation IoU
    (True without one): the strong-base rule applied to each later task's new classes."""
    return classes_reach(iou, config.tasks[t], config.task_target)


def _base_task(config: ContinualConfig, seed: int, store: RunStore, train: Any, val: Any,
               device: str, progress: bool) -> tuple[str, np.ndarray, bool]:
    """Train (or reload) the task-0 model of ``seed``: rounds of ``base_epochs`` (a fresh
    one-cycle schedule each) until every base class reaches ``base_target`` IoU on the
    validation set or ``base_rounds`` rounds ran. Returns its file, IoUs and whether it is
    strong (a weak seed is excluded by :func:`run_seed`)."""
    folder = f"base/seed{seed}"
    state = store.read_json(f"{folder}/base.json")
    if state is not None:
        iou = _none_to_nan(state["iou"])
        return f"{folder}/model.safetensors", iou, base_is_strong(config, iou)
    start = time.perf_counter()
    model = _make_model(config, seed)
    images, masks = _task_data(train, config, 0)
    seen = seen_classes(config.tasks, 0)
    epochs = config.base_epochs if config.base_epochs is not None else config.epochs
    history = []
    for round_ in range(config.base_rounds):
        train_task(model, images, masks, seen, epochs=epochs, batch_size=config.batch_size,
                   ratio=config.ratio, lr=config.lr, seed=seed * 100 + 1000 * round_,
                   device=device, progress=progress, desc=f"seed {seed} task 0")
        iou = evaluate_ious(model, val.images, eval_masks(val.masks, config.tasks, 0), seen,
                            config.model["num_classes"], device=device)
        history.append(_nan_to_none(iou.tolist()))
        if base_is_strong(config, iou):
            break
    strong = base_is_strong(config, iou)
    store.write_tensors(f"{folder}/model.safetensors", model.state_dict())
    store.write_json(f"{folder}/base.json", {
        "iou": _nan_to_none(iou.tolist()), "rounds": len(history), "history": history,
        "strong": strong, "target": config.base_target,
        "seconds": time.perf_counter() - start})
    return f"{folder}/model.safetensors", iou, strong


def _rounds_entry(config: ContinualConfig, t: int, iou: np.ndarray,
                  history: list[list[float | None]]) -> dict[str, Any]:
    """What the rounds rule did in task ``t``: rounds trained, the new classes' validation
    IoU after each, and whether they reached ``task_target`` (None without one)."""
    return {"rounds": len(history), "new_iou": history, "target": config.task_target,
            "reached": None if config.task_target is None else task_is_learned(config, t, iou)}


def _joint(config: ContinualConfig, seed: int, store: RunStore, train: Any, val: Any,
           device: str, progress: bool) -> None:
    """The upper bound: one model trained on every task's labels at once (as many epochs as
    task 0 gets in its first round plus every incremental task), evaluated like the last
    task; its row has strategy ``"joint"``."""
    folder = f"joint/seed{seed}"
    if store.read_json(f"{folder}/state.json") is not None:
        return
    start = time.perf_counter()
    last = len(config.tasks) - 1
    model = _make_model(config, seed)
    idx = torch.isin(train.masks.flatten(1), torch.tensor(
        [c for task in config.tasks for c in task])).any(1).nonzero().flatten()
    seen = seen_classes(config.tasks, last)
    base_epochs = config.base_epochs if config.base_epochs is not None else config.epochs
    train_task(model, train.images[idx], eval_masks(train.masks[idx], config.tasks, last), seen,
               epochs=base_epochs + last * config.epochs, batch_size=config.batch_size,
               ratio=config.ratio, lr=config.lr, seed=seed * 100 + 99, device=device,
               progress=progress, desc=f"seed {seed} joint")
    iou = evaluate_ious(model, val.images, eval_masks(val.masks, config.tasks, last), seen,
                        config.model["num_classes"], device=device)
    metrics = task_metrics([iou] * (last + 1), config.tasks)
    metrics["forgetting"] = math.nan
    row = {"strategy": "joint", "seed": seed, "task": last, **metrics, "exemplars": 0,
           "bytes": 0}
    store.write_json(f"{folder}/state.json", {
        "iou": _nan_to_none(iou.tolist()), "rows": [{k: _nan_to_none(v) for k, v in
                                                     row.items()}],
        "seconds": time.perf_counter() - start})


def _run_strategy(config: ContinualConfig, strategy: str, seed: int, store: RunStore,
                  train: Any, val: Any, base_model: str, base_iou: np.ndarray, device: str,
                  progress: bool, bar: Any) -> None:
    folder = f"runs/{strategy}/seed{seed}"
    num_classes = config.model["num_classes"]
    size = (config.size, config.size)
    patch = None if config.patch is None else (int(config.patch), int(config.patch))
    params = {"r": config.r, "tau": config.tau, "patch": config.patch,
              "explainer": config.explainer}
    model = _make_model(config, seed)
    state = store.read_json(f"{folder}/state.json")
    rounds: list[dict[str, Any] | None]
    if state is not None:
        done = int(state["task"])
        model.load_state_dict(store.read_tensors(f"{folder}/model_t{done}.safetensors"))
        memory = ReplayMemory.load(store.root / folder / f"memory_t{done}")
        ious = [_none_to_nan(v) for v in state["ious"]]
        rows = state["rows"]
        seconds = state["seconds"]
        rounds = state.get("rounds", [None] * (done + 1))
    else:
        done = -1
        memory = ReplayMemory(strategy, config.budget_bytes, size, params)
        ious, rows, seconds = [], [], 0.0
        rounds = []
    for t in range(done + 1, len(config.tasks)):
        start = time.perf_counter()
        images, masks = _task_data(train, config, t)
        seen = seen_classes(config.tasks, t)
        if t == 0:
            model.load_state_dict(store.read_tensors(base_model))
            iou = base_iou
            rounds.append(None)  # task 0: the shared base (base/seed{s}/base.json)
        else:
            old_model = None
            old_seen = seen_classes(config.tasks, t - 1)
            if config.distill > 0:
                old_model = _make_model(config, seed)
                old_model.load_state_dict(model.state_dict())
                old_model.eval()
                mib_init(model, config.tasks[t], num_classes)
            mem_img, mem_msk, mem_bg = memory.replay(seen, num_classes, config.replay_labels)
            history: list[list[float | None]] = []
            for round_ in range(config.task_rounds):
                # round 0 keeps the single-round seed: without a target nothing changes
                train_task(model, images, masks, seen,
                           memory_images=torch.from_numpy(mem_img).float() / 255.0,
                           memory_masks=torch.from_numpy(mem_msk).long(),
                           memory_bg=torch.from_numpy(mem_bg), unbiased_ce=config.unbiased_ce,
                           epochs=config.epochs, batch_size=config.batch_size,
                           ratio=config.ratio, lr=config.lr, seed=seed * 100 + t + 1000 * round_,
                           old_model=old_model, old_seen=old_seen, new_classes=config.tasks[t],
                           distill=config.distill, device=device, progress=progress,
                           desc=f"{strategy} s{seed} t{t}")
                iou = evaluate_ious(model, val.images, eval_masks(val.masks, config.tasks, t),
                                    seen, num_classes, device=device)
                history.append(_nan_to_none([float(iou[c]) for c in config.tasks[t]]))
                if task_is_learned(config, t, iou):
                    break
            rounds.append(_rounds_entry(config, t, iou, history))
        build_memory(memory, model, images, masks, task=t, new_classes=config.tasks[t],
                     seen=seen, seed=seed, explainer=config.explainer, r=config.r,
                     tau=config.tau, patch=patch, pseudo_threshold=config.pseudo_threshold,
                     saliency_on=config.saliency_on, selection=config.selection,
                     device=device)
        ious.append(iou)
        rows.append(_row(strategy, seed, t, task_metrics(ious, config.tasks), memory))
        rows[-1]["rounds"] = None if rounds[-1] is None else rounds[-1]["rounds"]
        rows[-1]["reached"] = None if rounds[-1] is None else rounds[-1]["reached"]
        seconds += time.perf_counter() - start
        # checkpoint: new files first, then the state that points at them, then clean up
        store.write_tensors(f"{folder}/model_t{t}.safetensors", model.state_dict())
        memory.save(store.path(f"{folder}/memory_t{t}/memory.json").parent)
        store.write_json(f"{folder}/state.json", {
            "task": t, "ious": [_nan_to_none(v.tolist()) for v in ious],
            "rows": [{k: _nan_to_none(v) for k, v in r.items()} for r in rows],
            "rounds": rounds, "seconds": seconds})
        if t > 0:
            (store.root / folder / f"model_t{t - 1}.safetensors").unlink(missing_ok=True)
            shutil.rmtree(store.root / folder / f"memory_t{t - 1}", ignore_errors=True)
        write_results(store, config)
        if bar is not None and t > 0:
            bar.update(1)
        store.append_row("rows", rows[-1])


def run_seed(config: ContinualConfig, seed: int, store: RunStore, device: str, progress: bool,
             bar: Any) -> None:
    """The base task of ``seed``, then every strategy (each resumes where it stopped) and
    the joint upper bound; a seed whose base is not strong runs no strategy (it is listed
    in the summary's ``excluded_seeds``)."""
    train, val = _data(config, seed)
    base_model, base_iou, strong = _base_task(config, seed, store, train, val, device, progress)
    if not strong:
        if bar is not None:
            bar.update(len(config.strategies) * (len(config.tasks) - 1))
        return
    if config.joint:
        _joint(config, seed, store, train, val, device, progress)
    for strategy in config.strategies:
        _run_strategy(config, strategy, seed, store, train, val, base_model, base_iou, device,
                      progress, bar)
