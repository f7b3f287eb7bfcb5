"""benchmarks/run_all.py reads each benchmark's output into one table (parsers only; running
the benchmarks takes minutes, so ``make bench BENCH_ARGS=--quick`` is the smoke run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import run_all  # noqa: E402

CORE = """model deeplabv3_mobilenet_v3_large (5 classes), input 1x3x128x128, class 2
| ours | peer | ours s | peer s | peer/ours | agreement |
|---|---|---|---|---|---|
| gradient | captum Saliency | 0.153 | 0.166 | 1.08x | r=1.000000, maxdiff=0.0e+00 |
| seg-grad-cam | grad-cam GradCAM | 0.171 | 0.303 | 1.77x | r=1.000000 |
"""
DELETION = """device: cpu; torch threads: 1; batch size 32; repeats 1 (medians)
baseline: 20 batched forwards        3.130 s  (all: 3.130)
curves:   10-step deletion + insertion    3.526 s  (21 forwards; all: 3.526)
ratio curves / baseline: 1.127 (target <= 1.2)
"""
ATTACK = """model: built-in quick, 1 images
      gradient img 0: target r +0.1 -> +0.350, agreement 0.9939

method         success  target_r  agreement  seconds/image
gradient       0.00     +0.350    0.9939     0.9
"""


def test_every_benchmark_output_becomes_rows(tmp_path: Path) -> None:
    core = run_all._parse_core(CORE, tmp_path)
    assert [(r.ours, r.peer) for r in core] == [("gradient", "captum Saliency"),
                                                ("seg-grad-cam", "grad-cam GradCAM")]
    assert core[1].ratio == pytest.approx(0.303 / 0.171)
    (dele,) = run_all._parse_deletion(DELETION, tmp_path)
    assert dele.ours_s == 3.526 and dele.peer_s == 3.130
    (att,) = run_all._parse_attack(ATTACK, tmp_path)
    assert att.ours_s == 0.9 and att.peer_s == run_all.ATTACK_GOAL_S and "success 0.00" in att.note
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"rows": [{"method": "occlusion", "peer": "captum", "ours_s": 2.0,
                                          "peer_s": 3.0, "agreement": "max|d|/range = 1e-6"}]}))
    (pert,) = run_all._parse_perturbation("", path)
    table = run_all.format_table([*core, dele, att, pert])
    assert len(table.splitlines()) == 2 + 5
    assert "| 1.50x | max\\|d\\|/range = 1e-6 |" in table
    assert set(run_all.BENCHMARKS) == {p.stem for p in Path(run_all.HERE).glob("bench_*.py")}


def test_workers_benchmark_becomes_a_row(tmp_path: Path) -> None:
    out = ("| run | torch threads per process | wall s | CPU s | results.csv as --workers 1 |\n"
           "|---|---|---|---|---|\n"
           "| no --workers (one process) | torch default | 122.3 | 57.2 | identical |\n"
           "| --workers 1 | 1 | 125.5 | 50.0 | identical |\n"
           "| --workers 2 | 1 | 62.5 | 66.3 | identical |\n")
    (row,) = run_all._parse_workers(out, tmp_path)
    assert row.ours == "evaluate --workers 2" and row.peer == "evaluate --workers 1"
    assert row.ratio == pytest.approx(125.5 / 62.5)


def test_memory_benchmark_pairs_ours_with_the_peer(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps([
        {"method": "gradient", "peak_mib": 900.0, "growth_mib": 100.0, "seconds": 1.0},
        {"method": "captum Saliency", "peak_mib": 950.0, "growth_mib": 150.0, "seconds": 1.0},
        {"method": "seg-grad-cam", "peak_mib": 800.0, "growth_mib": 50.0, "seconds": 1.0}]))
    (row,) = run_all._parse_memory("", path)
    assert row.benchmark == "memory" and row.ratio == pytest.approx(1.5)


def test_smoothgrad_benchmark_rows_keep_the_ratio_ranges(tmp_path: Path) -> None:
    out = ("| segxai variant | ours s (median wall / CPU) | NoiseTunnel s | ratio wall: median "
           "[min, max] | ratio CPU: median [min, max] | agreement |\n|---|---|---|---|---|---|\n"
           "| segxai smoothgrad | 2.73 / 0.94 | 3.90 / 1.30 | 1.38x [1.34, 1.76] | "
           "1.38x [1.37, 1.41] | r=0.83 |\n")
    (row,) = run_all._parse_smoothgrad(out, tmp_path / "unused.json")
    assert (row.ours, row.peer, row.ours_s, row.peer_s) == ("segxai smoothgrad",
                                                            "captum NoiseTunnel", 2.73, 3.90)
    assert "CPU 1.38x [1.37, 1.41]" in row.note


def test_train_memory_format_benchmark_row(tmp_path: Path) -> None:
    out = ("total over 10 architectures x 40 steps: NCHW 54.0 s, NHWC 41.6 s CPU: "
           "channels-last 1.30x faster\n")
    (row,) = run_all._parse_train_memory_format(out, tmp_path / "unused.json")
    assert (row.ours_s, row.peer_s) == (41.6, 54.0)
    assert row.ratio == pytest.approx(54.0 / 41.6)
    with pytest.raises(ValueError, match="no total line"):
        run_all._parse_train_memory_format("nothing", tmp_path / "unused.json")
