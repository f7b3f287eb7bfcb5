"""``segxai evaluate --study rq1`` with ``--workers``: the same numbers as one process, on a
tiny configuration (a small untrained U-Net stands in for the trained models), and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from segxai.core.errors import SegxaiError
from segxai.core.executor import InProcessExecutor, ProcessExecutor
from segxai.data.synthetic import make_shapes
from segxai.evaluate import rq1
from segxai.evaluate.rq1 import Rq1Config, run_rq1
from segxai.evaluate.rq1_models import TrainedModel, train_all
from segxai.models.unet import UNet, UNetConfig

TINY = Rq1Config(images=3, layer_images=2, substrate_images=2, bias_images=2, steps=4,
                 models=("unet",), methods=("gradient", "seg-grad-cam"),
                 layer_methods=("seg-grad-cam",), substrates=("road", "blur"), method_params={})


def _tiny_model(spec: Any, *args: Any, **kwargs: Any) -> TrainedModel:
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, base_width=4, num_classes=5)).eval()
    with torch.no_grad():  # a foreground class predicted somewhere in every image
        net.head.bias.copy_(torch.tensor([0.0, 0.1, 0.1, 0.1, 0.1]))
    return TrainedModel(spec.name, net, make_shapes(6, size=32, seed=1), 0.0, 0.0)


@pytest.fixture
def tiny_study(monkeypatch: pytest.MonkeyPatch) -> None:
    """The study's parts with a tiny model: no training, no context-bias models."""
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(rq1, "trained_model", _tiny_model)
    monkeypatch.setattr(rq1, "train_all", lambda names, *a, **k: calls.append(tuple(names))
                        or {n: 0.0 for n in names})
    monkeypatch.setattr(rq1, "_bias_part", lambda *a, **k: {"methods": {}})


def _numbers(result: dict[str, Any]) -> str:
    """The study's numbers without wall-clock times (and the figure's path)."""
    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items()
                    if k not in ("seconds", "timings", "train_seconds", "figure")}
        if isinstance(obj, list):  # the per-explanation seconds are measured, not computed
            return [strip(v) for v in obj
                    if not (isinstance(v, dict) and v.get("metric") == "seconds")]
        return obj

    return json.dumps(strip(result), sort_keys=True)


def _rows(out: Path) -> list[str]:
    """Every run's results.csv without the ``seconds`` metric."""
    lines = []
    for csv in sorted(out.rglob("results.csv")):
        lines += [f"{csv.relative_to(out)}:{line}" for line in csv.read_text().splitlines()
                  if ",seconds," not in line]
    return lines


@pytest.mark.usefixtures("tiny_study")
def test_workers_give_the_numbers_of_one_process(tmp_path: Path) -> None:
    one = run_rq1(tmp_path / "one", TINY, executor=InProcessExecutor(threads=1))
    two = run_rq1(tmp_path / "two", TINY, executor=ProcessExecutor(2, threads=1))
    assert _numbers(one) == _numbers(two)
    assert _rows(tmp_path / "one") == _rows(tmp_path / "two")
    part = one["models"][0]
    assert part["images"] == 3 and part["layers"]["images"] == 2
    assert {"main", "layers", "substrates"} <= set(part["timings"])
    assert one["complete"] is True and "## Conclusions" in (tmp_path / "two" / "rq1.md").read_text()


@pytest.mark.usefixtures("tiny_study")
def test_a_finished_study_is_read_back_not_recomputed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    first = run_rq1(tmp_path, TINY)
    import segxai.evaluate.runner as runner

    def boom(adapter: Any, images: Any, masks: Any, ids: Any, todo: list[Any], *args: Any,
             **kwargs: Any) -> int:
        assert not todo, f"finished pairs recomputed: {todo}"
        return 0

    monkeypatch.setattr(runner, "_compute", boom)
    assert _numbers(run_rq1(tmp_path, TINY)) == _numbers(first)


def test_bad_models_are_refused() -> None:
    with pytest.raises(SegxaiError, match=r"models: expected .*'unet'.*got 'resnet'"):
        train_all(["resnet"])
    with pytest.raises(SegxaiError, match="models: expected names from unet, unet-noskip"):
        Rq1Config(models=("resnet",))


def test_cli_study_workers_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from segxai.cli import main

    with pytest.raises(SystemExit) as info:  # argparse refuses it before any work
        main(["evaluate", "--study", "rq1", "--quick", "--quiet", "--workers", "0",
              "--out", str(tmp_path)])
    assert info.value.code == 2 and "--workers" in capsys.readouterr().err
    # --images 1 cannot give an interval: refused before any model is trained
    assert main(["evaluate", "--study", "rq1", "--quiet", "--images", "1",
                 "--out", str(tmp_path)]) == 2
    assert "images: expected at least 2 images" in capsys.readouterr().err
    assert main(["evaluate", "--study", "rq1", "--quiet", "--method", "gradiant",
                 "--out", str(tmp_path)]) == 2
    assert "did you mean gradient" in capsys.readouterr().err
    assert not (tmp_path / "rq1.json").exists()


def test_lraspp_pickles_to_workers() -> None:
    """The LRASPP of the study is sent to --workers processes: it must pickle and return the
    logits tensor after the round trip."""
    import pickle

    from segxai.evaluate.rq1_models import ModelSpec, build_model

    torch.manual_seed(0)
    net = build_model(ModelSpec("lraspp")).eval()
    again = pickle.loads(pickle.dumps(net))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(x), net(x)) and net(x).shape == (1, 5, 64, 64)


def test_sized_scales_the_parts_from_the_main_table() -> None:
    full = Rq1Config()
    assert (full.images, full.layer_images, full.substrate_images, full.bias_images) == \
        (100, 10, 10, 50)
    small = full.sized(30)
    assert (small.images, small.layer_images, small.substrate_images, small.bias_images) == \
        (30, 3, 3, 15)
    assert full.sized(4).layer_images == 2  # never fewer than 2: every mean gets an interval
    with pytest.raises(SegxaiError, match="images: expected at least 2 images"):
        full.sized(1)


@pytest.mark.usefixtures("tiny_study")
def test_an_interrupted_study_has_its_main_tables_written(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rq1, "_layers", stop)
    with pytest.raises(KeyboardInterrupt):
        run_rq1(tmp_path, TINY)
    partial = json.loads((tmp_path / "rq1.json").read_text())
    assert partial["complete"] is False and partial["models"][0]["images"] == 3
    assert "layers" not in partial["models"][0]
    text = (tmp_path / "rq1.md").read_text()
    assert "Interrupted or still running" in text and "| seg-grad-cam |" in text
    monkeypatch.undo()
    monkeypatch.setattr(rq1, "trained_model", _tiny_model)
    monkeypatch.setattr(rq1, "train_all", lambda names, *a, **k: {n: 0.0 for n in names})
    monkeypatch.setattr(rq1, "_bias_part", lambda *a, **k: {"methods": {}})
    assert run_rq1(tmp_path, TINY)["complete"] is True  # the same call resumes and finishes
