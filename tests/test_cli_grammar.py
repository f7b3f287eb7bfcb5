"""One grammar for every ``segxai`` command: --model, --method, --param; user errors in one
line with exit status 2, real bugs with their traceback; plain-text help."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from segxai.cli import build_parser, main
from segxai.core.errors import SegxaiError
from segxai.models.zoo import load_model

MODEL_COMMANDS = (["explain"], ["evaluate"], ["attack"], ["nas", "search"], ["nas", "validate"],
                  ["nas", "train"])


def _subparsers(parser) -> dict:
    return parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]


def _every_parser():
    for name, sub in _subparsers(build_parser()).items():
        if sub._subparsers is not None:
            for child_name, child in _subparsers(sub).items():
                yield f"{name} {child_name}", child
        yield name, sub


@pytest.mark.parametrize("command", MODEL_COMMANDS, ids=" ".join)
def test_every_command_takes_model_method_param_alike(command: list[str]) -> None:
    args = build_parser().parse_args([*command, "--model", "deeplabv3_resnet50", "--weights",
                                      "w.safetensors", "--num-classes", "5", "--method",
                                      "gradient", "--param", "gradient.abs=False"])
    assert args.model == "deeplabv3_resnet50" and args.weights == Path("w.safetensors")
    assert args.num_classes == 5
    assert args.method == ["gradient"] and args.param == ["gradient.abs=False"]


def test_continual_takes_method() -> None:
    args = build_parser().parse_args(["continual", "--method", "gradient"])
    assert args.method == ["gradient"]


def test_deprecated_aliases_print_one_note(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["evaluate", "--checkpoint", "ckpt", "--methods",
                                      "gradient,seg-grad-cam"])
    assert args.model == "ckpt" and args.method == ["gradient", "seg-grad-cam"]
    err = capsys.readouterr().err.splitlines()
    assert err == ["segxai: note: --checkpoint is deprecated; use --model",
                   "segxai: note: --methods is deprecated; use --method"]
    args = build_parser().parse_args(["nas", "search", "--teacher", "t", "--method-param",
                                      "relu=False"])
    assert args.model == "t" and args.param == ["relu=False"]
    assert build_parser().parse_args(["continual", "--explainer", "gradient"]).method == [
        "gradient"]


def test_help_is_plain_text_with_defaults() -> None:
    for name, parser in _every_parser():
        text = parser.format_help()
        for markup in ("``", ":func:", ":class:", ":mod:", ":data:"):
            assert markup not in text, (name, markup)
    helps = dict(_every_parser())
    assert "default 8; 2 with --quick" in helps["evaluate"].format_help()
    assert "default 300; 60 with --quick" in helps["attack"].format_help()
    assert "default 32; 8 with --quick" in helps["nas search"].format_help()


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segxai: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", MODEL_COMMANDS, ids=" ".join)
def test_unknown_param_key_names_the_valid_keys(command: list[str], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*command, "--quiet", "--out", str(tmp_path), "--method", "gradient",
                 "--param", "gradient.abz=False"])
    assert code == 2
    line = _one_error_line(capsys)
    assert "--param" in line and "'abz'" in line
    assert "reduce, abs" in line and "did you mean abs" in line


def test_bare_param_only_with_one_method(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--quiet", "--out", str(tmp_path), "--method", "gradient",
                 "--method", "smoothgrad", "--param", "reduce=sum"]) == 2
    assert "METHOD.KEY=VALUE" in _one_error_line(capsys)
    assert main(["explain", "--quiet", "--out", str(tmp_path), "--method", "gradient",
                 "--param", "smoothgrad.n_samples=2"]) == 2
    assert "selected method" in _one_error_line(capsys)


@pytest.mark.parametrize("command", [*MODEL_COMMANDS, ["continual"]], ids=" ".join)
def test_mistyped_method_suggests_close_names(command: list[str], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--quiet", "--out", str(tmp_path), "--method", "smothgrad"]) == 2
    line = _one_error_line(capsys)
    assert "--method" in line and "did you mean smoothgrad" in line


def test_attack_offers_only_differentiable_methods(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from segxai.core.registry import get_explainer, list_explainers

    offered = [m for m in list_explainers() if get_explainer(m).differentiable]
    assert {"gradient", "smoothgrad", "seg-grad-cam"} <= set(offered)
    assert "occlusion" not in offered
    assert main(["attack", "--quiet", "--out", str(tmp_path), "--method", "occlusion"]) == 2
    line = _one_error_line(capsys)
    assert f"expected one of {', '.join(offered)}, got unknown method 'occlusion'" in line
    assert main(["attack", "--quiet", "--out", str(tmp_path), "--method", "gradient",
                 "--method", "smoothgrad"]) == 2
    assert "expected one method" in _one_error_line(capsys)


def test_torchvision_weights_with_wrong_keys_are_listed(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    name = "lraspp_mobilenet_v3_large"
    state = load_model(name, num_classes=3).model.state_dict()
    dropped = sorted(state)[:2]
    bad = {k: v for k, v in state.items() if k not in dropped}
    bad["extra.weight"] = torch.zeros(2)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in bad.items()}, str(path))
    with pytest.raises(SegxaiError, match="missing keys \\(2\\)") as info:
        load_model(name, weights=path, num_classes=3)
    assert all(k in str(info.value) for k in [*dropped, "unexpected keys (1): extra.weight"])
    assert main(["explain", "--quiet", "--out", str(tmp_path / "o"), "--model", name,
                 "--num-classes", "3", "--weights", str(path)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("segxai: error: --weights: ") and "extra.weight" in line
    # the right keys load strictly and give the same model
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(good))
    again = load_model(name, weights=good, num_classes=3).model.state_dict()
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_unknown_model_is_a_user_error(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--quiet", "--out", str(tmp_path), "--model", "resnet-unet"]) == 2
    line = _one_error_line(capsys)
    assert "--model: expected 'builtin'" in line and "smp:ARCH:ENCODER" in line


def _explain(model: str, out: Path) -> dict:
    assert main(["explain", "--quiet", "--model", model, "--roi", "whole", "--class", "1",
                 "--image", "sample:0", "--method", "gradient", "--out", str(out)]) == 0
    arr = np.load(out / "gradient.npy")
    assert arr.shape == (64, 64) and np.isfinite(arr).all() and arr.max() > 0
    return json.loads((out / "explain.json").read_text())


def test_import_string_model_in_explain(tmp_path: Path) -> None:
    summary = _explain("models_for_tests:TinySeg", tmp_path)
    assert summary["model"] == "models_for_tests:TinySeg"


def test_torchscript_model_in_explain(tmp_path: Path) -> None:
    from models_for_tests import TinySeg

    path = tmp_path / "tiny.pt"
    torch.jit.script(TinySeg().eval()).save(str(path))
    _explain(str(path), tmp_path / "out")


def test_user_error_is_one_line_exit_2(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--quiet", "--out", str(tmp_path), "--image",
                 str(tmp_path / "missing.png"), "--model", "models_for_tests:TinySeg"]) == 2
    assert "--image" in _one_error_line(capsys)


def test_a_real_bug_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    from segxai.cli.commands import explain

    def broken(args) -> int:
        return {}["bug"]

    monkeypatch.setattr(explain, "run", broken)
    with pytest.raises(KeyError, match="bug"):
        main(["explain"])


class _NotATensor:
    pass


def test_weights_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"w": _NotATensor()}, path)
    with pytest.raises(SegxaiError, match="weights_only=True"):
        load_model("lraspp_mobilenet_v3_large", weights=path, num_classes=3)


def test_smp_spec_builds_an_imagenet_normalised_model() -> None:
    pytest.importorskip("segmentation_models_pytorch")
    loaded = load_model("smp:Unet:resnet18", num_classes=3)
    assert loaded.kind == "smp" and loaded.model.segxai_mean == "imagenet"
    with torch.no_grad():
        assert loaded.model(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(SegxaiError, match="smp:ARCH:ENCODER"):
        load_model("smp:Unet", num_classes=3)


@pytest.mark.parametrize(("spec", "quick", "expected"), [
    ("builtin", False, False), ("builtin", True, True),
    ("builtin-quick", False, True), ("builtin-quick", True, True)])
def test_builtin_quick_spec_always_loads_the_quick_model(monkeypatch: pytest.MonkeyPatch,
                                                         builtin_quick, spec: str, quick: bool,
                                                         expected: bool) -> None:
    import segxai.models.builtin as builtin_module

    asked: list[bool] = []

    def fake(*, quick: bool, **_: object):
        asked.append(quick)
        return builtin_quick

    monkeypatch.setattr(builtin_module, "load_or_train_builtin", fake)
    loaded = load_model(spec, quick=quick)
    assert asked == [expected]
    assert loaded.kind == "builtin" and loaded.builtin is builtin_quick


def test_nas_commands_default_to_the_quick_builtin_teacher() -> None:
    from segxai.cli import build_parser

    parser = build_parser()
    for command in ("search", "validate", "train", "study"):
        assert parser.parse_args(["nas", command]).model == "builtin-quick", command
    assert parser.parse_args(["explain"]).model == "builtin"


def test_attack_study_defaults_to_the_quick_builtin_model() -> None:
    from segxai.cli import build_parser
    from segxai.cli.commands.attack import resolve_model

    parser = build_parser()
    assert resolve_model(parser.parse_args(["attack", "--study"])) == "builtin-quick"
    assert resolve_model(parser.parse_args(["attack"])) == "builtin"
    assert resolve_model(parser.parse_args(["attack", "--manipulate", "location"])) == "builtin"
    assert resolve_model(parser.parse_args(["attack", "--study", "--model", "builtin"])) \
        == "builtin"
