"""Training the searched student: segmentation loss, optional distillation and saliency matching.

The loss of one minibatch is

    L = (1 − α)·Seg(S(x), y) + α·T²·KL(softmax(T(x)/T) ‖ softmax(S(x)/T)) + λ·mean ‖CAM_T − CAM_S‖²,

where ``Seg`` is the training configuration's segmentation loss (cross-entropy, plus Dice by
default) and the saliency term compares min-max normalised Seg-Grad-CAM maps (each network's
default layer) of one class per image (the largest non-background class of the teacher's
prediction, whose predicted pixels form the ROI), differentiable w.r.t. the student's
parameters. Every setting goes through the one training loop (:func:`segxai.models.fit`):
schedule, seeding and augmentation do not depend on α and λ, and ``α = λ = 0`` is
:func:`segxai.models.train_model` bit for bit.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from segxai.core.checks import check_fraction
from segxai.core.errors import SegxaiError
from segxai.core.postprocess import minmax
from segxai.models.losses import Batch, KLDistillation, LossTerm, SegmentationLoss, StepContext
from segxai.nas.backends import single_thread
from segxai.nas.fitness import ProbeSet, _differentiable_cam

__all__ = ["SaliencyMatching", "StudentConfig", "cpu_latency_ms", "student_terms",
           "train_student"]


@dataclass
class StudentConfig:
    """Distillation settings of :func:`train_student`.

    Attributes:
        alpha: weight of the distillation term (0 = none).
        lam: weight λ of the saliency-matching term (0 = none).
        temperature: distillation temperature.
    """

    alpha: float = 0.0
    lam: float = 0.0
    temperature: float = 2.0

    def __post_init__(self) -> None:
        check_fraction(self.alpha, "alpha")
        if self.lam < 0:
            raise SegxaiError(f"lam: expected a number >= 0, got {self.lam!r}")
        if self.temperature <= 0:
            raise SegxaiError(f"temperature: expected a positive number, got {self.temperature!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cam_targets(teacher_logits: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per image: the largest predicted non-background class and its ROI (images with only
    background are dropped). Returns ``(image_index, class_index, roi)``."""
    pred = teacher_logits.argmax(1)
    k = teacher_logits.shape[1]
    counts = torch.stack([(pred == c).flatten(1).sum(1) for c in range(k)], 1)
    counts[:, 0] = 0
    cls = counts.argmax(1)
    keep = counts.gather(1, cls[:, None])[:, 0] > 0
    idx = keep.nonzero().flatten()
    roi = (pred[idx] == cls[idx].view(-1, 1, 1)).float()
    return idx, cls[idx], roi


@dataclass
class SaliencyMatching:
    """Saliency matching ``mean_images ‖CAM_T − CAM_S‖² / (H·W)`` (a loss term of the loop).

    For each image the target is the largest non-background class of the teacher's
    prediction and its predicted pixels (images where the teacher predicts only background
    are skipped); both maps are min-max normalised Seg-Grad-CAM maps at each network's
    default layer, the student's differentiable w.r.t. its parameters.

    Attributes:
        teacher: the frozen teacher.
        weight: λ.
        name: the term's name.
    """

    teacher: nn.Module
    weight: float = 1.0
    name: str = "saliency"

    def __call__(self, batch: Batch, logits: Tensor, context: StepContext) -> Tensor:
        from segxai.core.target import Target

        img_idx, cls, roi = _cam_targets(batch.teacher_logits(self.teacher))
        if not img_idx.numel():
            return logits.sum() * 0.0
        probe = ProbeSet(images=torch.empty(0), image_index=torch.empty(0),
                         class_index=torch.empty(0), roi=torch.empty(0),
                         teacher_maps=torch.empty(0), num_classes=int(logits.shape[1]))
        target = Target(cls, roi)
        xs = batch.images[img_idx]
        with torch.enable_grad():
            cam_t = minmax(_differentiable_cam(self.teacher, xs, target, probe)).detach()
        cam_s = minmax(_differentiable_cam(context.model, xs, target, probe))
        h, w = batch.images.shape[-2:]
        return (cam_t - cam_s).pow(2).flatten(1).sum(1).mean() / (h * w)

    def describe(self) -> dict[str, Any]:
        return {"weight": self.weight, "method": "seg-grad-cam"}


def student_terms(student_config: StudentConfig, loss: str = "ce+dice",
                  teacher: nn.Module | None = None) -> list[LossTerm]:
    """The loss terms of :func:`train_student` (terms of weight 0 included; the loop skips
    them).

    Args:
        student_config: α, λ and the temperature.
        loss: the segmentation loss kind (``TrainConfig.loss``).
        teacher: the teacher (needed when ``alpha`` or ``lam`` > 0).

    Returns:
        ``[segmentation (1 − α), KL (α), saliency (λ)]``.
    """
    sc = student_config
    if (sc.alpha > 0 or sc.lam > 0) and teacher is None:
        raise SegxaiError("teacher: needed for distillation (alpha > 0) or saliency "
                         "matching (lam > 0)")
    terms: list[LossTerm] = [SegmentationLoss(loss, weight=1.0 - sc.alpha)]
    if teacher is not None:
        terms.append(KLDistillation(sc.alpha, sc.temperature, teacher=teacher))
        terms.append(SaliencyMatching(teacher, sc.lam))
    return terms


def train_student(model: nn.Module, train_data: Any, train_config: Any, *,
                  teacher: nn.Module | None = None,
                  student_config: StudentConfig | None = None, val_data: Any = None,
                  device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train ``model`` (in place) with :func:`segxai.models.fit` and return a summary.

    Args:
        model: a :class:`segxai.models.UNet`.
        train_data: training ``SegDataset``.
        train_config: ``segxai.models.TrainConfig`` (epochs, batch, lr, schedule, seed, ...).
        teacher: the teacher (needed when ``alpha`` or ``lam`` > 0).
        student_config: distillation weights (default: the segmentation loss alone).
        val_data: evaluation set for the final mIoU (not used during training).
        device: torch device.
        progress: progress bar.

    Returns:
        ``{"seconds", "val_miou", "loss_history"}`` (loss of every step).
    """
    from segxai.models import evaluate_miou, fit

    sc = student_config or StudentConfig()
    terms = student_terms(sc, train_config.loss, teacher)
    if teacher is not None:
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    t0 = time.perf_counter()
    history: list[float] = []
    fit(model, train_data, train_config, terms=terms, device=device, progress=progress,
        desc="student", on_step=lambda _step, loss: history.append(loss))
    val = evaluate_miou(model, val_data, device=device) if val_data is not None else None
    return {"seconds": time.perf_counter() - t0, "val_miou": val, "loss_history": history}


def cpu_latency_ms(model: nn.Module, input_shape: tuple[int, int, int] = (3, 64, 64), *,
                   repeats: int = 20, warmup: int = 3, threads: int = 1) -> float:
    """Median CPU wall time (ms) of one forward pass of one image with ``threads`` threads."""
    net = model.to("cpu").eval()
    x = torch.rand(1, *input_shape)
    times = []
    with single_thread(threads), torch.no_grad():
        for i in range(warmup + repeats):
            t = time.perf_counter()
            net(x)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times)
