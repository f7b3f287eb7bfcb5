"""A run killed after epoch k resumes and ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

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


_CHILD = r"""
import sys, torch
torch.set_num_threads(1)
from segxai.data import make_shapes
from segxai.models import TrainConfig, UNet, UNetConfig, train_model
torch.manual_seed(0)
net = UNet(UNetConfig(depth=2, base_width=4))
cfg = TrainConfig(epochs=4, batch_size=8, lr=5e-3, seed=7, max_steps_per_epoch=3)
train_model(net, make_shapes(24, size=32, seed=1), make_shapes(8, size=32, seed=2), cfg,
            out_dir=sys.argv[1], progress=False)
"""


def test_resume_after_sigkill(tmp_path) -> None:
    """Kill a training subprocess with SIGKILL once it has finished an epoch, then resume."""
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(out)], env=env)
    state = out / "train_state.json"
    deadline = time.time() + 120
    epochs = 0
    try:
        while time.time() < deadline and proc.poll() is None:
            if state.is_file():
                try:
                    epochs = json.loads(state.read_text())["epochs_run"]
                except (json.JSONDecodeError, KeyError):
                    epochs = 0
                if epochs >= 1:
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    if not state.is_file():
        pytest.fail("the training subprocess wrote no train_state.json")
    killed_at = json.loads(state.read_text())["epochs_run"]
    full, _ = _run(tmp_path / "full")
    resumed, res = _run(out)
    assert res.completed and res.resumed_from == killed_at
    assert _same_weights(full.state_dict(), resumed.state_dict())
