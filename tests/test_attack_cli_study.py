"""`segxai attack --study` (the robustness map, resumable, table and figures) and
`segxai attack --manipulate` on a small saved checkpoint; CLI errors name the option."""

from __future__ import annotations

import json
from pathlib import Path

import test_bad_inputs_cli
from segxai.cli import main

ckpt = test_bad_inputs_cli.ckpt  # the small saved checkpoint (a module-scoped fixture)


def test_study_writes_table_figures_and_resumes(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["attack", "--study", "--model", str(ckpt), "--images", "2", "--iterations", "2",
            "--method", "gradient", "--epsilons", "8,none", "--batch-size", "2",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    data = json.loads((out / "study.json").read_text())
    assert data["config"]["preset"] == "dombrowski"
    assert data["config"]["attack_overrides"] == {"iterations": 2}
    assert data["config"]["target_kind"] == "other-image"
    parts = {(r["part"], r["method"], r["eps"]) for r in data["summary"]}
    assert {("attack", "gradient", "8/255"), ("attack", "gradient", "none"),
            ("transfer", "occlusion", "8/255"), ("beta-nonadaptive", "gradient", "8/255"),
            ("beta-adaptive", "gradient", "8/255")} <= parts
    row = next(r for r in data["summary"] if r["part"] == "attack" and r["eps"] == "none")
    assert row["images"] == 2 and len(row["target_pearson_ci"]) == 2
    assert (out / "study.csv").read_text().startswith("part,method,eps,images,success")
    assert (out / "figures" / "robustness_target_pearson.png").is_file()
    rows = (out / "study" / "rows.jsonl").read_text()
    assert main(argv) == 0  # resumed: nothing recomputed, no row appended
    assert (out / "study" / "rows.jsonl").read_text() == rows
    assert main([*argv[:-3], "--epsilons", "4,none", "--out", str(out), "--quiet"]) == 2
    # --no-adaptive: the same map without the adaptive attacker's rows
    lean = tmp_path / "lean"
    assert main([*argv[:-3], "--no-adaptive", "--out", str(lean), "--quiet"]) == 0
    lean_parts = {(r["part"], r["method"], r["eps"])
                  for r in json.loads((lean / "study.json").read_text())["summary"]}
    assert lean_parts == parts - {("beta-adaptive", "gradient", "8/255")}


def test_manipulate_writes_the_comparison(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    assert main(["attack", "--manipulate", "location", "--model", str(ckpt), "--quick",
                 "--steps", "2", "--images", "2", "--out", str(out), "--quiet"]) == 0
    data = json.loads((out / "manipulation.json").read_text())
    s = data["summary"]
    assert s["pixel_agreement"]["n"] == 2 and len(s["pixel_agreement"]["ci"]) == 2
    assert {"seg-grad-cam", "grad-cam++", "gradient"} <= set(s)
    assert data["config"]["kind"] == "location" and data["config"]["steps"] == 2
    assert data["config"]["keep_loss"] == "kl" and data["config"]["lam"] == 0.15
    assert data["config"]["keep_only_steps"] == 5  # the --quick size


def test_cli_errors_name_the_option(ckpt: Path, tmp_path: Path, capsys) -> None:
    base = ["attack", "--study", "--model", str(ckpt), "--out", str(tmp_path / "e"), "--quiet"]
    assert main([*base, "--epsilons", "8,0"]) == 2
    assert "--epsilons" in capsys.readouterr().err
    assert main([*base, "--epsilons", "8,8"]) == 2
    assert "--epsilons" in capsys.readouterr().err
    assert main([*base, "--method", "occlusion"]) == 2
