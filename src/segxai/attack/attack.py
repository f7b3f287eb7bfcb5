"""Explanation attacks on segmentation models: keep the segmentation, move the explanation.

Generalises Dombrowski et al. (NeurIPS 2019, "Explanations can be manipulated and geometry is
to blame") to dense outputs, as in Gipiškis et al. (IEEE Systems Journal 2023): find
``x_adv`` that minimises, per image,

    λ_e · H·W · ‖h(x_adv) − h_t‖²  +  λ_o · mean_ij Σ_k (P(x_adv) − P(x))²
    +  λ_p · mean (x_adv − x)²        (pixel space)

where ``h`` is the explanation of a fixed :class:`~segxai.core.target.Target` (class and ROI
taken from the clean image), normalised to sum 1 (``|h| / Σ|h|``), ``h_t`` the target map
(sum 1) and ``P`` the softmax map ``K×H×W``. The factor ``H·W`` makes the explanation term the
MSE of maps scaled to mean 1, so λ_e = 1 is of order one whatever the image size.

Optimisation: Adam on the pixel-space image; after every step a projection onto the L∞ ball of
radius ε around the clean pixels and onto ``[0, 1]`` (model-space images are converted with
the adapter's pixel conversions, so normalised models are attacked in pixel units). While
optimising, every ``nn.ReLU``/``nn.ReLU6`` module is replaced by Softplus(β) with β growing
geometrically from ``beta_start`` to ``beta_end`` (10 → 100, as Dombrowski et al.); the model
is restored afterwards, also on errors. The result is evaluated on the original ReLU model.

With ``select="best"`` (default) the iterate kept is, per image, the one evaluated every
``eval_every`` steps on the ReLU model with the highest Pearson correlation to the target
among those whose pixel agreement with the clean prediction is at least ``min_agreement``
(if none qualifies: the one with the highest agreement). ``select="last"`` keeps the final
iterate, as the reference code does.

``defence_beta`` attacks the β-smoothing defence adaptively: the explanation is computed on
the Softplus(``defence_beta``) network during the attack *and* in the evaluation (β is kept
constant); predictions are always those of the original ReLU model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from segxai.attack.config import AttackConfig, AttackResult, parse_epsilon
from segxai.attack.evaluation import (
    attack_metrics,
    check_target_map,
    evaluate_attack,
    evaluate_maps,
    explain_with_logits,
    make_explainer,
    other_image_map,
)
from segxai.attack.loss import attack_loss
from segxai.attack.metrics import map_pearson, normalize_map, pixel_agreement
from segxai.attack.softplus import SoftplusSwap, softplus_model
from segxai.attack.targets import make_target_map
from segxai.core.adapter import adapt
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.registry import Explainer
from segxai.core.target import Target, check_target

__all__ = ["AttackConfig", "AttackResult", "attack", "evaluate_attack", "make_explainer",
           "parse_epsilon"]


def attack(model: Any, images: Tensor, target: Target, explainer: str | Explainer = "gradient",
           target_map: Tensor | str = "shift", config: AttackConfig | None = None, *,
           explainer_params: dict[str, Any] | None = None,
           target_kwargs: dict[str, Any] | None = None, progress: bool = False,
           device: str | None = None, callback: Callable[[int, float], None] | None = None,
           target_image: Tensor | None = None, target_image_target: Target | None = None,
           **settings: Any) -> AttackResult:
    """Move the explanation of ``target`` towards ``target_map`` while keeping the prediction.

    Args:
        model: an ``nn.Module`` (or a :class:`ModelAdapter` around one); its ReLU modules are
            smoothed in place during the attack and restored afterwards.
        images: ``(N, C, H, W)`` clean images in the model's input space.
        target: the explained :class:`Target` (class and ROI, fixed from the clean images).
        explainer: registry name or :class:`Explainer` with ``differentiable = True``
            (``"gradient"``, ``"smoothgrad"`` (its seed fixes the noise draws),
            ``"seg-grad-cam"``).
        target_map: ``(N, H, W)`` map (any non-negative scale; normalised to sum 1) or a kind,
            ``"shift"``, ``"mirror"`` or ``"box"``, built from the clean explanation (see
            :mod:`segxai.attack.targets`), or ``"other-image"`` with ``target_image``: the
            same explainer's map of another image (Dombrowski et al.'s setting).
        config: an :class:`AttackConfig`; keyword ``settings`` override its fields
            (``epsilon=8/255, iterations=300, ...``).
        explainer_params: parameters for a named explainer.
        target_kwargs: options of :func:`~segxai.attack.targets.make_target_map`
            (``shift``, ``box``, ``axis``).
        progress: show a progress bar.
        device: move the model there first (``None``: keep it where it is).
        callback: called as ``callback(step, loss)`` after every step.
        target_image: ``(N or 1, C, H, W)`` other images (model space, the size of
            ``images``) whose explanation is the target (``target_map="other-image"``).
        target_image_target: what to explain in ``target_image`` (default: per image its most
            frequent predicted non-background class, see :func:`choose_target`).

    Returns:
        An :class:`AttackResult`.

    Raises:
        SegxaiError: a non-differentiable explainer, ε <= 0, a target map of the wrong shape,
            a target image of another size (each names the argument).
        TypeError: the model is not an ``nn.Module``.

    Example:
        >>> import torch, segxai
        >>> from segxai.attack import attack
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.Conv2d(8, 2, 3, padding=1))
        >>> x = torch.rand(1, 3, 16, 16)
        >>> t = segxai.Target.whole_image(1, size=(16, 16))
        >>> r = attack(net, x, t, "gradient", "mirror", iterations=5)
        >>> r.x_adv.shape, r.metrics["linf"][0] <= 8 / 255 + 1e-6
        (torch.Size([1, 3, 16, 16]), True)
    """
    t_start = time.perf_counter()
    cfg = AttackConfig(**{**(config.to_dict() if config is not None else {}), **settings}) \
        if settings or config is None else config
    cfg.validate()
    adapter = adapt(model) if device is None else adapt(model, device=device)
    module = adapter.module
    if module is None:
        raise SegxaiTypeError("model: the attack needs an nn.Module (its ReLU modules are smoothed)")
    exp = make_explainer(explainer, explainer_params)
    if not exp.differentiable:
        raise SegxaiError(f"explainer: {exp.name!r} cannot return differentiable maps "
                         "(Explainer.differentiable is False), so it cannot be attacked by "
                         "gradient; attack 'gradient' and measure it on the transferred x_adv "
                         "with segxai.attack.evaluate_attack")
    images = adapter.check(images).detach()
    target = check_target(target).validate(images, adapter.known_num_classes)
    n, _, h, w = images.shape

    # clean explanation and prediction on the evaluation model; later calls explain the same
    # layers, found by name (a Softplus module replaces a ReLU one in place)
    m_clean, logits_clean, layers = evaluate_maps(adapter, exp, images, target,
                                                  cfg.defence_beta)
    exp = exp.with_layers(layers)
    if target_image is not None or (isinstance(target_map, str)
                                     and target_map == "other-image"):
        h_t = other_image_map(adapter, exp, images, target_image, target_image_target,
                              cfg.defence_beta)
    elif isinstance(target_map, str):
        h_t = make_target_map(target_map, m_clean.detach(), roi=target.roi,
                              **(target_kwargs or {})).to(images)
    else:
        if target_kwargs:
            raise SegxaiError("target_kwargs: only used with a target-map kind name")
        h_t = check_target_map(target_map, images)
    pred_clean = logits_clean.argmax(1)
    probs_clean = adapter.probabilities(logits_clean).detach()

    x_px = adapter.to_pixels(images).detach()
    eps = 1.0 if cfg.epsilon is None else cfg.epsilon  # None: the valid range only
    lo = (x_px - eps).clamp(0.0, 1.0)
    hi = (x_px + eps).clamp(0.0, 1.0)
    u = x_px.clone().requires_grad_(True)
    drift = torch.zeros(n, dtype=x_px.dtype, device=x_px.device)  # max L∞ over the iterates
    opt = torch.optim.Adam([u], lr=cfg.lr)
    hist: dict[str, list[float]] = {"loss": [], "explanation": [], "output": [], "input": [],
                                    "beta": [], "smooth_target_pearson": [],
                                    "eval_iteration": [], "eval_target_pearson": [],
                                    "eval_pixel_agreement": []}
    best_u = x_px.clone()
    best_key = [(-1.0, -2.0)] * n  # (qualifies, pearson) or (-1, agreement) ordering below
    kept = [cfg.iterations] * n
    eval_beta = math.inf if cfg.defence_beta is None else float(cfg.defence_beta)

    def evaluate_now(step: int, swap: SoftplusSwap) -> None:
        swap.set_beta(eval_beta)
        with torch.no_grad():
            z_eval = adapter.from_pixels(u.detach())
        maps_e, logits_e, _ = explain_with_logits(adapter, exp, z_eval, target,
                                                  create_graph=False)
        if cfg.defence_beta is not None:
            swap.set_beta(math.inf)
            with torch.no_grad():
                logits_e = adapter(z_eval)
        tp = map_pearson(normalize_map(maps_e.detach()), h_t)
        agree = pixel_agreement(logits_e.argmax(1), pred_clean)
        for i in range(n):
            ok = float(agree[i]) >= cfg.min_agreement
            key = (1.0, float(tp[i])) if ok else (0.0, float(agree[i]))
            if key > best_key[i]:
                best_key[i] = key
                best_u[i] = u.detach()[i]
                kept[i] = step + 1
        hist["eval_iteration"].append(step + 1)
        hist["eval_target_pearson"].append(float(tp.mean()))
        hist["eval_pixel_agreement"].append(float(agree.mean()))

    with adapter.explaining(), adapter.frozen_parameters(), \
            softplus_model(module, cfg.beta(0)) as swap:
        bar = tqdm(range(cfg.iterations), disable=not progress, desc=f"attack {exp.name}",
                   leave=False)
        for step in bar:
            beta = cfg.beta(step)
            swap.set_beta(beta)
            for group in opt.param_groups:
                group["lr"] = cfg.learning_rate(step)
            parts = attack_loss(adapter, exp, u, x_px, target, h_t, probs_clean, cfg)
            l_e, l_o, l_p, hm = parts.explanation, parts.output, parts.input, parts.maps
            loss = parts.total.sum()
            (grad,) = torch.autograd.grad(loss, u)
            u.grad = grad
            opt.step()
            u.grad = None
            with torch.no_grad():
                u.copy_(torch.maximum(torch.minimum(u, hi), lo))
                drift = torch.maximum(drift, (u - x_px).abs().flatten(1).amax(1))
            loss_value = float(loss.detach())
            hist["loss"].append(loss_value)
            hist["explanation"].append(float(l_e.detach().sum()))
            hist["output"].append(float(l_o.detach().sum()))
            hist["input"].append(float(l_p.detach().sum()))
            hist["beta"].append(beta)
            hist["smooth_target_pearson"].append(float(map_pearson(hm.detach(), h_t).mean()))
            if progress:
                bar.set_postfix(loss=f"{loss_value:.4g}", beta=f"{beta:.3g}")
            if callback is not None:
                callback(step, loss_value)
            if cfg.select == "best" and ((step + 1) % cfg.eval_every == 0
                                         or step == cfg.iterations - 1):
                evaluate_now(step, swap)
        bar.close()
        n_smoothed = len(swap)
    final_u = best_u if cfg.select == "best" else u.detach()
    if cfg.select == "last":
        kept = [cfg.iterations] * n
    x_adv = adapter.from_pixels(final_u).detach()
    # final evaluation on the restored (original) model
    m_adv, logits_adv, _ = evaluate_maps(adapter, exp, x_adv, target, cfg.defence_beta)
    ev = attack_metrics(adapter, images, x_adv, m_clean, m_adv, h_t, logits_clean, logits_adv,
                        cfg.success_pearson, cfg.min_agreement)
    seconds = time.perf_counter() - t_start
    return AttackResult(
        x_adv=x_adv, original_map=ev["original_map"], target_map=ev["target_map"],
        adversarial_map=ev["adversarial_map"], pred_original=ev["pred_original"],
        pred_adversarial=ev["pred_adversarial"], metrics=ev["metrics"], history=hist,
        seconds=seconds, method=exp.name, params=dict(exp.params), config=cfg,
        kept_iteration=kept, softplus_modules=n_smoothed,
        max_drift=[float(v) for v in drift.cpu()])
