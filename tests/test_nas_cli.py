"""``segxai nas search|validate|train`` end to end on a tiny teacher, and the student trainer."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from segxai.cli import main
from segxai.data import make_shapes
from segxai.models import TrainConfig, UNet, UNetConfig, save_checkpoint
from segxai.nas import (
    ScoringTask,
    StudentConfig,
    ValidationTask,
    cpu_latency_ms,
    train_student,
)
from segxai.nas.search import build_candidate
from segxai.nas.space import build_unet


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, base_width=4, num_classes=5))
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([0.0, 0.3, 0.3, 0.3, 0.3]))
    return save_checkpoint(net.eval(), tmp_path_factory.mktemp("teacher"))


def test_search_command_writes_search_json(teacher_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    args = ["nas", "search", "--quick", "--quiet", "--model", str(teacher_dir), "--out",
            str(out), "--population", "4", "--iterations", "2", "--children", "2",
            "--probe-images", "2", "--budget-params", "0.5"]
    assert main(args) == 0
    res = json.loads((out / "search.json").read_text())
    assert set(res["best"]) >= {"config", "params", "flops", "score"}
    assert set(res["teacher"]) >= {"params", "flops"}
    assert res["best"]["params"] <= 0.5 * res["teacher"]["params"]
    assert res["candidates_scored"] >= 3 and res["seconds"] > 0
    UNetConfig.from_dict(res["best"]["config"])
    # a second run resumes the finished state: same result, nothing re-scored
    assert main(args) == 0
    again = json.loads((out / "search.json").read_text())
    assert again["best"] == res["best"] and again["resumed_from"] == 2


def test_validate_command_writes_csvs(teacher_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "v"
    assert main(["nas", "validate", "--quick", "--quiet", "--model", str(teacher_dir),
                 "--out", str(out), "--architectures", "3", "--train-images", "16",
                 "--epochs", "1", "--proxies", "cam,params,random", "--probe-images", "2",
                 "--budget-params", "6000"]) == 0
    with open(out / "validation.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9
    assert set(rows[0]) >= {"architecture", "proxy", "score", "trained_miou"}
    with open(out / "correlations.csv") as fh:
        corr = list(csv.DictReader(fh))
    assert [c["proxy"] for c in corr] == ["cam", "params", "random"]
    for c in corr:
        assert -1 <= float(c["kendall_tau"]) <= 1 and 0 <= float(c["top_k_overlap"]) <= 1
    assert (out / "scatter.png").is_file()


def test_train_command_writes_metrics(teacher_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "t"
    cfg = json.dumps(UNetConfig(depth=2, base_width=2, num_classes=5).to_dict())
    assert main(["nas", "train", "--quick", "--quiet", "--model", str(teacher_dir), "--out",
                 str(out), "--config", cfg, "--epochs", "1", "--probe-images", "2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    names = [r["model"] for r in m["models"]]
    assert names == ["teacher", "student"]
    s = m["models"][1]
    assert 0 <= s["val_miou"] <= 1 and s["params"] < m["models"][0]["params"]
    assert s["cpu_latency_ms"] > 0
    assert (out / "student" / "model.safetensors").is_file()


def test_cli_rejects_bad_arguments(teacher_dir: Path, tmp_path: Path) -> None:
    assert main(["nas", "search", "--quiet", "--model", str(teacher_dir), "--proxy", "nope",
                 "--out", str(tmp_path / "x"), "--probe-images", "2"]) == 2
    assert main(["nas", "train", "--quiet", "--model", str(teacher_dir),
                 "--search", str(tmp_path / "missing"), "--probe-images", "2"]) == 2


def test_student_distillation_and_saliency_terms_train() -> None:
    torch.manual_seed(0)
    teacher = UNet(UNetConfig(depth=2, base_width=4, num_classes=5)).eval()
    with torch.no_grad():
        teacher.head.bias.copy_(torch.tensor([0.0, 0.3, 0.3, 0.3, 0.3]))
    data = make_shapes(16, size=32, seed=1)
    tc = TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=0, restore_best=False)
    student = build_candidate(build_unet, UNetConfig(depth=2, base_width=2, num_classes=5)
                              .to_dict(), seed=0)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    res = train_student(student, data, tc, teacher=teacher,
                        student_config=StudentConfig(alpha=0.5, lam=1.0), val_data=data,
                        progress=False)
    assert len(res["loss_history"]) == 4
    assert all(torch.isfinite(torch.tensor(res["loss_history"])))
    assert any(not torch.equal(v, before[k]) for k, v in student.state_dict().items())
    assert 0 <= res["val_miou"] <= 1
    with pytest.raises(ValueError, match="teacher"):
        train_student(student, data, tc, student_config=StudentConfig(lam=1.0))
    assert cpu_latency_ms(student, (3, 32, 32), repeats=3, warmup=1) > 0


class _Killed(Exception):
    """Raised by the RunStore.on_row hook to cut a run after some rows (a simulated kill)."""


def _validation_task():
    from segxai.nas import SearchSpace, build_probe
    from segxai.nas.validate import sample_architectures

    teacher = UNet(UNetConfig(depth=2, base_width=4, num_classes=5)).eval()
    with torch.no_grad():
        teacher.head.bias.copy_(torch.tensor([0.0, 0.3, 0.3, 0.3, 0.3]))
    data = make_shapes(4, size=32, seed=2)
    probe = build_probe(teacher, data.images[:2], data.masks[:2])
    task = ValidationTask(scoring=ScoringTask(probe=probe, proxies=("cam", "params")),
                          train_data=make_shapes(8, size=32, seed=3),
                          val_data=make_shapes(4, size=32, seed=4),
                          train_config=TrainConfig(epochs=1, batch_size=8, restore_best=False,
                                                   augment=False))
    space = SearchSpace(resolution=(32, 32), depths=(2,), base_widths=(2, 4), num_classes=5)
    return task, sample_architectures(space, None, 3, seed=0)


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


def test_validation_resumes_after_a_kill(tmp_path: Path, monkeypatch) -> None:
    import segxai.nas.validate as validate_mod
    from segxai.core.errors import SegxaiError
    from segxai.core.runstore import RunStore

    task, configs = _validation_task()
    reference = validate_mod.run_validation(task, configs, out_dir=tmp_path / "ref",
                                            progress=False)
    out = tmp_path / "cut"

    def kill_after_two(store, name, row):
        if len(store.rows(name)) >= 2:
            raise _Killed

    monkeypatch.setattr(RunStore, "on_row", kill_after_two)
    with pytest.raises(_Killed):
        validate_mod.run_validation(task, configs, out_dir=out, progress=False)
    monkeypatch.setattr(RunStore, "on_row", None)
    assert not (out / "validation.csv").exists()
    assert len((out / "validated.jsonl").read_text().splitlines()) == 2
    calls = []
    real = validate_mod.validation_item
    monkeypatch.setattr(validate_mod, "validation_item",
                        lambda t, item: calls.append(item) or real(t, item))
    resumed = validate_mod.run_validation(task, configs, out_dir=out, progress=False)
    assert [c for c, _ in calls] == configs[2:]  # only the unfinished architecture
    assert _without_timing(resumed["rows"]) == _without_timing(reference["rows"])
    assert resumed["correlations"] == reference["correlations"]
    assert (out / "correlations.csv").read_text() == \
        (tmp_path / "ref" / "correlations.csv").read_text()
    with pytest.raises(SegxaiError, match=r"differing: proxies, seed\)"):
        validate_mod.run_validation(
            ValidationTask(scoring=ScoringTask(probe=task.scoring.probe, proxies=("params",)),
                           train_data=task.train_data, val_data=task.val_data,
                           train_config=task.train_config),
            configs, seed=1, out_dir=out, progress=False)
