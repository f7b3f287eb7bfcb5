"""Replay memory and exemplar compressors: real byte accounting, budget, reconstruction."""

from __future__ import annotations

import numpy as np
import pytest

from segxai.continual.cim import outside_low_pixels
from segxai.continual.compress import (
    compress,
    exemplar_nbytes,
    low_size,
    nearest_resize,
    reconstruct,
    saliency_box,
    saliency_patch,
)
from segxai.continual.memory import ReplayMemory

H = W = 16


def _example(seed: int, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(3, H, W), dtype=np.uint8)
    mask = rng.integers(0, classes, size=(H, W)).astype(np.uint8)
    return image, mask


def _saliency(seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 100).random((H, W))


def _slow_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h_in, w_in = arr.shape[-2:]
    out = np.empty(arr.shape[:-2] + tuple(size), dtype=arr.dtype)
    for i in range(size[0]):
        for j in range(size[1]):
            # the input pixel whose area contains the output pixel's centre
            src_i = min(int(np.floor((i + 0.5) * h_in / size[0])), h_in - 1)
            src_j = min(int(np.floor((j + 0.5) * w_in / size[1])), w_in - 1)
            out[..., i, j] = arr[..., src_i, src_j]
    return out


@pytest.mark.parametrize("size", [(8, 8), (5, 7), (16, 16), (32, 20)])
def test_nearest_resize_matches_loop(size):
    image, mask = _example(0)
    np.testing.assert_array_equal(nearest_resize(image, size), _slow_nearest(image, size))
    np.testing.assert_array_equal(nearest_resize(mask, size), _slow_nearest(mask, size))


def test_nearest_down_up_by_two_is_block_replication():
    _, mask = _example(1)
    up = nearest_resize(nearest_resize(mask, (8, 8)), (16, 16))
    # every 2x2 block holds one value, the one of the block's bottom-right pixel
    np.testing.assert_array_equal(up, np.kron(mask[1::2, 1::2], np.ones((2, 2), np.uint8)))


def test_saliency_patch_matches_slow_loop():
    rng = np.random.default_rng(3)
    for _ in range(5):
        sal = rng.random((12, 10))
        ph, pw = 4, 3
        best, arg = -1.0, None
        norm = (sal - sal.min()) / (sal.max() - sal.min())
        for u in range(12 - ph + 1):
            for v in range(10 - pw + 1):
                m = norm[u:u + ph, v:v + pw].mean()
                if m > best + 1e-12:
                    best, arg = m, (u, v)
        assert saliency_patch(sal, (ph, pw)) == arg


def test_saliency_box_is_tight_box_of_thresholded_map():
    sal = np.zeros((H, W))
    sal[3, 5] = 1.0
    sal[9, 2] = 0.8
    sal[12, 12] = 0.5  # below tau = 0.6 after min-max
    assert saliency_box(sal, 0.6) == (3, 10, 2, 6)
    assert saliency_box(np.ones((H, W)), 0.6) == (0, 0, 0, 0)  # flat map: no box
    with pytest.raises(ValueError, match="tau"):
        saliency_box(sal, 1.0)


@pytest.mark.parametrize("strategy", ["full", "downsample", "saliency-patch", "saliency-box"])
def test_nbytes_is_sum_of_stored_arrays(strategy):
    image, mask = _example(2)
    ex = compress(image, mask, strategy, task=1, cls=2, saliency=_saliency(2), r=4.0, tau=0.6)
    assert exemplar_nbytes(ex) == sum(a.nbytes for a in ex.values())
    for a in ex.values():
        assert a.dtype in (np.uint8, np.uint16)
    full = 4 * H * W
    if strategy == "full":
        assert exemplar_nbytes(ex) == full + 4
    if strategy in ("downsample", "saliency-patch"):
        assert exemplar_nbytes(ex) == full // 4 + (4 if strategy == "downsample" else 8)


def test_saliency_box_bytes_formula():
    image, mask = _example(3)
    sal = np.zeros((H, W))
    sal[2:6, 4:12] = 1.0  # box 4 x 8
    ex = compress(image, mask, "saliency-box", task=0, cls=1, saliency=sal, r=4.0, tau=0.6)
    hl, wl = low_size(H, W, 4.0)
    assert (hl, wl) == (8, 8)
    # CIM's cost a + (1 - a)/r: the low pixels under the box (rows 1-2, cols 2-5 of the
    # 8 x 8 copy) are not stored; meta = task, cls, box, low size (8 uint16)
    assert exemplar_nbytes(ex) == 4 * 4 * 8 + 4 * (hl * wl - 2 * 4) + 16
    a = 32 / (H * W)
    assert exemplar_nbytes(ex) - 16 == 4 * H * W * (a + (1 - a) / 4)


def test_saliency_box_whole_image_equals_full():
    image, mask = _example(4)
    sal = np.zeros((H, W))
    sal[0, 0] = sal[-1, -1] = 1.0  # the box spans the whole image
    box = compress(image, mask, "saliency-box", task=0, cls=1, saliency=sal, r=4.0)
    full = compress(image, mask, "full", task=0, cls=1)
    bi, bm = reconstruct(box, "saliency-box", (H, W))
    fi, fm = reconstruct(full, "full", (H, W))
    np.testing.assert_array_equal(bi, fi)
    np.testing.assert_array_equal(bm, fm)
    np.testing.assert_array_equal(bi, image)
    # only the box coordinates are extra
    assert exemplar_nbytes(box) == exemplar_nbytes(full) + 8


def test_saliency_box_r1_equals_full():
    image, mask = _example(5)
    box = compress(image, mask, "saliency-box", task=0, cls=1, saliency=_saliency(5), r=1.0)
    bi, bm = reconstruct(box, "saliency-box", (H, W))
    np.testing.assert_array_equal(bi, image)
    np.testing.assert_array_equal(bm, mask)
    assert exemplar_nbytes(box) == 4 * H * W + 12


def test_saliency_box_keeps_box_exact_and_masks_uninterpolated():
    rng = np.random.default_rng(6)
    for seed in range(6):
        image, mask = _example(seed, classes=3)
        mask[mask == 2] = 4  # ids {0, 1, 4}: an interpolation would create 2 or 3
        sal = 0.5 * rng.random((H, W))  # noise below tau after min-max ...
        y, x, bh, bw = (int(v) for v in rng.integers(0, 8, 4))
        sal[y:y + bh + 1, x:x + bw + 1] += 1.0 + rng.random((bh + 1, bw + 1))  # ... one blob
        ex = compress(image, mask, "saliency-box", task=0, cls=1, saliency=sal, r=4.0, tau=0.6)
        y0, y1, x0, x1 = saliency_box(sal, 0.6)
        assert (y1 - y0) * (x1 - x0) < 0.75 * H * W
        assert [y0, y1, x0, x1] == ex["meta"][2:6].tolist()
        img, msk = reconstruct(ex, "saliency-box", (H, W))
        np.testing.assert_array_equal(img[:, y0:y1, x0:x1], image[:, y0:y1, x0:x1])
        np.testing.assert_array_equal(msk[y0:y1, x0:x1], mask[y0:y1, x0:x1])
        assert set(np.unique(msk)) <= {0, 1, 4}
        # outside the box: the nearest-neighbour down/up-sampled original
        ref_img = nearest_resize(nearest_resize(image, (8, 8)), (H, W))
        ref_msk = nearest_resize(nearest_resize(mask, (8, 8)), (H, W))
        outside = np.ones((H, W), bool)
        outside[y0:y1, x0:x1] = False
        np.testing.assert_array_equal(img[:, outside], ref_img[:, outside])
        np.testing.assert_array_equal(msk[outside], ref_msk[outside])


def test_saliency_patch_replay_is_zero_padded_with_ignore():
    image, mask = _example(7)
    sal = np.zeros((H, W))
    sal[10:14, 1:5] = 1.0
    ex = compress(image, mask, "saliency-patch", task=0, cls=1, saliency=sal, r=4.0)
    img, msk = reconstruct(ex, "saliency-patch", (H, W))
    u, v = saliency_patch(sal, (8, 8))
    assert (u, v) == tuple(int(x) for x in ex["meta"][2:4])
    np.testing.assert_array_equal(img[:, u:u + 8, v:v + 8], image[:, u:u + 8, v:v + 8])
    np.testing.assert_array_equal(msk[u:u + 8, v:v + 8], mask[u:u + 8, v:v + 8])
    inside = np.zeros((H, W), bool)
    inside[u:u + 8, v:v + 8] = True
    assert (img[:, ~inside] == 0).all() and (msk[~inside] == 255).all()


@pytest.mark.parametrize("strategy", ["full", "downsample", "saliency-patch", "saliency-box"])
def test_memory_budget_never_exceeded(strategy, tmp_path):
    budget = 8 * 4 * H * W + 100
    mem = ReplayMemory(strategy, budget, (H, W), {"r": 4.0})
    rng = np.random.default_rng(8)
    seed = 0
    for classes in ([1, 2], [1, 2, 3], [1, 2, 3, 4]):
        mem.set_classes(classes)
        assert mem.nbytes <= budget
        for c in classes[-1:] if len(classes) > 2 else classes:
            while True:
                seed += 1
                image, mask = _example(seed)
                sal = rng.random((H, W)) ** 3
                ex = compress(image, mask, strategy, task=len(classes), cls=c, saliency=sal)
                if not mem.add(c, ex):
                    break
                assert mem.nbytes <= budget
            assert mem.class_nbytes(c) <= budget // len(classes)
        # byte accounting equals the sum of the stored arrays' nbytes
        stored = [a for _, ex in mem.exemplars() for a in ex.values()]
        assert mem.nbytes == sum(a.nbytes for a in stored)
        assert mem.nbytes <= budget
    assert len(mem) >= 4
    # compressed strategies fit more exemplars than full ones
    mem.save(tmp_path)
    back = ReplayMemory.load(tmp_path)
    assert back.nbytes == mem.nbytes and len(back) == len(mem)
    a_img, a_msk = mem.reconstructed()
    b_img, b_msk = back.reconstructed()
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_msk, b_msk)
    # the file holds plain arrays (no pickle needed)
    with np.load(tmp_path / "memory.npz", allow_pickle=False) as data:
        assert sum(data[k].nbytes for k in data.files) == mem.nbytes


def test_shrinking_keeps_prefix():
    mem = ReplayMemory("full", 4 * (4 * H * W + 4), (H, W))
    mem.set_classes([1])
    exs = []
    for i in range(5):
        image, mask = _example(20 + i)
        ex = compress(image, mask, "full", task=0, cls=1)
        exs.append(ex)
        assert mem.add(1, ex) == (i < 4)
    mem.set_classes([1, 2])
    assert len(mem.items[1]) == 2
    for kept, orig in zip(mem.items[1], exs[:2]):
        np.testing.assert_array_equal(kept["image"], orig["image"])
    with pytest.raises(ValueError, match="classes"):
        mem.set_classes([2])
    with pytest.raises(ValueError, match="budget_bytes"):
        ReplayMemory("full", -1, (H, W))
    with pytest.raises(ValueError, match="strategy"):
        ReplayMemory("jpeg", 10, (H, W))


def test_none_strategy_stores_nothing():
    mem = ReplayMemory("none", 10**6, (H, W))
    mem.set_classes([1, 2])
    image, mask = _example(30)
    assert not mem.add(1, compress(image, mask, "full", task=0, cls=1))
    assert mem.nbytes == 0 and len(mem) == 0
    imgs, msks = mem.reconstructed()
    assert imgs.shape == (0, 3, H, W) and msks.shape == (0, H, W)


def test_saliency_box_never_costs_more_than_full_plus_coordinates():
    rng = np.random.default_rng(9)
    image, mask = _example(9)
    for _ in range(20):
        sal = rng.random((H, W))
        box = compress(image, mask, "saliency-box", task=0, cls=1, saliency=sal, r=4.0, tau=0.3)
        assert exemplar_nbytes(box) <= 4 * H * W + 12
    sal = np.zeros((H, W))
    sal[1:15, 1:15] = 1.0  # a = 0.77: CIM's cost a + (1 - a)/r is still below one exemplar
    box = compress(image, mask, "saliency-box", task=0, cls=1, saliency=sal, r=4.0)
    keep = outside_low_pixels((H, W), (8, 8), (1, 15, 1, 15))
    assert int(keep.sum()) == 64 - 6 * 6  # low rows/cols 1-6 lie wholly inside the box
    assert exemplar_nbytes(box) == 4 * 14 * 14 + 4 * 28 + 16 < 4 * H * W + 12
    img, msk = reconstruct(box, "saliency-box", (H, W))
    np.testing.assert_array_equal(img[:, 1:15, 1:15], image[:, 1:15, 1:15])
    np.testing.assert_array_equal(msk[1:15, 1:15], mask[1:15, 1:15])
