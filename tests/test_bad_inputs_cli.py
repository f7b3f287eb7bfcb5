"""Bad command-line input, every command: exit status 2, one line naming the option or file,
no Python traceback, and nothing written to --out.

Numeric options are checked while parsing (argparse reports ``argument --NAME: expected ...``
and exits with status 2); problems found later (files, models, settings) are SegxaiErrors that
``segxai.cli.main`` prints as ``segxai: error: ...`` and returns 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segxai.cli import build_parser, main
from segxai.cli.common import Range
from segxai.core.runstore import RunStore
from segxai.models import save_checkpoint
from segxai.models.unet import UNet, UNetConfig


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own refusals
        return int(exc.code or 0)


def _refused(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str],
             out: Path | None = None) -> str:
    """Run ``segxai argv``; assert exit 2, one error line naming ``needle``, no traceback,
    and ``out`` absent or empty."""
    code = _exit_code(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    assert needle in lines[0], err
    if out is not None:
        assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())
    return lines[0]


# ------------------------------------------------------------------ numeric options (parse)
PARSE_CASES = [
    ("explain", "--size", "0"), ("explain", "--size", "4"), ("explain", "--size", "abc"),
    ("explain", "--seed", "-1"), ("explain", "--class", "-1"), ("explain", "--top-p", "0"),
    ("explain", "--top-p", "101"), ("explain", "--num-classes", "0"),
    ("explain", "--device", "nonsense"), ("explain", "--device", "cuda:99"),
    ("evaluate", "--images", "0"), ("evaluate", "--steps", "0"),
    ("evaluate", "--batch-size", "0"), ("evaluate", "--tolerance", "-1"),
    ("evaluate", "--sensitivity-samples", "-1"), ("evaluate", "--size", "8"),
    ("evaluate", "--seed", "-5"),
    ("train", "--epochs", "0"), ("train", "--batch-size", "0"), ("train", "--lr", "0"),
    ("train", "--lr", "nan"), ("train", "--patience", "-1"), ("train", "--n-train", "0"),
    ("train", "--n-val", "0"), ("train", "--depth", "0"), ("train", "--kernel-size", "0"),
    ("train", "--size", "4"), ("train", "--base-width", "0"), ("train", "--decoder-width", "0"),
    ("attack", "--iterations", "0"), ("attack", "--lr", "2"), ("attack", "--images", "0"),
    ("attack", "--defence-beta", "0"), ("attack", "--num-classes", "-3"),
    ("nas search", "--population", "0"), ("nas search", "--children", "0"),
    ("nas search", "--budget-params", "0"), ("nas search", "--budget-params", "-1"),
    ("nas search", "--budget-flops", "0"), ("nas search", "--budget-depth", "0"),
    ("nas search", "--crossover", "2"), ("nas search", "--probe-images", "0"),
    ("nas search", "--fewshot-steps", "-1"), ("nas search", "--iterations", "-1"),
    ("nas validate", "--architectures", "1"), ("nas validate", "--epochs", "0"),
    ("nas validate", "--train-images", "0"), ("nas train", "--alpha", "-1"),
    ("nas train", "--lam", "-0.5"), ("nas train", "--epochs", "0"),
    ("continual", "--tau", "1.5"), ("continual", "--ratio", "1"), ("continual", "--r", "0.5"),
    ("continual", "--epochs", "0"), ("continual", "--base-epochs", "0"),
    ("continual", "--size", "8"), ("continual", "--seeds", "-1"),
    ("continual", "--budget-bytes", "-1"), ("continual", "--patch", "0"),
    ("continual", "--distill", "-1"), ("continual", "--n-train", "0"),
    ("demo", "--images", "0"),
]


@pytest.mark.parametrize(("command", "option", "value"), PARSE_CASES,
                         ids=[f"{c}{o}={v}" for c, o, v in PARSE_CASES])
def test_numeric_option_out_of_range_names_the_option(command: str, option: str, value: str,
                                                      tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    line = _refused([*command.split(), option, value, "--out", str(out), "--quiet"],
                    f"argument {option}", capsys, out)
    assert "expected" in line and repr(value) in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["explain", "evaluate", "train", "attack", "nas search",
                                     "continual", "demo"])
def test_cuda_without_a_gpu_says_so(command: str, tmp_path: Path, capsys) -> None:
    line = _refused([*command.split(), "--device", "cuda", "--out", str(tmp_path / "o")],
                    "argument --device", capsys, tmp_path / "o")
    assert "no CUDA GPU" in line


@pytest.mark.parametrize("command", ["explain", "evaluate", "train", "attack", "nas search",
                                     "nas validate", "continual", "demo"])
def test_out_that_is_a_file_is_refused(command: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "taken.txt"
    path.write_text("mine")
    _refused([*command.split(), "--out", str(path)], "argument --out", capsys)
    _refused([*command.split(), "--out", str(path / "sub")], "inside the file", capsys)
    assert path.read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_a_read_only_folder_is_refused(tmp_path: Path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _refused(["explain", "--out", str(ro / "x")], "writable", capsys)
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------ --help documents ranges
def _parsers() -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    found[f"{name} {sub_name}".strip()] = sub
                    walk(sub, f"{name} {sub_name}")

    walk(build_parser(), "")
    return found


_NOT_RANGES: set[str] = set()  # every numeric option is range-checked


def test_every_numeric_option_is_checked_and_documented() -> None:
    parsers = _parsers()
    assert {"explain", "evaluate", "train", "attack", "nas search", "continual"} <= set(parsers)
    checked = 0
    for name, parser in parsers.items():
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            option = action.option_strings[-1]
            assert action.type not in (int, float) or option in _NOT_RANGES, (name, option)
            if isinstance(action.type, Range):
                checked += 1
                words = " ".join(action.type.describe().split())
                assert words in " ".join(text.split()), (name, option)
    assert checked >= 60


# ------------------------------------------------------------------ problems found while running
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, base_width=4, num_classes=3)).eval()
    with torch.no_grad():  # a sharp head, so that some pixels are predicted as foreground
        net.head.weight.mul_(200.0)
    return save_checkpoint(net, tmp_path_factory.mktemp("m") / "ck",
                           class_names=["background", "a", "b"])


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    f = {"random": tmp_path / "random.png", "empty": tmp_path / "empty.png",
         "tiny": tmp_path / "tiny.png", "ok": tmp_path / "ok.png",
         "weights": tmp_path / "w.safetensors", "pickle": tmp_path / "w.pt"}
    f["random"].write_bytes(np.random.default_rng(0).bytes(300))
    f["empty"].write_bytes(b"")
    Image.new("RGB", (1, 1)).save(f["tiny"])
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), np.uint8)).save(
        f["ok"])
    f["weights"].write_bytes(np.random.default_rng(2).bytes(200))
    f["pickle"].write_bytes(b"\x80\x04\x95garbage pickle")
    return f


def test_explain_bad_images_name_the_file(ckpt: Path, files, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    base = ["explain", "--model", str(ckpt), "--out", str(out), "--quiet"]
    for key, needle in (("random", "cannot be decoded"), ("empty", "empty file"),
                        ("tiny", "at least 8×8")):
        line = _refused([*base, "--image", str(files[key])], "--image", capsys, out)
        assert needle in line and files[key].name in line
    _refused([*base, "--image", str(tmp_path / "missing.png")], "missing file", capsys, out)
    _refused([*base, "--image", "sample:-1"], "'sample:K' with an integer K >= 0", capsys, out)
    _refused([*base, "--image", "sample:x"], "--image", capsys, out)


def test_explain_bad_roi_class_and_params(ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    base = ["explain", "--model", str(ckpt), "--out", str(out), "--quiet"]
    _refused([*base, "--roi", "box:a,b,c,d"], "box:x0,y0,x1,y1", capsys, out)
    _refused([*base, "--roi", "box:0,0,500,500"], "--roi: expected box", capsys, out)
    _refused([*base, "--roi", "pixel:1"], "pixel:row,col", capsys, out)
    _refused([*base, "--roi", "circle"], "--roi", capsys, out)
    _refused([*base, "--class", "9", "--roi", "whole"], "--class", capsys, out)
    _refused([*base, "--method", "occlusion", "--param", "window=0"],
             "--param occlusion.window: expected an integer >= 1, got 0", capsys, out)
    _refused([*base, "--method", "occlusion", "--param", "stride=-2"],
             "--param occlusion.stride", capsys, out)


def test_model_and_weights_errors_name_the_file(ckpt: Path, files, tmp_path: Path,
                                                capsys) -> None:
    out = tmp_path / "out"
    base = ["explain", "--out", str(out), "--quiet"]
    line = _refused([*base, "--model", "lraspp_mobilenet_v3_large", "--weights",
                     str(files["weights"])], "--weights", capsys, out)
    assert str(files["weights"]) in line
    line = _refused([*base, "--model", "lraspp_mobilenet_v3_large", "--weights",
                     str(files["pickle"])], "--weights", capsys, out)
    assert "weights_only=True" in line
    _refused([*base, "--model", str(tmp_path / "nope")], "--model", capsys, out)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    line = _refused([*base, "--model", str(broken)], "config.json", capsys, out)
    assert "expected JSON" in line
    (broken / "config.json").write_text(json.dumps({"format": "segxai-unet-v1",
                                                    "model": {"depth": "deep"}}))
    (broken / "model.safetensors").write_bytes(b"garbage")
    _refused([*base, "--model", str(broken)], "UNetConfig", capsys, out)


def _mismatched_folder(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for name, mask_size in (("a", (32, 32)), ("b", (32, 24))):
        Image.new("RGB", (32, 32), (200, 10, 10)).save(root / "images" / f"{name}.png")
        Image.fromarray(np.zeros(mask_size[::-1], np.uint8)).save(root / "masks" / f"{name}.png")
    return root


def test_evaluate_folder_with_mismatched_mask_is_refused_like_train(
        ckpt: Path, tmp_path: Path, capsys) -> None:
    data = _mismatched_folder(tmp_path / "data")
    out = tmp_path / "out"
    line = _refused(["evaluate", "--model", str(ckpt), "--data", str(data), "--images", "2",
                     "--method", "gradient", "--out", str(out), "--quiet"], "masks:", capsys,
                    out)
    assert "b.png is 32×24" in line
    line2 = _refused(["train", str(data), "--epochs", "1", "--out", str(out), "--quiet"],
                     "masks:", capsys, out)
    assert "b.png is 32×24" in line2


def test_evaluate_bad_param_is_one_line_not_exit_1(ckpt: Path, tmp_path: Path,
                                                   capsys) -> None:
    out = tmp_path / "out"
    _refused(["evaluate", "--model", str(ckpt), "--method", "occlusion", "--param",
              "occlusion.window=0", "--images", "1", "--out", str(out), "--quiet"],
             "--param occlusion.window", capsys, out)
    _refused(["evaluate", "--model", str(ckpt), "--data", str(tmp_path / "nowhere"),
              "--out", str(out), "--quiet"], "--data", capsys, out)


def test_out_holding_a_run_with_other_settings_is_refused(ckpt: Path, tmp_path: Path,
                                                          capsys) -> None:
    for kind, argv in (
            ("evaluate", ["evaluate", "--model", str(ckpt), "--images", "1", "--steps", "4",
                          "--method", "gradient"]),
            ("train", ["train", "--epochs", "1", "--n-train", "8", "--n-val", "4",
                       "--size", "16"]),
            ("attack", ["attack", "--model", str(ckpt), "--images", "1", "--iterations", "2"])):
        out = tmp_path / kind
        RunStore(out, kind=kind, settings={"someone": "else"})
        before = sorted(p.name for p in out.iterdir())
        line = _refused([*argv, "--out", str(out), "--quiet"], "--out:", capsys)
        assert "other settings" in line
        assert sorted(p.name for p in out.iterdir()) == before
        other = tmp_path / f"{kind}-other"
        RunStore(other, kind="not-" + kind, settings={})
        _refused([*argv, "--out", str(other), "--quiet"], "--out:", capsys)


def test_attack_epsilon_and_nas_budget(ckpt: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    for eps in ("0", "300", "abc", "-1"):
        _refused(["attack", "--model", str(ckpt), "--epsilon", eps, "--out", str(out)],
                 "--epsilon", capsys, out)
    line = _refused(["nas", "search", "--quick", "--model", str(ckpt), "--budget-params", "10",
                     "--out", str(out), "--quiet"], "--budget-params", capsys, out)
    assert "no architecture" in line


def test_continual_and_train_library_errors_name_the_option(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    _refused(["continual", "--tasks", "9-9", "--out", str(out)], "--tasks", capsys, out)
    _refused(["continual", "--seeds", "0,0", "--out", str(out)], "--seeds", capsys, out)
    _refused(["continual", "--strategies", "magic", "--out", str(out)], "--strategies",
             capsys, out)
    _refused(["train", "--kernel-size", "4", "--out", str(out), "--n-train", "4", "--n-val",
              "2"], "--kernel-size", capsys, out)
    _refused(["train", "no-such-dataset", "--out", str(out)], "dataset", capsys, out)


@pytest.mark.parametrize("argv", [
    ["explain", "--size", "0"],
    ["explain", "--image", "{random}"],
    ["train", "--device", "nonsense"],
])
def test_no_traceback_in_a_real_process(argv: list[str], files, tmp_path: Path) -> None:
    argv = [a.format(random=files["random"]) for a in argv]
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    model = ["--model", "lraspp_mobilenet_v3_large"] if argv[0] == "explain" else []
    proc = subprocess.run([sys.executable, "-m", "segxai.cli", *argv, *model, "--out", str(out),
                           "--quiet"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(("config", "needle"), [
    ("{nope", "expected a UNetConfig as JSON"), ("[1, 2]", "expected a dict"),
    ('{"wings": 2}', "unknown UNetConfig field"), ('{"depth": 0}', "depth")])
def test_nas_train_config_garbage_is_refused_before_any_work(config: str, needle: str,
                                                             tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    line = _refused(["nas", "train", "--config", config, "--out", str(out), "--quiet"],
                    "--config", capsys, out)
    assert needle in line


def test_nas_train_garbage_search_json(ckpt: Path, tmp_path: Path, capsys) -> None:
    search = tmp_path / "search"
    search.mkdir()
    (search / "search.json").write_text('{"best": 3}')
    out = tmp_path / "out"
    _refused(["nas", "train", "--quick", "--model", str(ckpt), "--search", str(search),
              "--out", str(out), "--quiet"], "--search", capsys, out)


class _NaNNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * float("nan")


def nan_net() -> torch.nn.Module:
    """A factory for ``--model test_bad_inputs_cli:nan_net``: a model returning NaN logits."""
    return _NaNNet()


@pytest.mark.parametrize("argv", [
    ["explain"], ["evaluate", "--images", "1", "--steps", "4", "--method", "gradient"],
    ["attack", "--images", "1", "--iterations", "2"], ["nas", "search", "--quick"]])
def test_nan_model_is_one_error_and_nothing_written(argv: list[str], tmp_path: Path,
                                                    capsys) -> None:
    out = tmp_path / "out"
    line = _refused([*argv, "--model", "test_bad_inputs_cli:nan_net", "--out", str(out),
                     "--quiet"], "model output: expected finite logits", capsys, out)
    assert "image(s) [0" in line


def test_demo_unknown_section_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    line = _refused(["demo", "--quick", "--sections", "s00_overview,s99_nope", "--out",
                     str(out), "--cache", str(tmp_path / "cache")], "--sections", capsys, out)
    assert "s99_nope" in line and not (tmp_path / "cache").exists()
