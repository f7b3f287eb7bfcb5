"""The built-in model: a U-Net trained on ``shapes``, cached under a user cache directory.

The cache directory is ``cache_dir``, else ``$SEGXAI_CACHE``, else ``~/.cache/segxai``. Quick
and full models (and different seeds) are cached separately, under
``builtin-{quick|full}-seed{S}-{hash of the recipe}``. A run interrupted while training resumes
from its last epoch on the next call.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from segxai.core.errors import SegxaiError
from segxai.core.runstore import atomic_write_text, publish_directory
from segxai.data.dataset import SegDataset
from segxai.data.synthetic import make_shapes
from segxai.models.checkpoint import load_checkpoint, read_checkpoint_config
from segxai.models.metrics import evaluate_miou
from segxai.models.train import TrainConfig, train_model
from segxai.models.unet import UNet, UNetConfig

__all__ = ["RECIPE_VERSION", "BuiltinModel", "BuiltinRecipe", "builtin_recipe", "cache_key",
           "default_cache_dir", "load_or_train_builtin"]

RECIPE_VERSION = "v2"
"""Bumped when the data generator or the training code changes in a way the recipe does not
show; the cache key also hashes the recipe itself."""


@dataclass
class BuiltinRecipe:
    """How the built-in model is made: data sizes, architecture, training."""

    n_train: int
    n_val: int
    size: int
    model: UNetConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"n_train": self.n_train, "n_val": self.n_val, "size": self.size,
                "model": self.model.to_dict(), "train": self.train.to_dict()}


def builtin_recipe(quick: bool = False, seed: int = 0) -> BuiltinRecipe:
    """The recipe of the quick or full built-in model.

    Args:
        quick: the small model for tests and ``--quick`` runs (well under a minute on a core).
        seed: seed of the data and the training.

    Returns:
        A :class:`BuiltinRecipe`.
    """
    if quick:
        return BuiltinRecipe(
            n_train=500, n_val=100, size=64,
            model=UNetConfig(depth=3, base_width=8, num_classes=5),
            train=TrainConfig(epochs=6, batch_size=4, lr=2e-3, seed=seed))
    return BuiltinRecipe(
        n_train=1000, n_val=200, size=64,
        model=UNetConfig(depth=3, base_width=16, num_classes=5),
        train=TrainConfig(epochs=6, batch_size=8, lr=2e-3, seed=seed, patience=3))


def cache_key(recipe: BuiltinRecipe, quick: bool, seed: int) -> str:
    """Directory name of a cached built-in model: mode, seed and a hash of the recipe."""
    import hashlib
    import json

    blob = json.dumps({"recipe": recipe.to_dict(), "version": RECIPE_VERSION}, sort_keys=True)
    digest = hashlib.sha1(blob.encode("utf-8")).hexdigest()[:10]
    return f"builtin-{'quick' if quick else 'full'}-seed{seed}-{digest}"


def default_cache_dir() -> Path:
    """``$SEGXAI_CACHE`` if set, else ``~/.cache/segxai``."""
    env = os.environ.get("SEGXAI_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "segxai"


@dataclass
class BuiltinModel:
    """The trained built-in model and what it was trained and validated on.

    Attributes:
        model: the trained :class:`UNet` (eval mode) on the requested device.
        config: its :class:`UNetConfig`.
        val_miou: mIoU on ``val_data``.
        val_data: the ``shapes`` validation split (:class:`SegDataset`).
        path: the checkpoint directory (``model.safetensors``, ``config.json``,
            ``metrics.json``).
        class_names: class names (``SHAPES_CLASSES``).
        history: per-epoch training history (loss, val_miou, seconds).
        recipe: the :class:`BuiltinRecipe` it was made with.
    """

    model: UNet
    config: UNetConfig
    val_miou: float
    val_data: SegDataset
    path: Path
    class_names: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    recipe: BuiltinRecipe | None = None


def _split_data(recipe: BuiltinRecipe, seed: int) -> tuple[SegDataset, SegDataset]:
    train = make_shapes(recipe.n_train, size=recipe.size, seed=seed)
    val = make_shapes(recipe.n_val, size=recipe.size, seed=seed + 10_000)
    return train, val


def load_or_train_builtin(cache_dir: str | Path | None = None, quick: bool = False,
                          device: str = "cpu", progress: bool = True,
                          seed: int = 0) -> BuiltinModel:
    """Load the cached built-in U-Net, or train it on ``shapes`` first (then cache it).

    Args:
        cache_dir: cache root (default :func:`default_cache_dir`).
        quick: the quick model (trains in well under a minute on one core) instead of the
            full one.
        device: torch device of the returned model.
        progress: show a progress bar while training.
        seed: seed of data and training (part of the cache key).

    Returns:
        A :class:`BuiltinModel`.
    """
    import json

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SegxaiError(f"seed: expected an integer, got {seed!r}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    recipe = builtin_recipe(quick=quick, seed=seed)
    key = cache_key(recipe, quick, seed)
    final = root / key
    train_data, val_data = _split_data(recipe, seed)
    if not (final / "model.safetensors").is_file():
        work = root / f"{key}.partial"
        torch.manual_seed(seed)
        model = UNet(recipe.model)
        result = train_model(model, train_data, val_data, recipe.train, out_dir=work,
                             device=device, progress=progress)
        atomic_write_text(work / "recipe.json", json.dumps(
            {**recipe.to_dict(), "train_seconds": result.seconds}, indent=2))
        if not (final / "model.safetensors").is_file():
            shutil.rmtree(final, ignore_errors=True)  # an incomplete entry
            publish_directory(work, final)  # if another process finished first: use its model
        else:
            shutil.rmtree(work, ignore_errors=True)
    model = load_checkpoint(final, device=device)
    meta = read_checkpoint_config(final)
    history: list[dict[str, Any]] = []
    metrics_file = final / "metrics.json"
    if metrics_file.is_file():
        history = json.loads(metrics_file.read_text(encoding="utf-8")).get("history", [])
    val_miou = evaluate_miou(model, val_data, device=device)
    return BuiltinModel(model=model, config=model.config, val_miou=val_miou, val_data=val_data,
                        path=final, class_names=meta.get("class_names") or val_data.class_names,
                        history=history, recipe=recipe)
