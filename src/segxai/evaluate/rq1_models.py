"""The models of the RQ1 study: three families, all trained by segxai on the built-in data.

* ``unet``: the built-in U-Net (:func:`~segxai.models.load_or_train_builtin`, cached in the
  user cache as every other consumer of the built-in model);
* ``unet-noskip``: the same recipe with ``UNetConfig(skips=False)`` (an encoder–decoder
  without skip connections);
* ``lraspp``: torchvision's LRASPP-MobileNetV3-Large, ``weights=None`` (no download), taking
  ``[0, 1]`` pixels as the built-in data are (no ImageNet normalisation: it is trained from
  scratch).

The last two are trained by :func:`segxai.models.fit` with the built-in recipe's data and
training settings into :func:`model_cache` (``CACHE/rq1-models/NAME-quick|full-seedS``, a
:class:`~segxai.core.runstore.RunStore` beside the built-in model's cache): a run that was
interrupted resumes, a finished one is loaded without training, by every study whatever its
output directory (the store's settings fingerprint refuses a directory trained otherwise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models.segmentation.lraspp import LRASPP

from segxai.core.checks import check_choice
from segxai.data.dataset import SegDataset

__all__ = ["BIAS_MODELS", "RQ1_MODELS", "ModelSpec", "TrainedModel", "build_model",
           "model_cache", "train_all", "trained_model"]

Family = Literal["unet", "unet-noskip", "lraspp"]
RQ1_MODELS: tuple[str, ...] = ("unet", "unet-noskip", "lraspp")
#: The context-bias part's models (a U-Net on the biased split and a control without the cue).
BIAS_MODELS: tuple[str, ...] = ("context-bias2-biased", "context-bias2-control")
"""Cache names of the biased and the control model (``2``: the small-object recipe of
:func:`segxai.evaluate.context_bias.train_bias_model`; a new recipe takes a new name)."""


@dataclass(frozen=True)
class ModelSpec:
    """How one RQ1 model is built (the training recipe is the built-in model's).

    Attributes:
        name: ``"unet"``, ``"unet-noskip"`` or ``"lraspp"``.
        num_classes: classes of the built-in data.
    """

    name: Family
    num_classes: int = 5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LRASPPLogits(LRASPP):
    """torchvision's LRASPP returning its ``"out"`` logits as a tensor (the training loop's
    convention); its sub-modules keep torchvision's names (``backbone``, ``classifier``),
    which the stage finder and the default layer read. A module-level class, so that the
    model pickles to ``--workers`` processes."""

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - torchvision's name
        out: Tensor = super().forward(input)["out"]
        return out


def build_model(spec: ModelSpec, quick: bool = False) -> nn.Module:
    """An untrained model of ``spec`` (the U-Nets with the built-in recipe's architecture)."""
    from segxai.models.builtin import builtin_recipe
    from segxai.models.unet import UNet

    check_choice(spec.name, "model", RQ1_MODELS)
    if spec.name in ("unet", "unet-noskip"):
        cfg = replace(builtin_recipe(quick=quick).model, num_classes=spec.num_classes,
                      skips=spec.name == "unet")
        return UNet(cfg)
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                    num_classes=spec.num_classes)
    net.__class__ = LRASPPLogits
    return net


@dataclass
class TrainedModel:
    """A trained RQ1 model.

    Attributes:
        name: the spec's name.
        model: the network (eval mode).
        val_data: the built-in validation split it is evaluated on.
        val_miou: its mIoU there.
        train_seconds: training time of this call (0 when loaded from the cache).
    """

    name: str
    model: nn.Module
    val_data: SegDataset
    val_miou: float
    train_seconds: float


def model_cache(name: str, quick: bool, seed: int, cache_dir: str | Path | None = None) -> Path:
    """The training directory of an RQ1 model (or a context-bias model) in the user cache."""
    from segxai.models.builtin import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "rq1-models" / f"{name}-{'quick' if quick else 'full'}-seed{seed}"


def trained_model(spec: ModelSpec, cache_dir: str | Path | None = None, *, quick: bool = False,
                  device: str = "cpu", progress: bool = False, seed: int = 0) -> TrainedModel:
    """Train (or load) ``spec`` on the built-in data.

    Args:
        spec: the model.
        cache_dir: the cache root (default ``$SEGXAI_CACHE`` or ``~/.cache/segxai``).
        quick: the quick recipe (small U-Nets, fewer images).
        device: torch device.
        progress: show a progress bar.
        seed: seed of data and training.

    Returns:
        A :class:`TrainedModel`.
    """
    from segxai.models.builtin import builtin_recipe, load_or_train_builtin
    from segxai.models.loop import fit
    from segxai.models.metrics import evaluate_miou

    if spec.name == "unet":
        b = load_or_train_builtin(cache_dir, quick=quick, device=device, progress=progress,
                                  seed=seed)
        return TrainedModel(spec.name, b.model.eval(), b.val_data, float(b.val_miou), 0.0)
    from segxai.data.synthetic import make_shapes

    recipe = builtin_recipe(quick=quick, seed=seed)
    train = make_shapes(recipe.n_train, size=recipe.size, seed=seed)
    val = make_shapes(recipe.n_val, size=recipe.size, seed=seed + 10_000)
    torch.manual_seed(seed)
    model = build_model(spec, quick=quick)
    result = fit(model, train, recipe.train, val_data=val,
                 out_dir=model_cache(spec.name, quick, seed, cache_dir), device=device,
                 progress=progress, desc=f"train {spec.name}",
                 settings={"rq1_model": spec.to_dict(), "quick": quick})
    model.eval()
    seconds = 0.0 if result.resumed_from == result.epochs_run else float(result.seconds)
    return TrainedModel(spec.name, model, val, float(evaluate_miou(model, val, device=device)),
                        seconds)


@dataclass(frozen=True)
class _TrainJob:
    """What every training task shares: cache, recipe, seed, device."""

    cache_dir: str | None
    quick: bool
    seed: int
    device: str


def _train_task(job: _TrainJob, name: str) -> float:
    """Train (or load) one model into the cache; the seconds it took."""
    import time

    t0 = time.perf_counter()
    if name in BIAS_MODELS:
        from segxai.evaluate.context_bias import train_bias_model

        train_bias_model(model_cache(name, job.quick, job.seed, job.cache_dir), quick=job.quick,
                         unbiased=name.endswith("control"), seed=job.seed, device=job.device)
    else:
        trained_model(ModelSpec(name), job.cache_dir, quick=job.quick,  # type: ignore[arg-type]
                      device=job.device, seed=job.seed)
    return time.perf_counter() - t0


def _is_cached(name: str, job: _TrainJob) -> bool:
    """Whether ``name`` finished training in the cache (then there is nothing to train)."""
    import json

    from segxai.models.builtin import builtin_recipe, cache_key, default_cache_dir

    if name == "unet":
        root = Path(job.cache_dir) if job.cache_dir is not None else default_cache_dir()
        key = cache_key(builtin_recipe(quick=job.quick, seed=job.seed), job.quick, job.seed)
        return (root / key / "model.safetensors").is_file()
    state = model_cache(name, job.quick, job.seed, job.cache_dir) / "train_state.json"
    try:
        return bool(json.loads(state.read_text(encoding="utf-8")).get("completed"))
    except (OSError, ValueError):
        return False


def train_all(names: tuple[str, ...] | list[str], executor: Any = None, *,
              cache_dir: str | Path | None = None, quick: bool = False, seed: int = 0,
              device: str = "cpu") -> dict[str, float]:
    """Train (or load) every model of ``names`` into the cache, one task per model.

    With an executor of several workers the models train at once, one per worker; each task
    runs the same code with the same seed as in one process, so the cached models do not
    depend on the executor (with one torch thread per worker, as ``make_executor`` sets).

    Args:
        names: models of :data:`RQ1_MODELS` and :data:`BIAS_MODELS`.
        executor: a :class:`~segxai.core.executor.Executor` (default: this process).
        cache_dir: the cache root.
        quick: the quick recipes.
        seed: seed of data and training.
        device: torch device.

    Returns:
        ``{name: seconds}`` (0 for a model already in the cache, which is not loaded here).
    """
    from segxai.core.executor import InProcessExecutor

    for name in names:
        check_choice(name, "models", (*RQ1_MODELS, *BIAS_MODELS))
    job = _TrainJob(None if cache_dir is None else str(cache_dir), quick, seed, str(device))
    todo = [n for n in names if not _is_cached(n, job)]
    ex = executor if executor is not None and todo else InProcessExecutor()
    seconds = dict(zip(todo, ex.map(_train_task, job, todo)))
    return {n: seconds.get(n, 0.0) for n in names}
