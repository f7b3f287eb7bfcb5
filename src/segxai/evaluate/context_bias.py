"""Context-bias benchmark (Hoyer et al., "Grid Saliency for Context Explanations of Semantic
Segmentation", NeurIPS 2019), on the ``context-bias`` dataset.

A class co-occurs with a context cue in training. For an explanation of that class:

* **CBD** (context bias detection) = salient context / context: the mean normalised saliency
  over the context pixels, ``Σ_C s / |C|``. High → the method shows that the prediction uses
  context (biased samples are detectable).
* **CBL** (context bias localisation) = biased salient context / salient context: the share of
  the context saliency that lies on the cue, ``Σ_{C∩B} s / Σ_C s``. High → the method
  localises the bias.

``s`` is the positive part of the map divided by its maximum (a grid-saliency mask is already
in ``[0, 1]``), so methods of different scales are comparable.

Sanity protocol: a model that learned the bias loses IoU on the biased class when tested on
the *unbiased* split (the cue never appears there), while the other classes barely change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from segxai.core.adapter import adapt
from segxai.core.errors import SegxaiError
from segxai.core.registry import get_explainer
from segxai.core.target import Target
from segxai.models.unet import UNet

__all__ = ["BIAS_DATA", "bias_sanity", "bias_test_sets", "class_iou", "context_bias_benchmark",
           "context_bias_detection", "context_bias_localisation", "normalise_saliency",
           "train_bias_model"]


BIAS_DATA: dict[str, Any] = {"radius": (0.04, 0.06), "noise": 0.1}
"""Data settings of the bias models' training and test images: objects of 2.5–4 px radius,
whose shape alone barely separates the classes, so that the cue carries information the object
does not. With the default 6–11 px shapes the cue is redundant and a converged U-Net ignores it
(measured: docs/evaluation.md, "Context bias")."""


def bias_test_sets(n: int, size: int = 64, seed: int = 20_000) -> tuple[Any, Any]:
    """The test images of the context-bias benchmark and the same images without the cue.

    Args:
        n: number of images.
        size: image size.
        seed: data seed.

    Returns:
        ``(biased, cue_removed)``: every image with the bias class shows the cue; the second
        set is the same images with the tile left out (the paired counterfactual of
        :func:`bias_sanity`).
    """
    from segxai.data import make_context_bias

    return tuple(make_context_bias(n, size=size, seed=seed, bias_prob=1.0, cue_removed=removed,
                                   **BIAS_DATA) for removed in (False, True))  # type: ignore


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def normalise_saliency(maps: Tensor | np.ndarray) -> np.ndarray:
    """Positive part divided by the per-map maximum, ``(N, H, W)`` in ``[0, 1]`` (all-zero
    maps stay zero)."""
    a = np.clip(_np(maps).astype(np.float64), 0, None)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise SegxaiError(f"maps: expected (N, H, W), got shape {a.shape}")
    top = a.reshape(a.shape[0], -1).max(-1).reshape(-1, 1, 1)
    return np.divide(a, top, out=np.zeros_like(a), where=top > 0)


def _masks(mask: Tensor | np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    m = _np(mask).astype(bool)
    if m.ndim == 2:
        m = m[None]
    if m.shape != shape:
        raise SegxaiError(f"{name}: expected shape {shape} to match maps, got {m.shape}")
    return m


def context_bias_detection(maps: Tensor | np.ndarray,
                           context: Tensor | np.ndarray) -> np.ndarray:
    """CBD per image: ``Σ_C s / |C|`` (salient context / context).

    Args:
        maps: ``(N, H, W)`` saliency maps (normalised with :func:`normalise_saliency`).
        context: ``(N, H, W)`` context masks (pixels that are not the explained object).

    Returns:
        ``(N,)``; NaN where the context is empty.
    """
    s = normalise_saliency(maps)
    c = _masks(context, s.shape, "context")
    area = c.reshape(c.shape[0], -1).sum(-1)
    mass = (s * c).reshape(s.shape[0], -1).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = mass / area
    out[area == 0] = np.nan
    return out


def context_bias_localisation(maps: Tensor | np.ndarray, context: Tensor | np.ndarray,
                              cue: Tensor | np.ndarray) -> np.ndarray:
    """CBL per image: ``Σ_{C∩B} s / Σ_C s`` (biased salient context / salient context).

    Args:
        maps: ``(N, H, W)`` saliency maps.
        context: ``(N, H, W)`` context masks.
        cue: ``(N, H, W)`` masks of the bias cue.

    Returns:
        ``(N,)`` in ``[0, 1]``; NaN where there is no salient context.
    """
    s = normalise_saliency(maps)
    c = _masks(context, s.shape, "context")
    b = _masks(cue, s.shape, "cue") & c
    sal = (s * c).reshape(s.shape[0], -1).sum(-1)
    biased = (s * b).reshape(s.shape[0], -1).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = biased / sal
    out[sal <= 0] = np.nan
    return out


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr[np.isfinite(arr)].mean()) if np.isfinite(arr).any() else float("nan")


def class_iou(pred: Tensor, masks: Tensor, num_classes: int) -> np.ndarray:
    """Per-class IoU over a whole set, ``(K,)``; NaN for classes absent from both."""
    p = pred.reshape(-1).cpu()
    g = masks.reshape(-1).cpu()
    out = np.full(num_classes, np.nan)
    for k in range(num_classes):
        inter = int(((p == k) & (g == k)).sum())
        union = int(((p == k) | (g == k)).sum())
        if union:
            out[k] = inter / union
    return out


def _predict(model: Any, images: Tensor, batch_size: int = 32) -> Tensor:
    adapter = adapt(model)
    outs = [adapter.predict(images[i:i + batch_size].to(adapter.device)).cpu()
            for i in range(0, images.shape[0], batch_size)]
    return torch.cat(outs)


def bias_sanity(model: Any, biased: Any, unbiased: Any, bias_class: int,
                batch_size: int = 32) -> dict[str, Any]:
    """IoU per class on the biased and the unbiased split, and the drop of the bias class.

    Args:
        model: the segmentation model.
        biased: a dataset with the cue (``.images``, ``.masks``, ``.class_names``).
        unbiased: the same images without the cue (``make_context_bias(...,
            cue_removed=True)``, see :func:`bias_test_sets`), so that the drop is the cue's
            effect alone; an independently drawn unbiased split adds the sampling difference
            between two image sets (±0.1 IoU per class at 100 images).
        bias_class: the class id that co-occurs with the cue.
        batch_size: images per forward.

    Returns:
        ``{"iou_biased", "iou_unbiased"}`` (lists per class), ``"bias_class_drop"`` (IoU on the
        biased split minus IoU on the unbiased split for the bias class),
        ``"other_classes_drop"`` (mean drop over the other foreground classes) and
        ``"learned_bias"`` (the bias class drops by more than 0.05 and by more than the
        others).
    """
    k = len(biased.class_names)
    iou_b = class_iou(_predict(model, biased.images, batch_size), biased.masks, k)
    iou_u = class_iou(_predict(model, unbiased.images, batch_size), unbiased.masks, k)
    drop = iou_b - iou_u
    others = [d for c, d in enumerate(drop) if c not in (0, bias_class) and np.isfinite(d)]
    other = float(np.mean(others)) if others else float("nan")
    bdrop = float(drop[bias_class])
    return {"iou_biased": iou_b.tolist(), "iou_unbiased": iou_u.tolist(),
            "bias_class_drop": bdrop, "other_classes_drop": other,
            "learned_bias": bool(np.isfinite(bdrop) and bdrop > 0.05
                                 and (not np.isfinite(other) or bdrop > other))}


def context_bias_benchmark(model: Any, data: Any, methods: Sequence[str], *,
                           params: dict[str, dict[str, Any]] | None = None,
                           max_images: int | None = None,
                           progress: bool = False) -> list[dict[str, Any]]:
    """CBD and CBL of each method on the biased images that the model segments.

    For every image that shows the cue and in which the model predicts the bias class, the
    bias class is explained with the ROI = its predicted mask; the context is every pixel
    that is not an object (``data.context_masks``) and not in the ROI.

    Args:
        model: the segmentation model (trained on the biased split).
        data: a :class:`~segxai.data.ContextBiasDataset` (biased split).
        methods: registered explainer names.
        params: per-method explainer parameters.
        max_images: at most this many images.
        progress: show a progress bar.

    Returns:
        One row per method: ``{"method", "cbd", "cbl", "images"}`` (means over images), with
        the per-image values ``"cbd_values"``, ``"cbl_values"`` and their dataset indices
        ``"image_indices"`` (for intervals and paired comparisons).
    """
    adapter = adapt(model)
    bias = int(data.bias_class)
    idx = [i for i in range(len(data)) if bool(data.is_biased[i])]
    pred = _predict(adapter, data.images[idx]) if idx else torch.empty(0)
    chosen = [i for j, i in enumerate(idx) if bool((pred[j] == bias).any())]
    if max_images is not None:
        chosen = chosen[:max_images]
    rows = []
    it = methods
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(list(methods), desc="context bias", leave=False)
    for method in it:
        explainer = get_explainer(method)(**((params or {}).get(method, {})))
        cbd, cbl = [], []
        for i in chosen:
            x = data.images[i:i + 1].to(adapter.device)
            target = Target.from_prediction(adapter, x, bias)
            maps = explainer(adapter, x, target).maps.detach().cpu()
            context = data.context_masks[i:i + 1] & ~(target.roi.cpu() > 0)
            cbd.append(float(context_bias_detection(maps, context)[0]))
            cbl.append(float(context_bias_localisation(maps, context, data.cue_masks[i:i + 1])[0]))
        rows.append({"method": method,
                     "cbd": _nanmean(cbd), "cbl": _nanmean(cbl),
                     "images": len(chosen), "cbd_values": cbd, "cbl_values": cbl,
                     "image_indices": list(chosen)})
    return rows


def train_bias_model(out_dir: Any, *, quick: bool = False, unbiased: bool = False,
                     size: int = 64, seed: int = 0, device: str = "cpu",
                     progress: bool = False) -> UNet:
    """A U-Net trained on the context-bias data: the biased split (the cue beside every object
    of the bias class) or, with ``unbiased=True``, the control split, where the cue is
    uninformative: it appears in half of the images, with or without the bias class
    (``bias_prob = cue_elsewhere_prob = 0.5``), so the control knows the tile as background
    but has no reason to tie it to the class (a control that never saw the tile takes it for
    an object, which confounds CBL).

    Training runs through :func:`segxai.models.train.train_model` into ``out_dir`` (resumable;
    a finished run is loaded). Data: :data:`BIAS_DATA` (small objects, so the cue is
    informative). Recipe: 800 images, 8 epochs, batch 4, width 8, lr 3e-3 (1600 steps; the
    earlier 400 steps at batch 16 left the model unconverged); ``quick``: 300 images, 4 epochs,
    batch 16 (a smoke test: too short to learn the classes or the cue).

    Returns:
        The trained model in eval mode.
    """
    from segxai.data import make_context_bias
    from segxai.models.train import TrainConfig, train_model
    from segxai.models.unet import UNetConfig

    n_train, epochs, batch = (300, 4, 16) if quick else (800, 8, 4)
    split: dict[str, Any] = ({"bias_prob": 0.5, "cue_elsewhere_prob": 0.5} if unbiased
                             else {"bias_prob": 1.0})
    train = make_context_bias(n_train, size=size, seed=seed, **split, **BIAS_DATA)
    val = make_context_bias(100, size=size, seed=seed + 1, **split, **BIAS_DATA)
    torch.manual_seed(seed)
    model = UNet(UNetConfig(depth=3, base_width=8, num_classes=len(train.class_names)))
    train_model(model, train, val,
                TrainConfig(epochs=epochs, batch_size=batch, lr=3e-3, seed=seed),
                out_dir=out_dir, device=device, progress=progress)
    return model.eval()
