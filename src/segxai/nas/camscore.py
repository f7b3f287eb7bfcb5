"""The CAM fitness, fixed: batch statistics, several initialisations, sign-invariant maps.

The first CAM fitness (:func:`segxai.nas.fitness.cam_fitness`, kept as the ``cam-l2`` proxy)
was degenerate: students were scored in eval mode (BatchNorm with running mean 0 and variance
1 normalises nothing), the map ``ReLU(Σ_k α_k A^k)`` of a random network is all zero about
half the time, and an all-zero map got the same distance for every architecture. Here, as
Zen-NAS and DisWOT score their candidates:

* **batch statistics**: the candidate runs with its BatchNorm layers in train mode (batch mean
  and variance); the running statistics and the train/eval flags are restored afterwards
  (:func:`batch_statistics`), so scoring never changes the model;
* **averaged**: over ``len(models)`` initialisations (at least 3 in the search) × the probe's
  image batches (2 by default);
* **at the default layer** (:func:`segxai.core.layers.default_cam_layer`, the layer feeding
  the head) for teacher and student: activations ``A`` and gradients ``G = ∂S/∂A`` of the
  target ``S`` = the class's logits summed over the ROI (the teacher's predicted pixels);
  ``α_k = mean_uv G_k``;
* **sign-invariant similarities** (larger = better):

  - ``pearson``: mean over pairs of Pearson's r between the teacher's and the student's maps
    ``Σ_k α_k A^k`` **without** the final ReLU (bilinearly resized to the input size);
  - ``abs-pearson``: the mean of ``|r|`` (a map and its negative count alike);
  - ``gram``: DisWOT-style: the per-channel contributions ``α_k A^k``, average-pooled to
    16×16, give a spatial Gram matrix ``Σ_k c_k c_kᵀ`` (256×256, independent of the number and
    order of channels and of the sign of ``α``); rows L2-normalised; score
    ``−‖Ĝ_T − Ĝ_S‖²_F / 256²`` (DisWOT's relation distance, taken over positions).

* **constant maps are invalid**: if any student map is constant (or not finite) the score is
  ``−inf``: it never ties with a valid score.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segxai.core.adapter import adapt
from segxai.core.errors import SegxaiError
from segxai.core.layers import default_cam_layer
from segxai.explainers.cam import cam_from_gradients

__all__ = ["SIMILARITIES", "CamReference", "batch_statistics", "cam_reference", "cam_scores",
           "layer_terms"]

Similarity = Literal["pearson", "abs-pearson", "gram"]
SIMILARITIES: tuple[Similarity, ...] = ("pearson", "abs-pearson", "gram")
GRAM_SIDE = 16
_BN = nn.modules.batchnorm._BatchNorm


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm layers in train mode (batch statistics) inside the block; every buffer
    (running mean/var, batch counters) and every train/eval flag is restored afterwards."""
    flags = {m: m.training for m in model.modules()}
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.eval()
    for m in model.modules():
        if isinstance(m, _BN):
            m.train()
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])
        for m, flag in flags.items():
            m.training = flag


def layer_terms(model: nn.Module, images: Tensor, classes: Tensor, roi: Tensor,
                layer: nn.Module | None = None) -> tuple[Tensor, Tensor]:
    """Activations ``A`` and gradients ``∂S/∂A`` ``(P, C, h, w)`` at ``layer`` (default: the
    default CAM layer) for the targets ``S_p = Σ_uv roi_p · z_{classes_p}`` of each image,
    in the model's current mode (one forward and one backward for all rows)."""
    layer = layer if layer is not None else default_cam_layer(model, images)
    store: list[Tensor] = []

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, Tensor):
            store.append(out)

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = adapt(model).raw(images)
            if not store:
                raise SegxaiError(f"layer: {type(layer).__name__} produced no tensor output")
            act = store[-1]
            score = (logits[torch.arange(len(classes)), classes] * roi).sum()
            (grad,) = torch.autograd.grad(score, act)
    finally:
        handle.remove()
    return act.detach(), grad.detach()


def _maps(act: Tensor, grad: Tensor, size: tuple[int, int]) -> Tensor:
    raw = cam_from_gradients(act, grad, "gradcam", relu=False)
    return F.interpolate(raw.unsqueeze(1).double(), size=size, mode="bilinear",
                         align_corners=False).squeeze(1).flatten(1)


def _gram(act: Tensor, grad: Tensor) -> Tensor:
    terms = grad.mean(dim=(2, 3), keepdim=True) * act
    pooled = F.adaptive_avg_pool2d(terms.double(), GRAM_SIDE).flatten(2)  # (P, C, n)
    gram = pooled.transpose(1, 2) @ pooled  # (P, n, n)
    return gram / gram.norm(dim=2, keepdim=True).clamp_min(1e-300)


def _constant(maps: Tensor) -> Tensor:
    """Rows (maps) that are constant or not finite."""
    finite = torch.isfinite(maps).all(dim=1)
    spread = maps.amax(dim=1) - maps.amin(dim=1)
    scale = maps.abs().amax(dim=1).clamp_min(1e-30)
    return ~finite | (spread <= 1e-9 * scale) | (scale <= 1e-30)


def _pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


@dataclass
class CamReference:
    """The teacher's side of the fixed CAM fitness (computed once, eval mode).

    Attributes:
        images: ``(n, C, H, W)`` probe images.
        image_index: ``(P,)`` image of each (image, class) pair.
        class_index: ``(P,)`` class of each pair.
        roi: ``(P, H, W)`` ROI of each pair (the teacher's predicted pixels of the class).
        maps: ``(P, H·W)`` the teacher's maps without ReLU (float64).
        gram: ``(P, 256, 256)`` the teacher's normalised spatial Gram matrices.
        batches: image indices of each probe batch.
    """

    images: Tensor
    image_index: Tensor
    class_index: Tensor
    roi: Tensor
    maps: Tensor
    gram: Tensor
    batches: list[list[int]]

    def rows(self, batch: list[int]) -> Tensor:
        """Pair indices whose image is in ``batch``."""
        return torch.nonzero(torch.isin(self.image_index, torch.tensor(batch))).flatten()


def cam_reference(teacher: nn.Module, images: Tensor, image_index: Tensor, class_index: Tensor,
                  roi: Tensor, batches: int = 2) -> CamReference:
    """The teacher's maps and Gram matrices for the probe pairs (teacher in eval mode).

    Raises:
        SegxaiError: a teacher map is constant (nothing to compare with), or fewer images
            than batches.
    """
    n = int(images.shape[0])
    if batches < 1 or n < batches:
        raise SegxaiError(f"batches: expected 1 to {n} probe batches, got {batches}")
    flags = {m: m.training for m in teacher.modules()}
    teacher.eval()
    try:
        act, grad = layer_terms(teacher, images[image_index], class_index, roi)
    finally:
        for m, flag in flags.items():
            m.training = flag
    size = (int(images.shape[-2]), int(images.shape[-1]))
    maps = _maps(act, grad, size)
    if bool(_constant(maps).any()):
        raise SegxaiError("teacher: expected non-constant explanation maps at the default layer, "
                          "got a constant map for some (image, class) pair")
    split = torch.arange(n).tensor_split(batches)
    return CamReference(images=images, image_index=image_index, class_index=class_index,
                        roi=roi, maps=maps, gram=_gram(act, grad),
                        batches=[s.tolist() for s in split])


def cam_scores(models: Sequence[nn.Module], ref: CamReference,
               similarities: Sequence[Similarity] = SIMILARITIES) -> dict[str, float]:
    """Every similarity of ``models`` (initialisations of one architecture) to the teacher,
    averaged over models × probe batches (larger = better; ``-inf`` for a constant map).

    Each model runs with batch statistics (:func:`batch_statistics`); nothing is changed.
    """
    for s in similarities:
        if s not in SIMILARITIES:
            raise SegxaiError(f"similarity: expected one of {SIMILARITIES}, got {s!r}")
    size = (int(ref.images.shape[-2]), int(ref.images.shape[-1]))
    sums = {s: 0.0 for s in similarities}
    count = 0
    invalid = False
    for model in models:
        device = next(model.parameters()).device
        with batch_statistics(model):
            for batch in ref.batches:
                rows = ref.rows(batch)
                act, grad = layer_terms(model, ref.images[ref.image_index[rows]].to(device),
                                        ref.class_index[rows].to(device),
                                        ref.roi[rows].to(device))
                maps = _maps(act.cpu(), grad.cpu(), size)
                if bool(_constant(maps).any()):
                    invalid = True
                    break
                r = _pearson_rows(ref.maps[rows], maps)
                if "pearson" in sums:
                    sums["pearson"] += float(r.mean())
                if "abs-pearson" in sums:
                    sums["abs-pearson"] += float(r.abs().mean())
                if "gram" in sums:
                    d = (ref.gram[rows] - _gram(act.cpu(), grad.cpu())).pow(2).sum(dim=(1, 2))
                    sums["gram"] -= float((d / GRAM_SIDE ** 4).mean())
                count += 1
        if invalid:
            break
    if invalid or count == 0:
        return {s: float("-inf") for s in similarities}
    return {s: v / count for s, v in sums.items()}
