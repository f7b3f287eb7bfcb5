"""Sparseness, complexity, pointing game and energy pointing game against Quantus v0.6."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from segxai.core.explanation import Cost, Explanation
from segxai.core.target import Target
from segxai.evaluate import (
    complexity,
    cost_metrics,
    energy_pointing_game,
    pointing_game,
    sparseness,
)

quantus = pytest.importorskip("quantus")


def _arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(6, 12, 10))
    a[2] = np.abs(a[2]) ** 4  # a peaky map
    s = np.zeros((6, 12, 10), dtype=bool)
    for i in range(6):
        r, c = rng.integers(0, 8, size=2)
        s[i, r:r + 4, c:c + 3] = True
    peak = np.unravel_index(np.argmax(a[1]), a[1].shape)
    s[1, peak] = True  # guarantee one hit
    return a, s


def test_sparseness_matches_quantus() -> None:
    a, _ = _arrays()
    metric = quantus.Sparseness(abs=True, normalise=False, disable_warnings=True)
    ref = np.asarray(metric.evaluate_batch(x_batch=None, a_batch=np.abs(a).copy()))
    np.testing.assert_allclose(sparseness(a), ref, atol=1e-6)
    np.testing.assert_allclose(sparseness(torch.from_numpy(a)), ref, atol=1e-6)
    # uniform map: Gini 0; one-hot map: close to 1
    assert sparseness(np.ones((1, 5, 5)))[0] == pytest.approx(0.0, abs=1e-9)
    one = np.zeros((1, 5, 5))
    one[0, 2, 2] = 1
    assert sparseness(one)[0] > 0.95


def test_complexity_matches_quantus() -> None:
    a, _ = _arrays(1)
    metric = quantus.Complexity(abs=True, normalise=False, disable_warnings=True)
    ref = np.asarray(metric.evaluate_batch(x_batch=None, a_batch=np.abs(a).copy()))
    np.testing.assert_allclose(complexity(a), ref, atol=1e-6)
    assert complexity(np.ones((1, 4, 4)))[0] == pytest.approx(np.log(16), abs=1e-9)


def test_pointing_game_matches_quantus() -> None:
    a, s = _arrays(2)
    metric = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)
    ref = np.asarray(metric.evaluate_batch(a_batch=a.copy(), s_batch=s.copy()), dtype=float)
    ours = pointing_game(a, s)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert ours[1] == 1.0 and 0.0 in ours  # both hits and misses are exercised


def test_pointing_game_tolerance_and_empty_mask() -> None:
    a = np.zeros((1, 20, 20))
    a[0, 10, 10] = 1
    m = np.zeros((1, 20, 20), dtype=bool)
    m[0, 10, 14] = True  # 4 px away
    assert pointing_game(a, m)[0] == 0.0
    assert pointing_game(a, m, tolerance=3.9)[0] == 0.0
    assert pointing_game(a, m, tolerance=4)[0] == 1.0
    assert np.isnan(pointing_game(a, np.zeros_like(m))[0])
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(a, m, tolerance=-1)


def test_energy_pointing_game_matches_relevance_mass_accuracy() -> None:
    a, s = _arrays(3)
    pos = np.clip(a, 0, None)  # EBPG uses the positive part; RMA sums raw values
    metric = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = np.asarray(metric.evaluate_batch(a_batch=pos.copy(), s_batch=s.copy()))
    np.testing.assert_allclose(energy_pointing_game(a, s), ref, atol=1e-6)
    np.testing.assert_allclose(energy_pointing_game(pos, s), ref, atol=1e-6)
    # hand-computed: mass 3 of 4 inside
    m = np.array([[[1, 1], [0, 0]]], dtype=bool)
    assert energy_pointing_game(np.array([[[2.0, 1.0], [1.0, -5.0]]]), m)[0] == 0.75


def test_cost_metrics_reads_the_explanation_cost() -> None:
    t = Target.whole_image(1, size=(2, 2))
    e = Explanation(torch.zeros(1, 2, 2), "x", {}, t, Cost(3, 2, 0.5, 1, None))
    assert cost_metrics(e) == {"seconds": 0.5, "forward_passes": 3.0, "backward_passes": 2.0,
                               "partial_forward_passes": 1.0}
    e.cost.peak_memory_bytes = 1024
    assert cost_metrics(e)["peak_memory_bytes"] == 1024.0
    with pytest.raises(TypeError, match="explanation"):
        cost_metrics({"seconds": 1})
