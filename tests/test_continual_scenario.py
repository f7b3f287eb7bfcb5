"""Class-incremental scenario, background shift, replayed labels, learner pieces, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from segxai.continual.compress import reconstruct
from segxai.continual.learner import (
    build_memory,
    masked_logits,
    mib_init,
    saliency_maps,
    seen_loss,
    train_task,
    unbiased_distillation,
)
from segxai.continual.memory import ReplayMemory
from segxai.continual.metrics import confusion_matrix, iou_per_class, task_metrics
from segxai.continual.scenario import (
    eval_masks,
    parse_tasks,
    seen_classes,
    task_indices,
    task_masks,
)

TASKS = [[1, 2], [3], [4]]


def _masks(n: int = 6, h: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randint(0, 5, (n, h, h), generator=g)
    m[0, 0, 0] = 255
    m[1] = 0
    m[1, 2:4, 2:4] = 4  # image 1 only has class 4
    return m


def test_parse_tasks():
    assert parse_tasks("2-1-1", 5) == TASKS
    assert parse_tasks("2+2", 5) == [[1, 2], [3, 4]]
    assert parse_tasks("4,1/2/3", 5) == [[4, 1], [2], [3]]
    assert parse_tasks([[2], [1, 3]], 5) == [[2], [1, 3]]
    for bad in ("3-3", "0,1/2", "1,2/2", "a-b", "1/5"):
        with pytest.raises(ValueError, match="tasks"):
            parse_tasks(bad, 5)
    assert seen_classes(TASKS, 1) == [0, 1, 2, 3]


def test_one_task_grammar_shared_with_data():
    from segxai.continual.scenario import validate_tasks
    from segxai.data import incremental

    assert parse_tasks is incremental.parse_tasks and task_masks is incremental.task_masks
    assert parse_tasks([2, 1, 1], 5) == TASKS  # sizes as a list, the data form
    assert parse_tasks("2-1", 5) == [[1, 2], [3]]  # a subset: class 4 stays background
    with pytest.raises(ValueError, match="tasks"):
        parse_tasks("2-1", 5, complete=True)
    assert validate_tasks([[2], [1, 3]], 5) == [[2], [1, 3]]
    with pytest.raises(ValueError, match="tasks"):
        validate_tasks([[1], [0]], 5)


def test_background_shift_matches_loop():
    masks = _masks()
    for t in range(3):
        shifted = task_masks(masks, TASKS, t)
        for v_in, v_out in zip(masks.flatten().tolist(), shifted.flatten().tolist()):
            if v_in == 255:
                assert v_out == 255
            elif v_in in TASKS[t]:
                assert v_out == v_in
            else:  # background, old and future classes are background
                assert v_out == 0
        ev = eval_masks(masks, TASKS, t)
        seen = seen_classes(TASKS, t)
        for v_in, v_out in zip(masks.flatten().tolist(), ev.flatten().tolist()):
            assert v_out == (v_in if v_in in seen or v_in == 255 else 0)
        idx = task_indices(masks, TASKS, t).tolist()
        ref = [i for i in range(len(masks)) if any(c in masks[i] for c in TASKS[t])]
        assert idx == ref
    assert 1 not in task_indices(masks, TASKS, 0).tolist()
    assert 1 in task_indices(masks, TASKS, 2).tolist()


class _ConstModel(nn.Module):
    """Predicts class ``cls`` everywhere with logit ``scale`` (a 1x1 conv on a constant)."""

    def __init__(self, cls: int, scale: float = 10.0, k: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, k, 1)
        self.cls, self.scale, self.k = cls, scale, k
        self.segxai_default_layer = "conv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.head(torch.relu(self.conv(x)))
        bias = torch.zeros(1, self.k, 1, 1)
        bias[0, self.cls] = self.scale
        return base * 1e-3 + bias


def test_replayed_masks_keep_their_classes():
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(5, 16, 16, dtype=torch.long)
    for i in range(5):
        masks[i, 2 + i:8 + i, 3:9] = 3
        masks[i, 10:14, 10:14] = 1  # an old class: background in task 1's labels
    images = torch.rand(5, 3, 16, 16, generator=g)
    labels = task_masks(masks, TASKS, 1)
    assert (labels[masks == 1] == 0).all() and (labels[masks == 3] == 3).all()
    mem = ReplayMemory("full", 10**6, (16, 16))
    build_memory(mem, _ConstModel(cls=0), images, labels, task=1, new_classes=[3],
                 seen=[0, 1, 2, 3], seed=0, pseudo_threshold=None)
    assert len(mem) == 5
    # the next task's data would map class 3 to background; the memory keeps it
    mem.set_classes([1, 2, 3, 4])
    _, replay = mem.reconstructed()
    stored_rows = [int(ex["meta"][0]) for _, ex in mem.exemplars()]
    assert stored_rows == [1] * len(replay)
    assert (torch.from_numpy(replay.astype(np.int64)) == 3).any()
    next_task = task_masks(masks, TASKS, 2)
    assert not (next_task == 3).any()
    # every replayed mask equals one of task 1's label maps exactly
    for r in replay:
        assert any(np.array_equal(r, lab.numpy()) for lab in labels)


def test_pseudo_labels_mark_old_classes_only():
    masks = torch.zeros(2, 16, 16, dtype=torch.long)
    masks[:, 4:8, 4:8] = 3
    images = torch.rand(2, 3, 16, 16)
    mem = ReplayMemory("full", 10**6, (16, 16))
    # the model predicts class 1 (old) everywhere with high confidence
    build_memory(mem, _ConstModel(cls=1), images, masks, task=1, new_classes=[3],
                 seen=[0, 1, 2, 3], seed=0, pseudo_threshold=0.7)
    for _, ex in mem.exemplars():
        m = ex["mask"]
        assert (m[4:8, 4:8] == 3).all()
        outside = np.ones((16, 16), bool)
        outside[4:8, 4:8] = False
        assert (m[outside] == 1).all()
    # a confident prediction of a *new* or unseen class never relabels background
    mem2 = ReplayMemory("full", 10**6, (16, 16))
    build_memory(mem2, _ConstModel(cls=4), images, masks, task=1, new_classes=[3],
                 seen=[0, 1, 2, 3], seed=0, pseudo_threshold=0.7)
    for _, ex in mem2.exemplars():
        assert set(np.unique(ex["mask"])) == {0, 3}


def test_saliency_strategies_store_and_reconstruct():
    torch.manual_seed(0)
    masks = torch.zeros(4, 16, 16, dtype=torch.long)
    masks[:, 2:6, 9:14] = 3
    images = torch.rand(4, 3, 16, 16)
    model = _ConstModel(cls=0, scale=0.0)
    sal = saliency_maps(model, images, masks, explainer="seg-grad-cam")
    assert sal.shape == (4, 16, 16) and sal.min() >= 0 and sal.max() <= 1 + 1e-9
    assert np.allclose(saliency_maps(model, images, torch.zeros_like(masks),
                                     explainer="seg-grad-cam"), 0)
    for strategy in ("saliency-box", "saliency-patch"):
        mem = ReplayMemory(strategy, 10**6, (16, 16), {"r": 4.0})
        build_memory(mem, model, images, masks, task=1, new_classes=[3], seen=[0, 1, 2, 3],
                     seed=0, pseudo_threshold=None)
        assert len(mem) == 4
        for _, ex in mem.exemplars():
            img, msk = reconstruct(ex, strategy, (16, 16))
            assert set(np.unique(msk)) <= {0, 3, 255}


def test_masked_logits_and_seen_loss():
    logits = torch.randn(2, 5, 4, 4)
    m = masked_logits(logits, [0, 1, 2])
    assert (m[:, 3:] < -1e3).all() and torch.equal(m[:, :3], logits[:, :3])
    target = torch.randint(0, 3, (2, 4, 4))
    target[0, 0, 0] = 255
    ce = seen_loss(logits, target, [0, 1, 2], dice=False)
    # reference: softmax over the seen classes only, ignore 255
    logp = logits[:, :3].log_softmax(1)
    vals = [-logp[n, target[n, i, j], i, j] for n in range(2) for i in range(4) for j in range(4)
            if target[n, i, j] != 255]
    assert torch.allclose(ce, torch.stack(vals).mean(), atol=1e-6)
    assert seen_loss(logits, target, [0, 1, 2]) > ce


def test_unbiased_distillation_matches_hand_computation():
    torch.manual_seed(0)
    new = torch.randn(1, 5, 2, 2)
    old = torch.randn(1, 5, 2, 2)
    old_seen, new_classes = [0, 1, 2], [3]
    loss = unbiased_distillation(new, old, old_seen, new_classes)
    total = 0.0
    for i in range(2):
        for j in range(2):
            q = torch.softmax(old[0, old_seen, i, j], 0)
            p = torch.softmax(new[0, [0, 1, 2, 3], i, j], 0)  # 4 not seen yet
            p_bg = p[0] + p[3]
            total += -(q[0] * torch.log(p_bg) + q[1] * torch.log(p[1]) + q[2] * torch.log(p[2]))
    # MiB divides the sum over the old classes by their number (3, background included)
    assert torch.allclose(loss, total / 4 / len(old_seen), atol=1e-6)


def test_mib_init():
    model = _ConstModel(cls=0)
    with torch.no_grad():
        model.head.bias.copy_(torch.arange(5.0))
    mib_init(model, [3, 4], 5)
    assert torch.equal(model.head.weight[3], model.head.weight[0])
    assert torch.equal(model.head.weight[4], model.head.weight[0])
    expected = 0.0 - math.log(3)
    assert math.isclose(float(model.head.bias[3].detach()), expected, rel_tol=1e-6)
    assert math.isclose(float(model.head.bias[0].detach()), expected, rel_tol=1e-6)


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Conv2d(3, 5, 1)
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x[:, 0, 0, 0].detach().clone())
        return self.net(x)


def test_train_task_mixes_replay_at_ratio_and_is_deterministic():
    cur = torch.zeros(20, 3, 4, 4)
    mem = torch.full((3, 3, 4, 4), 7.0)
    y = torch.zeros(20, 4, 4, dtype=torch.long)
    ym = torch.full((3, 4, 4), 2, dtype=torch.long)
    rec = _Recorder()
    train_task(rec, cur, y, [0, 1, 2], memory_images=mem, memory_masks=ym, epochs=2,
               batch_size=8, ratio=0.25, seed=3)
    assert len(rec.batches) == 2 * (20 // 6)  # full batches only
    for b in rec.batches:
        assert int((b == 7.0).sum()) == 2  # round(0.25 * 8) memory samples per step
    rec2 = _Recorder()
    train_task(rec2, cur, y, [0, 1, 2], epochs=1, batch_size=8, ratio=0.25, seed=3)
    assert all(int((b == 7.0).sum()) == 0 and len(b) == 8 for b in rec2.batches)
    # same seed, same weights
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1))
        train_task(net, torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(1)),
                   torch.randint(0, 3, (10, 4, 4), generator=torch.Generator().manual_seed(2)),
                   [0, 1, 2], memory_images=mem, memory_masks=ym, epochs=2, batch_size=4,
                   seed=5)
        weights.append(torch.cat([p.flatten() for p in net.parameters()]))
    assert torch.equal(weights[0], weights[1])
    with pytest.raises(ValueError, match="ratio"):
        train_task(rec, cur, y, [0, 1], ratio=1.0)


def test_confusion_iou_and_task_metrics():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, 200)
    target = rng.integers(0, 4, 200)
    target[:5] = 255
    conf = confusion_matrix(pred, target, 5, ignore_index=255)
    for c in range(4):
        tp = sum(1 for p, t in zip(pred, target) if p == c and t == c)
        fp = sum(1 for p, t in zip(pred, target) if p == c and t != c and t != 255)
        fn = sum(1 for p, t in zip(pred, target) if p != c and t == c)
        assert math.isclose(iou_per_class(conf)[c], tp / (tp + fp + fn))
    assert math.isnan(iou_per_class(conf)[4])
    nan = math.nan
    ious = [np.array([0.9, 0.8, 0.6, nan, nan]), np.array([0.9, 0.5, 0.7, 0.4, nan]),
            np.array([0.8, 0.3, 0.2, 0.1, 0.6])]
    m0 = task_metrics(ious[:1], TASKS)
    assert math.isnan(m0["miou_old"]) and math.isnan(m0["forgetting"])
    assert math.isclose(m0["miou_new"], 0.7) and math.isclose(m0["miou_all"], 2.3 / 3)
    m2 = task_metrics(ious, TASKS)
    assert math.isclose(m2["miou_old"], (0.3 + 0.2 + 0.1) / 3)
    assert math.isclose(m2["miou_new"], 0.6)
    assert math.isclose(m2["miou_all"], 2.0 / 5)
    # forgetting: class 1 max 0.8 -> 0.3, class 2 max 0.7 -> 0.2, class 3 max 0.4 -> 0.1
    assert math.isclose(m2["forgetting"], (0.5 + 0.5 + 0.3) / 3)
