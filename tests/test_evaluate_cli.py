"""The evaluation runner and ``segxai evaluate``: tidy table, resume after SIGKILL."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from kill_after_rows import run_killed
from segxai.core.errors import SegxaiError
from segxai.evaluate import RANDOM_BASELINE, EvalConfig, evaluate_methods, interpret
from segxai.models import save_checkpoint
from segxai.models.unet import UNet, UNetConfig


class _Blob(nn.Module):
    """Class 1 where the red channel is bright, class 0 elsewhere (a tiny 'trained' model)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[1, 0, 1, 1] = 10.0
            self.conv.bias.copy_(torch.tensor([0.0, -5.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.zeros(3, 3, 16, 16)
    x[:, 0, 4:9, 5:11] = 1.0
    x[2] = 0.0  # no foreground predicted here
    masks = (x[:, 0] > 0.5).long()
    return x, masks


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_runner_tidy_table_and_checkpoint(tmp_path: Path) -> None:
    x, masks = _images()
    config = EvalConfig(methods=["gradient"], steps=8, seed=0)
    res = evaluate_methods(_Blob(), x, masks, config=config, out_dir=tmp_path, progress=False)
    assert res.computed == 6
    rows = _read_csv(tmp_path / "results.csv")
    assert list(rows[0]) == ["image", "method", "metric", "value"]
    metrics = {r["metric"] for r in rows}
    for m in ("deletion_auc", "insertion_auc", "context_deletion_auc", "seconds",
              "forward_passes", "backward_passes", "pointing_game", "energy_pointing_game",
              "sparseness", "complexity"):
        assert m in metrics
    # image 2 has no foreground: reported as skipped, not silently dropped
    assert {f["image"] for f in res.skipped} == {"2"} and not res.failures
    assert "Skipped image(s) 2" in (tmp_path / "summary.md").read_text()
    assert {r["method"] for r in rows} == {"gradient", RANDOM_BASELINE}
    grad = {r["metric"]: float(r["value"]) for r in rows
            if r["image"] == "0" and r["method"] == "gradient"}
    assert grad["forward_passes"] == 1 and grad["backward_passes"] == 1
    assert grad["pointing_game"] == 1.0
    assert (tmp_path / "summary.md").read_text().startswith("# segxai evaluate")
    for name in ("curves.png", "auc_vs_seconds.png", "noisiness_vs_cost.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 0
    # rerun: nothing recomputed, identical table
    again = evaluate_methods(_Blob(), x, masks, config=config, out_dir=tmp_path, progress=False)
    assert again.computed == 0
    assert _read_csv(tmp_path / "results.csv") == rows
    # a method added later is computed alone (3 images: 2 explained, 1 skipped)
    more = evaluate_methods(_Blob(), x, masks, out_dir=tmp_path, progress=False,
                            config=EvalConfig(methods=["gradient", "seg-grad-cam"], steps=8))
    assert more.computed == 3
    assert {r["method"] for r in _read_csv(tmp_path / "results.csv")} == {
        "gradient", "seg-grad-cam", RANDOM_BASELINE}
    # other settings in the same directory are refused, naming the differing keys
    with pytest.raises(ValueError, match="other settings"):
        evaluate_methods(_Blob(), x, masks, config=EvalConfig(methods=["gradient"], steps=9),
                         out_dir=tmp_path, progress=False)


def test_resume_with_other_settings_names_the_keys(tmp_path: Path) -> None:
    x, masks = _images()
    evaluate_methods(_Blob(), x, masks, config=EvalConfig(methods=["gradient"], steps=8),
                     out_dir=tmp_path, progress=False, write_figures=False)
    with pytest.raises(SegxaiError, match=r"differing: score, steps\)"):
        evaluate_methods(_Blob(), x, masks, out_dir=tmp_path, progress=False,
                         config=EvalConfig(methods=["gradient"], steps=9, score="logit_ratio"))
    # warmup changes timings only and methods may be added: both resume
    again = evaluate_methods(_Blob(), x, masks, out_dir=tmp_path, progress=False,
                             write_figures=False,
                             config=EvalConfig(methods=["gradient", "seg-grad-cam"], steps=8,
                                               warmup=False))
    assert again.computed == 3
    assert json.loads((tmp_path / "run.json").read_text())["kind"] == "evaluate"


def test_interpretation_follows_the_numbers() -> None:
    summary = [
        {"method": "a", "images": 20, "deletion_auc": 0.2, "insertion_auc": 0.8, "seconds": 1.0},
        {"method": "b", "images": 20, "deletion_auc": 0.5, "insertion_auc": 0.4, "seconds": 0.1},
        {"method": RANDOM_BASELINE, "images": 20, "deletion_auc": 0.45, "insertion_auc": 0.5,
         "seconds": 0.0},
    ]
    text = "\n".join(interpret(summary))
    assert "Best deletion AUC (lower is better): a (0.200)" in text
    assert "Not better than random on deletion_auc: b." in text
    assert "Not better than random on insertion_auc: b." in text
    assert "Pareto-optimal on (seconds, insertion AUC): a, b." in text


def _cli(args: list[str], kill_after: int | None = None) -> subprocess.CompletedProcess:
    """``segxai evaluate ARGS`` in a subprocess, SIGKILLed after ``kill_after`` rows."""
    return run_killed(f"""
        import sys
        from segxai.cli import main
        sys.exit(main(["evaluate", *{args!r}]))
    """, kill_after, rows="progress")


def _without_seconds(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["metric"] != "seconds"]


def test_cli_resume_after_sigkill(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = save_checkpoint(UNet(UNetConfig(depth=2, base_width=4, num_classes=5)),
                           tmp_path / "ckpt")
    common = ["--quick", "--quiet", "--model", str(ckpt), "--images", "2", "--steps", "6",
              "--method", "gradient", "--method", "seg-grad-cam"]
    # the uninterrupted reference, in-process with the same settings and data as the CLI
    from segxai.data import make_shapes
    from segxai.models import load_checkpoint

    ds = make_shapes(16, size=64, seed=10_000)
    model = load_checkpoint(ckpt)
    fg = [i for i in range(16) if bool((model(ds.images[i:i + 1]).argmax(1) > 0).any())][:2]
    evaluate_methods(model, ds.images[fg], ds.masks[fg], image_ids=[str(i) for i in fg],
                     config=EvalConfig(methods=["gradient", "seg-grad-cam"], steps=6, seed=0),
                     out_dir=tmp_path / "full", progress=False)

    part = tmp_path / "part"
    killed = _cli([*common, "--out", str(part)], kill_after=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (part / "results.csv").exists()
    first = (part / "progress.jsonl").read_text().splitlines()
    assert len(first) == 2

    resumed = _cli([*common, "--out", str(part)])
    assert resumed.returncode == 0, resumed.stderr
    assert "4 pair(s) computed" in resumed.stdout
    lines = (part / "progress.jsonl").read_text().splitlines()
    assert lines[:2] == first  # finished pairs kept byte for byte (timings included)
    assert len(lines) == 6
    assert _without_seconds(_read_csv(part / "results.csv")) == \
        _without_seconds(_read_csv(tmp_path / "full" / "results.csv"))
    summary = json.loads((part / "summary.json").read_text())
    assert {r["method"] for r in summary["summary"]} == {"gradient", "seg-grad-cam",
                                                        RANDOM_BASELINE}


def test_cli_rejects_unknown_method(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from segxai.cli import main

    assert main(["evaluate", "--quick", "--quiet", "--method", "gradiant",
                 "--out", str(tmp_path)]) == 2
    assert "did you mean gradient" in capsys.readouterr().err
    assert main(["evaluate", "--quick", "--quiet", "--param", "oops", "--out",
                 str(tmp_path)]) == 2
    assert "--param: expected KEY=VALUE" in capsys.readouterr().err


def test_rq1_report_section_quick(tmp_path: Path) -> None:
    from segxai.report.context import DemoContext
    from segxai.report.sections import s30_rq1

    x, masks = _images()
    ctx = DemoContext(model=_Blob(), images=x, masks=masks, class_names=["bg", "blob"],
                      out_dir=tmp_path, quick=True, progress=False)
    sec = s30_rq1.build(ctx)
    assert sec.title == s30_rq1.TITLE and sec.order == s30_rq1.ORDER
    methods = {r["method"] for r in sec.data["summary"]}
    assert {"gradient", RANDOM_BASELINE} <= methods
    assert "Interpretation" in sec.body and "<table>" in sec.body
    assert sec.data["findings"] and (tmp_path / "figures" / "rq1_curves.png").is_file()


def test_cli_context_bias_with_a_given_model(tmp_path: Path) -> None:
    from segxai.cli import main

    torch.manual_seed(0)
    ckpt = save_checkpoint(UNet(UNetConfig(depth=2, base_width=4, num_classes=5)),
                           tmp_path / "ckpt")
    out = tmp_path / "out"
    code = main(["evaluate", "--quick", "--quiet", "--model", str(ckpt), "--images", "1",
                 "--steps", "4", "--method", "gradient", "--context-bias",
                 "--bias-model", str(ckpt), "--out", str(out)])
    assert code == 0
    data = json.loads((out / "context_bias.json").read_text())
    assert [r["method"] for r in data["benchmark"]] == ["gradient"]
    assert len(data["sanity"]["iou_unbiased"]) == 5 and "learned_bias" in data["sanity"]
