"""A continual run SIGKILLed between tasks resumes and ends with the same numbers."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from segxai.continual.experiment import ContinualConfig

ARGS = ["continual", "--quick", "--quiet", "--strategies", "none,full,saliency-box",
        "--epochs", "1", "--n-train", "40", "--size", "16", "--seeds", "1",
        "--budget-bytes", "12000"]

# Runs the CLI; with a task index as first argument, RunStore.on_row SIGKILLs the process
# right after the first row (= completed checkpoint) of that task.
_SCRIPT = r"""
import json, os, signal, sys
from segxai.cli import main
from segxai.core.runstore import RunStore

kill_after = int(sys.argv[1])
if kill_after >= 0:
    def on_row(store, name, row):
        if name == "rows" and row["task"] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    RunStore.on_row = on_row
sys.exit(main(json.loads(sys.argv[2])))
"""


def _run(out: Path, kill_after: int | None = None,
         args: list[str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    argv = [*(args if args is not None else ARGS), "--out", str(out)]
    return subprocess.run([sys.executable, "-c", _SCRIPT,
                           str(-1 if kill_after is None else kill_after), json.dumps(argv)],
                          env=env, capture_output=True, text=True, timeout=300)


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_killed_run_resumes_to_identical_results(tmp_path):
    killed = tmp_path / "killed"
    first = _run(killed, kill_after=1)
    assert first.returncode == -signal.SIGKILL, first.stderr
    partial = _rows(killed)
    # killed right after the first strategy's task 1: nothing later was written
    assert [(r["strategy"], r["task"]) for r in partial] == [("none", "0"), ("none", "1")]
    state = json.loads((killed / "runs" / "none" / "seed0" / "state.json").read_text())
    assert state["task"] == 1
    assert (killed / "runs" / "none" / "seed0" / "model_t1.safetensors").exists()
    resumed = _run(killed)
    assert resumed.returncode == 0, resumed.stderr
    clean = tmp_path / "clean"
    straight = _run(clean)
    assert straight.returncode == 0, straight.stderr
    a, b = _rows(killed), _rows(clean)
    assert len(a) == 3 * 3
    assert a == b
    assert {r["strategy"] for r in a} == {"none", "full", "saliency-box"}
    for r in a:
        assert int(r["bytes"]) <= 12000
    for name in ("summary.json", "miou_vs_task.png", "exemplars_vs_bytes.png"):
        assert (killed / name).exists()
    # a different configuration in the same directory is refused
    cfg = json.loads((clean / "config.json").read_text())
    assert ContinualConfig.from_dict(cfg).size == 16
    other = _run(clean, args=[*ARGS[:-2], "--budget-bytes", "9999"])
    assert other.returncode == 2 and "other settings" in other.stderr
    assert "budget_bytes" in other.stderr


def test_config_validation():
    with pytest.raises(ValueError, match="strategies"):
        ContinualConfig(strategies=["jpeg"])
    with pytest.raises(ValueError, match="tasks"):
        ContinualConfig(tasks=[[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="ratio"):
        ContinualConfig(ratio=1.5)
    with pytest.raises(ValueError, match="explainer"):
        ContinualConfig(explainer="nope")
