"""MiB's unbiased losses against hand-computed values, and replay labels that never teach a
class learned later as background."""

from __future__ import annotations

import math

import numpy as np
import torch

from segxai.continual.compress import compress
from segxai.continual.learner import build_memory
from segxai.continual.losses import (
    BG_SET,
    SeenClassLoss,
    bg_sets,
    partial_dice,
    seen_loss,
    unbiased_cross_entropy,
    unbiased_distillation,
)
from segxai.continual.memory import ReplayMemory
from segxai.models.losses import Batch


def test_unbiased_ce_hand_example():
    # one image, two pixels, classes 0..3; old = {0, 1}, new = {2}; class 3 not seen yet
    z = torch.tensor([[1.0, 2.0, 0.5, 9.0], [0.0, -1.0, 3.0, 9.0]]).T.reshape(1, 4, 1, 2)
    target = torch.tensor([[[0, 2]]])
    loss = unbiased_cross_entropy(z, target, [0, 1, 2], bg_sets(1, 4, [1]))
    # pixel 0 (label bg): log((e^1 + e^2) / (e^1 + e^2 + e^0.5)); pixel 1 (label 2):
    # log(e^3 / (e^0 + e^-1 + e^3)); class 3 is masked out of every sum
    p0 = (math.e ** 1 + math.e ** 2) / (math.e ** 1 + math.e ** 2 + math.e ** 0.5)
    p1 = math.e ** 3 / (1 + math.e ** -1 + math.e ** 3)
    assert math.isclose(float(loss), -(math.log(p0) + math.log(p1)) / 2, rel_tol=1e-5)


def test_unbiased_ce_with_background_only_is_plain_ce():
    torch.manual_seed(0)
    z = torch.randn(2, 5, 4, 4)
    t = torch.randint(0, 3, (2, 4, 4))
    t[0, 0, 0] = 255
    a = unbiased_cross_entropy(z, t, [0, 1, 2], bg_sets(2, 5, []))
    assert torch.allclose(a, seen_loss(z, t, [0, 1, 2], dice=False), atol=1e-6)


def test_partial_dice_without_partial_labels_is_the_plain_dice():
    torch.manual_seed(0)
    z = torch.randn(3, 5, 6, 6)
    t = torch.randint(0, 4, (3, 6, 6))
    t[0, 0, 0] = 255
    seen = [0, 1, 2, 3]
    plain = seen_loss(z, t, seen, dice=True) - seen_loss(z, t, seen, dice=False)
    assert torch.allclose(partial_dice(z, t, seen, bg_sets(3, 5, [])), plain, atol=1e-6)
    # a background set of unseen classes only is not ambiguous either
    assert torch.allclose(partial_dice(z, t, seen, bg_sets(3, 5, [4])), plain, atol=1e-6)


def test_partial_dice_hand_example():
    # one image, two pixels, classes 0..2 seen; pixel a: label bg, which may also be class 2
    # (a replayed exemplar that does not know 2); pixel b: label 1
    z = torch.tensor([[0.0, 1.0, 2.0], [0.5, 2.0, -1.0]]).T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[0, 1]]])
    loss = partial_dice(z, target, [0, 1, 2], bg_sets(1, 3, [2]))
    pa = torch.tensor([0.0, 1.0, 2.0]).softmax(0).tolist()
    pb = torch.tensor([0.5, 2.0, -1.0]).softmax(0).tolist()
    # class 0 and class 2 are unknown at pixel a (left out); class 1 is known absent there
    d0 = 1 - 1 / (pb[0] + 0 + 1)
    d1 = 1 - (2 * pb[1] + 1) / (pa[1] + pb[1] + 1 + 1)
    d2 = 1 - 1 / (pb[2] + 0 + 1)
    assert math.isclose(float(loss), (d0 + d1 + d2) / 3, rel_tol=1e-5)


def test_new_class_on_current_background_stays_a_false_positive_with_unbiased_ce():
    # MiB's current images: background may be an old class (1, 2), never the new class 3.
    # The Dice term must still count class 3 predicted there as a false positive (the
    # previous version left every ambiguous background pixel out of the Dice term, so with
    # the unbiased cross-entropy nothing but the cross-entropy limited the new class's spread)
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, requires_grad=True)
    masks = torch.zeros(2, 6, 6, dtype=torch.long)
    masks[:, 1:3, 1:3] = 3
    bg = bg_sets(2, 4, [1, 2])
    partial_dice(logits, masks, [0, 1, 2, 3], bg).backward()
    assert logits.grad is not None
    background = masks == 0
    assert (logits.grad[:, 3][background] > 0).all()  # pushed down where it is not
    logits.grad = None
    batch = Batch(torch.zeros(2, 3, 6, 6), masks, {BG_SET: bg}, 255)
    SeenClassLoss([0, 1, 2, 3])(batch, logits, None).backward()  # type: ignore[arg-type]
    assert (logits.grad[:, 3][background] > 0).all()


def test_unbiased_distillation_hand_example():
    # one pixel; the old model knew {0, 1}; the new task adds 2
    old = torch.tensor([0.0, 1.0, 5.0]).reshape(1, 3, 1, 1)
    new = torch.tensor([0.5, 1.5, -0.5]).reshape(1, 3, 1, 1)
    loss = unbiased_distillation(new, old, [0, 1], [2])
    q0 = 1 / (1 + math.e)
    q1 = math.e / (1 + math.e)
    zsum = math.e ** 0.5 + math.e ** 1.5 + math.e ** -0.5
    p_bg = (math.e ** 0.5 + math.e ** -0.5) / zsum  # new class folded into background
    p1 = math.e ** 1.5 / zsum
    expected = -(q0 * math.log(p_bg) + q1 * math.log(p1)) / 2
    assert math.isclose(float(loss), expected, rel_tol=1e-5)


def _memory_after_task1() -> ReplayMemory:
    """A full-image memory holding one exemplar of class 3 stored in task 1."""
    mem = ReplayMemory("full", 10**6, (8, 8))
    images = torch.rand(1, 3, 8, 8)
    masks = torch.zeros(1, 8, 8, dtype=torch.long)
    masks[0, 2:5, 2:5] = 3
    model = torch.nn.Conv2d(3, 5, 1)
    build_memory(mem, model, images, masks, task=1, new_classes=[3], seen=[0, 1, 2, 3],
                 seed=0, pseudo_threshold=None)
    assert len(mem) == 1 and mem.known == {1: [3]}
    return mem


def test_replayed_exemplar_never_teaches_later_class_as_background(tmp_path):
    mem = _memory_after_task1()
    mem.save(tmp_path)
    mem = ReplayMemory.load(tmp_path)  # the known classes survive a checkpoint
    seen = [0, 1, 2, 3, 4]  # task 2 learns class 4
    img, msk, bg = mem.replay(seen, 5, "unbiased")
    assert bg[0].tolist() == [True, True, True, False, True]  # 3 is known, 1, 2, 4 are not
    logits = torch.randn(1, 5, 8, 8, requires_grad=True)
    masks = torch.from_numpy(msk.astype(np.int64))
    batch = Batch(torch.from_numpy(img).float(), masks, {BG_SET: torch.from_numpy(bg)}, 255)
    SeenClassLoss(seen)(batch, logits, None).backward()  # type: ignore[arg-type]
    assert logits.grad is not None
    background = masks[0] == 0
    # a positive gradient on class 4's logit would push it down: teaching "4 = background"
    assert (logits.grad[0, 4][background] <= 0).all()
    # the labelled class is still taught (its logit pushed up where it is labelled)
    assert (logits.grad[0, 3][masks[0] == 3] < 0).all()
    # "ignore" drops such background pixels; "stored" is the biased baseline that does teach it
    _, ign, _ = mem.replay(seen, 5, "ignore")
    assert (ign[0][msk[0] == 0] == 255).all() and (ign[0][msk[0] == 3] == 3).all()
    _, st, bg_st = mem.replay(seen, 5, "stored")
    logits.grad = None
    biased = Batch(batch.images, torch.from_numpy(st.astype(np.int64)),
                   {BG_SET: torch.from_numpy(bg_st)}, 255)
    SeenClassLoss(seen)(biased, logits, None).backward()  # type: ignore[arg-type]
    assert (logits.grad[0, 4][background] > 0).all()


def test_memory_known_defaults_to_the_exemplar_class():
    mem = ReplayMemory("full", 10**6, (4, 4))
    mem.set_classes([1, 2])
    ex = compress(np.zeros((3, 4, 4), np.uint8), np.ones((4, 4), np.uint8), "full", task=0,
                  cls=1)
    mem.add(1, ex)
    assert mem.known_classes(ex) == [1]
    mem.set_known(0, [1, 2])
    assert mem.known_classes(ex) == [1, 2]
    _, _, bg = mem.replay([0, 1, 2], 3)
    assert bg[0].tolist() == [True, False, False]  # everything seen is known: plain labels


def test_train_task_with_unbiased_ce_and_partial_replay_runs():
    from segxai.continual.learner import train_task

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 5, 1)
    x = torch.rand(12, 3, 8, 8)
    y = torch.zeros(12, 8, 8, dtype=torch.long)
    y[:, 2:5, 2:5] = 4
    mem_x, mem_y = torch.rand(3, 3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.long)
    mem_y[:, 1:3, 1:3] = 2
    # memory without bg rows, current images with MiB's unbiased cross-entropy
    losses = train_task(model, x, y, [0, 1, 2, 3, 4], memory_images=mem_x, memory_masks=mem_y,
                        unbiased_ce=True, old_seen=[0, 1, 2, 3], new_classes=[4], epochs=2,
                        batch_size=4, seed=1)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    bg = bg_sets(3, 5, [1, 3, 4])  # replayed task-2 exemplars: 1, 3, 4 unknown
    losses = train_task(model, x, y, [0, 1, 2, 3, 4], memory_images=mem_x, memory_masks=mem_y,
                        memory_bg=bg, epochs=1, batch_size=4, seed=1)
    assert all(math.isfinite(v) for v in losses)
