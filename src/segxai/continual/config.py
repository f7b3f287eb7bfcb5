"""Settings of the continual-segmentation experiment (:class:`ContinualConfig`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from segxai.continual.compress import STRATEGIES
from segxai.continual.scenario import validate_tasks
from segxai.core.errors import SegxaiError

__all__ = ["DATASETS", "FULL_EXEMPLAR_BYTES_64", "ContinualConfig", "class_names",
           "min_exemplar_bytes", "quick_config"]

FULL_EXEMPLAR_BYTES_64 = 4 * 64 * 64 + 4
DATASETS = ("shapes", "textured-shapes")


def class_names(dataset: str) -> list[str]:
    """Class names (background first) of a continual dataset."""
    if dataset == "textured-shapes":
        from segxai.data.textured import TEXTURED_CLASSES

        return list(TEXTURED_CLASSES)
    from segxai.data import SHAPES_CLASSES

    return list(SHAPES_CLASSES)


def min_exemplar_bytes(strategy: str, size: int, r: float, patch: int | None = None) -> int:
    """The fewest bytes one exemplar of ``strategy`` can take at ``size × size`` (0 for
    ``none``): full 4·HW + 4; downsample 4·h·w + 4 at ``1/√r`` per side; patch 4·p² + 8; a
    box strategy at least its low copy minus one covered pixel plus one box pixel
    (4·h·w + 16)."""
    from segxai.continual.compress import BOX_STRATEGIES
    from segxai.continual.resample import low_size

    hl, wl = low_size(size, size, r)
    if strategy == "none":
        return 0
    if strategy == "full":
        return 4 * size * size + 4
    if strategy == "downsample":
        return 4 * hl * wl + 4
    if strategy == "saliency-patch":
        p = (hl, wl) if patch is None else (int(patch), int(patch))
        return 4 * p[0] * p[1] + 8
    if strategy in BOX_STRATEGIES:
        return min(4 * hl * wl + 16, 4 * size * size + 12)
    raise SegxaiError(f"strategy: unknown strategy {strategy!r}")


def _default_model() -> dict[str, Any]:
    return {"depth": 3, "base_width": 8, "num_classes": 5}


@dataclass
class ContinualConfig:
    """Settings of a continual experiment (JSON-serialisable).

    Attributes:
        tasks: foreground classes of each task (default ``[[1, 2], [3], [4]]``: disc + square,
            then triangle, then ring).
        strategies: memory strategies (:data:`segxai.continual.compress.STRATEGIES`).
        seeds: seeds (model init, training data, batch order, selection).
        budget_bytes: memory budget in bytes (default: 20 full 64×64 exemplars incl. meta).
        epochs: epochs per incremental task.
        base_epochs: epochs of task 0 (None: ``epochs``); the base task is trained once per
            seed and shared by all strategies, so a longer base schedule is cheap.
        batch_size: images per step.
        ratio: fraction of each batch replayed from memory.
        lr: Adam learning rate.
        r: compression ratio (``downsample``, outside the box, EPR patch area ``1/r``).
        tau: saliency-box threshold.
        patch: EPR patch side (None: ``size / √r``).
        explainer: saliency method (any registered explainer).
        pseudo_threshold: old-class pseudo-label confidence for stored masks (None = off).
        saliency_on: classes whose saliency places the patch / box: ``"selected"`` (the class
            the exemplar is stored for) or ``"present"`` (every labelled class in it).
        distill: MiB unbiased-distillation weight (0 = off; MiB uses 10).
        unbiased_ce: MiB's unbiased cross-entropy on the current images (background label =
            background or any old class).
        replay_labels: how replayed masks label classes learned after they were stored
            (:meth:`ReplayMemory.replay`): ``"unbiased"`` (background may be any class the
            mask does not know), ``"ignore"`` (such background pixels ignored) or ``"stored"``
            (as stored: background means background, the biased baseline).
        n_train: training images generated per seed (each task uses those with its classes).
        n_val: validation images (one fixed set for all seeds).
        size: image side.
        model: :class:`segxai.models.UNetConfig` fields.
        dataset: ``"shapes"`` (default: 4 classes) or ``"textured-shapes"`` (16 classes,
            shape × fill; :func:`segxai.data.textured.make_textured_shapes`).
        selection: exemplar selection, ``"random"`` or ``"herding"``.
        base_target: task 0 trains (rounds of ``base_epochs``) until every base class
            reaches this validation IoU; a seed that does not within ``base_rounds`` is
            excluded from every strategy (reported). None = one round, no check.
        base_rounds: most rounds of task-0 training.
        joint: also train one model per seed on all tasks' labels at once (upper bound).
        task_target: each incremental task trains in rounds of ``epochs`` (a fresh one-cycle
            schedule each) until every class of that task reaches this validation IoU, at
            most ``task_rounds`` rounds; a task that does not get there keeps its last
            round and is reported (``reached: false``), never dropped. None = one round.
        task_rounds: most rounds of an incremental task.
    """

    tasks: list[list[int]] = field(default_factory=lambda: [[1, 2], [3], [4]])
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget_bytes: int = 20 * FULL_EXEMPLAR_BYTES_64
    epochs: int = 8
    base_epochs: int | None = 30
    batch_size: int = 16
    ratio: float = 0.5
    lr: float = 3e-3
    r: float = 4.0
    tau: float = 0.6
    patch: int | None = None
    explainer: str = "seg-grad-cam"
    pseudo_threshold: float | None = 0.7
    saliency_on: Literal["selected", "present"] = "selected"
    distill: float = 0.0
    unbiased_ce: bool = False
    replay_labels: Literal["unbiased", "ignore", "stored"] = "unbiased"
    n_train: int = 300
    n_val: int = 100
    size: int = 64
    model: dict[str, Any] = field(default_factory=_default_model)
    dataset: Literal["shapes", "textured-shapes"] = "shapes"
    selection: Literal["random", "herding"] = "random"
    base_target: float | None = None
    base_rounds: int = 1
    joint: bool = False
    task_target: float | None = None
    task_rounds: int = 1

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise SegxaiError(f"dataset: expected one of {DATASETS}, got {self.dataset!r}")
        n_classes = len(class_names(self.dataset))
        self.tasks = validate_tasks(self.tasks, n_classes)
        if len(self.tasks) < 2:
            raise SegxaiError("tasks: expected at least two tasks")
        if not self.strategies or any(s not in STRATEGIES for s in self.strategies):
            raise SegxaiError(f"strategies: expected a non-empty subset of {STRATEGIES}, "
                             f"got {self.strategies!r}")
        if len(set(self.strategies)) != len(self.strategies):
            raise SegxaiError(f"strategies: duplicates in {self.strategies!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise SegxaiError(f"seeds: expected distinct integers, got {self.seeds!r}")
        self.seeds = [int(s) for s in self.seeds]
        for name in ("budget_bytes",):
            if int(getattr(self, name)) < 0:
                raise SegxaiError(f"{name}: expected an integer >= 0, got {getattr(self, name)}")
        if self.base_epochs is not None and (isinstance(self.base_epochs, bool) or not
                                             isinstance(self.base_epochs, int)
                                             or self.base_epochs < 1):
            raise SegxaiError(f"base_epochs: expected an integer >= 1, got {self.base_epochs!r}")
        for name in ("epochs", "batch_size", "n_train", "n_val", "size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SegxaiError(f"{name}: expected an integer >= 1, got {v!r}")
        if self.size < 16:
            raise SegxaiError(f"size: expected at least 16 pixels, got {self.size}")
        if not 0.0 <= float(self.ratio) < 1.0:
            raise SegxaiError(f"ratio: expected a fraction in [0, 1), got {self.ratio!r}")
        if not 0.0 < float(self.tau) < 1.0:
            raise SegxaiError(f"tau: expected a threshold in (0, 1), got {self.tau!r}")
        if not float(self.r) >= 1.0:
            raise SegxaiError(f"r: expected a compression ratio >= 1, got {self.r!r}")
        if self.selection not in ("random", "herding"):
            raise SegxaiError(f"selection: expected 'random' or 'herding', got "
                              f"{self.selection!r}")
        if self.base_target is not None and not 0.0 < float(self.base_target) <= 1.0:
            raise SegxaiError(f"base_target: expected an IoU in (0, 1], got {self.base_target!r}")
        if isinstance(self.base_rounds, bool) or not isinstance(self.base_rounds, int) \
                or self.base_rounds < 1:
            raise SegxaiError(f"base_rounds: expected an integer >= 1, got {self.base_rounds!r}")
        if self.task_target is not None and (isinstance(self.task_target, bool) or not
                                             0.0 < float(self.task_target) <= 1.0):
            raise SegxaiError(f"task_target: expected an IoU in (0, 1], got {self.task_target!r}")
        if isinstance(self.task_rounds, bool) or not isinstance(self.task_rounds, int) \
                or self.task_rounds < 1:
            raise SegxaiError(f"task_rounds: expected an integer >= 1, got {self.task_rounds!r}")
        if self.patch is not None and not 1 <= int(self.patch) <= self.size:
            raise SegxaiError(f"patch: expected a side in [1, {self.size}], got {self.patch!r}")
        if self.saliency_on not in ("selected", "present"):
            raise SegxaiError(f"saliency_on: expected 'selected' or 'present', got "
                             f"{self.saliency_on!r}")
        if self.replay_labels not in ("unbiased", "ignore", "stored"):
            raise SegxaiError(f"replay_labels: expected 'unbiased', 'ignore' or 'stored', got "
                              f"{self.replay_labels!r}")
        if self.distill < 0:
            raise SegxaiError(f"distill: expected a weight >= 0, got {self.distill!r}")
        import segxai.explainers  # noqa: F401  (registers the built-in explainers)
        from segxai.core.registry import list_explainers

        if self.explainer not in list_explainers():
            raise SegxaiError(f"explainer: expected one of {list_explainers()}, "
                             f"got {self.explainer!r}")
        self.model = dict(self.model)
        self.model["num_classes"] = n_classes
        n_fg = len({c for task in self.tasks for c in task})
        for strategy in self.strategies:
            need = min_exemplar_bytes(strategy, self.size, float(self.r), self.patch)
            if need and int(self.budget_bytes) // n_fg < need:
                raise SegxaiError(
                    f"budget_bytes: expected at least {need * n_fg} bytes (one {strategy} "
                    f"exemplar of {need} B for each of the {n_fg} classes), got "
                    f"{self.budget_bytes}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContinualConfig:
        return cls(**data)


def quick_config(**overrides: Any) -> ContinualConfig:
    """The same pipeline at a size that runs in about a minute (32×32, one seed)."""
    base: dict[str, Any] = {"seeds": [0], "epochs": 3, "base_epochs": 6, "n_train": 120, "n_val": 40, "size": 32,
            "budget_bytes": 20 * (4 * 32 * 32 + 4),
            "model": {"depth": 2, "base_width": 8, "num_classes": 5}}
    base.update(overrides)
    return ContinualConfig(**base)
