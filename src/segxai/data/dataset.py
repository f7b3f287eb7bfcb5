"""The in-memory segmentation dataset every loader returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from segxai.core.errors import SegxaiError

__all__ = ["SegDataset"]


@dataclass
class SegDataset:
    """Images with per-pixel class ids, all in memory.

    Attributes:
        images: ``(N, C, H, W)`` float32 tensor in pixel space ``[0, 1]``.
        masks: ``(N, H, W)`` int64 tensor of class ids in ``[0, len(class_names))``
            (``ignore_index`` marks unlabelled pixels when it is not ``None``).
        class_names: names of the classes, index = class id (0 = background).
        name: a short name of the source (``"shapes"``, ``"nuclei"``, a folder, ...).
        ignore_index: a mask value that is not a class (excluded from losses and metrics).
        meta: free-form description of how the data was made (seed, sizes, ...).

    Example:
        >>> ds = SegDataset(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long),
        ...                 ["background", "thing"])
        >>> image, mask = ds[0]
        >>> image.shape, mask.shape, len(ds)
        (torch.Size([3, 8, 8]), torch.Size([8, 8]), 2)
    """

    images: Tensor
    masks: Tensor
    class_names: list[str]
    name: str = "data"
    ignore_index: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.images, np.ndarray):
            self.images = torch.from_numpy(np.ascontiguousarray(self.images))
        if isinstance(self.masks, np.ndarray):
            self.masks = torch.from_numpy(np.ascontiguousarray(self.masks))
        if not isinstance(self.images, Tensor) or self.images.dim() != 4:
            raise SegxaiError("images: expected a tensor of shape (N, C, H, W), got "
                             f"{getattr(self.images, 'shape', type(self.images).__name__)}")
        if not isinstance(self.masks, Tensor) or self.masks.dim() != 3:
            raise SegxaiError("masks: expected a tensor of shape (N, H, W), got "
                             f"{getattr(self.masks, 'shape', type(self.masks).__name__)}")
        self.images = self.images.float()
        self.masks = self.masks.long()
        n, _, h, w = self.images.shape
        if tuple(self.masks.shape) != (n, h, w):
            raise SegxaiError(f"masks: expected shape {(n, h, w)} to match images "
                             f"{tuple(self.images.shape)}, got {tuple(self.masks.shape)}")
        if not self.class_names:
            raise SegxaiError("class_names: expected at least one class name")
        self.class_names = [str(c) for c in self.class_names]
        self._check_mask_values()

    def _check_mask_values(self) -> None:
        """Mask values must be class ids (or ``ignore_index``): a stray value would silently
        index past the classes in losses and metrics."""
        values = torch.unique(self.masks)
        if self.ignore_index is not None:
            values = values[values != self.ignore_index]
        bad = values[(values < 0) | (values >= len(self.class_names))]
        if bad.numel():
            shown = bad[:10].tolist()
            raise SegxaiError(f"masks: expected class ids 0-{len(self.class_names) - 1} "
                              f"({len(self.class_names)} class names)"
                              + (f" or ignore_index {self.ignore_index}"
                                 if self.ignore_index is not None else "")
                              + f", got {shown}{' ...' if bad.numel() > 10 else ''}")

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.masks[index]

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``class_names``)."""
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def subset(self, indices: Sequence[int] | Tensor | np.ndarray) -> SegDataset:
        """A new dataset with the samples at ``indices`` (every per-sample field is indexed).

        Args:
            indices: integer positions or a boolean mask of length ``len(self)``.

        Returns:
            A dataset of the same type.
        """
        idx = torch.as_tensor(np.asarray(indices))
        if idx.dtype == torch.bool:
            if idx.numel() != len(self):
                raise SegxaiError(f"indices: a boolean mask needs {len(self)} entries, "
                                 f"got {idx.numel()}")
            idx = idx.nonzero().flatten()
        idx = idx.long().flatten()
        if idx.numel() and (int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise SegxaiError(f"indices: out of range for a dataset of {len(self)} samples")
        n = len(self)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == n:
                v = v[idx].clone()
            elif f.name in ("meta", "class_names"):
                v = type(v)(v)
            values[f.name] = v
        return type(self)(**values)

    def split(self, fraction: float, seed: int = 0) -> tuple[SegDataset, SegDataset]:
        """Randomly split into ``(first, second)`` with ``round(fraction * N)`` samples first.

        Args:
            fraction: share of the samples in the first part, in ``(0, 1)``.
            seed: seed of the permutation.

        Returns:
            The two parts.
        """
        if not 0.0 < float(fraction) < 1.0:
            raise SegxaiError(f"fraction: expected a number in (0, 1), got {fraction!r}")
        g = torch.Generator().manual_seed(int(seed))
        perm = torch.randperm(len(self), generator=g)
        k = max(1, min(len(self) - 1, round(float(fraction) * len(self))))
        return self.subset(perm[:k]), self.subset(perm[k:])

    def class_pixel_counts(self) -> Tensor:
        """Number of pixels of each class over the whole set, shape ``(num_classes,)``."""
        m = self.masks
        if self.ignore_index is not None:
            m = m[m != self.ignore_index]
        return torch.bincount(m.flatten(), minlength=self.num_classes)[: self.num_classes]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
                f"image_size={self.image_size}, classes={self.class_names})")
