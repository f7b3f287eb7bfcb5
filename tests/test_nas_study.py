"""``segxai nas study``: one resumable run of validation, searches and winners."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from segxai.core.runstore import RunStore
from segxai.data import make_shapes
from segxai.models import TrainConfig, UNet, UNetConfig
from segxai.nas import ScoringTask, SearchSpace, ValidationTask, build_probe
from segxai.nas.band import band_budget
from segxai.nas.study import StudySettings, run_study, summarise_winners


class _Killed(Exception):
    """Raised by the RunStore.on_row hook: a simulated kill after some rows."""


def _setup():
    torch.manual_seed(0)
    teacher = UNet(UNetConfig(depth=2, base_width=8, num_classes=5)).eval()
    with torch.no_grad():
        teacher.head.bias.copy_(torch.tensor([0.0, 0.3, 0.3, 0.3, 0.3]))
    data = make_shapes(4, size=32, seed=2)
    probe = build_probe(teacher, data.images, data.masks)
    space = SearchSpace(resolution=(32, 32), num_classes=5)
    budget = band_budget(0.15, 0.25, sum(p.numel() for p in teacher.parameters()), space)
    task = ValidationTask(
        scoring=ScoringTask(probe=probe, proxies=("cam", "params", "random"), init_seeds=2),
        train_data=make_shapes(8, size=32, seed=3), val_data=make_shapes(4, size=32, seed=4),
        train_config=TrainConfig(epochs=1, batch_size=8, restore_best=False, augment=False))
    settings = StudySettings(architectures=3, search_proxies=("cam", "params"), seeds=2,
                             population=3, iterations=1, children=2, init_seeds=2,
                             resamples=100)
    return teacher, probe, budget, task, settings


def _strip(result: dict) -> dict:
    timing = {"train_seconds", "search_seconds", "cpu_latency_ms", "seconds"}
    return {"winners": [{k: v for k, v in r.items() if k not in timing}
                        for r in result["winners"]],
            "validation": [{k: v for k, v in r.items() if k not in timing}
                           for r in result["validation"]["rows"]],
            "reference": {k: v for k, v in result["reference"].items() if k not in timing}}


def test_study_resumes_after_a_kill(tmp_path: Path, monkeypatch) -> None:
    teacher, probe, budget, task, settings = _setup()
    reference = run_study(teacher, probe, budget, task, settings, out_dir=tmp_path / "ref",
                          progress=False)
    assert (tmp_path / "ref" / "study.json").is_file()
    assert (tmp_path / "ref" / "table.csv").is_file()
    # 2 proxies × 2 seeds plain + 2 CAM winners with distillation + saliency
    assert len(reference["winners"]) == 6
    assert {(t["proxy"], t["mode"]) for t in reference["table"]} == {
        ("cam", "plain"), ("cam", "distill+saliency"), ("params", "plain")}
    for r in reference["winners"]:
        assert budget.min_params <= r["params"] <= budget.max_params
    corr = {c["proxy"]: c for c in reference["validation"]["correlations"]}
    assert set(corr) == {"cam", "params", "random"}
    assert "partial_tau_lo" in corr["cam"]

    out = tmp_path / "cut"

    def kill_after_three(store, name, row):
        if name == "winners" and len(store.rows(name)) >= 3:
            raise _Killed

    monkeypatch.setattr(RunStore, "on_row", kill_after_three)
    with pytest.raises(_Killed):
        run_study(teacher, probe, budget, task, settings, out_dir=out, progress=False)
    monkeypatch.setattr(RunStore, "on_row", None)
    assert not (out / "study.json").exists()
    assert len((out / "winners.jsonl").read_text().splitlines()) == 3
    import segxai.nas.study as study_mod

    calls = []
    real = study_mod.winner_item
    monkeypatch.setattr(study_mod, "winner_item",
                        lambda t, item: calls.append(item) or real(t, item))
    resumed = run_study(teacher, probe, budget, task, settings, out_dir=out, progress=False)
    assert len(calls) == 3  # only the unfinished winners are trained again
    assert _strip(resumed) == _strip(reference)
    # more architectures extend the validation; searches and winners are not redone
    calls.clear()
    validated = []
    import segxai.nas.validate as validate_mod

    real_item = validate_mod.validation_item
    monkeypatch.setattr(validate_mod, "validation_item",
                        lambda t, item: validated.append(item) or real_item(t, item))
    extended = run_study(teacher, probe, budget, task, replace(settings, architectures=4),
                         out_dir=out, progress=False)
    assert calls == [] and len(validated) == 1
    assert extended["validation"]["rows"][:3] == resumed["validation"]["rows"]
    assert len(extended["validation"]["rows"]) == 4
    from segxai.core.errors import SegxaiError

    with pytest.raises(SegxaiError, match="differing"):
        run_study(teacher, probe, budget, task, StudySettings(architectures=4), out_dir=out,
                  progress=False)


def test_summarise_winners_means_and_spreads() -> None:
    rows = [{"proxy": "cam", "mode": "plain", "params": p, "flops": 10, "val_miou": m,
             "cpu_latency_ms": 1.0, "search_seconds": 2.0}
            for p, m in ((20, 0.95), (30, 0.85), (25, 0.99))]
    (t,) = summarise_winners(rows, {"params": 100, "flops": 100, "val_miou": 1.0})
    assert t["params_pct_mean"] == pytest.approx(25.0)
    assert t["miou_pct_min"] == pytest.approx(85.0) and t["miou_pct_max"] == pytest.approx(99.0)
    assert t["miou_pct_sd"] == pytest.approx(math.sqrt(52.0))  # SD of 95, 85, 99
    assert t["reached"] == 2 and t["seeds"] == 3


def test_validation_rows_are_identical_with_worker_processes() -> None:
    from segxai.core.executor import ProcessExecutor
    from segxai.nas import run_validation, sample_architectures

    _, probe, budget, task, _ = _setup()
    space = SearchSpace(resolution=(32, 32), num_classes=5)
    configs = sample_architectures(space, budget, 2, seed=0)
    local = run_validation(task, configs, progress=False, resamples=0)
    with ProcessExecutor(2, threads=1) as ex:
        fanned = run_validation(task, configs, backend=ex, progress=False, resamples=0)
    strip = _strip({"winners": [], "validation": local, "reference": {}})
    assert strip == _strip({"winners": [], "validation": fanned, "reference": {}})


def test_cli_study_search_proxies_match_the_library_default() -> None:
    from segxai.cli.commands.nas import STUDY_SEARCH
    from segxai.nas.study import StudySettings

    assert tuple(STUDY_SEARCH["full"].split(",")) == StudySettings().search_proxies
