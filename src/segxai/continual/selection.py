"""Filling the replay memory after a task: exemplar selection (random or herding), saliency
for the box strategies, compression under the class's byte share.

Selection (per new class, over the task images that contain it; an image serves one class):

* ``random``: a seeded random order (class-balanced random selection);
* ``herding`` (iCaRL, as CIM uses it): features = the model's default CAM layer
  (:func:`segxai.core.layers.default_cam_layer`) averaged over the class's pixels and
  L2-normalised; the k-th exemplar is the candidate that brings the mean of the chosen ones
  closest to the class mean.

Exemplars are compressed in that order and added while they fit the class's share (the
first that does not fit ends the class, as CIM adds until the cost exceeds its share).

Saliency per strategy (:data:`~segxai.continual.compress.SALIENCY_STRATEGIES`): the explainer
(default Seg-Grad-CAM at the default CAM layer) of the exemplar's class, ROI its pixels;
``prob-box`` uses the model's softmax probability of that class instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from segxai.continual.compress import SALIENCY_STRATEGIES, compress
from segxai.continual.losses import IGNORE, masked_logits
from segxai.continual.memory import ReplayMemory
from segxai.core.errors import SegxaiError

__all__ = ["build_memory", "class_features", "herding_order", "probability_maps"]

Selection = Literal["random", "herding"]


def _to_uint8(images: Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


@torch.no_grad()
def class_features(model: nn.Module, images: Tensor, masks: Tensor, cls: int, *,
                   device: str = "cpu", chunk: int = 32) -> np.ndarray:
    """``(N, C)`` L2-normalised mean activation of the default CAM layer over each image's
    pixels of class ``cls`` (the mask resized to the layer by nearest neighbour)."""
    from segxai.core.layers import capture_activations, default_cam_layer

    model.to(device).eval()
    layer = default_cam_layer(model, images[:1].to(device))
    out = []
    for s in range(0, len(images), chunk):
        with capture_activations([layer]) as store:
            model(images[s:s + chunk].to(device))
        act = store[0].float()
        on = (masks[s:s + chunk] == cls).float().unsqueeze(1).to(act.device)
        on = torch.nn.functional.interpolate(on, size=act.shape[-2:], mode="nearest")
        feat = (act * on).sum((2, 3)) / on.sum((2, 3)).clamp_min(1.0)
        out.append(torch.nn.functional.normalize(feat, dim=1).cpu())
    return torch.cat(out).double().numpy() if out else np.zeros((0, 0))


def herding_order(features: np.ndarray) -> list[int]:
    """iCaRL herding: an order of all rows whose running means approach the mean row.

    Args:
        features: ``(N, C)``.

    Returns:
        A permutation of ``range(N)``: row ``k`` minimises ``‖μ − (S + f)/(k + 1)‖`` with
        ``S`` the sum of the rows chosen before (ties: the lower index).
    """
    n = len(features)
    mu = features.mean(0) if n else features
    chosen: list[int] = []
    total = np.zeros_like(mu)
    left = np.ones(n, dtype=bool)
    for k in range(n):
        dist = np.linalg.norm(mu[None] - (total[None] + features) / (k + 1), axis=1)
        dist[~left] = np.inf
        i = int(np.argmin(dist))
        chosen.append(i)
        left[i] = False
        total = total + features[i]
    return chosen


@torch.no_grad()
def probability_maps(model: nn.Module, images: Tensor, cls: int, seen: Sequence[int], *,
                     device: str = "cpu") -> np.ndarray:
    """``(N, H, W)`` softmax probability of class ``cls`` over the seen classes."""
    logits = masked_logits(model.to(device).eval()(images.to(device)), seen)
    return logits.softmax(1)[:, int(cls)].cpu().double().numpy()


def _saliency(strategy: str, model: nn.Module, x: Tensor, y: Tensor, cls: int,
              seen: Sequence[int], explainer: str, saliency_on: str,
              device: str) -> np.ndarray | None:
    from segxai.continual.learner import saliency_maps

    if strategy not in SALIENCY_STRATEGIES:
        return None
    if strategy == "prob-box":
        return probability_maps(model, x, cls, seen, device=device)
    return saliency_maps(model, x, y, explainer=explainer, device=device,
                         classes=[cls] if saliency_on == "selected" else None)


def build_memory(memory: ReplayMemory, model: nn.Module, images: Tensor, masks: Tensor, *,
                 task: int, new_classes: Sequence[int], seen: Sequence[int], seed: int,
                 explainer: str = "seg-grad-cam", r: float = 4.0, tau: float = 0.6,
                 patch: tuple[int, int] | None = None, pseudo_threshold: float | None = 0.7,
                 saliency_on: str = "selected", selection: Selection = "random",
                 device: str = "cpu", chunk: int = 16) -> dict[str, Any]:
    """Fill the memory with exemplars of the task's new classes (class-balanced).

    The memory's classes become ``seen`` minus background (old lists shrink to the new
    share) and it records that task ``task``'s masks know ``new_classes``. For each new class,
    the task images containing it are visited in the selection order (an image is used for
    one class only); each is compressed and added while it fits the class's share. The
    stored mask is the task's label map; with ``pseudo_threshold``, its background pixels
    where the model predicts an *older* class with probability >= the threshold take that
    class (SSUL-style pseudo-labels).

    Args:
        memory: the memory to update (in place).
        model: the model after training on the task.
        images: ``(N, 3, H, W)`` float images of the task.
        masks: ``(N, H, W)`` their (background-shifted) labels.
        task: task index (stored in each exemplar's meta).
        new_classes: the task's classes.
        seen: background + every class seen so far.
        seed: seeds the selection order and the random boxes.
        explainer: saliency method of the saliency strategies.
        r: compression ratio.
        tau: box threshold.
        patch: EPR patch size (default: ``1/r`` of the area).
        pseudo_threshold: confidence for old-class pseudo-labels (None = off).
        saliency_on: ``"selected"`` (the exemplar's class, as CIM uses the true class) or
            ``"present"`` (maximum over every foreground class in the stored mask).
        selection: ``"random"`` or ``"herding"``.
        device: torch device.
        chunk: images explained per call.

    Returns:
        Statistics: ``{"saliency_calls": int, "candidates": int}``.
    """
    if saliency_on not in ("selected", "present"):
        raise SegxaiError(f"saliency_on: expected 'selected' or 'present', got {saliency_on!r}")
    if selection not in ("random", "herding"):
        raise SegxaiError(f"selection: expected 'random' or 'herding', got {selection!r}")
    memory.set_classes([c for c in seen if c != 0])
    memory.set_known(task, list(new_classes))
    stats = {"saliency_calls": 0, "candidates": 0}
    if memory.strategy == "none":
        return stats
    old = [c for c in seen if c != 0 and c not in set(new_classes)]
    rng = np.random.default_rng([int(seed), int(task), 17])
    box_rng = np.random.default_rng([int(seed), int(task), 23])
    used: set[int] = set()
    for c in new_classes:
        rows = (masks == c).flatten(1).any(1).nonzero().flatten()
        if selection == "herding":
            feats = class_features(model, images[rows], masks[rows], c, device=device)
            ranked = [int(rows[i]) for i in herding_order(feats)]
        else:
            ranked = [int(i) for i in rng.permutation(rows.numpy())]
        order = [i for i in ranked if i not in used]
        done = False
        for s in range(0, len(order), chunk):
            if done:
                break
            idx = torch.tensor(order[s:s + chunk], dtype=torch.long)
            x, y = images[idx], masks[idx].clone()
            if pseudo_threshold is not None and old:
                with torch.no_grad():
                    probs = masked_logits(model.to(device).eval()(x.to(device)), seen)
                    probs = probs.softmax(1).cpu()
                conf, arg = probs.max(1)
                relabel = (y == 0) & torch.isin(arg, torch.tensor(old)) & (conf >= pseudo_threshold)
                y[relabel] = arg[relabel]
            sal = _saliency(memory.strategy, model, x, y, c, seen, explainer, saliency_on,
                            device)
            stats["saliency_calls"] += int(sal is not None)
            img8, msk8 = _to_uint8(x), y.clamp(0, IGNORE).to(torch.uint8).numpy()
            for k, i in enumerate(idx.tolist()):
                stats["candidates"] += 1
                ex = compress(img8[k], msk8[k], memory.strategy, task=task, cls=c,
                              saliency=None if sal is None else sal[k], r=r, tau=tau,
                              patch=patch, rng=box_rng)
                if not memory.add(c, ex):
                    done = True
                    break
                used.add(i)
    if memory.nbytes > memory.budget_bytes:  # cannot happen: add() checks every exemplar
        raise RuntimeError(f"memory: {memory.nbytes} bytes exceed the budget")
    return stats
