"""The fixed CAM fitness, the size band, Zen/DisWOT and the rank statistics of segxai.nas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import test_nas_fitness as _shared
from segxai.core.errors import SegxaiError
from segxai.data import make_shapes
from segxai.models import UNet, UNetConfig
from segxai.nas import ScoringTask, SearchSpace, build_probe, run_search
from segxai.nas.band import band_budget, band_initial, parse_band
from segxai.nas.camscore import batch_statistics, cam_scores
from segxai.nas.rankstats import partial_tau, proxy_statistics
from segxai.nas.search import build_candidate, score_candidate
from segxai.nas.space import build_unet
from segxai.nas.validate import sample_architectures
from segxai.nas.zeroshot import diswot_reference, diswot_score, zen_score

TEACHER_CFG = _shared.TEACHER_CFG
teacher = _shared.teacher  # the shared teacher fixture


@pytest.fixture(scope="module")
def probe(teacher: UNet):
    data = make_shapes(4, size=32, seed=3)
    return build_probe(teacher, data.images, data.masks)


def _cfg(**kw) -> dict:
    base = dict(depth=2, base_width=4, width_multipliers=[1.0, 1.0, 1.0], kernel_size=3,
                block="plain", decoder_width=None, in_channels=3, num_classes=5)
    return {**base, **kw}


def test_batch_statistics_restores_buffers_and_modes(teacher: UNet) -> None:
    net = build_candidate(build_unet, _cfg(), 1).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with batch_statistics(net):
        bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns and all(m.training for m in bns)
        net(torch.rand(4, 3, 32, 32))  # would update the running statistics
    assert not any(m.training for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_cam_scores_use_batch_statistics_and_leave_the_model_unchanged(probe) -> None:
    net = build_candidate(build_unet, _cfg(), 2).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = cam_scores([net], probe.cam_ref)
    assert set(s) == {"pearson", "abs-pearson", "gram"}
    assert all(math.isfinite(v) for v in s.values())
    assert -1 <= s["pearson"] <= 1 and 0 <= s["abs-pearson"] <= 1 and s["gram"] <= 0
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    # eval-mode statistics would give another score: the batch statistics are used
    eval_net = build_candidate(build_unet, _cfg(), 2)
    for m in eval_net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = False  # then train and eval both use batch statistics
    assert cam_scores([eval_net], probe.cam_ref)["pearson"] == pytest.approx(s["pearson"])


def test_teacher_matches_itself_best(teacher: UNet, probe) -> None:
    own = cam_scores([teacher], probe.cam_ref)
    # the teacher with batch statistics is close to (not exactly) its eval-mode self
    other = cam_scores([build_candidate(build_unet, _cfg(), 3)], probe.cam_ref)
    assert own["abs-pearson"] > other["abs-pearson"]


def _dead(config: dict, seed: int) -> UNet:
    """A network whose default-layer activations are all zero: every map is constant."""
    net = build_candidate(build_unet, config, seed)
    with torch.no_grad():
        last = net.decoder[-1]
        for m in last.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.zero_()
                m.bias.fill_(-1.0)  # ReLU(−1) = 0 everywhere
    return net.eval()


def test_constant_maps_are_invalid_never_a_tie(probe) -> None:
    a, b = _dead(_cfg(), 0), _dead(_cfg(base_width=8, block="residual"), 1)
    for net in (a, b):
        s = cam_scores([net], probe.cam_ref)
        assert all(v == float("-inf") for v in s.values())
    # one constant initialisation invalidates the average too
    ok = build_candidate(build_unet, _cfg(), 5)
    assert cam_scores([ok, a], probe.cam_ref)["pearson"] == float("-inf")


def test_distinct_architectures_get_distinct_finite_scores(probe) -> None:
    space = SearchSpace(resolution=(32, 32), depths=(2,), base_widths=(4, 8), num_classes=5)
    configs = sample_architectures(space, None, 6, seed=0)
    task = ScoringTask(probe=probe, proxies=("cam", "cam-abs", "cam-gram"), init_seeds=3)
    scores = [score_candidate(task, (c, 11)) for c in configs]
    for name in ("cam", "cam-abs", "cam-gram"):
        values = [s[name] for s in scores]
        assert all(math.isfinite(v) for v in values)
        assert len(set(values)) == len(values), name
    again = score_candidate(task, (configs[0], 11))
    assert again == scores[0]  # deterministic


def test_zen_score_follows_its_definition() -> None:
    net = build_candidate(build_unet, _cfg(), 0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    z = zen_score(net, (3, 32, 32), batch=4, seed=1)
    assert math.isfinite(z) and z == zen_score(net, (3, 32, 32), batch=4, seed=1)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    wide = build_candidate(build_unet, _cfg(base_width=16), 0)
    assert zen_score(wide, (3, 32, 32), batch=4, seed=1) > z  # more capacity, larger Zen


def test_diswot_of_the_redrawn_teacher_is_maximal(teacher: UNet, probe) -> None:
    ref = diswot_reference(teacher, probe.images, probe.diswot_ref.labels, seed=4)
    same = UNet(TEACHER_CFG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4)
        for m in same.modules():
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
    assert diswot_score(same, ref) == pytest.approx(0.0, abs=1e-12)
    other = build_candidate(build_unet, _cfg(), 1)
    assert diswot_score(other, ref) < 0


# ------------------------------------------------------------------------- band
def test_band_refuses_impossible_bands() -> None:
    space = SearchSpace()
    with pytest.raises(SegxaiError, match=r"LO <= HI.*lower 0.3 × 100000 = 30000"):
        band_budget(0.3, 0.2, 100_000, space)
    with pytest.raises(SegxaiError, match=r"HI <= 1.*100000 parameters"):
        band_budget(0.5, 1.5, 100_000, space)
    with pytest.raises(SegxaiError, match=r"0 < LO"):
        band_budget(0.0, 0.2, 100_000, space)
    smallest = space.measure(space.initial())["params"]
    with pytest.raises(SegxaiError, match=rf"smallest network of the space \({smallest}"):
        band_budget(0.1, 0.2, smallest * 2, space)
    with pytest.raises(SegxaiError, match="expected a band some network"):
        band_budget(0.999990, 0.999999, 10**9, space)  # above every network of the space
    with pytest.raises(SegxaiError, match="LO-HI"):
        parse_band("0.15:0.25")
    assert parse_band("0.15-0.25") == (0.15, 0.25)


def test_cli_refuses_bad_bands(tmp_path) -> None:
    from segxai.cli import main
    from segxai.models import save_checkpoint

    torch.manual_seed(0)
    d = save_checkpoint(UNet(UNetConfig(depth=2, base_width=8, num_classes=5)).eval(),
                        tmp_path / "t")
    for band in ("0.3-0.2", "0.5-2", "abc"):
        assert main(["nas", "search", "--quiet", "--model", str(d), "--band", band,
                     "--out", str(tmp_path / "x"), "--probe-images", "2"]) == 2
    assert not (tmp_path / "x").exists()


def test_search_stays_inside_the_band(teacher: UNet, probe) -> None:
    space = SearchSpace(resolution=(32, 32), num_classes=5)
    t_params = sum(p.numel() for p in teacher.parameters())
    budget = band_budget(0.15, 0.25, t_params, space)
    f0 = band_initial(space, budget, seed=0)
    assert budget.min_params <= space.measure(f0)["params"] <= budget.max_params
    res = run_search(teacher, probe, proxy="params", space=space, population=4, iterations=3,
                     children_per_iteration=3, budget=budget, seed=0, progress=False,
                     init_seeds=1)
    assert budget.min_params <= res["best"]["params"] <= budget.max_params
    for m in res["population"]:
        assert budget.min_params <= m["params"] <= budget.max_params
    for h in res["history"]:
        assert budget.min_params <= h["params"] <= budget.max_params


# ------------------------------------------------------------------------- statistics
def test_partial_tau_and_intervals() -> None:
    rng = np.random.default_rng(0)
    z = rng.random(30)
    y = z + rng.normal(0, 0.3, 30)
    x = z + rng.normal(0, 0.3, 30)
    out = proxy_statistics(x, y, z, resamples=500, seed=1)
    t_xy, t_xz, t_yz = (stats.kendalltau(a, b)[0] for a, b in ((x, y), (x, z), (y, z)))
    assert out["kendall_tau"] == pytest.approx(t_xy)
    assert out["spearman_rho"] == pytest.approx(stats.spearmanr(x, y)[0])
    expect = (t_xy - t_xz * t_yz) / math.sqrt((1 - t_xz ** 2) * (1 - t_yz ** 2))
    assert out["partial_tau"] == pytest.approx(expect)
    assert partial_tau(t_xy, t_xz, t_yz) == pytest.approx(expect)
    for k in ("kendall_tau", "spearman_rho", "partial_tau"):
        assert out[f"{k}_lo"] <= out[k] <= out[f"{k}_hi"]
    # x that is z itself carries nothing beyond z
    assert proxy_statistics(z, y, z, resamples=50)["partial_tau"] != \
        proxy_statistics(z, y, z, resamples=50)["partial_tau"]  # NaN: undefined


def test_vectorised_tau_matches_scipy_on_resamples() -> None:
    from segxai.nas.rankstats import _signs, _tau_rows

    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 5, 12).astype(float), rng.random(12)
    idx = rng.integers(0, 12, size=(5, 12))
    got = _tau_rows(_signs(x), _signs(y), idx)
    for row, g in zip(idx, got):
        assert g == pytest.approx(stats.kendalltau(x[row], y[row])[0])


def test_band_search_does_not_stall_on_f0s_neighbourhood(teacher: UNet, probe) -> None:
    # inside a narrow band F0 has few admissible one-gene mutations; the search must keep
    # drawing new candidates (it used to stop at F0's neighbourhood: 8 in 12 × 4 children)
    space = SearchSpace(resolution=(32, 32), num_classes=5)
    budget = band_budget(0.15, 0.25, 121_213, space)  # the built-in quick teacher's size
    res = run_search(teacher, probe, proxy="params", space=space, population=16,
                     iterations=12, children_per_iteration=4, budget=budget, seed=0,
                     progress=False, init_seeds=1)
    assert res["candidates_scored"] >= 40
    for m in res["population"]:
        assert budget.min_params <= m["params"] <= budget.max_params
