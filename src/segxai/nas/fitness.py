"""CAM fitness: how close a candidate's explanation maps are to the teacher's.

On a fixed probe batch of real images, for every (image, class present) pair the teacher and
the candidate are explained with the same registered explainer (default Seg-Grad-CAM at each
network's default layer, :func:`segxai.core.layers.default_cam_layer`: for a U-Net the layer
feeding the head) and the same
target: the class's pre-softmax logits summed over one region of interest, the teacher's
predicted pixels of that class (or the ground-truth mask), identical for teacher and student.
Maps are min-max normalised per pair, and

    d(S) = mean_p ‖CAM_T(p) − CAM_S(p)‖₂,      fitness(S) = 1 / (ε + d(S)),

larger = better (a CAM-NAS-style score; Zhang, Wang, Joe 2023, as reconstructed in the
research notes §A1.2). The candidate is scored at initialisation (training-free) or after
``k`` distillation steps towards the teacher's logits (few-shot).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch
from torch import Tensor, nn

from segxai.core.adapter import adapt
from segxai.core.checks import check_choice, check_images, check_positive_int
from segxai.core.errors import SegxaiError
from segxai.core.postprocess import minmax
from segxai.core.registry import get_explainer
from segxai.core.target import Target
from segxai.nas.camscore import CamReference, cam_reference
from segxai.nas.zeroshot import DiswotReference, diswot_reference

__all__ = ["ProbeSet", "build_probe", "cam_distance", "cam_fitness", "distill",
           "explanation_maps"]


@dataclass
class ProbeSet:
    """Everything a candidate needs to be scored, independent of the teacher model.

    Attributes:
        images: ``(n, C, H, W)`` probe images in the models' input space.
        image_index: ``(P,)`` image of each (image, class) pair.
        class_index: ``(P,)`` class of each pair.
        roi: ``(P, H, W)`` region of interest of each pair (0/1).
        teacher_maps: ``(P, H, W)`` the teacher's min-max normalised maps.
        num_classes: number of classes K.
        method: registered explainer name.
        method_params: its parameters (same for teacher and candidate).
        eps: ε of the fitness.
        distill_images: ``(m, C, H, W)`` images for few-shot distillation.
        distill_logits: ``(m, K, H, W)`` the teacher's logits on them.
        cam_ref: the teacher's side of the fixed CAM fitness (:mod:`segxai.nas.camscore`).
        diswot_ref: the random teacher's DisWOT matrices (:mod:`segxai.nas.zeroshot`).
        labels: ``(n, H, W)`` labels of the probe images (the teacher's prediction or the
            ground truth, as ``roi``).
    """

    images: Tensor
    image_index: Tensor
    class_index: Tensor
    roi: Tensor
    teacher_maps: Tensor
    num_classes: int
    method: str = "seg-grad-cam"
    method_params: dict[str, Any] = field(default_factory=dict)
    eps: float = 1e-6
    distill_images: Tensor | None = None
    distill_logits: Tensor | None = None
    cam_ref: CamReference | None = None
    diswot_ref: DiswotReference | None = None
    labels: Tensor | None = None

    @property
    def pairs(self) -> int:
        return int(self.class_index.numel())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        # images are (n, C, H, W): the tensor's rank is not in its static type
        return cast(tuple[int, int, int], tuple(int(s) for s in self.images.shape[1:]))

    def target(self) -> Target:
        return Target(self.class_index, self.roi)

    def pair_images(self) -> Tensor:
        return self.images[self.image_index]


def explanation_maps(model: nn.Module, probe: ProbeSet, device: str | torch.device = "cpu",
                     create_graph: bool = False) -> Tensor:
    """Min-max normalised maps ``(P, H, W)`` of ``model`` for every probe pair.

    Args:
        model: teacher or candidate (any segmentation ``nn.Module``).
        probe: the probe set (its targets and explainer).
        device: torch device.
        create_graph: keep the maps differentiable w.r.t. the model's parameters (the
            saliency-matching loss of the student training); gradient explainers only.

    Returns:
        The maps.
    """
    images = probe.pair_images().to(device)
    target = probe.target().to(device)
    model = model.to(device)
    if create_graph:
        return minmax(_differentiable_cam(model, images, target, probe))
    explainer = get_explainer(probe.method)(**probe.method_params)
    return minmax(explainer(model, images, target).maps)


def _differentiable_cam(model: nn.Module, images: Tensor, target: Target,
                        probe: ProbeSet) -> Tensor:
    """The probe's explainer maps (raw) whose graph reaches the model's parameters, in the
    model's current train/eval mode (for the saliency-matching training loss)."""
    explainer = get_explainer(probe.method)(**probe.method_params)
    return explainer(model, images, target, differentiable_wrt="params").maps


def cam_distance(model: nn.Module, probe: ProbeSet, device: str | torch.device = "cpu") -> float:
    """``mean_p ‖CAM_T(p) − CAM_S(p)‖₂`` over the probe pairs."""
    maps = explanation_maps(model, probe, device)
    diff = (maps.detach().cpu().double() - probe.teacher_maps.double()).flatten(1)
    return float(diff.norm(dim=1).mean())


def cam_fitness(model: nn.Module, probe: ProbeSet, device: str | torch.device = "cpu") -> float:
    """``1 / (ε + d)``: the CAM fitness, larger = better (maximal for the teacher itself)."""
    return 1.0 / (probe.eps + cam_distance(model, probe, device))


def build_probe(teacher: nn.Module, images: Tensor, masks: Tensor | None = None, *,
                roi: str = "prediction", include_background: bool = False,
                method: str = "seg-grad-cam", method_params: dict[str, Any] | None = None,
                eps: float = 1e-6, distill_images: Tensor | None = None,
                batches: int = 2, seed: int = 0,
                device: str | torch.device = "cpu") -> ProbeSet:
    """Compute the teacher's side of the fitness once.

    Args:
        teacher: the frozen teacher network.
        images: ``(n, C, H, W)`` probe images (real images from the dataset).
        masks: ``(n, H, W)`` ground truth (needed for ``roi="mask"``).
        roi: ``"prediction"`` (the teacher's predicted pixels of each class) or ``"mask"``.
        include_background: also explain class 0.
        method: a registered explainer (default Seg-Grad-CAM).
        method_params: its parameters (default: each network's default layer).
        eps: ε in ``1 / (ε + d)``.
        distill_images: images for few-shot scoring (the teacher's logits are stored).
        batches: probe batches of the fixed CAM fitness (images split in order).
        seed: seed of the randomly redrawn teacher of the DisWOT proxy.
        device: torch device.

    Returns:
        The :class:`ProbeSet`.
    """
    check_images(images)
    check_choice(roi, "roi", ("prediction", "mask"))
    if eps <= 0:
        raise SegxaiError(f"eps: expected a positive number, got {eps!r}")
    teacher = teacher.to(device).eval()
    images = images.to(device)
    with torch.no_grad():
        logits = adapt(teacher)(images)
    k = int(logits.shape[1])
    if roi == "mask":
        if masks is None:
            raise SegxaiError("masks: needed for roi='mask'")
        labels = masks.to(device).long()
    else:
        labels = logits.argmax(1)
    image_index, class_index, rois = [], [], []
    for i in range(images.shape[0]):
        for c in torch.unique(labels[i]).tolist():
            if c == 255 or (c == 0 and not include_background) or c >= k:
                continue
            image_index.append(i)
            class_index.append(int(c))
            rois.append((labels[i] == c).float())
    if not image_index:
        raise SegxaiError("images: no (image, class) pair to explain; the teacher predicts only "
                         "background on the probe images (use include_background=True or "
                         "other images)")
    params = dict(method_params or {})
    get_explainer(method)(**params)  # validate the parameters early
    probe = ProbeSet(images=images.detach().cpu(), image_index=torch.tensor(image_index),
                     class_index=torch.tensor(class_index), roi=torch.stack(rois).cpu(),
                     teacher_maps=torch.empty(0), num_classes=k, method=method,
                     method_params=params, eps=float(eps), labels=labels.detach().cpu())
    probe.teacher_maps = explanation_maps(teacher, probe, device).detach().cpu()
    cpu_images = images.detach().cpu()
    probe.cam_ref = cam_reference(teacher.cpu(), cpu_images, probe.image_index,
                                  probe.class_index, probe.roi, batches=batches)
    teacher.to(device)
    label_map = labels.detach().cpu().clone()
    label_map[(label_map < 0) | (label_map >= k)] = 0
    probe.diswot_ref = diswot_reference(teacher, cpu_images, label_map, seed=seed)
    if distill_images is not None:
        check_images(distill_images, "distill_images")
        with torch.no_grad():
            t_logits = adapt(teacher)(distill_images.to(device))
        probe = replace(probe, distill_images=distill_images.detach().cpu(),
                        distill_logits=t_logits.detach().cpu())
    return probe


def distill(model: nn.Module, images: Tensor, teacher_logits: Tensor, *, steps: int,
            lr: float = 1e-2, batch_size: int = 8, temperature: float = 1.0, seed: int = 0,
            device: str | torch.device = "cpu") -> nn.Module:
    """``steps`` Adam steps of pixel-wise KL distillation towards the teacher's logits.

    Runs the one training loop (:func:`segxai.models.fit`) with the
    :class:`~segxai.models.KLDistillation` term alone, a constant learning rate, no
    augmentation and one step per epoch: each step trains on the first ``batch_size`` images
    of a fresh permutation drawn from the epoch's generator (seeded by ``(seed, step)``).

    Args:
        model: the student (trained in place, left in eval mode).
        images: ``(m, C, H, W)`` training images.
        teacher_logits: ``(m, K, H, W)`` the teacher's logits on them.
        steps: optimisation steps (0 = unchanged).
        lr: Adam learning rate.
        batch_size: images per step.
        temperature: softmax temperature (loss scaled by T²).
        seed: minibatch order.
        device: torch device.

    Returns:
        The model.
    """
    from segxai.models import KLDistillation, TrainConfig, TrainData, fit

    check_positive_int(steps, "steps", minimum=0)
    check_positive_int(batch_size, "batch_size")
    if steps == 0:
        return model.eval()
    config = TrainConfig(epochs=steps, batch_size=batch_size, lr=lr, weight_decay=0.0,
                         schedule="constant", augment=False, restore_best=False,
                         max_steps_per_epoch=1, seed=seed)
    data = TrainData(images, extras={"teacher_logits": teacher_logits})
    fit(model, data, config, terms=[KLDistillation(1.0, temperature)], forward=adapt(model),
        device=device, progress=False, desc="distill")
    return model
