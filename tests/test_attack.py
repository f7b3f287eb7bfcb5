"""Explanation attacks: the attack works on the built-in model, metrics match independent
references, target maps, errors, batch independence, study checkpoints and the CLI."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import segxai
from segxai.attack import (
    AttackConfig,
    argmax_iou,
    attack,
    box_map,
    evaluate_attack,
    make_target_map,
    map_mse,
    map_pearson,
    map_ssim,
    max_prob_change,
    mirror_map,
    normalize_map,
    parse_epsilon,
    perturbation_sizes,
    pixel_agreement,
    shift_map,
)
from segxai.attack.study import StudyConfig, choose_target, robustness_study
from segxai.core.errors import SegxaiError
from segxai.core.runstore import RunStore

EPS = 8 / 255


# ---------------------------------------------------------------- the attack on the built-in model
def test_gradient_attack_moves_the_explanation_on_the_builtin_model(builtin_quick) -> None:
    model = builtin_quick.model
    images = builtin_quick.val_data.images[:8]
    targets = choose_target(model, images)
    # the first image whose explained region has at least 64 pixels (a 1-pixel ROI of a weak
    # quick model has an almost empty gradient map)
    i = next(k for k in range(8) if float(targets.roi[k].sum()) >= 64)
    x, target = images[i:i + 1], targets[i]
    res = attack(model, x, target, "gradient", "shift", iterations=100, lr=2e-2)
    m = {k: v[0] for k, v in res.metrics.items()}
    # independent re-evaluation on the (restored) ReLU model
    clean = segxai.explain(model, x, target, method="gradient").maps
    adv = segxai.explain(model, res.x_adv, target, method="gradient").maps
    before = float(np.corrcoef(clean.flatten(), res.target_map.flatten())[0, 1])
    after = float(np.corrcoef(adv.flatten(), res.target_map.flatten())[0, 1])
    assert after == pytest.approx(m["target_pearson"], abs=1e-4)
    assert before == pytest.approx(m["clean_target_pearson"], abs=1e-4)
    assert after >= before + 0.25, (before, after)
    pred = segxai.ModelAdapter(model).predict
    agreement = float((pred(res.x_adv) == pred(x)).float().mean())
    assert agreement >= 0.99 and m["pixel_agreement"] == pytest.approx(agreement)
    assert float((res.x_adv - x).abs().max()) <= EPS + 1e-6
    assert float(res.x_adv.min()) >= 0.0 and float(res.x_adv.max()) <= 1.0
    assert res.softplus_modules > 0
    assert all(type(mod).__name__ != "SoftplusBeta" for mod in model.modules())


# ---------------------------------------------------------------- tiny models
def _tiny(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(6, 3, 1)).to(dtype).eval()


def test_projection_in_pixel_space_for_a_normalised_model() -> None:
    net = _tiny()
    adapter = segxai.ModelAdapter(net, mean="imagenet", std="imagenet")
    pixels = torch.rand(1, 3, 12, 12)
    pixels[0, 0, :3] = 0.0  # on the lower bound of the valid range
    pixels[0, 1, :3] = 1.0
    x = adapter.from_pixels(pixels)
    t = segxai.Target.whole_image(2, size=(12, 12))
    res = attack(adapter, x, t, "gradient", "mirror", iterations=15, lr=0.05, epsilon=4 / 255,
                 select="last")
    px_adv = adapter.to_pixels(res.x_adv)
    assert float((px_adv - pixels).abs().max()) <= 4 / 255 + 1e-5
    assert float((px_adv - pixels).abs().max()) > 3.9 / 255  # the budget is used
    assert float(px_adv.min()) >= -1e-6 and float(px_adv.max()) <= 1 + 1e-6
    assert res.metrics["linf"][0] == pytest.approx(float((px_adv - pixels).abs().max()), abs=1e-6)
    assert len(res.history["loss"]) == 15 and res.history["beta"][0] == pytest.approx(10.0)
    assert res.history["beta"][-1] == pytest.approx(100.0)


def test_batch_attack_equals_separate_attacks() -> None:
    net = _tiny(1, torch.float64)
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    t = segxai.Target.whole_image(1, size=(10, 10), n=2)
    both = attack(net, x, t, "gradient", "shift", iterations=12, eval_every=4)
    for i in range(2):
        one = attack(net, x[i:i + 1], t[i], "gradient", "shift", iterations=12, eval_every=4)
        assert torch.allclose(one.x_adv, both.x_adv[i:i + 1], atol=1e-9)
        assert one.metrics["target_pearson"][0] == pytest.approx(
            both.metrics["target_pearson"][i], abs=1e-9)


def test_smoothgrad_and_seg_grad_cam_attacks_run_and_reduce_the_loss() -> None:
    net = _tiny(2)
    x = torch.rand(1, 3, 12, 12)
    t = segxai.Target.whole_image(0, size=(12, 12))
    for method, params in (("smoothgrad", {"n_samples": 3, "seed": 1}),
                           ("seg-grad-cam", {"layer": "2"})):
        # β fixed, so that the objective is the same function at every step
        res = attack(net, x, t, method, "box", iterations=25, lr=2e-2, lambda_output=0.0,
                     epsilon=0.25,
                     beta_start=10.0, beta_end=10.0, explainer_params=params, select="last")
        assert res.method == method
        loss = res.history["explanation"]
        assert loss[-1] < 0.95 * loss[0]
        # metrics recomputed independently from the returned maps
        assert res.metrics["target_pearson"][0] == pytest.approx(float(np.corrcoef(
            res.adversarial_map.flatten(), res.target_map.flatten())[0, 1]), abs=1e-6)


def test_errors_at_the_boundary() -> None:
    net = _tiny()
    x = torch.rand(1, 3, 8, 8)
    t = segxai.Target.whole_image(1, size=(8, 8))
    with pytest.raises(ValueError, match="differentiable"):
        attack(net, x, t, "occlusion", "shift", iterations=2)
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError, match="epsilon"):
            attack(net, x, t, "gradient", "shift", epsilon=bad, iterations=2)
    with pytest.raises(ValueError, match="target_map"):
        attack(net, x, t, "gradient", torch.rand(1, 4, 4), iterations=2)
    with pytest.raises(ValueError, match="target_map"):
        attack(net, x, t, "gradient", torch.zeros(1, 8, 8), iterations=2)
    with pytest.raises(ValueError, match="target_image"):
        attack(net, x, t, "gradient", "other-image", iterations=2)
    with pytest.raises(ValueError, match="target_kind"):
        attack(net, x, t, "gradient", "spiral", iterations=2)
    with pytest.raises(ValueError, match="iterations"):
        attack(net, x, t, "gradient", "shift", iterations=0)
    with pytest.raises(TypeError, match="nn.Module"):
        attack(lambda z: net(z), x, t, "gradient", "shift", iterations=2)
    with pytest.raises(ValueError, match="epsilon"):
        parse_epsilon("-3")
    assert parse_epsilon("8") == pytest.approx(8 / 255)
    assert parse_epsilon(0.03) == pytest.approx(0.03)
    with pytest.raises(ValueError, match="config"):
        AttackConfig.from_dict({"epsilonn": 1})


def test_explicit_target_map_and_evaluate_on_a_perturbation_explainer() -> None:
    net = _tiny(3)
    x = torch.rand(1, 3, 16, 16)
    t = segxai.Target.whole_image(1, size=(16, 16))
    tmap = torch.zeros(16, 16)
    tmap[2:6, 2:6] = 5.0  # any scale: normalised to sum 1
    res = attack(net, x, t, "gradient", tmap, iterations=5)
    assert torch.allclose(res.target_map[0], tmap / tmap.sum())
    assert res.target_map.sum().item() == pytest.approx(1.0)
    ev = evaluate_attack(net, x, res.x_adv, t, "shift", "occlusion",
                         explainer_params={"window": 4, "stride": 4})
    m = ev["metrics"]
    assert m["moved"][0] == pytest.approx(m["target_pearson"][0] - m["clean_target_pearson"][0])
    assert ev["adversarial_map"].shape == (1, 16, 16)


# ---------------------------------------------------------------- metrics vs references
def test_map_metrics_against_references() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 20, 24, generator=g), torch.rand(3, 20, 24, generator=g)
    b[1] = 0.5 * a[1] + 0.1 * b[1]
    for i in range(3):
        ref = np.corrcoef(a[i].flatten().numpy(), b[i].flatten().numpy())[0, 1]
        assert map_pearson(a, b)[i].item() == pytest.approx(ref, abs=1e-9)
        na, nb = a[i].double() / a[i].double().sum(), b[i].double() / b[i].double().sum()
        assert map_mse(a, b)[i].item() == pytest.approx(
            float(((na - nb) * 480).pow(2).mean()), rel=1e-9)
    assert map_pearson(a, a).tolist() == pytest.approx([1.0] * 3)
    assert map_pearson(a, torch.ones_like(a)).tolist() == [0.0] * 3
    skm = pytest.importorskip("skimage.metrics")
    for i in range(3):
        ma = (a[i] - a[i].min()) / (a[i].max() - a[i].min())
        mb = (b[i] - b[i].min()) / (b[i].max() - b[i].min())
        ref = skm.structural_similarity(ma.double().numpy(), mb.double().numpy(), data_range=1.0,
                                        gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
        assert map_ssim(a, b)[i].item() == pytest.approx(ref, abs=1e-6)
    assert map_ssim(a, a).tolist() == pytest.approx([1.0] * 3)
    assert torch.allclose(normalize_map(-a).flatten(1).sum(1), torch.ones(3, dtype=a.dtype))


def test_output_and_perturbation_metrics_by_hand() -> None:
    pa = torch.tensor([[[0, 0, 1, 1], [2, 2, 2, 1]]])
    pb = torch.tensor([[[0, 1, 1, 1], [2, 2, 0, 1]]])
    assert pixel_agreement(pa, pb).item() == pytest.approx(6 / 8)
    # class 0: I=1, U=3; class 1: I=3, U=4; class 2: I=2, U=3
    assert argmax_iou(pa, pb, 4).item() == pytest.approx((1 / 3 + 3 / 4 + 2 / 3) / 3)
    p0 = torch.zeros(1, 2, 2, 2)
    p1 = p0.clone()
    p1[0, 1, 0, 1] = -0.25
    p1[0, 0, 1, 1] = 0.125
    assert max_prob_change(p0, p1).item() == pytest.approx(0.25)
    x = torch.zeros(1, 3, 2, 2)
    y = x.clone()
    y[0, 0, 0, 0] = 0.1
    y[0, 2, 1, 1] = -0.2
    s = perturbation_sizes(y, x)
    assert s["linf"].item() == pytest.approx(0.2)
    assert s["l2"].item() == pytest.approx(math.sqrt(0.05))
    assert s["psnr"].item() == pytest.approx(-10 * math.log10(0.05 / 12))
    assert perturbation_sizes(x, x)["psnr"].item() == math.inf


# ---------------------------------------------------------------- target maps
def test_target_maps() -> None:
    m = torch.zeros(1, 12, 12)
    m[0, 2:4, 3:6] = torch.arange(6.0).view(2, 3) + 1
    shifted = shift_map(m, (3, -2))
    ref = torch.zeros(12, 12)
    for r in range(12):
        for c in range(12):
            if 0 <= r - 3 < 12 and 0 <= c + 2 < 12:
                ref[r, c] = m[0, r - 3, c + 2]
    assert torch.allclose(shifted[0], ref / ref.sum())
    auto = shift_map(m)  # mass in the top-left: moves down-right by a quarter
    assert torch.allclose(auto[0], normalize_map(m)[0].roll((3, 3), (0, 1)))
    assert torch.allclose(mirror_map(m)[0], normalize_map(m)[0].flip(-1))
    assert torch.allclose(mirror_map(m, "vertical")[0], normalize_map(m)[0].flip(0))
    roi = torch.zeros(1, 12, 12)
    roi[0, :6, :6] = 1
    box = box_map(m, roi)
    assert box.sum().item() == pytest.approx(1.0)
    assert float((box * roi).sum()) == 0.0 and float((box > 0).sum()) == 16
    fixed = box_map(m, box=(0, 0, 2, 3))
    assert float((fixed[0] > 0).sum()) == 6
    other = torch.rand(1, 12, 12)
    assert torch.allclose(make_target_map("other-image", m, other_maps=other),
                          other / other.sum())
    with pytest.raises(ValueError, match="other_maps"):
        make_target_map("other-image", m, other_maps=torch.rand(1, 5, 5))
    with pytest.raises(ValueError, match="shift"):
        shift_map(m, (0, 0))
    with pytest.raises(ValueError, match="shift"):
        shift_map(m, (12, 0))


# ---------------------------------------------------------------- study: checkpoint and resume
def test_study_resumes_from_its_checkpoint(tmp_path, monkeypatch) -> None:
    net = _tiny(4)
    x = torch.rand(2, 3, 10, 10)
    cfg = StudyConfig(methods=("gradient", "seg-grad-cam"), transfer_methods=("occlusion",),
                      attack=AttackConfig(iterations=4, eval_every=2),
                      explainer_params={"seg-grad-cam": {"layer": "2"},
                                        "occlusion": {"window": 4, "stride": 4}})
    first = robustness_study(net, x, cfg, checkpoint_dir=tmp_path, progress=False)
    assert len(first.records) == 2 and sorted(first.records[0]["attacks"]) == [
        "gradient", "seg-grad-cam"]
    assert "defended" in first.records[0]["attacks"]["gradient"]
    assert first.records[0]["transfer"]["occlusion"]["from"] == "gradient"
    rows = {r["method"]: r for r in first.summary["attacked"]}
    assert rows["gradient"]["images"] == 2
    assert rows["gradient"]["success_rate"] == pytest.approx(np.mean(
        [r["attacks"]["gradient"]["success"] for r in first.records]))
    # a finished study is not recomputed
    import segxai.attack.study as study_mod

    def boom(*a, **k):
        raise AssertionError("attack rerun for a finished image")

    monkeypatch.setattr(study_mod, "attack", boom)
    again = robustness_study(net, x, cfg, checkpoint_dir=tmp_path, progress=False)
    assert again.records == json.loads(json.dumps(first.records))
    # cut after 4 rows (image 0: two attacks and the transfer; image 1: gradient): only the
    # missing (image, method) rows are computed on resume, and the results are the same
    cut = tmp_path / "cut"

    def kill_after_four(store, name, row):
        if len(store.rows(name)) >= 4:
            raise _Killed

    monkeypatch.setattr(study_mod, "attack", _real_attack)
    monkeypatch.setattr(RunStore, "on_row", kill_after_four)
    with pytest.raises(_Killed):
        robustness_study(net, x, cfg, checkpoint_dir=cut, progress=False)
    monkeypatch.setattr(RunStore, "on_row", None)
    calls = []
    monkeypatch.setattr(study_mod, "attack", lambda *a, **k: calls.append(a[3]) or
                        _real_attack(*a, **k))
    resumed = robustness_study(net, x, cfg, checkpoint_dir=cut, progress=False)
    assert calls == ["seg-grad-cam"]  # one method, one image
    assert _without_seconds(resumed.records) == _without_seconds(first.records)
    assert len((cut / "results.jsonl").read_text().splitlines()) == 6
    other = StudyConfig(methods=("gradient",), attack=AttackConfig(iterations=5))
    with pytest.raises(ValueError, match="other settings"):
        robustness_study(net, x, other, checkpoint_dir=tmp_path, progress=False)
    beta = replace(cfg, defence_beta=2.0)
    with pytest.raises(SegxaiError, match=r"other settings \(differing: defence_beta\)"):
        robustness_study(net, x, beta, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="not differentiable"):
        StudyConfig(methods=("occlusion",)).validate()


def _real_attack(*args, **kwargs):
    return attack(*args, **kwargs)


class _Killed(Exception):
    """Raised by the RunStore.on_row hook to cut a study after some rows (a simulated kill)."""


def _without_seconds(value):
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


# ---------------------------------------------------------------- CLI
def test_cli_attack_writes_records(tmp_path, monkeypatch, builtin_quick) -> None:
    from segxai.cli import main

    monkeypatch.setenv("SEGXAI_CACHE", str(builtin_quick.path.parent))
    out = tmp_path / "out"
    rc = main(["attack", "--quick", "--out", str(out), "--iterations", "4", "--images", "1",
               "--quiet", "--target-kind", "mirror"])
    assert rc == 0
    data = json.loads((out / "attack.json").read_text())
    rec = data["records"][0]
    for key in ("target_pearson", "original_pearson", "pixel_agreement", "linf", "l2", "psnr",
                "seconds"):
        assert isinstance(rec[key], float)
    assert rec["linf"] <= EPS + 1e-6
    assert (out / "figures" / "attack_0000.png").is_file()
    assert main(["attack", "--quick", "--out", str(out), "--epsilon", "0", "--quiet"]) == 2


def test_adaptive_attack_on_the_beta_smoothing_defence() -> None:
    from segxai.attack import softplus_model

    net = _tiny(5)
    x = torch.rand(1, 3, 10, 10)
    t = segxai.Target.whole_image(1, size=(10, 10))
    res = attack(net, x, t, "gradient", "mirror", iterations=6, eval_every=3, defence_beta=3.0)
    assert res.history["beta"] == [3.0] * 6
    with softplus_model(net, beta=3.0):
        smooth = segxai.explain(net, res.x_adv, t, method="gradient").maps
    ref = float(np.corrcoef(smooth.flatten(), res.target_map.flatten())[0, 1])
    assert res.metrics["target_pearson"][0] == pytest.approx(ref, abs=1e-5)
    relu_pred = segxai.ModelAdapter(net).predict
    agree = float((relu_pred(res.x_adv) == relu_pred(x)).float().mean())
    assert res.metrics["pixel_agreement"][0] == pytest.approx(agree)


def test_study_config_overrides() -> None:
    cfg = StudyConfig(methods=("gradient", "smoothgrad"), attack=AttackConfig(iterations=30),
                      attack_overrides={"smoothgrad": {"iterations": 5}}).validate()
    assert cfg.attack_config("smoothgrad").iterations == 5
    assert cfg.attack_config("gradient").iterations == 30
    with pytest.raises(ValueError, match="attack_overrides"):
        StudyConfig(methods=("gradient",),
                    attack_overrides={"seg-grad-cam": {"iterations": 5}}).validate()
    with pytest.raises(ValueError, match="config"):
        StudyConfig(attack_overrides={"gradient": {"iters": 5}}).validate()
    with pytest.raises(ValueError, match="at least 2 images"):
        robustness_study(_tiny(), torch.rand(1, 3, 8, 8), StudyConfig(target_kind="other-image"),
                         progress=False)
