"""Training the searched student: cross-entropy, optional distillation and saliency matching.

The loss of one minibatch is

    L = (1 − α)·CE(S(x), y) + α·T²·KL(softmax(T(x)/T) ‖ softmax(S(x)/T)) + λ·mean ‖CAM_T − CAM_S‖²,

where the saliency term compares min-max normalised Seg-Grad-CAM maps (each network's default
layer) of one class per image (the largest non-background class of the teacher's prediction,
whose predicted pixels form the ROI), differentiable w.r.t. the student's parameters. With
``α = λ = 0`` the schedule is :func:`segxai.models.train_model` itself.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segxai.core.checks import check_fraction
from segxai.core.postprocess import minmax
from segxai.nas.backends import single_thread
from segxai.nas.fitness import ProbeSet, _differentiable_cam

__all__ = ["StudentConfig", "cpu_latency_ms", "train_student"]


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
            raise ValueError(f"lam: expected a number >= 0, got {self.lam!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: expected a positive number, got {self.temperature!r}")

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


def _flip(x: Tensor, y: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random horizontal and vertical flips per image."""
    flips = torch.rand(x.shape[0], 2, generator=g) < 0.5
    x, y = x.clone(), y.clone()
    for axis in (0, 1):
        sel = flips[:, axis]
        if bool(sel.any()):
            x[sel] = x[sel].flip(-1 - axis)
            y[sel] = y[sel].flip(-1 - axis)
    return x, y


def train_student(model: nn.Module, train_data: Any, train_config: Any, *,
                  teacher: nn.Module | None = None,
                  student_config: StudentConfig | None = None, val_data: Any = None,
                  device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train ``model`` (in place) and return a summary.

    Args:
        model: a :class:`segxai.models.UNet`.
        train_data: training ``SegDataset``.
        train_config: ``segxai.models.TrainConfig`` (epochs, batch, lr, schedule, seed, ...).
        teacher: the teacher (needed when ``alpha`` or ``lam`` > 0).
        student_config: distillation weights (default: plain cross-entropy).
        val_data: evaluation set for the final mIoU.
        device: torch device.
        progress: progress bar.

    Returns:
        ``{"seconds", "val_miou", "loss_history"}``.
    """
    from segxai.models import evaluate_miou, learning_rate, train_model

    sc = student_config or StudentConfig()
    t0 = time.perf_counter()
    if sc.alpha == 0 and sc.lam == 0:
        train_model(model, train_data, None, train_config, device=device, progress=progress)
        history: list[float] = []
    else:
        if teacher is None:
            raise ValueError("teacher: needed for distillation (alpha > 0) or saliency "
                             "matching (lam > 0)")
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        model.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=train_config.lr,
                                weight_decay=train_config.weight_decay)
        n = len(train_data)
        steps = max(1, n // train_config.batch_size)
        if train_config.max_steps_per_epoch is not None:
            steps = min(steps, train_config.max_steps_per_epoch)
        total = steps * train_config.epochs
        history = []
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, desc="student", leave=False)
        probe = ProbeSet(images=torch.empty(0), image_index=torch.empty(0), class_index=torch.empty(0),
                         roi=torch.empty(0), teacher_maps=torch.empty(0),
                         num_classes=train_data.num_classes)
        for epoch in range(train_config.epochs):
            g = torch.Generator().manual_seed(int(train_config.seed) * 1_000_003 + epoch)
            perm = torch.randperm(n, generator=g)
            for s in range(steps):
                idx = perm[s * train_config.batch_size:(s + 1) * train_config.batch_size]
                x, y = train_data.images[idx], train_data.masks[idx]
                if train_config.augment:
                    x, y = _flip(x, y, g)
                x, y = x.to(device), y.to(device)
                for group in opt.param_groups:
                    group["lr"] = learning_rate(epoch * steps + s, total, train_config)
                model.train()
                out = model(x)
                loss = (1 - sc.alpha) * F.cross_entropy(out, y)
                with torch.no_grad():
                    t_out = teacher(x)
                if sc.alpha > 0:
                    tt = sc.temperature
                    kd = F.kl_div(F.log_softmax(out / tt, 1), F.softmax(t_out / tt, 1),
                                  reduction="none").sum(1).mean()
                    loss = loss + sc.alpha * tt * tt * kd
                if sc.lam > 0:
                    img_idx, cls, roi = _cam_targets(t_out)
                    if img_idx.numel():
                        from segxai.core.target import Target

                        target = Target(cls, roi)
                        xs = x[img_idx]
                        with torch.enable_grad():
                            cam_t = minmax(_differentiable_cam(teacher, xs, target, probe)).detach()
                        cam_s = minmax(_differentiable_cam(model, xs, target, probe))
                        loss = loss + sc.lam * (cam_t - cam_s).pow(2).flatten(1).sum(1).mean() \
                            / (x.shape[-1] * x.shape[-2])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                history.append(float(loss.detach()))
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        model.eval()
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
