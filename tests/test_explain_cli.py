"""``segxai explain`` end to end on a torchvision model and an image file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segxai.cli import build_parser, main


def test_help_documents_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert "explain" in commands
    for name, sub in commands.items():
        assert sub.description or sub.format_help(), name
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "explain" in capsys.readouterr().out


def test_explain_torchvision_model_on_image_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = tmp_path / "in.png"
    Image.fromarray((rng.random((40, 48, 3)) * 255).astype("uint8")).save(img)
    out = tmp_path / "out"
    code = main(["explain", "--model", "lraspp_mobilenet_v3_large", "--num-classes", "3",
                 "--image", str(img), "--size", "48", "--roi", "whole", "--class", "1",
                 "--method", "gradient", "--method", "seg-grad-cam", "--out", str(out),
                 "--quiet"])
    assert code == 0
    for m in ("gradient", "seg-grad-cam"):
        arr = np.load(out / f"{m}.npy")
        assert arr.shape == (48, 48) and np.isfinite(arr).all()
        assert (out / f"{m}.png").stat().st_size > 1000
    summary = json.loads((out / "explain.json").read_text())
    assert [e["method"] for e in summary["explanations"]] == ["gradient", "seg-grad-cam"]
    assert summary["explanations"][0]["cost"]["backward_passes"] == 1


def test_explain_errors_name_the_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["explain", "--model", "not-a-model", "--out", str(tmp_path), "--quiet"])
    assert code == 2
    assert "--model" in capsys.readouterr().err
    code = main(["explain", "--model", "lraspp_mobilenet_v3_large", "--roi", "box:1,2",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 2
    assert "--roi: expected 4 comma-separated integer(s)" in capsys.readouterr().err
    code = main(["explain", "--model", "lraspp_mobilenet_v3_large", "--image",
                 str(tmp_path / "missing.png"), "--out", str(tmp_path), "--quiet"])
    assert code == 2
    assert "--image" in capsys.readouterr().err


def test_explain_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--list"]) == 0
    out = capsys.readouterr().out
    assert "seg-grad-cam" in out and "smoothgrad" in out
