"""The robustness map: rows per (part, method, ε, image), ε reuse from the unconstrained run,
summaries with intervals, kill-and-resume through RunStore.on_row, refused settings."""

from __future__ import annotations

import json
import textwrap

import pytest

from kill_after_rows import run_killed
from segxai.attack.robustness import (
    MapConfig,
    eps_key,
    robustness_map,
    study_map_config,
    summarize_map,
)
from segxai.core.errors import SegxaiError
from segxai.core.intervals import bootstrap_mean

BUILD = textwrap.dedent('''
    import torch
    from segxai.attack.robustness import MapConfig
    from segxai.models.unet import UNet, UNetConfig

    def build():
        torch.manual_seed(0)
        net = UNet(UNetConfig(depth=2, base_width=4, num_classes=3)).eval()
        with torch.no_grad():  # a foreground class somewhere, so CAMs are not empty
            net.head.bias.copy_(torch.tensor([0.0, 0.02, -1.0]))
        x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        cfg = MapConfig(methods=("gradient", "seg-grad-cam"), epsilons=(4 / 255, 0.5, None),
                        preset="none", attack_overrides={"iterations": 3, "eval_every": 1},
                        batch_size=2, transfer_methods=("occlusion",),
                        defence_epsilon=4 / 255,
                        explainer_params={"occlusion": {"window": 8, "stride": 8}})
        return net, x, cfg
''')
ns: dict = {}
exec(BUILD, ns)


def _interval(values: list[float]) -> tuple[float, float]:
    iv = bootstrap_mean(values, resamples=500)
    return iv.lo, iv.hi


def _strip(rows: list[dict]) -> list[dict]:
    return [{**r, "entry": {k: v for k, v in r["entry"].items() if k != "seconds"}}
            for r in rows]


def test_map_rows_reuse_and_summary(tmp_path) -> None:
    net, x, cfg = ns["build"]()
    out = robustness_map(net, x, cfg, checkpoint_dir=tmp_path / "run", interval=_interval)
    rows = out["rows"]
    keys = {(r["part"], r["method"], r["eps"]) for r in rows}
    for m in ("gradient", "seg-grad-cam"):
        for e in (4 / 255, 0.5, None):
            assert ("attack", m, eps_key(e)) in keys
        assert ("beta-nonadaptive", m, "4/255") in keys
    assert {("transfer", "occlusion", eps_key(e)) for e in (4 / 255, 0.5, None)} <= keys
    assert ("beta-adaptive", "gradient", "4/255") in keys
    assert len([r for r in rows if r["part"] == "attack"]) == 2 * 3 * 3
    # ε = 0.5 is never reached in 3 small steps: copied from the unconstrained run
    by = {(r["part"], r["method"], r["eps"], r["index"]): r["entry"] for r in rows}
    for i in range(3):
        e05, free = by[("attack", "gradient", eps_key(0.5), i)], by[("attack", "gradient", "none", i)]
        assert e05.get("same_as") == "none" and free["max_drift"] <= 0.5
        assert e05["target_pearson"] == free["target_pearson"]
        assert by[("attack", "gradient", "4/255", i)]["linf"] <= 4 / 255 + 1e-6
    summary = summarize_map(rows, _interval)
    row = next(s for s in summary if s["part"] == "attack" and s["method"] == "gradient"
               and s["eps"] == "none")
    vals = [by[("attack", "gradient", "none", i)]["target_pearson"] for i in range(3)]
    assert row["images"] == 3 and row["target_pearson"] == pytest.approx(sum(vals) / 3)
    lo, hi = row["target_pearson_ci"]
    assert lo <= row["target_pearson"] <= hi
    # a resumed run with the same settings computes nothing and returns the same rows
    again = robustness_map(net, x, cfg, checkpoint_dir=tmp_path / "run")
    assert _strip(again["rows"]) == _strip(rows)
    with pytest.raises(SegxaiError, match="batch_size"):
        robustness_map(net, x, MapConfig(**{**cfg.__dict__, "batch_size": 3}),
                       checkpoint_dir=tmp_path / "run")


def test_map_killed_mid_run_resumes_to_the_same_rows(tmp_path) -> None:
    code = BUILD + textwrap.dedent(f'''
        from segxai.attack.robustness import robustness_map
        net, x, cfg = build()
        robustness_map(net, x, cfg, checkpoint_dir={str(tmp_path / "cut")!r})
    ''')
    proc = run_killed(code, k=7, rows="rows")
    assert proc.returncode == -9, proc.stderr[-2000:]
    n_rows = len((tmp_path / "cut" / "rows.jsonl").read_text().splitlines())
    assert n_rows == 7
    net, x, cfg = ns["build"]()
    resumed = robustness_map(net, x, cfg, checkpoint_dir=tmp_path / "cut")
    whole = robustness_map(net, x, cfg, checkpoint_dir=tmp_path / "whole")
    assert _strip(resumed["rows"]) == _strip(whole["rows"])
    assert json.loads(json.dumps(resumed["summary"], default=str))


def test_map_config_errors() -> None:
    with pytest.raises(SegxaiError, match="methods: 'occlusion'"):
        MapConfig(methods=("occlusion",)).validate()
    with pytest.raises(SegxaiError, match="epsilon"):
        MapConfig(epsilons=(0.0,), defence_epsilon=None).validate()
    with pytest.raises(SegxaiError, match="defence_epsilon"):
        MapConfig(epsilons=(8 / 255,), defence_epsilon=4 / 255).validate()
    with pytest.raises(SegxaiError, match="preset"):
        MapConfig(preset="madry").validate()  # type: ignore[arg-type]
    net, x, cfg = ns["build"]()
    with pytest.raises(SegxaiError, match="images"):
        robustness_map(net, x[:1], cfg)



def test_per_method_epsilons_and_images_size_the_map_down() -> None:
    net, x, cfg = ns["build"]()
    sized = MapConfig(**{**cfg.__dict__, "method_epsilons": {"seg-grad-cam": (4 / 255,)},
                         "method_images": {"seg-grad-cam": 2}})
    assert sized.epsilons_for("seg-grad-cam") == (4 / 255,)
    assert sized.epsilons_for("gradient") == (4 / 255, 0.5, None)
    out = robustness_map(net, x, sized, interval=None)
    keys = [(r["part"], r["method"], r["eps"], r["index"]) for r in out["rows"]]
    cam = [k for k in keys if k[1] == "seg-grad-cam"]
    # attacked at 4/255 only, on the first 2 images; its non-adaptive defence likewise
    assert sorted(cam) == sorted([(p, "seg-grad-cam", "4/255", i)
                                  for p in ("attack", "beta-nonadaptive") for i in (0, 1)])
    assert len([k for k in keys if k[:2] == ("attack", "gradient")]) == 3 * 3
    # without the transfer source (the gradient) among the methods: no transfer part, no
    # attacker built on its x_adv, the attacked method's own rows only
    alone = MapConfig(**{**cfg.__dict__, "methods": ("seg-grad-cam",),
                         "epsilons": (4 / 255,)})
    parts = {(r["part"], r["method"]) for r in robustness_map(net, x, alone)["rows"]}
    assert parts == {("attack", "seg-grad-cam"), ("beta-nonadaptive", "seg-grad-cam")}
    with pytest.raises(SegxaiError, match="method_epsilons"):
        MapConfig(**{**cfg.__dict__, "method_epsilons": {"seg-grad-cam": (8 / 255,)}}).validate()
    with pytest.raises(SegxaiError, match="method_images"):
        MapConfig(**{**cfg.__dict__, "method_images": {"seg-grad-cam": 1}}).validate()
    with pytest.raises(SegxaiError, match="defence_epsilon"):
        MapConfig(**{**cfg.__dict__, "method_epsilons": {"gradient": (None,)}}).validate()


def test_the_study_default_is_the_full_map_sized_down() -> None:
    full, study = MapConfig().validate(), study_map_config().validate()
    assert full.method_epsilons == {} and full.method_images == {}
    assert full.epsilons == (2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255, None)
    assert study.methods == full.methods and study.epsilons == (8 / 255,)
    assert [study.images_for(m, 30) for m in study.methods] == [30, 2, 2, 16, 16]
    assert full.images_for("smoothgrad", 30) == 30
    sized = MapConfig(method_epsilons={"gradient": (2 / 255, None)})
    assert json.loads(json.dumps(sized.to_dict()))["method_epsilons"]["gradient"][-1] is None
