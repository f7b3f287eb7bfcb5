"""Zero-shot baselines the field uses: Zen score and a DisWOT-style proxy.

**Zen score** (Lin et al., ICCV 2021): conv/linear weights redrawn from N(0, 1), biases 0,
BatchNorm γ = 1, β = 0, train mode (batch statistics), no gradients, float64; inputs
``x, ε ~ N(0, I)`` of shape ``(B, C, H, W)``, α = 0.01;
``Δ = mean_b Σ_chw |f(x) − f(x + αε)|`` with ``f`` the features of the layer feeding the head
(for a classifier the pre-GAP features; here :func:`~segxai.core.layers.default_cam_layer`),
and ``Zen = log Δ + Σ_BN log sqrt(mean_c σ_c²)``. We use the paper's batch variance ``σ_c²``
of each BN input in the forward pass of ``x`` (the authors' code reads ``running_var`` after
its two forwards instead, which shifts every BN term by about −0.83); the U-Net's skips are
kept (Zen-NAS scores its own networks without residual links).

**DisWOT** (Dong, Li, Wei, CVPR 2023): teacher and student both *randomly initialised* (the
teacher's architecture redrawn with a fixed seed), train-mode BatchNorm, one labelled
minibatch (the probe images with the trained teacher's predictions as labels):

* relation: features ``F`` at the default layer flattened per image, the ``B×B`` Gram ``F Fᵀ``
  with L2-normalised rows, ``d_rel = ‖R_T − R_S‖²_F / B²``;
* semantic: DisWOT's ``G = ∂CE/∂W_fc`` (classes × channels). For a 1×1-conv segmentation head
  on the default layer that is ``G_kc = Σ_{b,u} ∂CE/∂z_k(b,u) · A_c(b,u)``. DisWOT compares
  per-class ``C×C`` matrices, which needs equal channel counts; teacher and student differ,
  so we compare the ``K×K`` class Gram ``G Gᵀ`` (rows L2-normalised):
  ``d_sem = ‖E_T − E_S‖²_F / K²``;
* score ``−(d_sem + d_rel)`` (larger = better).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segxai.core.adapter import adapt
from segxai.core.errors import SegxaiError
from segxai.core.layers import default_cam_layer
from segxai.nas.camscore import batch_statistics

__all__ = ["DiswotReference", "diswot_reference", "diswot_score", "zen_score"]

_BN = nn.modules.batchnorm._BatchNorm


def _gaussian_init(net: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype))
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, _BN) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()


def zen_score(model: nn.Module, input_shape: tuple[int, int, int], *, batch: int = 16,
              alpha: float = 0.01, seed: int = 0) -> float:
    """The Zen score of ``model`` (a copy is scored; the model is not changed).

    Args:
        model: the candidate.
        input_shape: ``(C, H, W)``.
        batch: images of the Gaussian batch (Zen-NAS: 64).
        alpha: perturbation scale α.
        seed: seed of the weights and inputs.

    Returns:
        ``log Δ + Σ_BN log sqrt(mean_c σ_c²)`` (``-inf`` if Δ = 0).
    """
    net = copy.deepcopy(model).double().cpu()
    _gaussian_init(net, seed)
    g = torch.Generator().manual_seed(int(seed) + 1)
    x = torch.randn((batch, *input_shape), generator=g, dtype=torch.float64)
    eps = torch.randn((batch, *input_shape), generator=g, dtype=torch.float64)
    layer = default_cam_layer(net, x[:1])
    feats: list[Tensor] = []
    variances: list[float] = []
    record = [True]

    def feat_hook(_m: nn.Module, _i: object, out: object) -> None:
        if isinstance(out, Tensor):
            feats.append(out)

    def bn_hook(_m: nn.Module, inp: tuple[Tensor, ...]) -> None:
        if record[0]:
            variances.append(float(inp[0].var(dim=(0, 2, 3), unbiased=False).mean()))

    handles = [layer.register_forward_hook(feat_hook)]
    handles += [m.register_forward_pre_hook(bn_hook) for m in net.modules() if isinstance(m, _BN)]
    try:
        with batch_statistics(net), torch.no_grad():
            adapt(net).raw(x)
            record[0] = False
            adapt(net).raw(x + alpha * eps)
    finally:
        for h in handles:
            h.remove()
    delta = float((feats[0] - feats[1]).abs().flatten(1).sum(1).mean())
    if not delta > 0 or not math.isfinite(delta):
        return float("-inf")
    bn = sum(0.5 * math.log(v) for v in variances if v > 0)
    return math.log(delta) + bn


def _features_and_grads(net: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Default-layer features ``(B, C, h, w)`` and ``∂CE/∂z`` ``(B, K, H, W)``."""
    layer = default_cam_layer(net, images[:1])
    store: list[Tensor] = []
    handle = layer.register_forward_hook(
        lambda _m, _i, out: store.append(out) if isinstance(out, Tensor) else None)
    try:
        with torch.enable_grad():
            logits = adapt(net).raw(images)
            (dz,) = torch.autograd.grad(F.cross_entropy(logits, labels), logits)
    finally:
        handle.remove()
    return store[-1].detach(), dz.detach()


def _relation(feats: Tensor) -> Tensor:
    f = feats.double().flatten(1)
    g = f @ f.T
    return g / g.norm(dim=1, keepdim=True).clamp_min(1e-300)


def _semantic(feats: Tensor, dz: Tensor) -> Tensor:
    if feats.shape[-2:] != dz.shape[-2:]:
        dz = F.adaptive_avg_pool2d(dz, (int(feats.shape[-2]), int(feats.shape[-1])))
    g = torch.einsum("bkhw,bchw->kc", dz.double(), feats.double())
    e = g @ g.T
    return e / e.norm(dim=1, keepdim=True).clamp_min(1e-300)


@dataclass
class DiswotReference:
    """The randomly initialised teacher's relation and semantic matrices on the probe batch.

    Attributes:
        images: ``(B, C, H, W)`` the labelled minibatch.
        labels: ``(B, H, W)`` its labels.
        relation: ``(B, B)`` normalised batch Gram of the teacher's features.
        semantic: ``(K, K)`` normalised class Gram of the teacher's head gradients.
    """

    images: Tensor
    labels: Tensor
    relation: Tensor
    semantic: Tensor


def _scored(net: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    with batch_statistics(net):
        feats, dz = _features_and_grads(net, images, labels)
    return _relation(feats), _semantic(feats, dz)


def diswot_reference(teacher: nn.Module, images: Tensor, labels: Tensor,
                     seed: int = 0) -> DiswotReference:
    """Redraw the teacher's weights (``reset_parameters`` of every module, seeded) and compute
    its DisWOT matrices; the teacher itself is not changed."""
    if images.shape[0] < 2:
        raise SegxaiError("images: DisWOT needs a minibatch of at least 2 images")
    net = copy.deepcopy(teacher).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for m in net.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    rel, sem = _scored(net, images, labels.long())
    return DiswotReference(images=images, labels=labels.long(), relation=rel, semantic=sem)


def diswot_score(model: nn.Module, ref: DiswotReference) -> float:
    """``−(d_sem + d_rel)`` of ``model`` at its initialisation (not changed)."""
    device = next(model.parameters()).device
    rel, sem = _scored(model, ref.images.to(device), ref.labels.to(device))
    d_rel = float((ref.relation - rel.cpu()).pow(2).sum()) / rel.shape[0] ** 2
    d_sem = float((ref.semantic - sem.cpu()).pow(2).sum()) / sem.shape[0] ** 2
    score = -(d_rel + d_sem)
    return score if math.isfinite(score) else float("-inf")
