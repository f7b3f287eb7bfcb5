"""``benchmarks/nas_schedule_check.py``: the teacher's architecture trained from several
initialisations exactly as the study's reference unit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from segxai.models import UNet, UNetConfig, save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import nas_schedule_check  # noqa: E402


def test_schedule_check_trains_each_initialisation_like_the_reference_unit(tmp_path: Path,
                                                                          capsys) -> None:
    torch.manual_seed(0)
    teacher = save_checkpoint(UNet(UNetConfig(depth=2, base_width=4, num_classes=5)).eval(),
                              tmp_path / "teacher")
    out = tmp_path / "runs.jsonl"
    args = ["--model", str(teacher), "--quick", "--out", str(out)]
    assert nas_schedule_check.main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["init"] for r in rows] == ["teacher-arch", "t1"]
    for r in rows:
        assert r["epochs"] == 1 and r["steps"] == 8 and r["memory_format"] == "channels_last"
        assert 0.0 <= r["miou"] <= 1.0 and len(r["iou"]) == 5
    # one initialisation trains to the same result again (--part 0/2 runs only the first)
    again = tmp_path / "again.jsonl"
    assert nas_schedule_check.main([*args[:-1], str(again), "--part", "0/2"]) == 0
    assert json.loads(again.read_text())["miou"] == rows[0]["miou"]
    capsys.readouterr()
