"""The one training loop: student α = λ = 0 is train_model bit for bit; the loss terms."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from segxai.continual.losses import ReplayMix, SeenClassLoss, seen_loss
from segxai.data import make_shapes
from segxai.models import (
    Batch,
    KLDistillation,
    SegmentationLoss,
    StepContext,
    TrainConfig,
    TrainData,
    UNet,
    UNetConfig,
    fit,
    kl_distillation,
    segmentation_loss,
    train_model,
)
from segxai.nas import StudentConfig, train_student
from segxai.nas.fitness import distill
from segxai.nas.student import SaliencyMatching, student_terms

CFG = TrainConfig(epochs=2, batch_size=8, lr=5e-3, seed=3, max_steps_per_epoch=2)
MODEL = UNetConfig(depth=2, base_width=4)


def _net(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(MODEL)


def _ctx(model: nn.Module) -> StepContext:
    return StepContext(model, model, 0, 0)


def test_student_without_extra_terms_is_train_model_bit_for_bit() -> None:
    data = make_shapes(24, size=32, seed=1)
    a, b = _net(), _net()
    teacher = _net(5)
    train_model(a, data, None, CFG, progress=False)
    res = train_student(b, data, CFG, teacher=teacher, student_config=StudentConfig(),
                        progress=False)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert len(res["loss_history"]) == CFG.epochs * 2


def test_student_terms_share_the_schedule_and_differ_only_in_the_loss() -> None:
    """α > 0 adds the KL term and nothing else: fit with the same terms gives the same model."""
    data = make_shapes(24, size=32, seed=1)
    teacher = _net(5).eval()
    sc = StudentConfig(alpha=0.5)
    a, b = _net(), _net()
    train_student(a, data, CFG, teacher=teacher, student_config=sc, progress=False)
    fit(b, data, CFG, terms=[SegmentationLoss(CFG.loss, 0.5), KLDistillation(0.5, 2.0, teacher)],
        progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    names = [t.name for t in student_terms(sc, "ce", teacher)]
    assert names == ["segmentation", "kl", "saliency"]
    with pytest.raises(ValueError, match="teacher"):
        student_terms(StudentConfig(alpha=0.1), "ce", None)


def test_kl_distillation_by_hand() -> None:
    # one pixel, two classes: KL(q ‖ p) = Σ q log(q / p), scaled by T²
    s = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    t = torch.tensor([2.0, 0.0]).view(1, 2, 1, 1)
    for temp in (1.0, 2.0):
        p = torch.softmax(s.flatten() / temp, 0)
        q = torch.softmax(t.flatten() / temp, 0)
        ref = float((q * (q / p).log()).sum()) * temp ** 2
        assert float(kl_distillation(s, t, temp)) == pytest.approx(ref, rel=1e-6)
    assert float(kl_distillation(t, t, 3.0)) == pytest.approx(0.0, abs=1e-6)
    # mean over pixels: a second pixel with zero divergence halves the value
    s2 = torch.cat([s, t], dim=3)
    t2 = torch.cat([t, t], dim=3)
    assert float(kl_distillation(s2, t2)) == pytest.approx(float(kl_distillation(s, t)) / 2)


def test_kl_term_uses_stored_logits_or_runs_the_teacher_once() -> None:
    x = torch.rand(2, 3, 8, 8)
    logits = torch.randn(2, 5, 8, 8)
    stored = torch.randn(2, 5, 8, 8)
    term = KLDistillation(1.0, 2.0)
    net = _net()
    val = term(Batch(x, extras={"teacher_logits": stored}), logits, _ctx(net))
    assert torch.allclose(val, kl_distillation(logits, stored, 2.0))
    with pytest.raises(ValueError, match="teacher"):
        term(Batch(x), logits, _ctx(net))
    calls = []

    class Teacher(nn.Module):
        def forward(self, images):
            calls.append(1)
            return stored

    teacher = Teacher()
    batch = Batch(x)
    a = KLDistillation(1.0, 2.0, teacher)(batch, logits, _ctx(net))
    b = KLDistillation(1.0, 2.0, teacher)(batch, logits, _ctx(net))
    assert torch.equal(a, b) and len(calls) == 1


def test_segmentation_and_seen_class_terms() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 4)
    y = torch.randint(0, 3, (2, 4, 4))
    y[0, 0, 0] = 255
    term = SegmentationLoss("ce+dice")
    got = term(Batch(torch.zeros(2, 3, 4, 4), y, ignore_index=255), logits, _ctx(_net()))
    assert torch.equal(got, segmentation_loss(logits, y, "ce+dice", 255))
    # Dice over given classes: an absent class counts (1 - 1 / (Σp + 1))
    prob = logits.softmax(1) * (y != 255).unsqueeze(1)
    dice4 = 1 - 1 / (prob[:, 4].sum() + 1)
    with_4 = segmentation_loss(logits, y, "ce+dice", 255, classes=[4])
    assert float(with_4 - segmentation_loss(logits, y, "ce", 255)) == pytest.approx(
        float(dice4), rel=1e-5)
    seen = SeenClassLoss([0, 1, 2])
    batch = Batch(torch.zeros(2, 3, 4, 4), y, ignore_index=255)
    assert torch.equal(seen(batch, logits, _ctx(_net())), seen_loss(logits, y, [0, 1, 2]))
    with pytest.raises(ValueError, match="masks"):
        term(Batch(torch.zeros(2, 3, 4, 4)), logits, _ctx(_net()))


def test_saliency_matching_is_zero_for_the_teacher_itself() -> None:
    net = _net(1).eval()
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([0.0, 0.3, 0.3, 0.3, 0.3]))
    x = make_shapes(2, size=32, seed=3).images
    term = SaliencyMatching(net, 1.0)
    val = term(Batch(x), net(x), _ctx(net))
    assert float(val.detach()) == pytest.approx(0.0, abs=1e-10)
    other = _net(2)
    assert float(term(Batch(x), other(x), _ctx(other)).detach()) > 0


def test_replay_hook_and_zero_weight_terms() -> None:
    mem = torch.full((3, 3, 4, 4), 7.0)
    hook = ReplayMix(mem, torch.ones(3, 4, 4, dtype=torch.long), 2)
    batch = hook(Batch(torch.zeros(4, 3, 4, 4), torch.zeros(4, 4, 4, dtype=torch.long)),
                 torch.Generator().manual_seed(0))
    assert batch.images.shape[0] == 6 and int((batch.images[:, 0, 0, 0] == 7).sum()) == 2
    with pytest.raises(ValueError, match="terms"):
        fit(_net(), make_shapes(8, size=32, seed=1), CFG, terms=[SegmentationLoss(weight=0.0)],
            progress=False)


def test_distill_is_deterministic_and_keeps_steps() -> None:
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    logits = torch.randn(6, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    seen: list[int] = []

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            seen.append(x.shape[0])
            return self.conv(x)

    nets = []
    for _ in range(2):
        torch.manual_seed(0)
        net = Counting()
        seen.clear()
        distill(net, images, logits, steps=5, batch_size=4, temperature=2.0, seed=3)
        nets.append(net)
        assert seen[-5:] == [4] * 5 and not net.training
    assert all(torch.equal(p, q) for p, q in zip(nets[0].parameters(), nets[1].parameters()))
    data = TrainData(images, extras={"teacher_logits": logits})
    assert len(data) == 6 and math.isclose(float(data.batch(torch.tensor([0])).images.sum()),
                                           float(images[0].sum()))


def test_channels_last_training_matches_contiguous_and_returns_contiguous() -> None:
    from dataclasses import replace

    data = make_shapes(16, size=32, seed=1)
    ref, nhwc = _net(0), _net(0)
    r1 = train_model(ref, data, None, CFG, progress=False)
    r2 = train_model(nhwc, data, None, replace(CFG, memory_format="channels_last"),
                     progress=False)
    # NHWC kernels round differently (and Adam's first steps turn a rounding-level gradient
    # into a step of size lr), so the runs are compared by what they learn, not bit for bit
    assert r2.losses == pytest.approx(r1.losses, rel=1e-2)
    conv = next(m for m in nhwc.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous()  # handed back in the default format
    with torch.no_grad():
        x = data.images
        agree = (ref(x).argmax(1) == nhwc(x).argmax(1)).float().mean()
    assert agree >= 0.99


def test_memory_format_is_checked_and_left_out_of_old_fingerprints() -> None:
    from segxai.core.errors import SegxaiError

    with pytest.raises(SegxaiError, match="memory_format: expected one of contiguous, "
                                          "channels_last"):
        TrainConfig(memory_format="nhwc")  # type: ignore[arg-type]
    assert "memory_format" not in TrainConfig().to_dict()
    d = TrainConfig(memory_format="channels_last").to_dict()
    assert d["memory_format"] == "channels_last"
    assert TrainConfig.from_dict(d) == TrainConfig(memory_format="channels_last")
