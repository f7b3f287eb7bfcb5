"""CAM fitness and the baseline proxies of segxai.nas, against independent references."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import segxai
from segxai.data import make_shapes
from segxai.models import UNet, UNetConfig
from segxai.nas import (
    ScoringTask,
    build_probe,
    cam_distance,
    cam_fitness,
    compute_proxy,
    distill,
    grad_norm,
    naswot,
    synflow,
)
from segxai.nas.search import build_candidate, score_candidate
from segxai.nas.space import build_unet

TEACHER_CFG = UNetConfig(depth=2, base_width=8, num_classes=5)


@pytest.fixture(scope="module")
def teacher() -> UNet:
    torch.manual_seed(0)
    net = UNet(TEACHER_CFG)
    with torch.no_grad():  # an untrained net predicts every class somewhere
        net.head.bias.copy_(torch.tensor([0.0, 0.3, 0.3, 0.3, 0.3]))
    return net.eval()


@pytest.fixture(scope="module")
def data():
    return make_shapes(8, size=32, seed=5)


@pytest.fixture(scope="module")
def probe(teacher, data):
    return build_probe(teacher, data.images[:4], data.masks[:4],
                       distill_images=data.images[4:8])


def test_probe_rois_are_the_teachers_predicted_pixels(teacher, probe) -> None:
    pred = teacher(probe.images).argmax(1)
    expected = [(i, c) for i in range(pred.shape[0])
                for c in torch.unique(pred[i]).tolist() if c != 0]
    got = list(zip(probe.image_index.tolist(), probe.class_index.tolist()))
    assert got == expected
    for p, (i, c) in enumerate(got):
        assert torch.equal(probe.roi[p].bool(), pred[i] == c)
    assert probe.teacher_maps.shape == probe.roi.shape
    assert float(probe.teacher_maps.min()) >= 0 and float(probe.teacher_maps.max()) <= 1


def test_probe_with_ground_truth_roi(teacher, data) -> None:
    pr = build_probe(teacher, data.images[:2], data.masks[:2], roi="mask")
    for p, (i, c) in enumerate(zip(pr.image_index.tolist(), pr.class_index.tolist())):
        assert torch.equal(pr.roi[p].bool(), data.masks[i] == c)


def test_cam_distance_matches_a_slow_loop(probe) -> None:
    torch.manual_seed(3)
    student = UNet(UNetConfig(depth=2, base_width=4, num_classes=5)).eval()
    dists = []
    for p in range(probe.pairs):
        i, c = int(probe.image_index[p]), int(probe.class_index[p])
        x = probe.images[i:i + 1]
        target = segxai.Target.from_mask(probe.roi[p].bool(), class_index=c)
        maps = []
        for net in (student,):
            # the default layer: the one feeding the head (core.layers.default_cam_layer)
            e = segxai.explain(net, x, target, method="seg-grad-cam", layer="decoder.1")
            maps.append(e.maps[0])
        s = maps[0]
        s = (s - s.min()) / (s.max() - s.min()) if float(s.max() - s.min()) > 1e-12 \
            else torch.zeros_like(s)
        dists.append(float(torch.sqrt(((s.double() - probe.teacher_maps[p].double()) ** 2)
                                      .sum())))
    assert cam_distance(student, probe) == pytest.approx(float(np.mean(dists)), rel=1e-5)
    assert cam_fitness(student, probe) == pytest.approx(1 / (1e-6 + np.mean(dists)), rel=1e-5)


def test_teacher_against_itself_is_maximal(teacher, probe) -> None:
    best = cam_fitness(teacher, probe)
    assert best == pytest.approx(1 / probe.eps)
    rng = np.random.default_rng(0)
    from segxai.nas import SearchSpace

    space = SearchSpace(resolution=(32, 32))
    for k in range(3):
        other = build_candidate(build_unet, space.sample(rng), seed=k)
        assert cam_fitness(other, probe) < best


def test_identical_candidate_beats_a_much_smaller_random_one(teacher, probe) -> None:
    identical = copy.deepcopy(teacher)
    small = build_candidate(build_unet, UNetConfig(depth=2, base_width=2, num_classes=5)
                            .to_dict(), seed=1)
    assert cam_fitness(identical, probe) > cam_fitness(small, probe)
    # monotone in how far the weights are moved away from the teacher's
    scores = []
    for sigma in (0.01, 0.3, 3.0):
        noisy = copy.deepcopy(teacher)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in noisy.parameters():
                p.add_(sigma * p.abs().mean() * torch.randn(p.shape, generator=g))
        scores.append(cam_fitness(noisy, probe))
    assert scores[0] > scores[1] > scores[2]


def test_fitness_does_not_modify_the_candidate(probe) -> None:
    net = build_candidate(build_unet, TEACHER_CFG.to_dict(), seed=7)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for name in ("cam", "cam-fewshot", "synflow", "naswot", "grad-norm"):
        compute_proxy(name, net, probe, seed=1, fewshot_steps=2)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_distillation_moves_the_student_towards_the_teacher(teacher, probe) -> None:
    student = build_candidate(build_unet, UNetConfig(depth=2, base_width=4, num_classes=5)
                              .to_dict(), seed=2)

    def kl(net: nn.Module) -> float:
        with torch.no_grad():
            s = F.log_softmax(net.eval()(probe.distill_images), 1)
            t = F.softmax(probe.distill_logits, 1)
            return float(F.kl_div(s, t, reduction="none").sum(1).mean())

    before = kl(student)
    distill(student, probe.distill_images, probe.distill_logits, steps=30, lr=1e-2, seed=0)
    assert kl(student) < 0.7 * before


class _TwoConv(nn.Module):
    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 1, 1, bias=False)
        self.c2 = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.c1.weight.fill_(a)
            self.c2.weight.fill_(b)

    def forward(self, x):
        return self.c2(self.c1(x))


def test_synflow_matches_closed_form() -> None:
    # R = H·W·|a||b| on an all-ones input; synflow = |a|·∂R/∂|a| + |b|·∂R/∂|b| = 2·H·W·|ab|
    net = _TwoConv(-0.5, 3.0)
    assert synflow(net, (1, 4, 5)) == pytest.approx(math.log(2 * 20 * 1.5))
    assert float(net.c1.weight.detach()) == -0.5  # unchanged


class _ReluNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 3, 3, padding=1)
        self.r1 = nn.ReLU()
        self.c2 = nn.Conv2d(3, 2, 1)
        self.r2 = nn.ReLU()

    def forward(self, x):
        return self.r2(self.c2(self.r1(self.c1(x))))


def test_naswot_matches_a_hamming_distance_loop() -> None:
    torch.manual_seed(0)
    net = _ReluNet()
    x = torch.randn(5, 2, 4, 4)
    with torch.no_grad():
        codes = [(net.c1(x) > 0).flatten(1), (net.c2(net.r1(net.c1(x))) > 0).flatten(1)]
    k = np.zeros((5, 5))
    for c in codes:
        n_units = c.shape[1]
        for i in range(5):
            for j in range(5):
                k[i, j] += n_units - int((c[i] != c[j]).sum())
    assert naswot(net, x) == pytest.approx(float(np.linalg.slogdet(k)[1]), rel=1e-9)


def test_grad_norm_matches_finite_differences() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Tanh(), nn.Conv2d(3, 3, 1)).double()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 3, (2, 3, 3), generator=g)
    total = 0.0
    for conv in (net[0], net[2]):
        w = conv.weight
        for idx in np.ndindex(*w.shape):
            with torch.no_grad():
                old = float(w[idx])
                w[idx] = old + 1e-6
                up = float(F.cross_entropy(net(x), labels))
                w[idx] = old - 1e-6
                down = float(F.cross_entropy(net(x), labels))
                w[idx] = old
            total += ((up - down) / 2e-6) ** 2
    assert grad_norm(net, x, num_classes=3, seed=4) == pytest.approx(math.sqrt(total), rel=1e-5)


def test_counting_and_random_proxies(probe) -> None:
    net = build_candidate(build_unet, TEACHER_CFG.to_dict(), seed=0)
    assert compute_proxy("params", net, probe) == sum(p.numel() for p in net.parameters())
    assert compute_proxy("flops", net, probe) > 0
    r1 = compute_proxy("random", net, probe, seed=11)
    assert r1 == compute_proxy("random", net, probe, seed=11)
    assert r1 != compute_proxy("random", net, probe, seed=12)
    assert 0 <= r1 < 1
    with pytest.raises(ValueError, match="proxy"):
        compute_proxy("zen-magic", net, probe)


def test_candidate_seed_not_global_state(probe) -> None:
    task = ScoringTask(probe=probe, proxies=("cam", "grad-norm"))
    item = (UNetConfig(depth=2, base_width=4, num_classes=5).to_dict(), 123)
    torch.manual_seed(1)
    a = score_candidate(task, item)
    torch.manual_seed(999)
    torch.rand(10)
    b = score_candidate(task, item)
    assert a == b
