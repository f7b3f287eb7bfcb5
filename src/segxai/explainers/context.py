"""Grid Saliency (Hoyer, Munoz, Katiyar, Khoreva, Fischer, NeurIPS 2019): which context does
the prediction in a request region need?

A coarse mask ``M`` over the image is optimised so that as much context as possible is
replaced by a baseline while the class probability inside the request region ``R`` (the
target ROI, always preserved) does not drop:

``x' = x⊙M + (x⊙R + a⊙(1 − R))⊙(1 − M)``,
``loss = λ·mean(M) + Σ R⊙relu(P_c(x) − P_c(x'))/ΣR`` (softmax probabilities).

The map is the upsampled mask on the context (0 inside ``R``): the salient context.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from segxai.core.adapter import ModelAdapter
from segxai.core.checks import check_choice, check_fraction, check_positive_int
from segxai.core.errors import SegxaiError
from segxai.core.registry import register_explainer
from segxai.core.target import Target
from segxai.explainers.base import GradientExplainer, GradientPass
from segxai.explainers.occlusion import gaussian_blur

__all__ = ["AUTO_BASELINES", "GridSaliency"]

AUTO_BASELINES = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Constant pixel-space baselines tried by ``baseline="auto"``."""


def _parse_baseline(value: Any) -> str | float:
    if isinstance(value, str):
        if value in ("auto", "blur"):
            return value
        try:
            value = float(value)
        except ValueError:
            raise SegxaiError(f"baseline: expected 'auto', 'blur' or a grey level in [0, 1], "
                             f"got {value!r}") from None
    return check_fraction(value, "baseline")


def _positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise SegxaiError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


@register_explainer("grid-saliency")
class GridSaliency(GradientExplainer):
    """Grid Saliency: the smallest context mask that keeps the request region's prediction.

    The mask lives on a grid of ``cell_size``-pixel cells, is initialised to ``init`` and
    optimised with Adam (projected to ``[0, 1]`` after each step), then upsampled to the
    image (``upsample``).
    Optimisation is deterministic (no random draws); images are optimised jointly but each
    has its own mask and loss, so the result of one image does not depend on the others.

    Args:
        cell_size: grid cell size in pixels (mask of ``ceil(H/cell)×ceil(W/cell)`` cells).
        lam: weight λ of the mask-size term ``λ·mean(M)``.
        iterations: Adam steps.
        lr: Adam learning rate.
        baseline: ``"auto"`` (the constant grey level in ``{0, ¼, ½, ¾, 1}`` with the lowest
            loss at ``M = 0``, chosen per image), ``"blur"`` (Gaussian-blurred image) or a
            grey level in ``[0, 1]``; pixel space, mapped through the input normalisation.
        init: initial mask value in ``[0, 1]``.
        blur_sigma: sigma (pixels) of the blur baseline.
        upsample: ``"nearest"`` (default: each cell acts alone, crisp cells) or
            ``"bilinear"`` (smooth mask; neighbouring cells share pixels).
        progress: show a progress bar.
    """

    differentiable = False  # an optimisation, not a closed-form map of the input

    def __init__(self, cell_size: int = 8, lam: float = 0.02, iterations: int = 100,
                 lr: float = 0.1, baseline: Any = "auto", init: float = 1.0,
                 blur_sigma: float = 5.0, upsample: str = "nearest",
                 progress: bool = False) -> None:
        super().__init__()
        self.params = {
            "cell_size": check_positive_int(cell_size, "cell_size"),
            "lam": check_fraction(lam, "lam", low=0.0, high=float("inf")),
            "iterations": check_positive_int(iterations, "iterations"),
            "lr": _positive(lr, "lr"),
            "baseline": _parse_baseline(baseline),
            "init": check_fraction(init, "init"),
            "blur_sigma": _positive(blur_sigma, "blur_sigma"),
            "upsample": check_choice(upsample, "upsample", ("nearest", "bilinear")),
            "objective": "softmax-hinge",
        }
        self.progress = bool(progress)

    # ------------------------------------------------------------------ pieces
    def _class_prob(self, adapter: ModelAdapter, images: Tensor, classes: Tensor,
                    logits: Tensor | None = None) -> Tensor:
        probs = adapter.probabilities(adapter(images) if logits is None else logits)
        idx = classes.view(-1, 1, 1, 1).expand(-1, 1, *probs.shape[-2:])
        return probs.gather(1, idx)[:, 0]

    @staticmethod
    def _hinge(p0: Tensor, p: Tensor, roi: Tensor) -> Tensor:
        return (roi * F.relu(p0 - p)).flatten(1).sum(1) / roi.flatten(1).sum(1)

    def _baselines(self, adapter: ModelAdapter, images: Tensor, target: Target, keep: Tensor,
                   p0: Tensor) -> tuple[Tensor, list[Any]]:
        b = self.params["baseline"]
        if b == "blur":
            base = adapter.from_pixels(gaussian_blur(adapter.to_pixels(images),
                                                     sigma=self.params["blur_sigma"]))
            return base, ["blur"] * images.shape[0]
        levels = AUTO_BASELINES if b == "auto" else (float(b),)
        if len(levels) == 1:
            return adapter.colour(levels[0], images).expand_as(images), [levels[0]]
        losses, bases = [], []
        with torch.no_grad():
            for level in levels:
                base = adapter.colour(level, images).expand_as(images)
                kept = images * keep + base * (1 - keep)  # M = 0: only the request region
                p = self._class_prob(adapter, kept, target.class_index)
                losses.append(self._hinge(p0, p, target.roi))
                bases.append(base)
        best = torch.stack(losses).argmin(0)  # (N,)
        stacked = torch.stack(bases)  # (L, N, C, H, W)
        chosen = stacked[best, torch.arange(images.shape[0], device=images.device)]
        return chosen, [levels[int(i)] for i in best]

    def _up(self, mask: Tensor, size: tuple[int, int]) -> Tensor:
        if self.params["upsample"] == "nearest":
            return F.interpolate(mask, size=size, mode="nearest")
        return F.interpolate(mask, size=size, mode="bilinear", align_corners=False)

    # ------------------------------------------------------------------ main
    def attribute(self, run: GradientPass, targets: list[Target]) -> list[Any]:
        return [self._explain_one(run, t) for t in targets]

    def _explain_one(self, run: GradientPass, target: Target) -> tuple[Tensor, dict[str, Any]]:
        p, adapter, images, meter = self.params, run.adapter, run.images, run.meter
        n, _, h, w = images.shape
        x = images.detach()
        keep = (target.roi > 0).to(x.dtype).unsqueeze(1)  # request region, always preserved
        gh, gw = math.ceil(h / p["cell_size"]), math.ceil(w / p["cell_size"])
        if run.logits is None:  # one clean forward serves every target
            with torch.no_grad():
                run.logits = adapter(x)
        p0 = self._class_prob(adapter, x, target.class_index, run.logits)
        base, chosen = self._baselines(adapter, x, target, keep, p0)
        preserved = x * keep + base * (1 - keep)
        theta = torch.full((n, 1, gh, gw), p["init"], dtype=x.dtype, device=x.device,
                           requires_grad=True)
        opt = torch.optim.Adam([theta], lr=p["lr"])
        loss_hist = []
        for _ in tqdm(range(p["iterations"]), disable=not self.progress,
                      desc="grid-saliency"):
            m_up = self._up(theta, (h, w))
            x_p = x * m_up + preserved * (1 - m_up)
            prob = self._class_prob(adapter, x_p, target.class_index)
            per_image = p["lam"] * theta.flatten(1).mean(1) + self._hinge(p0, prob,
                                                                          target.roi)
            opt.zero_grad(set_to_none=True)
            per_image.sum().backward()
            meter.add_backward(n)
            opt.step()
            with torch.no_grad():
                theta.clamp_(0.0, 1.0)
            loss_hist.append(per_image.detach())
        with torch.no_grad():
            mask = theta.detach()
            m_up = self._up(mask, (h, w))[:, 0]
            maps = m_up * (1 - keep[:, 0])
        extras = {"grid_mask": mask[:, 0], "baseline": chosen,
                  "final_loss": loss_hist[-1].cpu() if loss_hist else None,
                  "clean_prob_mean": ((p0 * target.roi).flatten(1).sum(1)
                                      / target.roi.flatten(1).sum(1)).cpu()}
        return maps.to(images.dtype), extras
