"""Architecture-ranking proxies, all with one sign convention: larger = better.

* ``cam``, ``cam-abs``, ``cam-gram``: the fixed CAM fitness at initialisation
  (training-free; :mod:`segxai.nas.camscore`): Pearson r of the maps without ReLU, its
  absolute value, and the DisWOT-style spatial Gram similarity; batch statistics, averaged
  over the candidate's initialisations (``replicas``) × the probe batches; ``-inf`` for a
  constant map.
* ``cam-l2``: the first, degenerate CAM fitness ``1 / (ε + mean ‖CAM_T − CAM_S‖₂)`` of
  min-max normalised ReLU maps in eval mode (:func:`segxai.nas.fitness.cam_fitness`), kept for
  comparison.
* ``cam-fewshot``: ``cam`` after ``k`` distillation steps towards the teacher.
* ``zen`` (Lin et al. 2021) and ``diswot`` (Dong et al. 2023): :mod:`segxai.nas.zeroshot`.
* ``params``, ``flops``: exact counts (bigger networks rank higher).
* ``synflow`` (Tanaka et al. 2020; Abdelfattah et al. 2021): BN neutralised (eval mode with
  running mean 0, variance 1), parameters replaced by their absolute values, float64, one
  all-ones input; ``R = Σ output``; score ``Σ_conv/linear weights |θ ⊙ ∂R/∂θ|``, returned as
  its natural log (same ranking, no overflow).
* ``naswot`` (Mellor et al. 2021): binary codes ``c = 1[pre-activation > 0]`` at every ReLU for
  each image of the probe batch; ``K = Σ_layers c cᵀ + (1 − c)(1 − c)ᵀ``; score ``log |det K|``.
* ``grad-norm``: ``sqrt(Σ_conv/linear ‖∂L/∂W‖²)`` for pixel-wise cross-entropy against random
  labels (as Zen-NAS computes it).
* ``random``: a uniform number derived from the candidate's seed (the random baseline).

Every proxy works on any segmentation ``nn.Module`` and never modifies the model it receives.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segxai.core.adapter import adapt
from segxai.core.checks import check_choice
from segxai.core.errors import SegxaiError
from segxai.core.registry import make_generator
from segxai.nas.camscore import Similarity, cam_scores
from segxai.nas.counting import count_params, network_counts
from segxai.nas.fitness import ProbeSet, cam_fitness, distill
from segxai.nas.zeroshot import diswot_score, zen_score

__all__ = ["CAM_PROXIES", "PROXIES", "compute_proxy", "grad_norm", "naswot", "synflow"]

PROXIES = ("cam", "cam-abs", "cam-gram", "cam-l2", "cam-fewshot", "params", "flops", "synflow",
           "naswot", "grad-norm", "zen", "diswot", "random")
CAM_PROXIES: dict[str, Similarity] = {"cam": "pearson", "cam-abs": "abs-pearson",
                                      "cam-gram": "gram"}
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.ELU)


def _weights(model: nn.Module) -> list[Tensor]:
    return [m.weight for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and m.weight is not None]


def synflow(model: nn.Module, input_shape: tuple[int, int, int]) -> float:
    """Log synflow score (see the module docstring).

    Args:
        model: the candidate (copied, not modified).
        input_shape: ``(C, H, W)``.

    Returns:
        ``log Σ |θ ⊙ ∂R/∂θ|`` (``-inf`` if the sum is 0).
    """
    net = copy.deepcopy(model).double().eval()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            assert m.running_mean is not None and m.running_var is not None  # tracked stats
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    for p in net.parameters():
        p.requires_grad_(True)
    x = torch.ones(1, *input_shape, dtype=torch.float64, device=next(net.parameters()).device)
    out = adapt(net).raw(x)
    weights = _weights(net)
    grads = torch.autograd.grad(out.sum(), weights, allow_unused=True)
    total = sum(float((w * g).abs().sum().detach()) for w, g in zip(weights, grads) if g is not None)
    return math.log(total) if total > 0 else float("-inf")


def naswot(model: nn.Module, images: Tensor) -> float:
    """NASWOT ``log |det K|`` on a batch of images (see the module docstring).

    Activation modules are hooked; a network without activation modules falls back to the
    batch-norm outputs (the pre-activations).
    """
    net = copy.deepcopy(model).train()
    n = images.shape[0]
    if n < 2:
        raise SegxaiError("images: NASWOT needs a batch of at least 2 images")
    kernel = torch.zeros(n, n, dtype=torch.float64)
    modules: list[nn.Module] = [m for m in net.modules() if isinstance(m, _ACTIVATIONS)]
    use_pre = bool(modules)
    if not modules:
        modules = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not modules:
        raise SegxaiError("model: NASWOT needs activation or batch-norm modules to hook")

    def add(t: Tensor) -> None:
        c = (t.detach().flatten(1) > 0).double().cpu()
        kernel.add_(c @ c.T + (1 - c) @ (1 - c).T)

    if use_pre:
        handles = [m.register_forward_pre_hook(lambda _m, inp: add(inp[0])) for m in modules]
    else:
        handles = [m.register_forward_hook(lambda _m, _i, out: add(out)) for m in modules]
    try:
        with torch.no_grad():
            adapt(net).raw(images.to(next(net.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) != 0 else float("-inf")


def grad_norm(model: nn.Module, images: Tensor, num_classes: int, seed: int = 0) -> float:
    """``sqrt(Σ ‖∂L/∂W‖²)`` for cross-entropy against random labels drawn with ``seed``."""
    net = copy.deepcopy(model).train()
    for p in net.parameters():
        p.requires_grad_(True)
    device = next(net.parameters()).device
    g = make_generator(seed)
    labels = torch.randint(0, num_classes, (images.shape[0], *images.shape[-2:]), generator=g)
    logits = adapt(net)(images.to(device))
    loss = F.cross_entropy(logits, labels.to(device))
    weights = _weights(net)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    return float(math.sqrt(sum(float(gr.pow(2).sum()) for gr in grads if gr is not None)))


def compute_proxy(name: str, model: nn.Module, probe: ProbeSet, *, seed: int = 0,
                  fewshot_steps: int = 50, fewshot_lr: float = 1e-2, fewshot_batch: int = 8,
                  device: str | torch.device = "cpu",
                  replicas: Sequence[nn.Module] = ()) -> float:
    """Score ``model`` with the proxy ``name`` (larger = better).

    Args:
        name: one of :data:`PROXIES`.
        model: a freshly initialised candidate (never modified).
        probe: the probe batch (teacher maps, images, distillation data).
        seed: the candidate's seed (random labels, random score, distillation order).
        fewshot_steps: distillation steps of ``cam-fewshot``.
        fewshot_lr: their Adam learning rate.
        fewshot_batch: their batch size.
        device: torch device.
        replicas: further initialisations of the same architecture, averaged with ``model``
            by the CAM proxies (``cam``, ``cam-abs``, ``cam-gram``).

    Returns:
        The score.
    """
    check_choice(name, "proxy", PROXIES)
    model = model.to(device)
    if name in CAM_PROXIES:
        return cam_family(probe, [model, *replicas], (name,))[name]
    if name == "cam-l2":
        return cam_fitness(model, probe, device)
    if name == "cam-fewshot":
        if probe.distill_images is None or probe.distill_logits is None:
            raise SegxaiError("probe: cam-fewshot needs distill_images in build_probe")
        student = distill(copy.deepcopy(model), probe.distill_images, probe.distill_logits,
                          steps=fewshot_steps, lr=fewshot_lr, batch_size=fewshot_batch,
                          seed=seed, device=device)
        return cam_family(probe, [student], ("cam",))["cam"]
    if name == "zen":
        return zen_score(model, probe.input_shape, seed=seed)
    if name == "diswot":
        if probe.diswot_ref is None:
            raise SegxaiError("probe: diswot needs the probe of build_probe")
        return diswot_score(model, probe.diswot_ref)
    if name == "params":
        return float(count_params(model))
    if name == "flops":
        return float(network_counts(model, probe.input_shape, device)["flops"])
    if name == "synflow":
        return synflow(model, probe.input_shape)
    if name == "naswot":
        return naswot(model, probe.images)
    if name == "grad-norm":
        return grad_norm(model, probe.images, probe.num_classes, seed)
    return float(np.random.default_rng(seed).random())


def cam_family(probe: ProbeSet, models: Sequence[nn.Module],
               names: Sequence[str]) -> dict[str, float]:
    """The CAM proxies ``names`` (keys of :data:`CAM_PROXIES`) of ``models`` in one pass."""
    if probe.cam_ref is None:
        raise SegxaiError("probe: the CAM proxies need the probe of build_probe")
    scores = cam_scores(models, probe.cam_ref, [CAM_PROXIES[n] for n in names])
    return {n: scores[CAM_PROXIES[n]] for n in names}


def proxy_settings(**kwargs: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`compute_proxy` other than the model (validated)."""
    allowed = {"seed", "fewshot_steps", "fewshot_lr", "fewshot_batch", "device"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise SegxaiError(f"proxy settings: unknown {sorted(unknown)}")
    return kwargs
