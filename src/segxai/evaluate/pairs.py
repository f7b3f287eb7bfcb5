"""One image × one method: the target choice and every metric of one explanation."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from segxai.core.adapter import adapt
from segxai.core.checks import check_positive_int
from segxai.core.registry import get_explainer, make_generator
from segxai.core.target import Target
from segxai.evaluate.complexity import complexity, sparseness
from segxai.evaluate.config import RANDOM_BASELINE, EvalConfig, split_method
from segxai.evaluate.cost import cost_metrics
from segxai.evaluate.curves import deletion_curve, deletion_insertion
from segxai.evaluate.localisation import energy_pointing_game, pointing_game
from segxai.evaluate.robustness import max_sensitivity

__all__ = ["choose_target", "evaluate_pair", "select_images"]


def choose_target(model: Any, image: Tensor, mask: Tensor | None = None,
                  background: int = 0) -> tuple[Target, Tensor] | None:
    """The explained class and ROI of one image, and the mask for localisation metrics.

    Args:
        model: the model or adapter.
        image: ``(1, C, H, W)`` model-space image.
        mask: optional ``(H, W)`` ground-truth class ids.
        background: the class id never explained.

    Returns:
        ``(target, localisation mask (1, H, W) bool)`` or ``None`` when the model predicts no
        foreground class.
    """
    adapter = adapt(model)
    pred = adapter.predict(image.to(adapter.device))[0].cpu()
    predicted = [int(c) for c in torch.unique(pred) if int(c) != background]
    if not predicted:
        return None
    if mask is not None:
        gt = mask.cpu()
        counts = {c: int((gt == c).sum()) for c in predicted if int((gt == c).sum()) > 0}
        if counts:
            cls = max(sorted(counts), key=lambda c: counts[c])
            target = Target.from_prediction(adapter, image, cls)
            return target, (gt == cls).unsqueeze(0)
    counts = {c: int((pred == c).sum()) for c in predicted}
    cls = max(sorted(counts), key=lambda c: counts[c])
    target = Target.from_prediction(adapter, image, cls)
    return target, target.roi.cpu() > 0


def select_images(model: Any, images: Tensor, n: int, *, device: str = "cpu",
                  background: int = 0, batch_size: int = 64) -> list[int]:
    """Indices of the first ``n`` images in which the model predicts a foreground class
    (all of the first ``n`` if it predicts none anywhere, so that they are reported as skipped).

    Args:
        model: the model or adapter.
        images: ``(N, C, H, W)`` model-space images.
        n: how many to keep.
        device: torch device.
        background: the background class id.
        batch_size: images per forward.

    Returns:
        Sorted indices into ``images``.
    """
    n = check_positive_int(n, "n")
    adapter = adapt(model)
    if adapter.module is not None:
        adapter.module.to(device)
    keep: list[int] = []
    for start in range(0, images.shape[0], batch_size):
        pred = adapter.predict(images[start:start + batch_size].to(adapter.device))
        keep += [start + j for j in range(pred.shape[0]) if bool((pred[j] != background).any())]
        if len(keep) >= n:
            break
    return keep[:n] if keep else list(range(min(n, images.shape[0])))


def _finite(v: Any) -> float:
    v = float(v)
    return v if math.isfinite(v) else float("nan")


def evaluate_pair(adapter: Any, image: Tensor, target: Target, loc_mask: Tensor, method: str,
                  config: EvalConfig, seed: int, *, fill: list[float] | None = None,
                  info: dict[str, Any] | None = None
                  ) -> tuple[dict[str, float], dict[str, list]]:
    """Metrics and curves of ``method`` on one image (``RANDOM_BASELINE``: seeded noise maps).

    Args:
        adapter: the model adapter.
        image: ``(1, C, H, W)`` model-space image on the adapter's device.
        target: the explained class and ROI (:func:`choose_target`).
        loc_mask: ``(1, H, W)`` bool mask of the localisation metrics.
        method: a runner method (:func:`~segxai.evaluate.config.split_method`: a registered
            explainer, a variant, optionally ``@LAYER``) or :data:`RANDOM_BASELINE`.
        config: the run's settings.
        seed: seed of the curve substrates, noise and the random baseline.
        fill: the data set's mean colour (``dataset-mean`` substrate; default
            ``config.dataset_mean``).
        info: if given, receives ``"layers"``: the layers the explainer actually explained.

    Returns:
        ``(metrics, curves)``: metric name -> value, curve kind -> scores per step.
    """
    if method == RANDOM_BASELINE:
        gen = make_generator(seed)
        maps = torch.rand((1, *image.shape[-2:]), generator=gen).to(image.device)
        cost = {"seconds": 0.0, "forward_passes": 0.0, "backward_passes": 0.0,
                "partial_forward_passes": 0.0}
    else:
        base, fixed = split_method(method)
        explainer = get_explainer(base)(**{**fixed, **config.method_params.get(method, {})})
        expl = explainer(adapter, image, target)
        maps = expl.maps.detach()
        cost = cost_metrics(expl)
        if info is not None:
            info["layers"] = list(expl.layers)
    fill = fill if fill is not None else config.dataset_mean
    metrics: dict[str, float] = {k: float(v) for k, v in cost.items()}
    dele, ins = deletion_insertion(
        adapter, image, target, maps, steps=config.steps,
        deletion_substrate=config.deletion_substrate,
        insertion_substrate=config.insertion_substrate, score=config.score,
        batch_size=config.batch_size, seed=seed, fill=fill)
    curves = {"deletion": dele.scores[0].tolist(), "insertion": ins.scores[0].tolist()}
    metrics["deletion_auc"] = _finite(dele.auc[0])
    metrics["insertion_auc"] = _finite(ins.auc[0])
    curve_fwd = dele.forward_passes + ins.forward_passes
    if config.context_deletion and bool((target.roi <= 0).any()):
        ctx = deletion_curve(adapter, image, target, maps, steps=config.steps,
                             substrate=config.deletion_substrate, score=config.score,
                             context_only=True, batch_size=config.batch_size, seed=seed,
                             fill=fill)
        curves["context_deletion"] = ctx.scores[0].tolist()
        metrics["context_deletion_auc"] = _finite(ctx.auc[0])
        curve_fwd += ctx.forward_passes
    metrics["curve_forward_passes"] = float(curve_fwd)
    metrics["pointing_game"] = _finite(pointing_game(maps, loc_mask,
                                                     tolerance=config.pointing_tolerance)[0])
    metrics["energy_pointing_game"] = _finite(energy_pointing_game(maps, loc_mask)[0])
    metrics["sparseness"] = _finite(sparseness(maps)[0])
    metrics["complexity"] = _finite(complexity(maps)[0])
    if config.sensitivity_samples > 0 and method != RANDOM_BASELINE:
        base, fixed = split_method(method)
        sens = max_sensitivity(adapter, image, target, base,
                               params={**fixed, **config.method_params.get(method, {})},
                               radius=config.sensitivity_radius,
                               n_samples=config.sensitivity_samples, seed=seed, original=maps)
        metrics["max_sensitivity"] = _finite(sens.max_sensitivity[0])
        metrics["sensitivity_changed"] = float(sens.changed[0])
    return metrics, curves
