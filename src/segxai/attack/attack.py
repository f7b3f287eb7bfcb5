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
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

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
from segxai.attack.softplus import SoftplusSwap, softplus_model
from segxai.attack.targets import make_target_map
from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.checks import check_choice, check_fraction, check_positive_int
from segxai.core.layers import module_name
from segxai.core.registry import Explainer, get_explainer
from segxai.core.stats import pearson
from segxai.core.target import Target, check_target

__all__ = ["AttackConfig", "AttackResult", "attack", "evaluate_attack", "make_explainer",
           "parse_epsilon"]


def parse_epsilon(value: float | str) -> float:
    """ε in pixel units ``[0, 1]`` from a number: values ``>= 1`` are in /255 units
    (``8`` → 8/255), values in ``(0, 1)`` are fractions of the pixel range (``0.03``).

    Raises:
        ValueError: ε is not a positive finite number, or above 255.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"epsilon: expected a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"epsilon: expected a positive number (e.g. 8 for 8/255 or 0.03), "
                         f"got {value!r}")
    if v >= 1:
        if v > 255:
            raise ValueError(f"epsilon: expected at most 255 (/255 units), got {value!r}")
        return v / 255.0
    return v


@dataclass
class AttackConfig:
    """Settings of :func:`attack` (serialisable with :meth:`to_dict`).

    Attributes:
        epsilon: L∞ radius in pixel units ``[0, 1]`` (8/255 by default).
        iterations: Adam steps.
        lr: Adam learning rate in pixel units.
        lr_schedule: ``"cosine"`` (decay from ``lr`` to ``lr/20`` over the iterations) or
            ``"constant"``.
        lambda_explanation: weight λ_e of the explanation term (MSE of mean-1 maps).
        explanation_loss: ``"mse"`` (the paper's ‖h − h_t‖², as MSE of mean-1 maps) or
            ``"pearson"`` (``1 − r(h, h_t)``, the success criterion itself).
        lambda_output: weight λ_o of the output term (per-pixel squared softmax change).
        lambda_input: weight λ_p of the input term (mean squared pixel change).
        beta_start: initial Softplus β.
        beta_end: final Softplus β (geometric growth).
        select: ``"best"`` (evaluate on the ReLU model and keep the best iterate) or ``"last"``.
        eval_every: evaluation interval for ``select="best"``.
        min_agreement: pixel agreement required of a kept iterate and of a success.
        success_pearson: Pearson correlation with the target that counts as a success.
        defence_beta: attack and evaluate the explanation of the Softplus(β) network
            (β-smoothing defence, adaptive attacker); ``None`` = the plain ReLU explanation.
    """

    epsilon: float = 8 / 255
    iterations: int = 300
    lr: float = 2e-2
    lr_schedule: str = "cosine"
    lambda_explanation: float = 1.0
    explanation_loss: str = "mse"
    lambda_output: float = 100.0
    lambda_input: float = 1.0
    beta_start: float = 10.0
    beta_end: float = 100.0
    select: str = "best"
    eval_every: int = 10
    min_agreement: float = 0.99
    success_pearson: float = 0.8
    defence_beta: float | None = None

    def validate(self) -> AttackConfig:
        """Check every field; return ``self``."""
        if isinstance(self.epsilon, bool) or not isinstance(self.epsilon, (int, float)) \
                or not math.isfinite(self.epsilon) or self.epsilon <= 0:
            raise ValueError(f"epsilon: expected a positive number in pixel units, got "
                             f"{self.epsilon!r}")
        check_positive_int(self.iterations, "iterations")
        check_positive_int(self.eval_every, "eval_every")
        check_fraction(self.lr, "lr", low=0.0, high=1.0, low_open=True)
        for name in ("lambda_explanation", "lambda_output", "lambda_input"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 \
                    or not math.isfinite(v):
                raise ValueError(f"{name}: expected a non-negative number, got {v!r}")
        for name in ("beta_start", "beta_end"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name}: expected a positive number, got {v!r}")
        if self.defence_beta is not None and not self.defence_beta > 0:
            raise ValueError(f"defence_beta: expected a positive number or None, got "
                             f"{self.defence_beta!r}")
        check_choice(self.select, "select", ("best", "last"))
        check_choice(self.lr_schedule, "lr_schedule", ("cosine", "constant"))
        check_choice(self.explanation_loss, "explanation_loss", ("mse", "pearson"))
        check_fraction(self.min_agreement, "min_agreement")
        check_fraction(self.success_pearson, "success_pearson", low=-1.0, high=1.0)
        return self

    def beta(self, step: int) -> float:
        """β at ``step`` (geometric from ``beta_start`` to ``beta_end``; constant under a
        defence)."""
        if self.defence_beta is not None:
            return float(self.defence_beta)
        if self.iterations == 1:
            return float(self.beta_end)
        frac = step / (self.iterations - 1)
        return float(self.beta_start * (self.beta_end / self.beta_start) ** frac)

    def learning_rate(self, step: int) -> float:
        """Adam's learning rate at ``step``."""
        if self.lr_schedule == "constant" or self.iterations == 1:
            return float(self.lr)
        low = self.lr / 20
        frac = step / (self.iterations - 1)
        return float(low + 0.5 * (self.lr - low) * (1 + math.cos(math.pi * frac)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config: unknown attack setting(s) {unknown}")
        return cls(**data).validate()


@dataclass
class AttackResult:
    """Outcome of :func:`attack` for a batch of images.

    Attributes:
        x_adv: ``(N, C, H, W)`` adversarial images in the model's input space.
        original_map: ``h(x)`` on the evaluation model, normalised to sum 1.
        target_map: ``h_t``, normalised to sum 1.
        adversarial_map: ``h(x_adv)`` on the evaluation model (ReLU), normalised to sum 1.
        pred_original: ``(N, H, W)`` arg-max of the clean prediction.
        pred_adversarial: ``(N, H, W)`` arg-max on ``x_adv``.
        metrics: name → one value per image (see :func:`evaluate_attack`).
        history: per-iteration losses (sums over the batch), β and the target Pearson of the
            smoothed model's map (mean over images); ``eval_*`` lists hold the ReLU
            evaluations made for ``select="best"`` (mean over images).
        seconds: wall time of the whole attack (including the evaluation).
        method: the explainer's registry name.
        params: the explainer's parameters.
        config: the :class:`AttackConfig` used.
        kept_iteration: per image, the (1-based) iteration of the kept iterate.
        softplus_modules: how many ReLU/ReLU6 modules were smoothed.
    """

    x_adv: Tensor
    original_map: Tensor
    target_map: Tensor
    adversarial_map: Tensor
    pred_original: Tensor
    pred_adversarial: Tensor
    metrics: dict[str, list[float]]
    history: dict[str, list[float]]
    seconds: float
    method: str
    params: dict[str, Any]
    config: AttackConfig
    kept_iteration: list[int] = field(default_factory=list)
    softplus_modules: int = 0

    def __len__(self) -> int:
        return int(self.x_adv.shape[0])

    def records(self) -> list[dict[str, Any]]:
        """One JSON-friendly dict of metrics per image."""
        out = []
        for i in range(len(self)):
            rec: dict[str, Any] = {k: v[i] for k, v in self.metrics.items()}
            rec["method"] = self.method
            rec["kept_iteration"] = self.kept_iteration[i] if self.kept_iteration else None
            rec["seconds"] = self.seconds / len(self)
            out.append(rec)
        return out


def make_explainer(explainer: str | Explainer, params: dict[str, Any] | None = None) -> Explainer:
    """An :class:`Explainer` instance from a registry name (with ``params``) or an instance."""
    if isinstance(explainer, Explainer):
        if params:
            raise ValueError("explainer_params: give parameters only with an explainer name")
        return explainer
    if not isinstance(explainer, str):
        raise TypeError(f"explainer: expected a registry name or an Explainer, got "
                        f"{type(explainer).__name__}")
    return get_explainer(explainer)(**(params or {}))


def _pin_layers(explainer: Explainer, adapter: ModelAdapter, images: Tensor) -> None:
    """Give a layer-based explainer its layer(s) by dotted name, so that the hooks follow
    the modules that are current (a Softplus replacing a ReLU layer) and a cached module
    object of the ReLU model is never looked for in the smoothed one."""
    layer = getattr(explainer, "layer", "absent")
    if layer == "absent" or isinstance(layer, str):
        return
    from segxai.explainers.cam import resolve_layers

    model = adapter.module
    assert model is not None
    modules = resolve_layers(adapter, images, layer)
    names = [module_name(model, m) for m in modules]
    pinned = names[0] if len(names) == 1 else names
    explainer.layer = pinned  # type: ignore[attr-defined]
    if "layer" in explainer.params:
        explainer.params["layer"] = pinned


def _explain_with_logits(adapter: ModelAdapter, explainer: Explainer, z: Tensor,
                         target: Target, create_graph: bool) -> tuple[Tensor, Tensor]:
    """Maps of ``z`` and the logits of ``z``, reusing the explainer's own forward of ``z``
    when it makes one (gradient, Seg-Grad-CAM), else one extra forward."""
    module = adapter.module
    store: list[Tensor] = []

    def hook(_m: nn.Module, inp: tuple[Any, ...], out: Any) -> None:
        if (inp and isinstance(inp[0], Tensor) and isinstance(out, Tensor)
                and inp[0].data_ptr() == z.data_ptr() and inp[0].shape == z.shape
                and inp[0].stride() == z.stride()):
            store.append(out)

    handle = module.register_forward_hook(hook) if module is not None else None
    try:
        maps = explainer(adapter, z, target, create_graph=create_graph).maps
    finally:
        if handle is not None:
            handle.remove()
    if store and (store[-1].requires_grad or not create_graph):
        logits = adapter.to_logits(store[-1], z.shape[-2:])
    elif create_graph:
        with adapter.explaining():
            logits = adapter(z)
    else:
        with torch.no_grad(), adapter.explaining():
            logits = adapter(z)
    if not create_graph:
        logits = logits.detach()
    return maps, logits


def _evaluate_maps(adapter: ModelAdapter, explainer: Explainer, images: Tensor,
                   target: Target, defence_beta: float | None) -> tuple[Tensor, Tensor]:
    """Explanations (raw) and logits; explanations on the Softplus(defence_beta) model when
    given, logits always from the original model."""
    module = adapter.module
    if defence_beta is None or module is None:
        return _explain_with_logits(adapter, explainer, images, target, create_graph=False)
    with softplus_model(module, defence_beta):
        maps = explainer(adapter, images, target).maps
    with torch.no_grad(), adapter.explaining():
        logits = adapter(images)
    return maps, logits


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
        raise ValueError(f"x_adv: expected shape {tuple(images.shape)}, got {tuple(x_adv.shape)}")
    target = check_target(target).validate(images, adapter.num_classes(images))
    exp = make_explainer(explainer, explainer_params)
    if adapter.module is not None:
        _pin_layers(exp, adapter, images)
    m0, l0 = _evaluate_maps(adapter, exp, images, target, defence_beta)
    if isinstance(target_map, str):
        h_t = make_target_map(target_map, m0.detach(), roi=target.roi).to(images)
    else:
        h_t = _check_target_map(target_map, images)
    m1, l1 = _evaluate_maps(adapter, exp, x_adv, target, defence_beta)
    return _metrics(adapter, images, x_adv, m0, m1, h_t, l0, l1, success_pearson, min_agreement)


def _metrics(adapter: ModelAdapter, images: Tensor, x_adv: Tensor, m0: Tensor, m1: Tensor,
             h_t: Tensor, l0: Tensor, l1: Tensor, success_pearson: float,
             min_agreement: float) -> dict[str, Any]:
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


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    """Differentiable per-image Pearson correlation of ``(N, H, W)`` maps (0 if constant)."""
    return torch.nan_to_num(pearson(a.flatten(1), b.flatten(1), dim=1), nan=0.0)


def _check_target_map(target_map: Tensor, images: Tensor) -> Tensor:
    n, _, h, w = images.shape
    if not isinstance(target_map, Tensor):
        raise TypeError(f"target_map: expected a tensor (N, H, W) or a kind name, got "
                        f"{type(target_map).__name__}")
    tm = target_map.detach()
    if tm.dim() == 2 and n == 1:
        tm = tm.unsqueeze(0)
    if tuple(tm.shape) != (n, h, w):
        raise ValueError(f"target_map: expected shape {(n, h, w)} (one map per image at the "
                         f"image size), got {tuple(target_map.shape)}")
    if not tm.is_floating_point() or not bool(torch.isfinite(tm).all()):
        raise ValueError("target_map: expected finite floating-point values")
    if bool((tm.abs().flatten(1).sum(1) <= 0).any()):
        raise ValueError("target_map: a target map is all zero")
    return normalize_map(tm.to(images.device, images.dtype))


def attack(model: Any, images: Tensor, target: Target, explainer: str | Explainer = "gradient",
           target_map: Tensor | str = "shift", config: AttackConfig | None = None, *,
           explainer_params: dict[str, Any] | None = None,
           target_kwargs: dict[str, Any] | None = None, progress: bool = False,
           device: str | None = None, callback: Callable[[int, float], None] | None = None,
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
            :mod:`segxai.attack.targets`; ``"other-image"`` needs the other map as a tensor).
        config: an :class:`AttackConfig`; keyword ``settings`` override its fields
            (``epsilon=8/255, iterations=300, ...``).
        explainer_params: parameters for a named explainer.
        target_kwargs: options of :func:`~segxai.attack.targets.make_target_map`
            (``shift``, ``box``, ``axis``).
        progress: show a progress bar.
        device: move the model there first (``None``: keep it where it is).
        callback: called as ``callback(step, loss)`` after every step.

    Returns:
        An :class:`AttackResult`.

    Raises:
        ValueError: a non-differentiable explainer, ε <= 0, a target map of the wrong shape.
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
    if isinstance(cfg.epsilon, bool) or not isinstance(cfg.epsilon, (int, float)) \
            or not cfg.epsilon > 0:
        raise ValueError(f"epsilon: expected a positive number in pixel units (e.g. 8/255), got "
                         f"{cfg.epsilon!r}")
    cfg.validate()
    adapter = adapt(model) if device is None else adapt(model, device=device)
    module = adapter.module
    if module is None:
        raise TypeError("model: the attack needs an nn.Module (its ReLU modules are smoothed)")
    exp = make_explainer(explainer, explainer_params)
    if not exp.differentiable:
        raise ValueError(f"explainer: {exp.name!r} cannot return differentiable maps "
                         "(Explainer.differentiable is False), so it cannot be attacked by "
                         "gradient; attack 'gradient' and measure it on the transferred x_adv "
                         "with segxai.attack.evaluate_attack")
    images = adapter.check(images).detach()
    k = adapter.num_classes(images)
    target = check_target(target).validate(images, k)
    _pin_layers(exp, adapter, images)
    n, _, h, w = images.shape

    # clean explanation and prediction on the evaluation model
    m_clean, logits_clean = _evaluate_maps(adapter, exp, images, target, cfg.defence_beta)
    if isinstance(target_map, str):
        h_t = make_target_map(target_map, m_clean.detach(), roi=target.roi,
                              **(target_kwargs or {})).to(images)
    else:
        if target_kwargs:
            raise ValueError("target_kwargs: only used with a target-map kind name")
        h_t = _check_target_map(target_map, images)
    pred_clean = logits_clean.argmax(1)
    probs_clean = adapter.probabilities(logits_clean).detach()

    x_px = adapter.to_pixels(images).detach()
    lo = (x_px - cfg.epsilon).clamp(0.0, 1.0)
    hi = (x_px + cfg.epsilon).clamp(0.0, 1.0)
    u = x_px.clone().requires_grad_(True)
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
        maps_e, logits_e = _explain_with_logits(adapter, exp, z_eval, target, create_graph=False)
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
            z = adapter.from_pixels(u)
            maps, logits = _explain_with_logits(adapter, exp, z, target, create_graph=True)
            hm = normalize_map(maps)
            if cfg.explanation_loss == "mse":
                l_e = (h * w) * ((hm - h_t) ** 2).flatten(1).sum(1)
            else:
                l_e = 1.0 - _pearson(hm, h_t)
            l_o = ((adapter.probabilities(logits) - probs_clean) ** 2).sum(1).flatten(1).mean(1)
            l_p = ((u - x_px) ** 2).flatten(1).mean(1)
            per_image = (cfg.lambda_explanation * l_e + cfg.lambda_output * l_o
                         + cfg.lambda_input * l_p)
            loss = per_image.sum()
            (grad,) = torch.autograd.grad(loss, u)
            u.grad = grad
            opt.step()
            u.grad = None
            with torch.no_grad():
                u.copy_(torch.maximum(torch.minimum(u, hi), lo))
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
    m_adv, logits_adv = _evaluate_maps(adapter, exp, x_adv, target, cfg.defence_beta)
    ev = _metrics(adapter, images, x_adv, m_clean, m_adv, h_t, logits_clean, logits_adv,
                  cfg.success_pearson, cfg.min_agreement)
    seconds = time.perf_counter() - t_start
    return AttackResult(
        x_adv=x_adv, original_map=ev["original_map"], target_map=ev["target_map"],
        adversarial_map=ev["adversarial_map"], pred_original=ev["pred_original"],
        pred_adversarial=ev["pred_adversarial"], metrics=ev["metrics"], history=hist,
        seconds=seconds, method=exp.name, params=dict(exp.params), config=cfg,
        kept_iteration=kept, softplus_modules=n_smoothed)
