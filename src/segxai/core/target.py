"""Segmentation targets: which class, which region of interest (ROI), which score.

The score explained is, by default, the seed paper's: the sum of the class's pre-softmax
logits over the ROI, ``S_c(x; M) = Σ_ij M_ij · Y_c,ij``. The ROI is fixed (detached) when the
target is built, typically from the model's prediction on the clean input, so that every
method that perturbs the input (SmoothGrad, occlusion, deletion curves, attacks) keeps
explaining the same pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from segxai.core.checks import check_choice
from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = ["SCORES", "Target"]

SCORES = ("logit_sum", "prob_mean")
Score = Literal["logit_sum", "prob_mean"]
ROI_KINDS = ("class", "largest_component")


def _class_vector(class_index: int | Sequence[int] | Tensor, n: int) -> Tensor:
    if isinstance(class_index, Tensor):
        if class_index.dtype.is_floating_point or class_index.dtype == torch.bool:
            raise SegxaiTypeError(f"class_index: expected integers, got dtype {class_index.dtype}")
        vec = class_index.reshape(-1).long()
    elif isinstance(class_index, (int, np.integer)) and not isinstance(class_index, bool):
        vec = torch.full((n,), int(class_index), dtype=torch.long)
    elif isinstance(class_index, Sequence) and all(
        isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in class_index
    ):
        vec = torch.tensor([int(c) for c in class_index], dtype=torch.long)
    else:
        raise SegxaiTypeError(f"class_index: expected an int or a sequence of ints, got {class_index!r}")
    if vec.numel() == 1 and n > 1:
        vec = vec.expand(n).clone()
    if vec.numel() != n:
        raise SegxaiError(f"class_index: expected one class or {n} (one per image), got {vec.numel()}")
    if bool((vec < 0).any()):
        raise SegxaiError(f"class_index: expected non-negative class indices, got {vec.tolist()}")
    return vec


@dataclass(frozen=True)
class Target:
    """What to explain: one class and one ROI per image, and the score over them.

    Attributes:
        class_index: ``(N,)`` long tensor, the class explained in each image.
        roi: ``(N, H, W)`` float tensor of 0/1 (or soft weights), detached.
        score: ``"logit_sum"`` (default; ``Σ roi · logit_c``) or ``"prob_mean"``
            (mean class probability over the ROI).

    Build one with :meth:`from_prediction`, :meth:`from_mask`, :meth:`from_box`,
    :meth:`from_pixel` or :meth:`whole_image`.

    Example:
        >>> import torch
        >>> t = Target.from_mask(torch.ones(1, 4, 4, dtype=torch.bool), class_index=2)
        >>> t.score_from_logits(torch.ones(1, 3, 4, 4))
        tensor([16.])
    """

    class_index: Tensor
    roi: Tensor
    score: Score = "logit_sum"

    def __post_init__(self) -> None:
        check_choice(self.score, "score", SCORES)
        if not isinstance(self.roi, Tensor) or self.roi.dim() != 3:
            shape = tuple(self.roi.shape) if isinstance(self.roi, Tensor) else type(self.roi).__name__
            raise SegxaiError(f"roi: expected an (N, H, W) mask, got {shape}")
        if self.class_index.dim() != 1 or self.class_index.numel() != self.roi.shape[0]:
            raise SegxaiError(f"class_index: expected ({self.roi.shape[0]},) to match roi, got "
                             f"shape {tuple(self.class_index.shape)}")
        sizes = self.roi.flatten(1).sum(1)
        empty = (sizes <= 0).nonzero().flatten().tolist()
        if empty:
            raise SegxaiError(f"roi: empty region of interest for image(s) {empty}; choose another "
                             "class or ROI (e.g. Target.whole_image)")

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.roi.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.roi.shape[1]), int(self.roi.shape[2])

    def to(self, device: torch.device | str) -> Target:
        return Target(self.class_index.to(device), self.roi.to(device), self.score)

    def __getitem__(self, index: int | slice | Tensor) -> Target:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Target(self.class_index[index], self.roi[index], self.score)

    def repeat(self, times: int) -> Target:
        """Each image's target repeated ``times`` times consecutively (for noisy batches)."""
        return Target(self.class_index.repeat_interleave(times),
                      self.roi.repeat_interleave(times, dim=0), self.score)

    def tile(self, times: int) -> Target:
        """The whole target repeated ``times`` times (image order ``0..N-1, 0..N-1, ...``)."""
        return Target(self.class_index.repeat(times), self.roi.repeat(times, 1, 1), self.score)

    def with_score(self, score: Score) -> Target:
        return Target(self.class_index, self.roi, score)

    def describe(self) -> dict[str, Any]:
        return {"class_index": self.class_index.tolist(), "score": self.score,
                "roi_pixels": self.roi.flatten(1).sum(1).tolist()}

    # ------------------------------------------------------------------ checks and scores
    def validate(self, images: Tensor, num_classes: int | None = None) -> Target:
        """Check the target fits ``images`` (N, H, W) and ``num_classes``; return it on the
        images' device and dtype."""
        n, _, h, w = images.shape
        if self.roi.shape[0] != n:
            raise SegxaiError(f"target: has {self.roi.shape[0]} ROI(s) but images has {n} image(s)")
        if tuple(self.roi.shape[1:]) != (h, w):
            raise SegxaiError(f"roi: expected spatial size {(h, w)} to match images, got "
                             f"{tuple(self.roi.shape[1:])}")
        if num_classes is not None and bool((self.class_index >= num_classes).any()):
            raise SegxaiError(f"class_index: out of range for a model with {num_classes} classes: "
                             f"{self.class_index.tolist()}")
        return Target(self.class_index.to(images.device),
                      self.roi.to(device=images.device, dtype=images.dtype), self.score)

    def score_from_logits(self, logits: Tensor, *, binary: bool = False) -> Tensor:
        """The explained score per image, ``(N,)``, from logits ``N×K×H×W``.

        ``binary`` marks the two-class view of a one-channel model (probabilities are
        ``sigmoid(±logit)`` there, not a softmax).
        """
        k = logits.shape[1]
        if int(self.class_index.max()) >= k:
            raise SegxaiError(f"class_index: expected classes below {k} (the model's number of "
                              f"classes), got {self.class_index.tolist()}")
        idx = self.class_index.to(logits.device).view(-1, 1, 1, 1)
        idx = idx.expand(-1, 1, logits.shape[2], logits.shape[3])
        roi = self.roi.to(device=logits.device, dtype=logits.dtype)
        if self.score == "logit_sum":
            return (logits.gather(1, idx)[:, 0] * roi).flatten(1).sum(1)
        probs = torch.sigmoid(logits) if binary else logits.softmax(1)
        return (probs.gather(1, idx)[:, 0] * roi).flatten(1).sum(1) / roi.flatten(1).sum(1)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_mask(cls, mask: Tensor | np.ndarray, class_index: int | Sequence[int] | Tensor,
                  score: Score = "logit_sum") -> Target:
        """A user mask ``(H, W)`` or ``(N, H, W)``, bool or 0/1 float."""
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(mask)
        if not isinstance(mask, Tensor):
            raise SegxaiTypeError(f"mask: expected a tensor or array, got {type(mask).__name__}")
        if mask.dim() == 2:
            mask = mask.unsqueeze(0)
        if mask.dim() != 3:
            raise SegxaiError(f"mask: expected (H, W) or (N, H, W), got shape {tuple(mask.shape)}")
        if mask.dtype == torch.bool:
            roi = mask.float()
        elif mask.is_floating_point():
            if not bool(torch.isfinite(mask).all()) or bool((mask < 0).any()):
                raise SegxaiError("mask: expected finite non-negative weights")
            roi = mask.float()
        elif mask.dtype in (torch.uint8, torch.int32, torch.int64, torch.int16, torch.int8):
            if bool(((mask != 0) & (mask != 1)).any()):
                raise SegxaiError("mask: an integer mask must hold only 0 and 1 (for a label map "
                                 "use mask == class_index)")
            roi = mask.float()
        else:
            raise SegxaiTypeError(f"mask: unsupported dtype {mask.dtype}")
        return cls(_class_vector(class_index, roi.shape[0]), roi.detach(), score)

    @classmethod
    def from_box(cls, box: Sequence[int], class_index: int | Sequence[int] | Tensor,
                 size: Sequence[int], n: int = 1, score: Score = "logit_sum") -> Target:
        """A box ``(x0, y0, x1, y1)`` (pixels, end exclusive) in images of ``size = (H, W)``."""
        if len(box) != 4:
            raise SegxaiError(f"box: expected (x0, y0, x1, y1), got {box!r}")
        h, w = int(size[0]), int(size[1])
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, x1 = max(0, x0), min(w, x1)
        y0, y1 = max(0, y0), min(h, y1)
        if x1 <= x0 or y1 <= y0:
            raise SegxaiError(f"box: empty inside an image of size {(h, w)}: {tuple(box)}")
        roi = torch.zeros(n, h, w)
        roi[:, y0:y1, x0:x1] = 1
        return cls(_class_vector(class_index, n), roi, score)

    @classmethod
    def from_pixel(cls, pixel: Sequence[int], class_index: int | Sequence[int] | Tensor,
                   size: Sequence[int], n: int = 1, score: Score = "logit_sum") -> Target:
        """One pixel ``(row, col)``."""
        if len(pixel) != 2:
            raise SegxaiError(f"pixel: expected (row, col), got {pixel!r}")
        r, c = int(pixel[0]), int(pixel[1])
        if not (0 <= r < size[0] and 0 <= c < size[1]):
            raise SegxaiError(f"pixel: {(r, c)} outside an image of size {tuple(size)}")
        roi = torch.zeros(n, int(size[0]), int(size[1]))
        roi[:, r, c] = 1
        return cls(_class_vector(class_index, n), roi, score)

    @classmethod
    def whole_image(cls, class_index: int | Sequence[int] | Tensor, size: Sequence[int],
                    n: int = 1, score: Score = "logit_sum") -> Target:
        """Every pixel of the image."""
        return cls(_class_vector(class_index, n), torch.ones(n, int(size[0]), int(size[1])), score)

    @classmethod
    def from_prediction(cls, model: Any, images: Tensor,
                        class_index: int | Sequence[int] | Tensor,
                        roi: str = "class", score: Score = "logit_sum",
                        box: Sequence[int] | None = None) -> Target:
        """ROI = pixels the model predicts as ``class_index`` on the clean ``images``.

        Computed once, without gradients, and detached.

        Args:
            model: a model or :class:`~segxai.core.adapter.ModelAdapter`.
            images: ``(N, C, H, W)`` model-space images.
            class_index: one class for all images or one per image.
            roi: ``"class"`` (all pixels predicted as the class) or ``"largest_component"``
                (its largest 8-connected component).
            score: see :class:`Target`.
            box: optional ``(x0, y0, x1, y1)`` intersected with the class mask.
        """
        from segxai.core.adapter import adapt

        check_choice(roi, "roi", ROI_KINDS)
        adapter = adapt(model)
        images = adapter.check(images)
        classes = _class_vector(class_index, images.shape[0])
        pred = adapter.predict(images)  # also teaches the adapter the number of classes
        k = adapter.num_classes()
        if bool((classes >= k).any()):
            raise SegxaiError(f"class_index: out of range for a model with {k} classes: "
                             f"{classes.tolist()}")
        mask = (pred == classes.to(pred.device).view(-1, 1, 1))
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            boxed = torch.zeros_like(mask)
            boxed[:, max(0, y0):y1, max(0, x0):x1] = True
            mask &= boxed
        if roi == "largest_component":
            mask = torch.stack([_largest_component(m) for m in mask])
        missing = [i for i in range(mask.shape[0]) if not bool(mask[i].any())]
        if missing:
            raise SegxaiError(f"roi: the model predicts no pixel of class(es) "
                             f"{[int(classes[i]) for i in missing]} in image(s) {missing}; "
                             "choose another class or a mask/box ROI")
        return cls(classes, mask.float().detach(), score)


def _largest_component(mask: Tensor) -> Tensor:
    arr = mask.cpu().numpy()
    labels, n = ndimage.label(arr, structure=np.ones((3, 3), dtype=int))
    if n == 0:
        return mask
    counts = np.bincount(labels.ravel())[1:]
    return torch.from_numpy(labels == (1 + int(np.argmax(counts)))).to(mask.device)


def check_target(target: object) -> Target:
    if not isinstance(target, Target):
        raise SegxaiTypeError(f"target: expected a segxai.Target, got {type(target).__name__}")
    return target

