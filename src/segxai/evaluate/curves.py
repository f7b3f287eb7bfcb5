"""Deletion and insertion curves for segmentation explanations (Petsiuk et al., RISE, 2018).

Pixels are ranked by importance (descending; ties broken by a seeded random permutation).
*Deletion* replaces the top-ranked pixels step by step with a substrate (default: ROAD's noisy
linear imputation; also the data set's or the image's mean colour, blur, black, noise: see
:mod:`segxai.evaluate.substrates`); *insertion* starts from the substrate (default: Gaussian
blur, kernel 11, σ 5) and restores them. After each step the model is run and a score is tracked:

* ``"prob_mean"`` (default): mean probability of the class over the (fixed) ROI;
* ``"logit_ratio"``: the ROI logit sum relative to its clean value ``S_c(x_t; M) / |S_c(x; M)|``;
* ``"iou"``: IoU of the predicted class mask with the clean prediction's class mask.

Steps are fractions ``0, 1/T, ..., 1`` of the pixels (of the context pixels for
*context-only* deletion, where ROI pixels are never deleted). The AUC is the trapezoid rule
on the ``[0, 1]`` axis (for context-only insertion the ROI pixels are present from the start).
The substrates are defined in pixel space ``[0, 1]`` and mapped into
the model's input space with the adapter. ROAD is imputed per step (its noise is seeded by
``seed`` and the position of the step's batch, so it is reproducible for a given
``batch_size``).

Cost: one clean forward plus ``T`` forwards per curve (``2T + 1`` for a deletion + insertion
pair), batched ``batch_size`` images at a time under :func:`torch.inference_mode`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.checks import check_choice, check_positive_int
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.explanation import Explanation
from segxai.core.ops import gaussian_blur
from segxai.core.registry import make_generator
from segxai.core.target import Target, check_target
from segxai.evaluate.substrates import (
    ROAD,
    SUBSTRATES,
    Substrate,
    fill_removed,
    substrate_images,
)

__all__ = [
    "CURVE_SCORES",
    "SUBSTRATES",
    "CurveResult",
    "CurveScore",
    "Substrate",
    "auc",
    "deletion_curve",
    "deletion_insertion",
    "gaussian_blur",
    "insertion_curve",
    "pixel_ranks",
    "substrate_images",
]

CURVE_SCORES = ("prob_mean", "logit_ratio", "iou")
CurveScore = Literal["prob_mean", "logit_ratio", "iou"]


@dataclass
class CurveResult:
    """One deletion or insertion curve per image.

    Attributes:
        kind: ``"deletion"`` or ``"insertion"``.
        fractions: ``(T + 1,)`` x-axis in ``[0, 1]`` (fraction of the perturbable pixels).
        scores: ``(N, T + 1)`` tracked score after each step.
        auc: ``(N,)`` trapezoid area under each curve.
        score: the tracked score's name.
        substrate: the substrate's name.
        context_only: ROI pixels were never perturbed.
        forward_passes: images sent through the model for this curve (the shared clean
            forward is counted once, in the deletion curve of a pair).
        seconds: wall time.
    """

    kind: str
    fractions: np.ndarray
    scores: np.ndarray
    auc: np.ndarray
    score: str
    substrate: str
    context_only: bool = False
    forward_passes: int = 0
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)


def auc(values: np.ndarray | Sequence[float], fractions: np.ndarray | None = None) -> np.ndarray:
    """Trapezoid area under curve(s) on a ``[0, 1]`` axis.

    Args:
        values: ``(T + 1,)`` or ``(N, T + 1)`` curve values.
        fractions: x positions (default: ``T + 1`` equally spaced points in ``[0, 1]``).

    Returns:
        The area (a scalar array for one curve, ``(N,)`` for several).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim not in (1, 2) or v.shape[-1] < 2:
        raise SegxaiError(f"values: expected (T+1,) or (N, T+1) with T >= 1, got shape {v.shape}")
    x = np.linspace(0.0, 1.0, v.shape[-1]) if fractions is None else np.asarray(fractions, float)
    if x.shape != (v.shape[-1],):
        raise SegxaiError(f"fractions: expected shape ({v.shape[-1]},), got {x.shape}")
    dx = np.diff(x)
    return ((v[..., 1:] + v[..., :-1]) * 0.5 * dx).sum(-1)


def pixel_ranks(maps: Tensor, *, exclude: Tensor | None = None, seed: int = 0) -> Tensor:
    """Rank of every pixel by descending importance (0 = most important).

    Ties are broken by a seeded random permutation, so the order is reproducible. Excluded
    pixels (e.g. the ROI in context-only deletion) get rank ``H·W`` (never perturbed).

    Args:
        maps: ``(N, H, W)`` importance maps.
        exclude: optional ``(N, H, W)`` bool mask of pixels that are never perturbed.
        seed: seed of the tie-breaking permutation.

    Returns:
        ``(N, H, W)`` long tensor of ranks.
    """
    if maps.dim() != 3:
        raise SegxaiError(f"maps: expected (N, H, W), got shape {tuple(maps.shape)}")
    n, h, w = maps.shape
    flat = maps.detach().reshape(n, -1).to("cpu", torch.float64)
    if not bool(torch.isfinite(flat).all()):
        raise SegxaiError("maps: contains NaN or Inf values")
    gen = make_generator(seed)
    ranks = torch.empty(n, h * w, dtype=torch.long)
    excl = None if exclude is None else exclude.reshape(n, -1).to("cpu", torch.bool)
    for i in range(n):
        perm = torch.randperm(h * w, generator=gen)
        key = -flat[i][perm]
        if excl is not None:
            key = torch.where(excl[i][perm], torch.full_like(key, math.inf), key)
        order = perm[torch.sort(key, stable=True).indices]
        ranks[i, order] = torch.arange(h * w)
        if excl is not None:
            ranks[i][excl[i]] = h * w
    return ranks.view(n, h, w).to(maps.device)


def _step_counts(total: Tensor, steps: int) -> Tensor:
    """``(N, T + 1)`` number of perturbed pixels after each step: ``round(t / T · total)``."""
    t = torch.arange(steps + 1, dtype=torch.float64)
    return torch.round(total.double().view(-1, 1) * t.view(1, -1) / steps).long()


def _scores(adapter: ModelAdapter, logits: Tensor, target: Target, score: CurveScore,
            clean_mask: Tensor | None, clean_score: Tensor | None) -> Tensor:
    if score == "prob_mean":
        return target.with_score("prob_mean").score_from_logits(logits, binary=adapter.binary)
    if score == "logit_ratio":
        s = target.with_score("logit_sum").score_from_logits(logits, binary=adapter.binary)
        if clean_score is None:
            return s
        return s / clean_score.abs()
    pred = logits.argmax(1) == target.class_index.to(logits.device).view(-1, 1, 1)
    assert clean_mask is not None
    inter = (pred & clean_mask).flatten(1).sum(1).double()
    union = (pred | clean_mask).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def _maps_of(maps: Tensor | Explanation) -> Tensor:
    if isinstance(maps, Explanation):
        return maps.maps.detach()
    if not isinstance(maps, Tensor):
        raise SegxaiTypeError(f"maps: expected a tensor or an Explanation, got {type(maps).__name__}")
    return maps.detach()


def _curves(model: Any, images: Tensor, target: Target, maps: Tensor | Explanation,
            kinds: Sequence[str], *, steps: int, substrates: dict[str, Substrate | Tensor],
            score: CurveScore, context_only: bool, batch_size: int, seed: int,
            fill: Sequence[float] | float | None, blur_kernel: int, blur_sigma: float,
            progress: bool) -> dict[str, CurveResult]:
    adapter = adapt(model)
    images = adapter.check(images)
    target = check_target(target)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_choice(score, "score", CURVE_SCORES)
    m = _maps_of(maps)
    n, _, h, w = images.shape
    if tuple(m.shape) != (n, h, w):
        raise SegxaiError(f"maps: expected shape {(n, h, w)} to match images, got "
                         f"{tuple(m.shape)}")
    k = adapter.num_classes(images)
    target = target.validate(images, k)
    roi = target.roi > 0
    exclude = roi if context_only else None
    ranks = pixel_ranks(m, exclude=exclude, seed=seed).to(images.device)
    total = (~roi).flatten(1).sum(1) if context_only else torch.full((n,), h * w)
    if bool((total == 0).any()):
        raise SegxaiError("target: context-only deletion needs pixels outside the ROI, but the "
                         "ROI covers a whole image")
    counts = _step_counts(total.cpu(), steps).to(images.device)
    fractions = np.linspace(0.0, 1.0, steps + 1)

    t0 = time.perf_counter()
    f0 = adapter.counter.forward
    with adapter.explaining(), torch.inference_mode():
        clean_logits = adapter.logits(images)
        clean_mask = clean_logits.argmax(1) == target.class_index.view(-1, 1, 1)
        clean_logit_sum = target.with_score("logit_sum").score_from_logits(
            clean_logits, binary=adapter.binary)
        clean = _scores(adapter, clean_logits, target, score, clean_mask, clean_logit_sum)
        subs: dict[str, Tensor | str] = {
            kind: ROAD if substrates[kind] == ROAD else substrate_images(
                adapter, images, substrates[kind], seed=seed, fill=fill,
                blur_kernel=blur_kernel, blur_sigma=blur_sigma) for kind in kinds}
        # every (kind, image, step) that needs a forward; the clean image is shared
        jobs = [(kind, i, t) for kind in kinds for i in range(n) for t in range(steps + 1)
                if not ((kind == "deletion" and t == 0) or (kind == "insertion" and t == steps))]
        out = {kind: torch.empty(n, steps + 1, dtype=torch.float64) for kind in kinds}
        for kind in kinds:
            out[kind][:, 0 if kind == "deletion" else steps] = clean.double().cpu()
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(jobs), desc="curves", unit="img", leave=False)
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            idx = torch.tensor([i for _, i, _ in chunk], device=images.device)
            cnt = torch.stack([counts[i, t] for _, i, t in chunk])
            perturbed = ranks[idx] < cnt.view(-1, 1, 1)
            # removed pixels: the deleted ones, or (insertion) those not yet restored; in
            # context-only insertion the ROI is present from the start
            is_del = torch.tensor([kind == "deletion" for kind, _, _ in chunk],
                                  device=images.device).view(-1, 1, 1)
            removed = torch.where(is_del, perturbed, ~perturbed)
            if context_only:
                removed = removed & ~roi[idx]
            batch = [torch.empty(0)] * len(chunk)
            for kind in kinds:
                sel = [j for j, job in enumerate(chunk) if job[0] == kind]
                if not sel:
                    continue
                rows = idx[sel]
                sub = subs[kind]
                filled = fill_removed(adapter, images[rows], removed[sel],
                                      sub if isinstance(sub, str) else sub[rows],
                                      seed=seed + start)
                for k, j in enumerate(sel):
                    batch[j] = filled[k]
            logits = adapter.logits(torch.stack(batch))
            vals = _scores(adapter, logits, target[idx], score, clean_mask[idx],
                           clean_logit_sum[idx])
            vals = vals.double().cpu()
            for j, (kind, i, t) in enumerate(chunk):
                out[kind][i, t] = vals[j]
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    forwards = adapter.counter.forward - f0
    results = {}
    per_kind = {kind: sum(1 for j in jobs if j[0] == kind) for kind in kinds}
    for pos, kind in enumerate(kinds):
        sc = out[kind].numpy()
        fwd = per_kind[kind] + (n if pos == 0 else 0)
        substrate = substrates[kind]
        results[kind] = CurveResult(
            kind=kind, fractions=fractions, scores=sc, auc=auc(sc, fractions), score=score,
            substrate=substrate if isinstance(substrate, str) else "custom",
            context_only=context_only, forward_passes=fwd,
            seconds=seconds * fwd / max(forwards, 1),
            extras={"perturbable_pixels": total.tolist()})
    return results


def deletion_curve(model: Any, images: Tensor, target: Target, maps: Tensor | Explanation, *,
                   steps: int = 100, substrate: Substrate | Tensor = "road",
                   score: CurveScore = "prob_mean", context_only: bool = False,
                   batch_size: int = 32, seed: int = 0,
                   fill: Sequence[float] | float | None = None, blur_kernel: int = 11,
                   blur_sigma: float = 5.0, progress: bool = False) -> CurveResult:
    """Deletion curve: the most important pixels are replaced by the substrate step by step.

    Args:
        model: a segmentation model or :class:`ModelAdapter`.
        images: ``(N, C, H, W)`` model-space images.
        target: the :class:`Target` explained (its ROI stays fixed).
        maps: ``(N, H, W)`` importance maps or an :class:`Explanation`.
        steps: number of steps ``T`` (each perturbs ``1/T`` of the perturbable pixels).
        substrate: one of :data:`~segxai.evaluate.substrates.SUBSTRATES` (``"road"``,
            ``"dataset-mean"`` (needs ``fill``), ``"mean"``, ``"blur"``, ``"black"``,
            ``"noise"``) or a model-space tensor.
        score: ``"prob_mean"``, ``"logit_ratio"`` or ``"iou"``.
        context_only: never delete ROI pixels (judges context explanations fairly).
        batch_size: images per forward.
        seed: seed of the tie-breaking order and of the noise substrate.
        fill: pixel-space colour of ``"dataset-mean"`` (and of ``"mean"``, default each
            image's mean).
        blur_kernel: kernel size of the blur substrate.
        blur_sigma: σ of the blur substrate.
        progress: show a progress bar.

    Returns:
        A :class:`CurveResult` (lower AUC = more faithful).
    """
    return _curves(model, images, target, maps, ["deletion"], steps=steps,
                   substrates={"deletion": substrate}, score=score, context_only=context_only,
                   batch_size=batch_size, seed=seed, fill=fill, blur_kernel=blur_kernel,
                   blur_sigma=blur_sigma, progress=progress)["deletion"]


def insertion_curve(model: Any, images: Tensor, target: Target, maps: Tensor | Explanation, *,
                    steps: int = 100, substrate: Substrate | Tensor = "blur",
                    score: CurveScore = "prob_mean", context_only: bool = False,
                    batch_size: int = 32, seed: int = 0,
                    fill: Sequence[float] | float | None = None, blur_kernel: int = 11,
                    blur_sigma: float = 5.0, progress: bool = False) -> CurveResult:
    """Insertion curve: start from the substrate and restore the most important pixels first.

    Arguments as :func:`deletion_curve` (default substrate ``"blur"``); higher AUC = more
    faithful.
    """
    return _curves(model, images, target, maps, ["insertion"], steps=steps,
                   substrates={"insertion": substrate}, score=score, context_only=context_only,
                   batch_size=batch_size, seed=seed, fill=fill, blur_kernel=blur_kernel,
                   blur_sigma=blur_sigma, progress=progress)["insertion"]


def deletion_insertion(model: Any, images: Tensor, target: Target,
                       maps: Tensor | Explanation, *, steps: int = 100,
                       deletion_substrate: Substrate | Tensor = "road",
                       insertion_substrate: Substrate | Tensor = "blur",
                       score: CurveScore = "prob_mean",
                       context_only: bool = False, batch_size: int = 32, seed: int = 0,
                       fill: Sequence[float] | float | None = None, blur_kernel: int = 11,
                       blur_sigma: float = 5.0,
                       progress: bool = False) -> tuple[CurveResult, CurveResult]:
    """Deletion and insertion curves together, sharing the clean forward (``2T + 1`` forwards).

    Returns:
        ``(deletion, insertion)`` :class:`CurveResult` objects.
    """
    res = _curves(model, images, target, maps, ["deletion", "insertion"], steps=steps,
                  substrates={"deletion": deletion_substrate,
                              "insertion": insertion_substrate},
                  score=score, context_only=context_only, batch_size=batch_size, seed=seed,
                  fill=fill, blur_kernel=blur_kernel, blur_sigma=blur_sigma, progress=progress)
    return res["deletion"], res["insertion"]
