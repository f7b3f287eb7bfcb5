"""Integrated Gradients (Sundararajan, Taly, Yan, ICML 2017) of a segmentation target."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from segxai.core.checks import check_choice, check_positive_int
from segxai.core.errors import SegxaiError
from segxai.core.ops import gaussian_blur
from segxai.core.registry import register_explainer
from segxai.core.target import Target
from segxai.explainers.base import GradientExplainer, GradientPass

__all__ = ["IntegratedGradients", "quadrature"]

RULES = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
         "gausslegendre")
BASELINES = ("black", "blur")
Rule = Literal["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid",
               "gausslegendre"]


def quadrature(rule: Rule | str, n: int) -> tuple[list[float], list[float]]:
    """Nodes ``α_k`` in ``[0, 1]`` and weights ``w_k`` of ``∫₀¹ f(α) dα ≈ Σ w_k f(α_k)``.

    Riemann rules use ``n`` equal steps of ``1/n`` at the left ends, right ends or midpoints;
    the trapezoid rule uses ``n`` equally spaced nodes including both ends (``n >= 2``,
    weights ``1/(n−1)``, halved at the ends); Gauss-Legendre uses the ``n`` Legendre nodes
    mapped from ``[−1, 1]`` (exact for polynomials of degree ``2n − 1``).
    """
    if rule == "gausslegendre":
        t, v = np.polynomial.legendre.leggauss(n)
        return [float(a) for a in (1 + t) / 2], [float(b) for b in v / 2]
    if rule == "riemann_trapezoid":
        if n < 2:
            raise SegxaiError(f"n_steps: expected at least 2 for 'riemann_trapezoid', got {n}")
        w = [1.0 / (n - 1)] * n
        w[0] = w[-1] = 0.5 / (n - 1)
        return [k / (n - 1) for k in range(n)], w
    shift = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[rule]
    return [(k + shift) / n for k in range(n)], [1.0 / n] * n


def _blur(pixels: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of ``N×C×H×W`` with a ``2⌈3σ⌉+1``-tap kernel (:func:`gaussian_blur`)."""
    return gaussian_blur(pixels, sigma=sigma, kernel_size=2 * max(1, math.ceil(3 * sigma)) + 1)


@register_explainer("integrated-gradients")
class IntegratedGradients(GradientExplainer):
    """Integrated Gradients (Sundararajan, Taly, Yan, "Axiomatic attribution for deep
    networks", ICML 2017) of the target score ``S`` (ROI logit sum by default).

    ``IG(x) = (x − x') ⊙ ∫₀¹ ∂S(x' + α(x − x'))/∂x dα ≈ (x − x') ⊙ Σ_k w_k ∇S(x' + α_k(x − x'))``
    with baseline ``x'`` and a quadrature rule (:func:`quadrature`). The per-pixel map is the
    signed channel sum by default, so that it keeps completeness
    (``Σ map ≈ S(x) − S(x')``).

    Args:
        baseline: ``"black"`` (pixel value 0, mapped through the input normalisation) or
            ``"blur"`` (a Gaussian-blurred copy of the image, ``blur_sigma`` pixels).
        method: ``"gausslegendre"`` (default), ``"riemann_left"``, ``"riemann_right"``,
            ``"riemann_middle"`` or ``"riemann_trapezoid"``.
        n_steps: quadrature nodes.
        batch_size: nodes per forward pass (each node is a copy of every image).
        blur_sigma: sigma of the blur baseline in pixels.
        reduce: channel reduction ``"sum"`` (default), ``"max"`` or ``"mean"``.
        abs: take ``|IG|`` before reducing (default False).
    """

    def __init__(self, baseline: Literal["black", "blur"] = "black",
                 method: Rule = "gausslegendre", n_steps: int = 50, batch_size: int = 16,
                 blur_sigma: float = 5.0, reduce: Literal["sum", "max", "mean"] = "sum",
                 abs: bool = False) -> None:  # noqa: A002
        super().__init__()
        if isinstance(blur_sigma, bool) or not isinstance(blur_sigma, (int, float)) \
                or not math.isfinite(blur_sigma) or blur_sigma <= 0:
            raise SegxaiError(f"blur_sigma: expected a positive number, got {blur_sigma!r}")
        self.params = {"baseline": check_choice(baseline, "baseline", BASELINES),
                       "method": check_choice(method, "method", RULES),
                       "n_steps": check_positive_int(n_steps, "n_steps"),
                       "batch_size": check_positive_int(batch_size, "batch_size"),
                       "blur_sigma": float(blur_sigma),
                       "reduce": check_choice(reduce, "reduce", ("sum", "max", "mean")),
                       "abs": bool(abs)}
        self.nodes = quadrature(self.params["method"], self.params["n_steps"])

    def baseline(self, run: GradientPass, x: Tensor) -> Tensor:
        """The model-space baseline ``x'`` of images ``x``."""
        if self.params["baseline"] == "black":
            return run.adapter.colour(0.0, x).expand_as(x)
        px = run.adapter.to_pixels(x)
        return run.adapter.from_pixels(_blur(px, self.params["blur_sigma"]))

    def attribute(self, run: GradientPass, targets: list[Target]) -> list[Any]:
        p, x = self.params, run.input_base()
        x0 = self.baseline(run, x)
        diff = x - x0
        alphas, weights = self.nodes
        acc: list[Tensor] = [torch.zeros_like(x) for _ in targets]
        for start in range(0, len(alphas), p["batch_size"]):
            a = torch.tensor(alphas[start:start + p["batch_size"]], dtype=x.dtype,
                             device=x.device).view(-1, 1, 1, 1, 1)
            w = torch.tensor(weights[start:start + p["batch_size"]], dtype=x.dtype,
                             device=x.device).view(-1, 1, 1, 1, 1)
            b = a.shape[0]
            path = (x0.unsqueeze(0) + a * diff.unsqueeze(0)).reshape(b * x.shape[0], *x.shape[1:])
            for k, (g,) in enumerate(run.vjp(path, targets, tile=b).grads):
                acc[k] = acc[k] + (w * g.reshape(b, *x.shape)).sum(0)
        out = []
        for total in acc:
            ig = diff * total
            ig = ig.abs() if p["abs"] else ig
            red = {"sum": ig.sum(1), "max": ig.amax(1), "mean": ig.mean(1)}[p["reduce"]]
            out.append((red, {"attributions": ig.detach()}))
        return out
