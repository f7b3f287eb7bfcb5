"""CBD / CBL on hand-made masks, the bias-sanity protocol and the benchmark on real data."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from segxai.evaluate import (
    bias_sanity,
    class_iou,
    context_bias_benchmark,
    context_bias_detection,
    context_bias_localisation,
    normalise_saliency,
)


def _hand_made() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # 4x4 image: object = left column, cue = top-right 2x2 block
    sal = np.array([[[4, 2, 2, 2],
                     [4, 0, 2, 2],
                     [4, 0, 0, 0],
                     [4, 0, 0, -1]]], dtype=float)
    obj = np.zeros((1, 4, 4), dtype=bool)
    obj[0, :, 0] = True
    cue = np.zeros((1, 4, 4), dtype=bool)
    cue[0, :2, 2:] = True
    return sal, ~obj, cue


def test_cbd_and_cbl_by_hand() -> None:
    sal, context, cue = _hand_made()
    # normalised saliency s = relu(sal) / 4; context = 12 pixels
    # context saliency: row0: 2,2,2 -> 1.5; row1: 0,2,2 -> 1.0; rest 0 -> total 2.5
    assert context_bias_detection(sal, context)[0] == pytest.approx(2.5 / 12)
    # cue saliency: (2+2+2+2)/4 = 2.0 of 2.5
    assert context_bias_localisation(sal, context, cue)[0] == pytest.approx(2.0 / 2.5)


def test_cbd_cbl_edge_cases() -> None:
    sal, context, cue = _hand_made()
    both = np.concatenate([sal, np.zeros_like(sal)])
    ctx2 = np.concatenate([context, context])
    cue2 = np.concatenate([cue, cue])
    cbl = context_bias_localisation(both, ctx2, cue2)
    assert cbl[0] == pytest.approx(0.8) and np.isnan(cbl[1])  # no salient context -> NaN
    assert np.isnan(context_bias_detection(sal, np.zeros_like(context))[0])
    # cue pixels outside the context do not count
    assert context_bias_localisation(sal, context, np.ones_like(cue))[0] == pytest.approx(1.0)
    # scale invariance of the normalisation
    assert context_bias_detection(10 * sal, context)[0] == pytest.approx(2.5 / 12)
    assert normalise_saliency(torch.zeros(1, 3, 3)).max() == 0
    with pytest.raises(ValueError, match="context"):
        context_bias_detection(sal, context[:, :3])


class _Lookup(nn.Module):
    """A model that learned the bias: the object (green) is class 1 when a cue (red) is
    visible anywhere, else class 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        obj = (x[:, 1:2] > 0.5).float()
        cue = (x[:, 0].flatten(1).max(1).values > 0.5).float().view(-1, 1, 1, 1)
        l1 = 5 * obj * cue
        l2 = 5 * obj * (1 - cue)
        return torch.cat([torch.zeros_like(l1) + 1, l1, l2], dim=1)


def _data(cue: bool, n: int = 4) -> SimpleNamespace:
    x = torch.zeros(n, 3, 8, 8)
    x[:, 1, 2:5, 2:5] = 1.0
    masks = torch.zeros(n, 8, 8, dtype=torch.long)
    masks[:, 2:5, 2:5] = 1
    cues = torch.zeros(n, 8, 8, dtype=torch.bool)
    if cue:
        x[:, 0, 6:8, 6:8] = 1.0
        cues[:, 6:8, 6:8] = True
    return SimpleNamespace(images=x, masks=masks, class_names=["bg", "a", "b"],
                           context_masks=masks == 0, cue_masks=cues,
                           is_biased=torch.full((n,), cue), bias_class=1)


def test_bias_sanity_detects_the_iou_drop() -> None:
    model = _Lookup()
    res = bias_sanity(model, _data(True), _data(False), bias_class=1)
    assert res["iou_biased"][1] == pytest.approx(1.0)
    assert res["iou_unbiased"][1] == pytest.approx(0.0)
    assert res["bias_class_drop"] == pytest.approx(1.0)
    assert res["learned_bias"] is True
    iou = class_iou(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [2, 1]]), 3)
    np.testing.assert_allclose(iou, [1.0, 2 / 3, 0.0])


class _OneImage:
    """One image of a context-bias dataset (the fields the benchmark reads)."""

    def __init__(self, ds, i: int) -> None:
        sl = slice(i, i + 1)
        self.images, self.masks = ds.images[sl], ds.masks[sl]
        self.context_masks, self.cue_masks = ds.context_masks[sl], ds.cue_masks[sl]
        self.is_biased, self.bias_class = ds.is_biased[sl], int(ds.bias_class)
        self.class_names = ds.class_names

    def __len__(self) -> int:
        return 1


class _MaskModel(nn.Module):
    """Bias-class logit 5 on the object pixels, plus ``w`` times the sum of the cue pixels."""

    def __init__(self, obj: torch.Tensor, cue: torch.Tensor, bias: int, w: float) -> None:
        super().__init__()
        self.register_buffer("obj", obj.float())
        self.register_buffer("cue", cue.float())
        self.bias, self.w = bias, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cue_term = (x * self.cue).flatten(1).sum(1).view(-1, 1, 1)
        logit = self.obj * (5 + self.w * cue_term)
        out = torch.zeros(x.shape[0], 5, *x.shape[-2:])
        out[:, self.bias] = logit
        return out


def test_benchmark_on_the_context_bias_dataset() -> None:
    from segxai.data import make_context_bias

    ds = make_context_bias(8, size=32, seed=0, bias_prob=1.0)
    bias = int(ds.bias_class)
    i = next(j for j in range(len(ds))
             if bool(ds.is_biased[j]) and bool((ds.masks[j] == bias).any()))
    one = _OneImage(ds, i)
    obj, cue = ds.masks[i] == bias, ds.cue_masks[i]
    # the gradient of the ROI score is w·|ROI| on every cue pixel and 0 elsewhere:
    # CBL = 1 and CBD = |cue ∩ context| / |context| by hand
    biased = context_bias_benchmark(_MaskModel(obj, cue, bias, 0.1), one, ["gradient"])
    context = ds.context_masks[i] & ~obj
    assert biased[0]["images"] == 1
    assert biased[0]["cbl"] == pytest.approx(1.0)
    assert biased[0]["cbd"] == pytest.approx(float((cue & context).sum() / context.sum()))
    # a model that ignores the cue: no salient context at all
    clean = context_bias_benchmark(_MaskModel(obj, cue, bias, 0.0), one, ["gradient"])
    assert clean[0]["cbd"] == 0.0 and np.isnan(clean[0]["cbl"])


def test_bias_test_sets_are_the_same_images_without_the_cue() -> None:
    from segxai.evaluate.context_bias import BIAS_DATA, bias_test_sets

    biased, removed = bias_test_sets(12, size=32, seed=3)
    assert bool(biased.is_biased.any()) and not bool(removed.is_biased.any())
    assert not bool(removed.cue_masks.any()) and removed.meta["cue_removed"] is True
    assert biased.meta["radius"] == list(BIAS_DATA["radius"])
    assert torch.equal(biased.masks, removed.masks)  # same objects, same labels
    differs = (biased.images != removed.images).any(dim=1)
    assert bool(differs[biased.cue_masks].all())  # the tile is gone ...
    assert not bool(differs[~biased.cue_masks].any())  # ... and nothing else changed
