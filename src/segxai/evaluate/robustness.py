"""Max-sensitivity of an explainer (Yeh et al., NeurIPS 2019), for segmentation.

``n`` perturbed inputs ``x + δ_j`` with ``δ_j ~ U(−r, r)`` per pixel value (pixel space,
mapped through the adapter, not clipped, as in Quantus) are explained for the same, fixed
target; the score is ``max_j ‖Φ(x + δ_j) − Φ(x)‖_F / ‖Φ(x)‖_F``. A sample whose class mask
changes (IoU of the predicted class-c mask with the clean one below ``iou_threshold``) is not
an explanation failure but a model change: such samples are reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from segxai.core.adapter import adapt
from segxai.core.checks import check_fraction, check_positive_int
from segxai.core.errors import SegxaiError
from segxai.core.registry import get_explainer, make_generator
from segxai.core.target import Target, check_target

__all__ = ["SensitivityResult", "max_sensitivity"]


@dataclass
class SensitivityResult:
    """Per-image max-sensitivity.

    Attributes:
        max_sensitivity: ``(N,)`` max relative change over samples whose class mask stayed
            (IoU >= threshold); NaN when every sample changed it.
        max_sensitivity_all: ``(N,)`` max over all samples.
        changed: ``(N,)`` number of samples whose class mask changed.
        relative_change: ``(N, n)`` every sample's relative Frobenius change.
        iou: ``(N, n)`` class-mask IoU of every sample with the clean prediction.
        forward_passes: images sent forward (explanations and predictions).
        backward_passes: images sent backward.
    """

    max_sensitivity: np.ndarray
    max_sensitivity_all: np.ndarray
    changed: np.ndarray
    relative_change: np.ndarray
    iou: np.ndarray
    forward_passes: int = 0
    backward_passes: int = 0


def max_sensitivity(model: Any, images: Tensor, target: Target, method: str, *,
                    params: dict[str, Any] | None = None, radius: float = 0.2,
                    n_samples: int = 10, iou_threshold: float = 0.9, batch_size: int = 8,
                    seed: int = 0, original: Tensor | None = None) -> SensitivityResult:
    """Max-sensitivity of ``method`` under uniform pixel noise of radius ``radius``.

    Args:
        model: a segmentation model or adapter.
        images: ``(N, C, H, W)`` model-space images.
        target: the fixed :class:`Target`.
        method: a registered explainer name.
        params: the explainer's parameters.
        radius: noise radius in pixel units (``[0, 1]`` scale).
        n_samples: perturbed samples per image.
        iou_threshold: a sample whose class-mask IoU with the clean prediction is below this
            is counted as a prediction change.
        batch_size: noisy images explained per call.
        seed: seed of the noise.
        original: the clean maps ``(N, H, W)`` if already computed.

    Returns:
        A :class:`SensitivityResult`.
    """
    adapter = adapt(model)
    images = adapter.check(images)
    target = check_target(target).validate(images, adapter.num_classes(images))
    n_samples = check_positive_int(n_samples, "n_samples")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_fraction(iou_threshold, "iou_threshold")
    if not radius > 0:
        raise SegxaiError(f"radius: expected a positive number, got {radius!r}")
    explainer = get_explainer(method)(**(params or {}))
    f0, b0 = adapter.counter.forward, adapter.counter.backward
    if original is None:
        original = explainer(adapter, images, target).maps
    original = original.detach()
    n = images.shape[0]
    gen = make_generator(seed)
    rel = np.empty((n, n_samples))
    ious = np.empty((n, n_samples))
    clean_pred = adapter.predict(images) == target.class_index.view(-1, 1, 1)
    pixels = adapter.to_pixels(images)
    for i in range(n):
        ref = original[i].double()
        norm = float(ref.norm())
        for start in range(0, n_samples, batch_size):
            m = min(batch_size, n_samples - start)
            delta = (torch.rand((m, *pixels.shape[1:]), generator=gen) * 2 - 1) * radius
            noisy = adapter.from_pixels(pixels[i:i + 1] + delta.to(pixels))
            maps = explainer(adapter, noisy, target[i].repeat(m)).maps.detach().double()
            diff = (maps - ref).flatten(1).norm(dim=1).cpu().numpy()
            rel[i, start:start + m] = diff / norm if norm > 0 else np.where(diff > 0, np.inf, 0)
            pred = adapter.predict(noisy) == target.class_index[i]
            inter = (pred & clean_pred[i]).flatten(1).sum(1).double()
            union = (pred | clean_pred[i]).flatten(1).sum(1).double()
            iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
            ious[i, start:start + m] = iou.cpu().numpy()
    stable = ious >= iou_threshold
    with np.errstate(invalid="ignore"):
        ms = np.where(stable.any(1), np.where(stable, rel, -np.inf).max(1), np.nan)
    return SensitivityResult(
        max_sensitivity=ms, max_sensitivity_all=rel.max(1), changed=(~stable).sum(1),
        relative_change=rel, iou=ious, forward_passes=adapter.counter.forward - f0,
        backward_passes=adapter.counter.backward - b0)
