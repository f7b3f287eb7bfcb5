"""Model manipulation (Heo, Joo, Moon, NeurIPS 2019): fine-tune the model so that it keeps
its segmentation while its explanation goes elsewhere — the positive control for CAMs.

Loss, per batch (parameters θ from a frozen copy θ0, BatchNorm in eval mode as in the
paper's passive fooling):

    K(f_θ(x), f_θ0(x))  +  λ · L_F(ĥ_θ(x))

* ``K`` keeps the segmentation (segxai's version of the paper's "keep the accuracy"): by
  default the per-pixel KL divergence ``KL(softmax f_θ0(x) ‖ softmax f_θ(x))`` to the clean
  model's own softmax (``keep_loss="kl"``); ``"ce"`` is the cross-entropy to the clean
  arg-max ``ŷ0`` (pixels whose clean confidence is below ``confidence`` ignored), the
  paper's CE with the model's own labels;
* ``ĥ`` = the explainer's map of the target (class and ROI fixed from the clean prediction),
  kept differentiable w.r.t. θ
  (``differentiable_wrt="params"``: double backpropagation);
* location fooling: the paper's target ``m`` = 1 on a frame of width ⌊H/7⌋ (and ⌊W/7⌋)
  around the image, 0 inside. The paper's ``L_F = mean (m − ĥ)²`` on the max-normalised map
  passes no gradient where the ReLU map is 0 (the whole frame, at first), so segxai computes
  the map before its ReLU (``h``, scaled by its largest magnitude) and, by default
  (``fooling_loss="pearson"``), uses ``L_F = 1 − r(ReLU(h), m) + mean_frame ReLU(−h)²``: one
  minus the Pearson correlation of the ReLU map with the frame (the quantity the evaluation
  reports; blind to the map's scale, so it penalises a frame that is hot in a few places as
  much as one that is cold), plus a push on frame pixels still below 0, where the ReLU passes
  no gradient. ``fooling_loss="mse"`` is the squared-error form closer to the paper,
  ``mean_frame (1 − h)² + mean_inside ReLU(h)²``; on the full built-in U-Net it leaves the
  frame uneven (hot spots set the scale) and stays below r = 0.8 (docs/attack.md);
* top-k fooling: ``L_F = mean_K ReLU(ĥ)²`` over ``K`` = the top ``topk`` fraction (10 %) of
  the clean min-max map (the paper: ``mean_K ĥ²`` of the min-max map).

After the ``steps`` fooling steps, ``keep_only_steps`` (default 200) steps of ``K`` alone at
the schedule's last learning rate (λ ends at 0; segxai's addition) put back most pixels whose
arg-max the fooling flipped, at a small cost in the fooling (measured in docs/attack.md).

:func:`evaluate_manipulation` compares the fooled model with the original on held-out
images: pixel agreement and mIoU of the predictions, and for each explainer the Pearson
correlation with the location mask (location) or the share of the map's mass left in the
clean top-k region (top-k), clean and fooled — the fooled explainer and the transfer to
the others.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segxai.attack.config import cosine_lr
from segxai.attack.evaluation import choose_target, make_explainer
from segxai.attack.metrics import argmax_iou, map_pearson, pixel_agreement
from segxai.core.adapter import adapt
from segxai.core.checks import check_choice, check_fraction, check_positive_int
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.stats import pearson

__all__ = ["ManipulationConfig", "ManipulationResult", "evaluate_manipulation",
           "frame_mask", "keep_loss", "manipulate_model", "minmax", "topk_mask"]

TRANSFER_DEFAULT = ("seg-grad-cam", "grad-cam++", "gradient", "integrated-gradients",
                    "seg-ablation-cam")


@dataclass
class ManipulationConfig:
    """Settings of :func:`manipulate_model`.

    Attributes:
        kind: ``"location"`` or ``"topk"`` fooling.
        explainer: the fooled explainer (``differentiable = True``).
        explainer_params: its parameters (its layer: the default CAM layer unless given).
        steps: Adam steps (one batch each).
        lr: Adam learning rate (the largest, with ``lr_schedule="cosine"``).
        lam: weight λ of the fooling loss.
        batch_size: images per step (cycled through the training images).
        topk: fraction of the clean map forming the top-k region.
        confidence: clean pixels below this probability are left out of the CE term
            (``keep_loss="ce"``).
        train_without_relu: fool the map before the CAM's final ReLU (``relu=False``) while
            training. With the ReLU, pixels where the map is 0 — the whole frame of the
            location target, at first — pass no gradient, and the fooling term cannot start;
            the evaluation always uses the explainer with its ReLU.
        lr_schedule: ``"cosine"`` (from ``lr`` down to ``lr/20`` over the steps) or
            ``"constant"``.
        keep_loss: how the segmentation is kept: ``"kl"`` (default), the KL divergence of
            the fooled model's softmax from the clean model's, per pixel; ``"ce"``, the
            cross-entropy to the clean arg-max (the paper's CE to the labels). The CE keeps
            rewarding larger margins after every pixel agrees and so pulls against the
            fooling term without end (measured: the fooling loss rises again after ~350
            steps); the KL is zero at the clean softmax and leaves free the one direction
            the fooling needs, a per-pixel shift of all logits (softmax-invariant), which
            moves the logit-like map of a layer next to the head.
        temperature: softmax temperature ``T`` of the KL keep term,
            ``T² · KL(softmax(z0/T) ‖ softmax(z/T))`` (1 = the plain KL).
        keep_only_steps: extra Adam steps after ``steps`` with the keep term alone (λ = 0),
            to repair pixels whose arg-max the fooling flipped (0 = none).
        keep_only_lr: learning rate of those steps (``None``: the schedule's last rate).
        warmup_steps: the learning rate rises linearly over the first steps (0 = none):
            Adam's first steps move every parameter by about ``lr`` at once.
        fooling_loss: the location fooling term: ``"pearson"`` (default), one minus the
            Pearson correlation of the ReLU map with the frame plus a push on frame pixels
            below 0; ``"mse"``, the squared error to the frame of the map scaled by its
            largest magnitude (see the module docstring). Top-k fooling ignores it.
    """

    kind: Literal["location", "topk"] = "location"
    explainer: str = "seg-grad-cam"
    explainer_params: dict[str, Any] = field(default_factory=dict)
    steps: int = 1200
    lr: float = 1e-3
    lam: float = 0.15
    batch_size: int = 8
    topk: float = 0.1
    confidence: float = 0.0
    train_without_relu: bool = True
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    keep_loss: Literal["kl", "ce"] = "kl"
    temperature: float = 1.0
    keep_only_steps: int = 200
    keep_only_lr: float | None = None
    warmup_steps: int = 0
    fooling_loss: Literal["pearson", "mse"] = "pearson"

    def learning_rate(self, step: int) -> float:
        """Adam's learning rate at ``step`` (cosine: from ``lr`` down to ``lr/20``; the
        keep-only steps after ``steps``: ``keep_only_lr`` or the schedule's last rate)."""
        if step >= self.steps:
            return float(self.keep_only_lr) if self.keep_only_lr is not None \
                else self.learning_rate(self.steps - 1)
        rate = float(self.lr) if self.lr_schedule == "constant" \
            else cosine_lr(self.lr, step, self.steps)
        if step < self.warmup_steps:
            rate *= (step + 1) / self.warmup_steps
        return rate

    def validate(self) -> ManipulationConfig:
        check_choice(self.kind, "kind", ("location", "topk"))
        check_choice(self.lr_schedule, "lr_schedule", ("constant", "cosine"))
        check_choice(self.keep_loss, "keep_loss", ("kl", "ce"))
        check_choice(self.fooling_loss, "fooling_loss", ("pearson", "mse"))
        check_positive_int(self.steps, "steps")
        check_positive_int(self.batch_size, "batch_size")
        for name in ("keep_only_steps", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SegxaiError(f"{name}: expected an integer >= 0, got {value!r}")
        if self.keep_only_lr is not None:
            check_fraction(self.keep_only_lr, "keep_only_lr", low=0.0, high=1.0,
                           low_open=True)
        for name in ("lam", "temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not value > 0:
                raise SegxaiError(f"{name}: expected a positive number, got {value!r}")
        check_fraction(self.lr, "lr", low=0.0, high=1.0, low_open=True)
        check_fraction(self.topk, "topk", low=0.0, high=1.0, low_open=True)
        check_fraction(self.confidence, "confidence")
        if not make_explainer(self.explainer, self.explainer_params).differentiable:
            raise SegxaiError(f"explainer: {self.explainer!r} is not differentiable "
                              "(Explainer.differentiable is False), so it cannot be fooled by "
                              "fine-tuning")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ManipulationResult:
    """The fooled model (a copy; the original is untouched) and the training history
    (per step: ``"loss"``, ``"keep"`` (the keep term), ``"fooling"``)."""

    model: nn.Module
    config: ManipulationConfig
    history: dict[str, list[float]]
    seconds: float


def minmax(maps: Tensor) -> Tensor:
    """Per-image min-max normalisation of ``(N, H, W)`` maps (differentiable)."""
    flat = maps.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1)
    return (maps - lo) / (hi - lo + 1e-8)


def frame_mask(n: int, h: int, w: int, device: torch.device | str = "cpu") -> Tensor:
    """Heo et al.'s location target: 1 on a frame of width ⌊h/7⌋, ⌊w/7⌋, 0 inside."""
    m = torch.ones(n, h, w, device=device)
    bh, bw = max(1, h // 7), max(1, w // 7)
    m[:, bh:h - bh, bw:w - bw] = 0.0
    return m


def topk_mask(maps: Tensor, fraction: float) -> Tensor:
    """``(N, H, W)`` bool: the top ``fraction`` of each map's pixels."""
    flat = maps.detach().flatten(1)
    k = max(1, int(round(fraction * flat.shape[1])))
    idx = flat.topk(k, dim=1).indices
    out = torch.zeros_like(flat, dtype=torch.bool)
    out.scatter_(1, idx, True)
    return out.view_as(maps)


def _fooling_loss(kind: str, h: Tensor, clean: Tensor, topk: float,
                  form: str = "pearson") -> Tensor:
    """Per-image fooling loss of maps ``h`` (before or after the CAM's ReLU), scaled by their
    largest magnitude. Location, ``form="pearson"``: ``1 − r(ReLU(ĥ), m) + mean_frame
    ReLU(−ĥ)²``; ``form="mse"``: ``mean_frame (1 − ĥ)² + mean_inside ReLU(ĥ)²`` (the frame at
    the maximum, the inside at or below 0, so that the ReLU map is the frame). Top-k:
    ``mean_K ReLU(ĥ)²`` (the clean top-k region at or below 0)."""
    hn = h / h.detach().abs().flatten(1).amax(1).clamp_min(1e-8).view(-1, 1, 1)
    if kind == "location":
        m = frame_mask(hn.shape[0], hn.shape[1], hn.shape[2], device=hn.device)
        if form == "pearson":  # an all-zero ReLU map has no correlation: r = 0 there
            r = torch.nan_to_num(pearson(F.relu(hn).flatten(1), m.flatten(1), dim=1), nan=0.0)
            cold = (F.relu(-hn) ** 2 * m).flatten(1).sum(1) / m.flatten(1).sum(1)
            return 1.0 - r + cold
        inside, pos = 1.0 - m, F.relu(hn) ** 2
        return (((1.0 - hn) ** 2 * m).flatten(1).sum(1) / m.flatten(1).sum(1)
                + (pos * inside).flatten(1).sum(1) / inside.flatten(1).sum(1))
    region = topk_mask(clean, topk).to(hn)
    return (F.relu(hn) ** 2 * region).flatten(1).sum(1) / region.flatten(1).sum(1)


def keep_loss(kind: str, logits: Tensor, clean_probs: Tensor, labels: Tensor,
              temperature: float = 1.0) -> Tensor:
    """The term that keeps the segmentation: ``"kl"`` = mean over pixels of
    ``T² · KL(clean softmax ‖ softmax(logits / T))`` (0 at the clean softmax, unchanged by
    adding the same number to every logit of a pixel; ``clean_probs`` = the clean softmax at
    temperature ``T``); ``"ce"`` = cross-entropy to ``labels`` (the clean arg-max, ``-100``
    ignored)."""
    if kind == "kl":
        t = float(temperature)
        return t * t * F.kl_div(F.log_softmax(logits / t, 1), clean_probs,
                                reduction="none").sum(1).mean()
    return F.cross_entropy(logits, labels, ignore_index=-100)


def manipulate_model(model: nn.Module, images: Tensor, config: ManipulationConfig | None = None,
                     *, seed: int = 0, progress: bool = False,
                     on_step: Callable[[int, nn.Module], None] | None = None,
                     **settings: Any) -> ManipulationResult:
    """Fine-tune a copy of ``model`` to fool its explanation (see the module docstring).

    Args:
        model: the segmentation network (not modified).
        images: ``(N, C, H, W)`` training images in the model's input space.
        config: a :class:`ManipulationConfig`; keyword ``settings`` override its fields.
        seed: seed of the batch order.
        progress: print the loss every 50 steps.
        on_step: called as ``on_step(step, fooled_model)`` after every Adam step (e.g. to
            evaluate the model along the way; it must not change the model).

    Returns:
        A :class:`ManipulationResult` holding the fooled copy (in eval mode, parameters
        frozen).
    """
    t0 = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise SegxaiTypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    cfg = ManipulationConfig(**{**(config.to_dict() if config else {}), **settings}).validate()
    original = adapt(model.eval())
    images = original.check(images).detach()
    n = images.shape[0]
    targets = choose_target(original, images)
    exp = make_explainer(cfg.explainer, cfg.explainer_params)
    clean = exp(original, images, targets)
    if cfg.train_without_relu and "relu" in exp.params:
        exp = make_explainer(cfg.explainer, {**cfg.explainer_params, "relu": False})
    exp = exp.with_layers(clean.layers)
    clean_maps = minmax(clean.maps.detach())
    with torch.no_grad():
        clean_logits = original(images)
        probs = original.probabilities(clean_logits)
        keep_probs = original.probabilities(clean_logits / cfg.temperature)
    labels = probs.argmax(1)
    if cfg.confidence > 0:
        labels = torch.where(probs.max(1).values >= cfg.confidence, labels, -100)
    fooled = copy.deepcopy(model).eval()  # BatchNorm in eval mode, as in the paper
    for p in fooled.parameters():
        p.requires_grad_(True)
    adapter = adapt(fooled)
    opt = torch.optim.Adam([p for p in fooled.parameters()], lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=gen)
    hist: dict[str, list[float]] = {"loss": [], "keep": [], "fooling": []}
    pos = 0
    total = cfg.steps + cfg.keep_only_steps
    for step in range(total):
        if pos + cfg.batch_size > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + min(cfg.batch_size, n)]
        pos += cfg.batch_size
        x, t = images[idx], targets[idx]
        for group in opt.param_groups:
            group["lr"] = cfg.learning_rate(step)
        if step < cfg.steps:  # fooling and keeping
            e = exp(adapter, x, t, differentiable_wrt="params")
            logits = e.logits if e.logits is not None and e.logits.requires_grad \
                else adapter(x)
            lf = _fooling_loss(cfg.kind, e.maps, clean_maps[idx], cfg.topk,
                              cfg.fooling_loss).mean()
        else:  # the keep-only steps: no explanation needed
            logits, lf = adapter(x), None
        keep = keep_loss(cfg.keep_loss, logits, keep_probs[idx], labels[idx],
                         cfg.temperature)
        loss = keep if lf is None else keep + cfg.lam * lf
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        hist["loss"].append(float(loss.detach()))
        hist["keep"].append(float(keep.detach()))
        if lf is not None:
            hist["fooling"].append(float(lf.detach()))
        if on_step is not None:
            on_step(step, fooled)
        if progress and (step % 50 == 0 or step == total - 1):
            print(f"manipulate step {step}: {cfg.keep_loss.upper()} {hist['keep'][-1]:.4f}"
                  + (f", L_F {hist['fooling'][-1]:.4f}" if lf is not None else ""),
                  flush=True)
    for p in fooled.parameters():
        p.requires_grad_(False)
    return ManipulationResult(fooled.eval(), cfg, hist, time.perf_counter() - t0)


def evaluate_manipulation(original: nn.Module, fooled: nn.Module, images: Tensor,
                          config: ManipulationConfig,
                          explainers: tuple[str, ...] = TRANSFER_DEFAULT,
                          explainer_params: dict[str, dict[str, Any]] | None = None,
                          labels: Tensor | None = None,
                          success_pearson: float = 0.8) -> dict[str, Any]:
    """Per-image metrics of the fooled model against the original on ``images``.

    Args:
        original: the clean model.
        fooled: the manipulated model.
        images: held-out ``(N, C, H, W)`` images.
        config: the manipulation's settings (kind, top-k fraction).
        explainers: explainers to measure: the fooled one and the transfer to the others
            (each at its default layer unless ``explainer_params`` says otherwise).
        explainer_params: per-explainer parameters.
        labels: ``(N, H, W)`` ground truth (adds the mIoU of both models against it).
        success_pearson: location fooling counts as a success at this Pearson correlation
            with the frame mask.

    Returns:
        ``{"images": N, "pixel_agreement": [...], "miou_vs_clean": [...],
        ("miou_gt_clean", "miou_gt_fooled"), "explainers": {name: {"clean": [...],
        "fooled": [...], "original_pearson": [...], "success": [...]}}}``; for location the
        values are Pearson correlations with the frame mask, for top-k the share of the
        min-max map's mass inside the clean top-k region.
    """
    a0, a1 = adapt(original.eval()), adapt(fooled.eval())
    images = a0.check(images)
    targets = choose_target(a0, images)
    with torch.no_grad():
        y0, y1 = a0.predict(images), a1.predict(images)
    k = a0.num_classes(images)
    out: dict[str, Any] = {
        "images": int(images.shape[0]),
        "pixel_agreement": [float(v) for v in pixel_agreement(y1, y0)],
        "miou_vs_clean": [float(v) for v in argmax_iou(y1.cpu(), y0.cpu(), k)],
        "explainers": {}}
    if labels is not None:
        out["miou_gt_clean"] = [float(v) for v in argmax_iou(y0.cpu(), labels.cpu(), k)]
        out["miou_gt_fooled"] = [float(v) for v in argmax_iou(y1.cpu(), labels.cpu(), k)]
    n, _, h, w = images.shape
    mask = frame_mask(n, h, w).double()
    for name in explainers:
        params = (explainer_params or {}).get(name, {})
        exp = make_explainer(name, params)
        m0 = minmax(exp(a0, images, targets).maps.detach().double().cpu())
        m1 = minmax(exp(a1, images, targets).maps.detach().double().cpu())
        if config.kind == "location":
            s0, s1 = map_pearson(m0, mask), map_pearson(m1, mask)
            success = s1 >= success_pearson
        else:
            region = topk_mask(m0, config.topk).double()
            s0 = (m0 * region).flatten(1).sum(1) / m0.flatten(1).sum(1).clamp_min(1e-12)
            s1 = (m1 * region).flatten(1).sum(1) / m1.flatten(1).sum(1).clamp_min(1e-12)
            success = s1 <= 0.5 * s0
        out["explainers"][name] = {"clean": [float(v) for v in s0],
                                   "fooled": [float(v) for v in s1],
                                   "original_pearson": [float(v) for v in map_pearson(m1, m0)],
                                   "success": [bool(v) for v in success]}
    return out
