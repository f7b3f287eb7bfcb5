"""A run killed after epoch k resumes and ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from segxai.core.runstore import RunStore, read_rows
from segxai.data import make_shapes
from segxai.models import TrainConfig, UNet, UNetConfig, train_model

CFG = TrainConfig(epochs=4, batch_size=8, lr=5e-3, seed=7, max_steps_per_epoch=3)
MODEL = UNetConfig(depth=2, base_width=4)


def _run(out: Path, stop_after: int | None = None):
    torch.manual_seed(0)
    net = UNet(MODEL)
    data = make_shapes(24, size=32, seed=1)
    val = make_shapes(8, size=32, seed=2)
    res = train_model(net, data, val, CFG, out_dir=out, progress=False,
                      stop_after_epoch=stop_after)
    return net, res


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_in_process_matches_uninterrupted(tmp_path) -> None:
    full, full_res = _run(tmp_path / "full")
    assert full_res.completed and full_res.resumed_from == 0
    part, part_res = _run(tmp_path / "part", stop_after=2)
    assert not part_res.completed and part_res.epochs_run == 2
    state = json.loads((tmp_path / "part" / "train_state.json").read_text())
    assert state["epochs_run"] == 2 and not state["completed"]
    assert not (tmp_path / "part" / "model.safetensors").exists()
    # a fresh process would build a fresh model with another initialisation: resuming must
    # overwrite it entirely
    torch.manual_seed(123)
    resumed, res = _run(tmp_path / "part")
    assert res.resumed_from == 2 and res.completed and res.epochs_run == 4
    assert _same_weights(full.state_dict(), resumed.state_dict())
    assert res.val_mious == full_res.val_mious
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "model.safetensors"))
    assert _same_weights(a, b)
    # a completed run is loaded, not retrained
    again, res2 = _run(tmp_path / "full")
    assert res2.completed and res2.resumed_from == 4
    assert _same_weights(again.state_dict(), full.state_dict())


def test_resume_refuses_other_configuration(tmp_path) -> None:
    _run(tmp_path / "run", stop_after=1)
    net = UNet(MODEL)
    data = make_shapes(24, size=32, seed=1)
    other = TrainConfig(epochs=5, batch_size=8, lr=5e-3, seed=7, max_steps_per_epoch=3)
    with pytest.raises(ValueError, match="other settings"):
        train_model(net, data, None, other, out_dir=tmp_path / "run", progress=False)


class _Killed(Exception):
    pass


def test_resume_after_a_kill_at_the_row_hook(tmp_path, monkeypatch) -> None:
    """A run stopped by RunStore.on_row right after epoch 3's row resumes to the same weights."""
    full, full_res = _run(tmp_path / "full")

    def kill(store, name, row):
        if name == "epochs" and row["epoch"] == 3:
            raise _Killed

    monkeypatch.setattr(RunStore, "on_row", kill)
    with pytest.raises(_Killed):
        _run(tmp_path / "part")
    monkeypatch.setattr(RunStore, "on_row", None)
    assert [r["epoch"] for r in read_rows(tmp_path / "part" / "epochs.jsonl")] == [1, 2, 3]
    torch.manual_seed(99)
    resumed, res = _run(tmp_path / "part")
    assert res.resumed_from == 3 and res.completed
    assert _same_weights(full.state_dict(), resumed.state_dict())
    assert res.val_mious == full_res.val_mious
    rows = read_rows(tmp_path / "part" / "epochs.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [(r["loss"], r["val_miou"]) for r in rows] == \
        [(r["loss"], r["val_miou"]) for r in read_rows(tmp_path / "full" / "epochs.jsonl")]


_CHILD = r"""
import os, signal, sys, torch
torch.set_num_threads(1)
from segxai.core.runstore import RunStore
from segxai.core.runstore import RunStore, read_rows
from segxai.data import make_shapes
from segxai.models import TrainConfig, UNet, UNetConfig, train_model

def kill(store, name, row):
    if name == "epochs" and row["epoch"] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

RunStore.on_row = kill
torch.manual_seed(0)
net = UNet(UNetConfig(depth=2, base_width=4))
cfg = TrainConfig(epochs=4, batch_size=8, lr=5e-3, seed=7, max_steps_per_epoch=3)
train_model(net, make_shapes(24, size=32, seed=1), make_shapes(8, size=32, seed=2), cfg,
            out_dir=sys.argv[1], progress=False)
"""


def test_resume_after_sigkill(tmp_path) -> None:
    """A training subprocess SIGKILLed (by the row hook) after epoch 2 resumes in-process."""
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(out), "2"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = out / "train_state.json"
    if not state.is_file():
        pytest.fail("the training subprocess wrote no train_state.json")
    killed_at = json.loads(state.read_text())["epochs_run"]
    assert killed_at == 2
    full, _ = _run(tmp_path / "full")
    resumed, res = _run(out)
    assert res.completed and res.resumed_from == killed_at
    assert _same_weights(full.state_dict(), resumed.state_dict())
