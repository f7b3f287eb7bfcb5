"""benchmarks/manipulation_variants.py: --summarize pools each run's last checkpoint with a
t-interval over runs (checked against a hand computation)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import manipulation_variants  # noqa: E402


def _write(path: Path, variant: str, rows: list[tuple[int, list[float], list[float]]]) -> Path:
    with path.open("w") as fh:
        for step, r, agree in rows:
            fh.write(json.dumps({
                "variant": variant, "step": step,
                "r_frame": {"mean": sum(r) / len(r)}, "per_image_r": r,
                "agreement": {"mean": sum(agree) / len(agree)},
                "per_image_agreement": agree}) + "\n")
    return path


def test_summarize_pools_the_last_checkpoints(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # run means r 0.8, 0.9, 1.0 at the last step (an earlier step and another variant ignored)
    files = [
        _write(tmp_path / "s0.jsonl", "pearson-default", [(100, [0.0, 0.0], [0.5, 0.5]),
                                            (200, [0.7, 0.9], [0.99, 0.97])]),
        _write(tmp_path / "s1.jsonl", "pearson-default", [(200, [0.9, 0.9], [0.99, 0.99])]),
        _write(tmp_path / "s2.jsonl", "pearson-default", [(200, [1.0, 1.0], [1.0, 0.96])]),
    ]
    with (tmp_path / "s2.jsonl").open("a") as fh:
        fh.write(json.dumps({"variant": "other", "step": 900}) + "\n")
    manipulation_variants.main(["--summarize", *map(str, files), "--variants", "pearson-default"])
    out = json.loads(capsys.readouterr().out)
    r = out["r_frame"]
    assert out["runs"] == 3 and out["step"] == [200]
    assert r["per_run"] == pytest.approx([0.8, 0.9, 1.0])
    # mean 0.9, sd 0.1, t(0.975, 2) = 4.3027: half-width 4.3027 * 0.1 / sqrt(3) = 0.2484
    assert r["mean"] == pytest.approx(0.9)
    assert r["t_ci"] == pytest.approx([0.9 - 0.24841, 0.9 + 0.24841], abs=1e-4)
    assert r["runs_at_goal"] == 3 and r["images_at_goal"] == 5 and r["images"] == 6
    a = out["agreement"]
    assert a["runs_at_goal"] == 3 and a["images_at_goal"] == 4
    with pytest.raises(SystemExit, match="no checkpoint of .default."):
        manipulation_variants.main(["--summarize", str(files[0]), "--variants", "default"])
