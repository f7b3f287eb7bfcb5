"""Tests of segxai.evaluate.road: ROAD's noisy linear imputation (Rong et al., ICML 2022)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.evaluate.road import imputation_system, road_impute


def _gauss_seidel(image: np.ndarray, remove: np.ndarray, sweeps: int = 5000) -> np.ndarray:
    """Slow reference: iterate "each removed pixel = weighted mean of its in-image neighbours"
    (direct 1/6, diagonal 1/12) pixel by pixel until nothing moves. ``image`` is (C, H, W)."""
    c, h, w = image.shape
    x = image.astype(np.float64).copy()
    x[:, remove] = 0.0
    todo = list(zip(*np.nonzero(remove)))
    for _ in range(sweeps):
        change = 0.0
        for i, j in todo:
            total = np.zeros(c)
            weight = 0.0
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if (di, dj) == (0, 0) or not (0 <= i + di < h and 0 <= j + dj < w):
                        continue
                    wt = 1 / 12 if di and dj else 1 / 6
                    total += wt * x[:, i + di, j + dj]
                    weight += wt
            new = total / weight
            change = max(change, float(np.abs(new - x[:, i, j]).max()))
            x[:, i, j] = new
        if change < 1e-14:
            return x
    raise AssertionError("Gauss-Seidel did not converge")


def test_matches_a_slow_gauss_seidel_reference() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 2, 7, 6, generator=g, dtype=torch.float64)
    remove = torch.rand(2, 7, 6, generator=g) < 0.45
    remove[1, :3, :3] = True  # a block touching the corner: unknowns next to unknowns
    out = road_impute(images, remove, noise=0.0)
    for k in range(2):
        ref = _gauss_seidel(images[k].numpy(), remove[k].numpy())
        np.testing.assert_allclose(out[k].numpy(), ref, atol=1e-10, rtol=0)


def test_known_pixels_are_unchanged_and_noise_is_seeded() -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, 32, 32, generator=g)
    remove = torch.rand(3, 32, 32, generator=g) < 0.5
    a = road_impute(images, remove, noise=0.01, seed=4)
    keep = ~remove[:, None].expand_as(images)
    assert torch.equal(a[keep], images[keep])
    assert a.dtype == images.dtype and a.shape == images.shape
    assert torch.equal(a, road_impute(images, remove, noise=0.01, seed=4))
    assert not torch.equal(a, road_impute(images, remove, noise=0.01, seed=5))
    # the noise is N(0, 0.01²) on every removed value (≈ 4,600 values: sd within 5 %)
    plain = road_impute(images, remove, noise=0.0)
    diff = (a - plain)[~keep].double()
    assert diff.mean().abs() < 0.001 and abs(float(diff.std()) - 0.01) < 0.0005
    assert torch.equal(a[keep], plain[keep])


def test_constant_image_stays_constant() -> None:
    images = torch.tensor([0.37, 0.5, 0.91], dtype=torch.float64).view(1, 3, 1, 1)
    images = images.expand(2, 3, 16, 12).clone()
    remove = torch.rand(2, 16, 12, generator=torch.Generator().manual_seed(2)) < 0.7
    out = road_impute(images, remove, noise=0.0)
    torch.testing.assert_close(out, images, atol=1e-12, rtol=0)


def test_linear_ramp_is_reproduced_in_the_interior() -> None:
    i = torch.arange(12, dtype=torch.float64).view(12, 1)
    j = torch.arange(10, dtype=torch.float64).view(1, 10)
    ramp = torch.stack([0.03 * i + 0.05 * j + 0.1, -0.02 * i + 0.01 * j + 0.9])[None]
    remove = torch.rand(1, 12, 10, generator=torch.Generator().manual_seed(3)) < 0.6
    remove[0, 3:9, 2:8] = True  # a large hole
    remove[0, 0, :] = remove[0, -1, :] = False  # removed pixels stay off the border, so each
    remove[0, :, 0] = remove[0, :, -1] = False  # has all 8 neighbours (symmetric weights)
    out = road_impute(ramp, remove, noise=0.0)
    torch.testing.assert_close(out, ramp, atol=1e-10, rtol=0)


def test_fill_stays_in_the_range_of_kept_values() -> None:
    g = torch.Generator().manual_seed(6)
    images = torch.rand(1, 1, 20, 20, generator=g)
    remove = torch.rand(1, 20, 20, generator=g) < 0.8
    out = road_impute(images, remove, noise=0.0)
    kept = images[0, 0][~remove[0]]
    filled = out[0, 0][remove[0]]
    assert filled.min() >= kept.min() - 1e-6 and filled.max() <= kept.max() + 1e-6


def test_system_is_symmetric_and_constant_preserving() -> None:
    remove = np.random.default_rng(0).random((2, 9, 8)) < 0.5
    a, k, unknown = imputation_system(remove)
    assert np.array_equal(unknown, np.flatnonzero(remove.ravel()))
    assert abs(a - a.T).max() < 1e-15
    # a constant image solves the system: A·1 = K·1
    np.testing.assert_allclose(a @ np.ones(a.shape[0]), k @ np.ones(k.shape[1]), atol=1e-14)


def test_mask_forms_and_nothing_removed() -> None:
    images = torch.rand(2, 3, 8, 8)
    remove = torch.zeros(2, 8, 8, dtype=torch.bool)
    assert torch.equal(road_impute(images, remove), images)
    remove[0, 2:5, 3:6] = True
    assert torch.equal(road_impute(images, remove, seed=1),
                       road_impute(images, remove[:, None], seed=1))


@pytest.mark.parametrize(("images", "remove", "error", "pattern"), [
    (torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), SegxaiTypeError, "^remove: expected a bool"),
    (torch.rand(2, 3, 8, 8), [[True]], SegxaiTypeError, "^remove: expected a bool torch.Tensor"),
    (torch.rand(2, 3, 8, 8), torch.zeros(2, 8, 7, dtype=torch.bool), SegxaiError,
     r"^remove: expected shape \(2, 8, 8\) or \(2, 1, 8, 8\)"),
    (torch.rand(2, 3, 8, 8), torch.zeros(2, 3, 8, 8, dtype=torch.bool), SegxaiError,
     "^remove: expected shape"),
    (torch.rand(3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.bool), ValueError, "^images: "),
])
def test_bad_inputs_are_refused(images, remove, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        road_impute(images, remove)


def test_fully_removed_image_and_bad_noise_are_refused() -> None:
    images = torch.rand(3, 1, 4, 4)
    remove = torch.zeros(3, 4, 4, dtype=torch.bool)
    remove[1] = True
    with pytest.raises(SegxaiError, match="all pixels removed in image 1"):
        road_impute(images, remove)
    remove[1, 0, 0] = False
    with pytest.raises(SegxaiError, match="^noise: expected a finite number >= 0"):
        road_impute(images, remove, noise=-0.1)
    with pytest.raises(SegxaiError, match="^noise: "):
        road_impute(images, remove, noise=float("nan"))
