"""The RQ3 study killed (SIGKILL) between tasks resumes and ends with the same analysis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

# Runs a tiny study; with k >= 0, RunStore.on_row SIGKILLs the process at the k-th row.
_SCRIPT = r"""
import json, os, signal, sys
from segxai.continual.study import rq3_configs, run_rq3
from segxai.core.runstore import RunStore

kill_at = int(sys.argv[1])
seen = []
if kill_at >= 0:
    def on_row(store, name, row):
        seen.append(row)
        if len(seen) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    RunStore.on_row = on_row
configs = rq3_configs(True, ["r4", "r16"], ["none", "full", "saliency-box", "gt-box", "joint"],
                      seeds=[0, 1], size=16, n_train=40, n_val=12, epochs=1, base_epochs=1,
                      base_target=None, budget_bytes=12000, task_target=0.9, task_rounds=2)
run_rq3(configs, sys.argv[2], progress=False)
"""


def _run(out: Path, kill_at: int = -1) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", _SCRIPT, str(kill_at), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)


def _analysis(out: Path) -> dict:
    data = json.loads((out / "rq3.json").read_text())
    data.pop("wall_seconds_this_call")
    return data


def test_rq3_killed_resumes_to_identical_analysis(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    # r4 per seed: 4 strategies x 3 tasks = 12 rows; the 14th is seed 1's second, in r4
    first = _run(killed, kill_at=14)
    assert first.returncode == -signal.SIGKILL, first.stderr
    assert not (killed / "rq3.json").exists()
    assert _run(killed).returncode == 0
    assert _run(clean).returncode == 0
    a, b = _analysis(killed), _analysis(clean)
    assert a == b
    arms = {e["arm"] for e in a["table"]}
    assert arms == {"r4", "r16"}
    assert {e["strategy"] for e in a["table"] if e["arm"] == "r4"} == {
        "none", "full", "saliency-box", "gt-box", "joint"}
    pairs = {(p["arm"], p["a"], p["b"], p["metric"]) for p in a["pairs"]}
    assert ("r4", "saliency-box", "full", "miou_old") in pairs
    assert ("r16", "saliency-box", "full", "miou_old") in pairs  # full taken from r4
    assert ("r4", "full", "none", "miou_old") in pairs
    assert ("r16", "saliency-box", "gt-box", "miou_old") in pairs
    # the r16 arm reused r4's task-0 checkpoints
    for seed in (0, 1):
        assert (killed / "r16" / "base" / f"seed{seed}" / "model.safetensors").read_bytes() == \
            (killed / "r4" / "base" / f"seed{seed}" / "model.safetensors").read_bytes()
    assert (clean / "rq3_seeds.csv").read_text() == (killed / "rq3_seeds.csv").read_text()
