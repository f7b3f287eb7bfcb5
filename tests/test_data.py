"""Tests of segxai.data: synthetic sets, class-incremental splits, real-image and folder loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segxai.data import (
    BRAIN_CLASSES,
    CUE_COLOURS,
    NUCLEI_CLASSES,
    SHAPES_CLASSES,
    ContextBiasDataset,
    SegDataset,
    find_package_file,
    incremental_tasks,
    load_brain,
    load_dataset,
    load_folder,
    load_nuclei,
    make_class_order,
    make_context_bias,
    make_shapes,
    parse_tasks,
    shapes_incremental,
)


# ---------------------------------------------------------------------------- shapes
def test_shapes_deterministic_and_seed_dependent() -> None:
    a = make_shapes(12, size=48, seed=3)
    b = make_shapes(12, size=48, seed=3)
    c = make_shapes(12, size=48, seed=4)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, c.images)


def test_shapes_types_ranges_and_classes() -> None:
    ds = make_shapes(40, size=64, seed=0)
    assert ds.images.shape == (40, 3, 64, 64) and ds.images.dtype == torch.float32
    assert ds.masks.shape == (40, 64, 64) and ds.masks.dtype == torch.int64
    assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
    assert ds.class_names == SHAPES_CLASSES
    assert set(ds.masks.unique().tolist()) == set(range(len(SHAPES_CLASSES)))
    # every image has at least one object and at most four connected objects
    fg = (ds.masks > 0).flatten(1).sum(1)
    assert bool((fg > 20).all())


def test_shapes_masks_match_images() -> None:
    """Object pixels differ from the background colour: the mean colour inside each mask
    region differs clearly from the mean of the background of the same image."""
    ds = make_shapes(30, size=64, seed=1, noise=0.0)
    for img, mask in zip(ds.images, ds.masks):
        bg = img[:, mask == 0].mean(dim=1)
        for c in mask.unique().tolist():
            if c == 0:
                continue
            obj = img[:, mask == c]
            # objects are filled with a colour at least 0.3 away per channel (before clipping)
            assert float((obj.mean(dim=1) - bg).abs().max()) > 0.15


def test_shapes_geometry_matches_class() -> None:
    """A disc fills ~pi/4 of its bounding box, a ring has a hole, a square fills more than a
    triangle: check with single-object images (no occlusion)."""
    ds = make_shapes(80, size=64, seed=2, min_objects=1, max_objects=1, noise=0.0)
    fill: dict[int, list[float]] = {1: [], 2: [], 3: [], 4: []}
    for mask in ds.masks:
        c = int(mask.max())
        ys, xs = torch.nonzero(mask == c, as_tuple=True)
        box = (int(ys.max() - ys.min()) + 1) * (int(xs.max() - xs.min()) + 1)
        fill[c].append(len(ys) / box)
    means = {c: float(np.mean(v)) for c, v in fill.items() if v}
    assert len(means) == 4
    assert 0.7 < means[1] < 0.85  # disc: pi/4 = 0.785
    assert means[4] < means[1] - 0.15  # ring has a hole
    assert means[3] < 0.6  # triangle fills at most half its box (+ pixelisation)


def test_shapes_options_and_errors() -> None:
    ds = make_shapes(20, size=32, seed=0, classes=["disc", "ring"], min_objects=2,
                     max_objects=2)
    assert set(ds.masks.unique().tolist()) <= {0, 1, 4}
    with pytest.raises(ValueError, match="max_objects"):
        make_shapes(2, max_objects=5)
    with pytest.raises(ValueError, match="classes"):
        make_shapes(2, classes=["hexagon"])
    with pytest.raises(ValueError, match="n:"):
        make_shapes(0)
    with pytest.raises(ValueError, match="size"):
        make_shapes(2, size=8)


def test_segdataset_protocol_subset_split() -> None:
    ds = make_shapes(10, size=32, seed=0)
    img, mask = ds[3]
    assert img.shape == (3, 32, 32) and mask.shape == (32, 32)
    sub = ds.subset([1, 3, 5])
    assert len(sub) == 3 and torch.equal(sub.images[1], ds.images[3])
    sub2 = ds.subset(torch.arange(10) % 2 == 0)
    assert len(sub2) == 5 and torch.equal(sub2.masks[2], ds.masks[4])
    a, b = ds.split(0.7, seed=1)
    assert len(a) == 7 and len(b) == 3
    assert ds.class_pixel_counts().sum() == 10 * 32 * 32
    with pytest.raises(ValueError, match="masks"):
        SegDataset(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 9, dtype=torch.long), ["a"])
    with pytest.raises(ValueError, match="indices"):
        ds.subset([10])


# ---------------------------------------------------------------------------- context bias
def _contains(ds: SegDataset, c: int) -> torch.Tensor:
    return (ds.masks == c).flatten(1).any(dim=1)


@pytest.mark.parametrize("prob", [0.3, 0.8])
def test_context_bias_probability(prob: float) -> None:
    ds = make_context_bias(600, size=32, seed=0, bias_class="triangle", bias_prob=prob)
    assert isinstance(ds, ContextBiasDataset)
    has = _contains(ds, ds.bias_class)
    rate = float(ds.is_biased[has].float().mean())
    n = int(has.sum())
    assert n > 150
    assert abs(rate - prob) < 4 * np.sqrt(prob * (1 - prob) / n)
    assert not bool(ds.is_biased[~has].any())  # exclusive bias by default


def test_context_bias_unbiased_split_has_no_cue() -> None:
    ds = make_context_bias(200, size=32, seed=5, unbiased=True, bias_prob=1.0)
    assert not bool(ds.is_biased.any()) and not bool(ds.cue_masks.any())
    assert _contains(ds, ds.bias_class).sum() > 30


def test_context_bias_masks_are_consistent() -> None:
    ds = make_context_bias(120, size=64, seed=2, bias_class="disc", bias_prob=1.0, noise=0.0)
    assert ds.bias_class == SHAPES_CLASSES.index("disc")
    assert torch.equal(ds.object_masks, ds.masks > 0)
    assert torch.equal(ds.context_masks, ~ds.object_masks)
    assert not bool((ds.cue_masks & ds.object_masks).any())
    assert torch.equal(ds.is_biased, ds.cue_masks.flatten(1).any(1))
    assert torch.equal(ds.is_biased, _contains(ds, ds.bias_class))  # prob 1, exclusive
    # the cue pixels show the two checkerboard colours
    c0, c1 = torch.tensor(CUE_COLOURS[0]), torch.tensor(CUE_COLOURS[1])
    for i in torch.nonzero(ds.is_biased).flatten()[:10].tolist():
        pix = ds.images[i][:, ds.cue_masks[i]].T
        d = torch.minimum((pix - c0).abs().max(1).values, (pix - c1).abs().max(1).values)
        assert float(d.max()) < 1e-6
        # the cue sits beside a bias-class object: their bounding boxes are in cells sharing
        # an edge, i.e. the cue's centre and some bias-object pixel are within one cell
        cy, cx = torch.nonzero(ds.cue_masks[i], as_tuple=True)
        oy, ox = torch.nonzero(ds.masks[i] == ds.bias_class, as_tuple=True)
        cell_c = {(int(cy.float().mean()) // 32, int(cx.float().mean()) // 32)}
        cells_o = {(int(y) // 32, int(x) // 32) for y, x in zip(oy, ox)}
        assert any(abs(a - c) + abs(b - d) == 1 for a, b in cells_o for c, d in cell_c)
    sub = ds.subset([0, 2])
    assert isinstance(sub, ContextBiasDataset) and sub.cue_masks.shape == (2, 64, 64)
    assert torch.equal(sub.is_biased, ds.is_biased[[0, 2]])


def test_context_bias_elsewhere_and_errors() -> None:
    ds = make_context_bias(300, size=32, seed=1, bias_prob=0.0, cue_elsewhere_prob=0.5)
    has = _contains(ds, ds.bias_class)
    assert not bool(ds.is_biased[has].any())
    assert 0.3 < float(ds.is_biased[~has].float().mean()) < 0.7
    with pytest.raises(ValueError, match="bias_prob"):
        make_context_bias(4, bias_prob=1.5)
    with pytest.raises(ValueError, match="max_objects"):
        make_context_bias(4, max_objects=4)


# ---------------------------------------------------------------------------- incremental
def test_parse_tasks_and_class_order() -> None:
    assert parse_tasks("2-2", [1, 2, 3, 4]) == [[1, 2], [3, 4]]
    assert parse_tasks([1, 3], [4, 3, 2, 1]) == [[4], [3, 2, 1]]
    assert parse_tasks([[2, 4], [1, 3]], [1, 2, 3, 4]) == [[2, 4], [1, 3]]
    with pytest.raises(ValueError, match="tasks"):
        parse_tasks("2-1", [1, 2, 3, 4], complete=True)
    with pytest.raises(ValueError, match="tasks"):
        parse_tasks([[1, 2], [2, 3, 4]], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="tasks"):
        parse_tasks([[1, 2], [3]], [1, 2, 3, 4], complete=True)
    with pytest.raises(ValueError, match="tasks"):
        incremental_tasks(make_shapes(10, size=32), "2-1")
    # one grammar: the forms of the continual scenario are accepted here too
    assert parse_tasks("2+2", [1, 2, 3, 4]) == [[1, 2], [3, 4]]
    assert parse_tasks("4,1/2/3", [1, 2, 3, 4], complete=True) == [[4, 1], [2], [3]]
    assert parse_tasks("2-1", [1, 2, 3, 4]) == [[1, 2], [3]]
    assert parse_tasks("6-1-1", 9) == [[1, 2, 3, 4, 5, 6], [7], [8]]
    assert parse_tasks("10-5", 16) == [list(range(1, 11)), list(range(11, 16))]
    order = make_class_order(5, seed=3)
    assert sorted(order) == [1, 2, 3, 4] and order == make_class_order(5, seed=3)
    assert make_class_order(5) == [1, 2, 3, 4]


def test_incremental_overlapped_background_shift() -> None:
    train = make_shapes(150, size=32, seed=0)
    test = make_shapes(40, size=32, seed=1)
    tasks = incremental_tasks(train, "2-1-1", test=test, class_order=[3, 1, 4, 2])
    assert [t.classes for t in tasks] == [[3, 1], [4], [2]]
    assert tasks[1].seen_classes == [0, 1, 3, 4] and tasks[1].old_classes == [1, 3]
    for t in tasks:
        # reference: loop over images
        expect = [i for i in range(len(train))
                  if any(bool((train.masks[i] == c).any()) for c in t.classes)]
        assert len(t.train) == len(expect)
        assert torch.equal(t.train.images, train.images[expect])
        ref = train.masks[expect].clone()
        ref[~torch.isin(ref, torch.tensor([0, *t.classes]))] = 0
        assert torch.equal(t.train.masks, ref)
        ref_test = test.masks.clone()
        ref_test[~torch.isin(ref_test, torch.tensor(t.seen_classes))] = 0
        assert torch.equal(t.test.masks, ref_test)


def test_incremental_disjoint_partitioned_remap() -> None:
    train = make_shapes(150, size=32, seed=0)
    dis = incremental_tasks(train, "2-2", mode="disjoint")
    base = set(dis[0].classes) | {0}
    first = [i for i in range(len(train)) if set(train.masks[i].unique().tolist()) <= base]
    assert len(dis[0].train) == len(first)
    part = incremental_tasks(train, "2-2", mode="partitioned", seed=1)
    ov = incremental_tasks(train, "2-2")
    assert len(part[0].train) + len(part[1].train) <= len(train)
    assert len(part[0].train) + len(part[1].train) == int(
        (torch.stack([_contains(train, c) for c in (1, 2, 3, 4)]).any(0)).sum())
    assert len(ov[0].train) >= len(part[0].train)
    rem = incremental_tasks(train, "2-2", class_order=[4, 3, 2, 1], remap=True)
    assert rem[0].classes == [1, 2] and rem[0].train.class_names[1:3] == ["ring", "triangle"]
    orig_ring = [i for i in range(len(train)) if bool((train.masks[i] == 4).any())
                 or bool((train.masks[i] == 3).any())]
    assert torch.equal(rem[0].train.masks == 1, train.masks[orig_ring] == 4)


def test_shapes_incremental_convenience() -> None:
    tasks = shapes_incremental(60, 20, "1-1-1-1", size=32, seed=0)
    assert len(tasks) == 4 and all(t.test is not None and len(t.test) == 20 for t in tasks)
    assert tasks[-1].seen_classes == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------- real images
def _skip_without(relative: str, module: str) -> None:
    import importlib.util

    if find_package_file(relative) is None:
        pytest.skip(f"{relative} is not installed (pip install --no-deps {relative.split('/')[0]})")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install {module})")


def test_nuclei_loader() -> None:
    _skip_without("stardist/data/images/img2d.tif", "tifffile")
    ds = load_nuclei(tile=128)
    assert len(ds) == 16 and ds.images.shape == (16, 3, 128, 128)
    assert ds.images.dtype == torch.float32 and ds.masks.dtype == torch.int64
    assert float(ds.images.min()) >= 0 and float(ds.images.max()) <= 1
    assert set(ds.masks.unique().tolist()) == {0, 1} and ds.class_names == NUCLEI_CLASSES
    assert ds.meta["num_instances"] == 125
    fg = float((ds.masks == 1).float().mean())
    assert 0.05 < fg < 0.5
    # nuclei are brighter than the background
    assert float(ds.images[:, 0][ds.masks == 1].mean()) > float(ds.images[:, 0][ds.masks == 0].mean()) + 0.1
    assert len(load_nuclei(tile=256, stride=128, channels=1)) == 9


def test_brain_loader() -> None:
    _skip_without("nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                  "nibabel")
    ds = load_brain(size=64)
    assert 130 <= len(ds) <= 160 and ds.images.shape[1:] == (3, 64, 64)
    assert ds.images.dtype == torch.float32 and ds.masks.dtype == torch.int64
    assert set(ds.masks.unique().tolist()) == {0, 1, 2} and ds.class_names == BRAIN_CLASSES
    # on T1, white matter is brighter than grey matter, which is brighter than background
    x = ds.images[:, 0]
    means = [float(x[ds.masks == c].mean()) for c in range(3)]
    assert means[0] < means[1] < means[2]


# ---------------------------------------------------------------------------- folder
def _write_pair(root, name, img, mask) -> None:
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(root / "images" / f"{name}.png")
    Image.fromarray(mask).save(root / "masks" / f"{name}.png")


def test_folder_loader_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(3, 16, 20, 3), dtype=np.uint8)
    masks = rng.integers(0, 3, size=(3, 16, 20), dtype=np.uint8)
    for i in range(3):
        _write_pair(tmp_path, f"s{i}", imgs[i], masks[i])
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    ds = load_folder(tmp_path)
    assert ds.class_names == ["background", "cat", "dog"] and len(ds) == 3
    assert ds.images.shape == (3, 3, 16, 20)
    np.testing.assert_allclose(ds.images[1].permute(1, 2, 0).numpy(), imgs[1] / 255.0, atol=1e-6)
    assert torch.equal(ds.masks, torch.from_numpy(masks.astype(np.int64)))
    assert ds.meta["names"] == ["s0", "s1", "s2"]
    resized = load_folder(tmp_path, size=8)
    assert resized.images.shape == (3, 3, 8, 8)


def test_folder_loader_errors(tmp_path) -> None:
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    mask = np.zeros((8, 8), dtype=np.uint8)
    _write_pair(tmp_path, "a", img, mask)
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "images" / "lonely.png")
    with pytest.raises(ValueError, match="lonely"):
        load_folder(tmp_path)
    (tmp_path / "images" / "lonely.png").unlink()
    Image.fromarray(np.zeros((9, 8), dtype=np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match="a.png"):
        load_folder(tmp_path)
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(ValueError, match="unknown class id"):
        load_folder(tmp_path, class_names=["background", "thing"])
    with pytest.raises(FileNotFoundError):
        load_folder(tmp_path / "nope")


def test_load_dataset_by_name(tmp_path) -> None:
    tr, va = load_dataset("shapes", n_train=8, n_val=4, size=32)
    assert len(tr) == 8 and len(va) == 4
    tr, va = load_dataset("context-bias", n_train=8, n_val=4, size=32)
    assert not bool(va.is_biased.any())
    with pytest.raises(ValueError, match="dataset"):
        load_dataset("imagenet")
