"""Datasets by name (``shapes``, ``context-bias``, ``nuclei``, ``brain``) or folder path, split
into training and validation sets; used by ``segxai train``."""

from __future__ import annotations

from pathlib import Path

from segxai.core.errors import SegxaiError
from segxai.data.dataset import SegDataset

__all__ = ["DATASETS", "load_dataset"]

DATASETS = ("shapes", "context-bias", "nuclei", "brain")


def load_dataset(name: str | Path, *, n_train: int = 1000, n_val: int = 200, size: int = 64,
                 seed: int = 0, val_fraction: float = 0.2) -> tuple[SegDataset, SegDataset]:
    """Training and validation sets of a named dataset or a folder.

    Synthetic sets are generated with ``n_train`` / ``n_val`` images of ``size`` pixels
    (validation from ``seed + 10_000``; ``context-bias`` validates on its unbiased split). Real
    and folder sets are split at random (``val_fraction``, seeded) and keep their own sizes,
    except ``brain`` which is resized to ``size`` (at least 64) and folders (``size`` resize
    only when the images differ in size).

    Args:
        name: one of :data:`DATASETS` or a folder with ``images/`` and ``masks/``.
        n_train: synthetic training images.
        n_val: synthetic validation images.
        size: synthetic image size.
        seed: data seed.
        val_fraction: validation share of real and folder sets.

    Returns:
        ``(train, val)``.
    """
    from segxai.data import folder, real, synthetic

    key = str(name)
    if key == "shapes":
        return (synthetic.make_shapes(n_train, size=size, seed=seed),
                synthetic.make_shapes(n_val, size=size, seed=seed + 10_000))
    if key == "context-bias":
        return (synthetic.make_context_bias(n_train, size=size, seed=seed),
                synthetic.make_context_bias(n_val, size=size, seed=seed + 10_000, unbiased=True))
    if key == "nuclei":
        data = real.load_nuclei(tile=128, stride=64)
    elif key == "brain":
        data = real.load_brain(size=max(64, int(size)))
    elif Path(key).is_dir():
        try:
            data = folder.load_folder(key)
        except ValueError as exc:
            if "pass size" not in str(exc):
                raise
            data = folder.load_folder(key, size=size)
    else:
        raise SegxaiError(f"dataset: expected one of {', '.join(DATASETS)} or an existing folder "
                         f"with images/ and masks/, got {key!r}")
    if len(data) < 2:
        raise SegxaiError(f"dataset: {key} has {len(data)} sample(s); need at least 2 to split")
    return data.split(1.0 - val_fraction, seed=seed)
