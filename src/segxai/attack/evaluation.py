"""Evaluating an explanation attack: maps and logits of clean and adversarial images, and the
metrics of :func:`evaluate_attack` (also for explainers that cannot be attacked by gradient)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

from segxai.attack.metrics import (
    argmax_iou,
    map_mse,
    map_pearson,
    map_ssim,
    max_prob_change,
    normalize_map,
    perturbation_sizes,
    pixel_agreement,
)
from segxai.attack.softplus import softplus_model
from segxai.attack.targets import make_target_map
from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.registry import Explainer, get_explainer
from segxai.core.target import Target, check_target

__all__ = ["choose_target", "evaluate_attack", "explain_with_logits", "make_explainer",
           "other_image_map"]


def choose_target(model: Any, images: Tensor) -> Target:
    """Per image: the most frequent predicted class other than 0 (background), or class 0 if
    nothing else is predicted; ROI = its predicted pixels on the clean image."""
    adapter = adapt(model)
    images = adapter.check(images)
    pred = adapter.predict(images)
    k = adapter.num_classes(images)
    classes = []
    for p in pred:
        counts = torch.bincount(p.flatten().cpu(), minlength=k)
        fg = counts.clone()
        fg[0] = 0
        classes.append(int(fg.argmax()) if int(fg.sum()) > 0 else 0)
    return Target.from_prediction(adapter, images, classes)


def other_image_map(adapter: ModelAdapter, explainer: Explainer, images: Tensor,
                    target_image: Tensor | None, target: Target | None,
                    defence_beta: float | None) -> Tensor:
    """The explainer's sum-1 maps of ``target_image`` (Dombrowski et al.'s target: another
    image's explanation), one per image of ``images``.

    Raises:
        SegxaiError: no target image, or one of another size or count.
    """
    if target_image is None:
        raise SegxaiError("target_image: the 'other-image' target needs the other image(s) "
                          "(N or 1, C, H, W)")
    if not isinstance(target_image, Tensor) or target_image.dim() != 4:
        raise SegxaiError(f"target_image: expected a tensor (N, C, H, W), got "
                          f"{getattr(target_image, 'shape', type(target_image).__name__)}")
    n, c, h, w = images.shape
    if tuple(target_image.shape[1:]) != (c, h, w):
        raise SegxaiError(f"target_image: expected images of shape (C, H, W) = {(c, h, w)} "
                          f"(the attacked images' size), got {tuple(target_image.shape[1:])}")
    if target_image.shape[0] not in (1, n):
        raise SegxaiError(f"target_image: expected 1 or {n} images, got "
                          f"{target_image.shape[0]}")
    other = adapter.check(target_image.to(images.device, images.dtype)).detach()
    t = choose_target(adapter, other) if target is None else \
        check_target(target).validate(other, adapter.known_num_classes)
    maps, _, _ = evaluate_maps(adapter, explainer, other, t, defence_beta)
    maps = normalize_map(maps.detach())
    return maps.expand(n, h, w).clone() if maps.shape[0] == 1 else maps


def make_explainer(explainer: str | Explainer, params: dict[str, Any] | None = None) -> Explainer:
    """An :class:`Explainer` instance from a registry name (with ``params``) or an instance."""
    if isinstance(explainer, Explainer):
        if params:
            raise SegxaiError("explainer_params: give parameters only with an explainer name")
        return explainer
    if not isinstance(explainer, str):
        raise SegxaiTypeError(f"explainer: expected a registry name or an Explainer, got "
                        f"{type(explainer).__name__}")
    return get_explainer(explainer)(**(params or {}))


def explain_with_logits(adapter: ModelAdapter, explainer: Explainer, z: Tensor, target: Target,
                        create_graph: bool) -> tuple[Tensor, Tensor, list[str]]:
    """Maps, logits and explained layer names of ``z``: the logits of the explainer's own
    clean forward (:attr:`Explanation.logits`) when it makes one, else one extra forward."""
    e = explainer(adapter, z, target, create_graph=create_graph)
    logits = e.logits
    if logits is None:  # the method ran only perturbed copies (SmoothGrad, IG)
        grad = contextlib.nullcontext() if create_graph else torch.no_grad()
        with grad, adapter.explaining():
            logits = adapter(z)
    return e.maps, (logits if create_graph else logits.detach()), e.layers


def evaluate_maps(adapter: ModelAdapter, explainer: Explainer, images: Tensor,
                  target: Target, defence_beta: float | None) -> tuple[Tensor, Tensor, list[str]]:
    """Explanations (raw), logits and layer names; explanations on the Softplus(defence_beta)
    model when given, logits always from the original model."""
    module = adapter.module
    if defence_beta is None or module is None:
        return explain_with_logits(adapter, explainer, images, target, create_graph=False)
    with softplus_model(module, defence_beta):
        e = explainer(adapter, images, target)
    with torch.no_grad(), adapter.explaining():
        logits = adapter(images)
    return e.maps, logits, e.layers


def evaluate_attack(model: Any, images: Tensor, x_adv: Tensor, target: Target,
                    target_map: Tensor | str, explainer: str | Explainer = "gradient", *,
                    explainer_params: dict[str, Any] | None = None,
                    defence_beta: float | None = None, success_pearson: float = 0.8,
                    min_agreement: float = 0.99) -> dict[str, Any]:
    """Metrics of an adversarial image for one explainer (also non-differentiable ones, e.g. to
    measure how far a perturbation explainer follows a transferred gradient attack).

    Args:
        model: model or :class:`ModelAdapter`.
        images: clean ``(N, C, H, W)`` model-space images.
        x_adv: adversarial images, same shape.
        target: the explained :class:`Target` (ROI from the clean images).
        target_map: ``(N, H, W)`` target maps, or a kind (``"shift"``, ``"mirror"``,
            ``"box"``) built from this explainer's own clean map.
        explainer: registry name or :class:`Explainer`.
        explainer_params: parameters for a named explainer.
        defence_beta: compute the explanations on the Softplus(β) model (β-smoothing defence).
        success_pearson: Pearson-to-target threshold of a success.
        min_agreement: pixel agreement a success needs.

    Returns:
        A dict with ``metrics`` (name → list of per-image floats: ``target_pearson``,
        ``target_ssim``, ``target_mse``, ``original_pearson``, ``original_ssim``,
        ``original_mse`` (adversarial vs clean map), ``clean_target_pearson`` (clean map vs
        target, the starting point), ``moved`` (gain in target Pearson), ``pixel_agreement``,
        ``iou``, ``max_prob_change``, ``l2``, ``linf``, ``psnr``, ``success``) and the sum-1
        maps ``original_map``, ``adversarial_map``, ``target_map``, the predictions
        ``pred_original``, ``pred_adversarial``.
    """
    adapter = adapt(model)
    images = adapter.check(images)
    x_adv = adapter.check(x_adv)
    if x_adv.shape != images.shape:
        raise SegxaiError(f"x_adv: expected shape {tuple(images.shape)}, got {tuple(x_adv.shape)}")
    target = check_target(target).validate(images, adapter.known_num_classes)
    exp = make_explainer(explainer, explainer_params)
    m0, l0, layers = evaluate_maps(adapter, exp, images, target, defence_beta)
    exp = exp.with_layers(layers)  # the same layers, found by name, for x_adv
    if isinstance(target_map, str):
        h_t = make_target_map(target_map, m0.detach(), roi=target.roi).to(images)
    else:
        h_t = check_target_map(target_map, images)
    m1, l1, _ = evaluate_maps(adapter, exp, x_adv, target, defence_beta)
    return attack_metrics(adapter, images, x_adv, m0, m1, h_t, l0, l1, success_pearson,
                          min_agreement)


def attack_metrics(adapter: ModelAdapter, images: Tensor, x_adv: Tensor, m0: Tensor,
                   m1: Tensor, h_t: Tensor, l0: Tensor, l1: Tensor, success_pearson: float,
                   min_agreement: float) -> dict[str, Any]:
    """The metrics of :func:`evaluate_attack` from clean/adversarial maps ``m0``/``m1``, the
    target map ``h_t`` and clean/adversarial logits ``l0``/``l1``."""
    m0, m1 = normalize_map(m0.detach()), normalize_map(m1.detach())
    p0, p1 = adapter.probabilities(l0.detach()), adapter.probabilities(l1.detach())
    y0, y1 = l0.argmax(1), l1.argmax(1)
    sizes = perturbation_sizes(adapter.to_pixels(x_adv.detach()), adapter.to_pixels(images))
    tp = map_pearson(m1, h_t)
    ctp = map_pearson(m0, h_t)
    agree = pixel_agreement(y1, y0)
    metrics = {
        "target_pearson": tp,
        "target_ssim": map_ssim(m1, h_t),
        "target_mse": map_mse(m1, h_t),
        "original_pearson": map_pearson(m1, m0),
        "original_ssim": map_ssim(m1, m0),
        "original_mse": map_mse(m1, m0),
        "clean_target_pearson": ctp,
        "moved": tp - ctp,
        "pixel_agreement": agree,
        "iou": argmax_iou(y1.cpu(), y0.cpu(), l0.shape[1]),
        "max_prob_change": max_prob_change(p1, p0),
        **sizes,
    }
    out: dict[str, Any] = {k: [float(x) for x in v.cpu()] for k, v in metrics.items()}
    out["success"] = [bool(t >= success_pearson and a >= min_agreement)
                      for t, a in zip(out["target_pearson"], out["pixel_agreement"], strict=True)]
    return {"metrics": out, "original_map": m0.cpu(), "adversarial_map": m1.cpu(),
            "target_map": h_t.detach().cpu(), "pred_original": y0.cpu(),
            "pred_adversarial": y1.cpu()}


def check_target_map(target_map: Tensor, images: Tensor) -> Tensor:
    n, _, h, w = images.shape
    if not isinstance(target_map, Tensor):
        raise SegxaiTypeError(f"target_map: expected a tensor (N, H, W) or a kind name, got "
                        f"{type(target_map).__name__}")
    tm = target_map.detach()
    if tm.dim() == 2 and n == 1:
        tm = tm.unsqueeze(0)
    if tuple(tm.shape) != (n, h, w):
        raise SegxaiError(f"target_map: expected shape {(n, h, w)} (one map per image at the "
                         f"image size), got {tuple(target_map.shape)}")
    if not tm.is_floating_point() or not bool(torch.isfinite(tm).all()):
        raise SegxaiError("target_map: expected finite floating-point values")
    if bool((tm.abs().flatten(1).sum(1) <= 0).any()):
        raise SegxaiError("target_map: a target map is all zero")
    return normalize_map(tm.to(images.device, images.dtype))
