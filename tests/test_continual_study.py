"""The harder data set, the box controls, herding, the strong-base rule, bad input and the
RQ3 study's analysis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segxai.continual.cim import box_of_mask
from segxai.continual.compress import compress, exemplar_nbytes, reconstruct, saliency_box
from segxai.continual.config import ContinualConfig, min_exemplar_bytes
from segxai.continual.runs import base_is_strong, task_is_learned
from segxai.continual.selection import herding_order, probability_maps
from segxai.continual.study import rq3_configs
from segxai.core.errors import SegxaiError
from segxai.data.textured import TEXTURED_CLASSES, make_textured_shapes


def test_textured_shapes_is_deterministic_with_16_classes():
    a = make_textured_shapes(12, size=64, seed=3)
    b = make_textured_shapes(12, size=64, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert len(TEXTURED_CLASSES) == 17 and a.class_names == TEXTURED_CLASSES
    assert int(a.masks.max()) <= 16 and a.images.shape == (12, 3, 64, 64)
    assert not torch.equal(a.masks, make_textured_shapes(12, size=64, seed=4).masks)
    # 10-5 and 6-1-1-1-1 are possible splits of this set (not of the 4-class shapes)
    assert ContinualConfig(dataset="textured-shapes", tasks=[list(range(1, 11)),
                                                               list(range(11, 16))],
                           strategies=["none"]).model["num_classes"] == 17


def _example(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[3:7, 9:14] = 2
    return image, mask


def test_gt_box_is_the_class_box_and_random_box_keeps_size_and_bytes():
    image, mask = _example()
    assert box_of_mask(mask, 2) == (3, 7, 9, 14)
    ex = compress(image, mask, "gt-box", task=0, cls=2, r=4.0)
    assert ex["meta"][2:6].tolist() == [3, 7, 9, 14]
    img, msk = reconstruct(ex, "gt-box", (16, 16))
    np.testing.assert_array_equal(msk[3:7, 9:14], 2)
    np.testing.assert_array_equal(img[:, 3:7, 9:14], image[:, 3:7, 9:14])
    sal = np.zeros((16, 16))
    sal[0:4, 0:6] = 1.0
    box = compress(image, mask, "saliency-box", task=0, cls=2, saliency=sal)
    rnd = compress(image, mask, "random-box", task=0, cls=2, saliency=sal,
                   rng=np.random.default_rng(1))
    y0, y1, x0, x1 = rnd["meta"][2:6].tolist()
    assert (y1 - y0, x1 - x0) == (4, 6) == (saliency_box(sal)[1], saliency_box(sal)[3])
    assert (y0, x0) != (0, 0)  # placed elsewhere (this rng)
    # same stored area; the low pixels under the box differ only by border rounding
    assert abs(exemplar_nbytes(rnd) - exemplar_nbytes(box)) <= 4 * 8


def test_herding_order_hand_example():
    f = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.4], [0.9, 0.1]])
    # mean (0.625, 0.375): row 2 is closest; then the pair mean closest is (2, 0) or (2, 3)
    order = herding_order(f)
    assert order[0] == 2
    assert sorted(order) == [0, 1, 2, 3]
    mu = f.mean(0)
    best = min((i for i in range(4) if i != 2),
               key=lambda i: np.linalg.norm(mu - (f[2] + f[i]) / 2))
    assert order[1] == best


def test_probability_maps_sum_to_one_over_seen():
    model = torch.nn.Conv2d(3, 5, 1)
    x = torch.rand(2, 3, 8, 8)
    total = sum(probability_maps(model, x, c, [0, 1, 2]) for c in (0, 1, 2))
    np.testing.assert_allclose(total, 1.0, atol=1e-6)
    assert np.all(probability_maps(model, x, 3, [0, 1, 2]) < 1e-6)


def test_base_strength_rule():
    cfg = ContinualConfig(strategies=["none"], base_target=0.7)
    iou = np.array([0.99, 0.8, 0.69, np.nan, np.nan])
    assert not base_is_strong(cfg, iou)
    iou[2] = 0.7
    assert base_is_strong(cfg, iou)
    iou[1] = np.nan  # a base class never seen in validation is not "learned"
    assert not base_is_strong(cfg, iou)
    assert base_is_strong(ContinualConfig(strategies=["none"]), np.zeros(5))


def test_weak_seed_is_excluded_and_reported(tmp_path):
    from segxai.continual.experiment import quick_config, run_experiment

    cfg = quick_config(strategies=["none", "full"], seeds=[0], epochs=1, base_epochs=1,
                       n_train=16, n_val=8, size=16, budget_bytes=20 * (4 * 16 * 16 + 4),
                       base_target=1.0, base_rounds=2)
    rows = run_experiment(cfg, tmp_path, progress=False)
    assert rows == []  # no strategy ran on the weak base
    import json

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["excluded_seeds"] == [0]
    assert summary["base"]["seeds"]["0"]["rounds"] == 2
    assert summary["base"]["seeds"]["0"]["strong"] is False


def test_task_rounds_rule_looks_only_at_the_tasks_new_classes():
    cfg = ContinualConfig(strategies=["none"], task_target=0.7, task_rounds=3)
    iou = np.array([0.99, 0.1, 0.2, 0.69, np.nan])  # old classes low: not this rule's business
    assert not task_is_learned(cfg, 1, iou)
    iou[3] = 0.7
    assert task_is_learned(cfg, 1, iou)
    assert not task_is_learned(cfg, 2, iou)  # the ring is not in the validation labels yet
    assert task_is_learned(ContinualConfig(strategies=["none"]), 2, np.zeros(5))


def _tiny(**kwargs):
    from segxai.continual.experiment import quick_config

    return quick_config(strategies=["none", "full"], seeds=[0], epochs=1, base_epochs=1,
                        n_train=24, n_val=8, size=16, budget_bytes=20 * (4 * 16 * 16 + 4),
                        **kwargs)


def test_task_rounds_train_more_report_every_task_and_keep_the_first_round(tmp_path):
    import json

    from segxai.continual.experiment import run_experiment

    plain = run_experiment(_tiny(), tmp_path / "plain", progress=False)
    run_experiment(_tiny(task_target=1.0, task_rounds=2), tmp_path / "rounds", progress=False)
    summary = json.loads((tmp_path / "rounds" / "summary.json").read_text())
    report = summary["task_rounds"]
    assert report["target"] == 1.0 and report["max_rounds"] == 2
    # IoU 1.0 is out of reach: every incremental task used both rounds, and is listed
    assert sorted((b["strategy"], b["task"]) for b in report["below_target"]) == [
        ("full", 1), ("full", 2), ("none", 1), ("none", 2)]
    for strategy in ("none", "full"):
        state = json.loads((tmp_path / "rounds" / "runs" / strategy / "seed0" /
                            "state.json").read_text())
        assert state["rounds"][0] is None  # task 0 is the shared base
        assert [e["rounds"] for e in state["rounds"][1:]] == [2, 2]
        assert all(e["reached"] is False and len(e["new_iou"]) == 2
                   for e in state["rounds"][1:])
        assert [r["rounds"] for r in state["rows"]] == [None, 2, 2]
        # round 1 is exactly the single-round task of a run without the rule
        single = json.loads((tmp_path / "plain" / "runs" / strategy / "seed0" /
                             "state.json").read_text())
        assert state["rounds"][1]["new_iou"][0] == [single["ious"][1][3]]
        assert single["rounds"][1] == {"rounds": 1, "new_iou": [[single["ious"][1][3]]],
                                       "target": None, "reached": None}
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())[
        "task_rounds"]["below_target"] == []
    assert len(plain) == 6


def test_rq3_analysis_lists_tasks_below_the_target(tmp_path):
    from segxai.continual.study import format_rq3, run_rq3

    configs = {"r4": _tiny(task_target=1.0, task_rounds=2, base_target=None)}
    analysis = run_rq3(configs, tmp_path, progress=False)
    assert {(b["arm"], b["strategy"], b["seed"], b["task"]) for b in
            analysis["below_task_target"]} == {("r4", s, 0, t) for s in ("none", "full")
                                                for t in (1, 2)}
    assert {r["rounds"] for r in analysis["per_seed"]} == {"2-2"}
    assert "r4/full/seed0/task2" in format_rq3(analysis)


@pytest.mark.parametrize("kwargs, name", [
    ({"budget_bytes": 4 * 64 * 64 * 4 - 1, "strategies": ["full"]}, "budget_bytes"),
    ({"budget_bytes": 1000, "strategies": ["saliency-box"]}, "budget_bytes"),
    ({"tasks": [[1, 2], [3, 4, 5]]}, "tasks"),
    ({"r": 0.5}, "r"),
    ({"tau": 0.0}, "tau"),
    ({"tau": 1.0}, "tau"),
    ({"base_target": 1.5}, "base_target"),
    ({"task_target": 1.5}, "task_target"),
    ({"task_target": 0.0}, "task_target"),
    ({"task_rounds": 0}, "task_rounds"),
    ({"task_rounds": 1.5}, "task_rounds"),
    ({"selection": "greedy"}, "selection"),
    ({"dataset": "voc"}, "dataset"),
])
def test_bad_input_is_refused_naming_the_argument(kwargs, name):
    with pytest.raises(SegxaiError, match=f"^{name}:"):
        ContinualConfig(**kwargs)


def test_min_exemplar_bytes():
    assert min_exemplar_bytes("full", 64, 4) == 4 * 64 * 64 + 4
    assert min_exemplar_bytes("downsample", 64, 16) == 4 * 16 * 16 + 4
    assert min_exemplar_bytes("saliency-box", 64, 4) == 4 * 32 * 32 + 16
    assert min_exemplar_bytes("none", 64, 4) == 0
    # the default budget holds at least one exemplar per class for every strategy
    ContinualConfig()


def test_rq3_arms():
    arms = rq3_configs()
    assert list(arms) == ["r4", "r16", "r4-herding"]
    assert arms["r4"].r == 4 and arms["r16"].r == 16 and arms["r4"].joint
    assert arms["r4"].seeds == list(range(10)) and arms["r4"].base_target == 0.7
    assert arms["r4"].size == 64 and arms["r4"].lr == 0.01 and arms["r4"].batch_size == 8
    # the strong-base rule, per incremental task (the quick pipeline check keeps one round)
    assert arms["r4"].task_target == 0.7 and arms["r4"].task_rounds == 3
    assert rq3_configs(True)["r4"].task_target is None
    assert {"none", "full", "saliency-box", "gt-box", "random-box", "downsample",
            "prob-box"} <= set(arms["r4"].strategies)
    assert arms["r4-herding"].selection == "herding"
    # the study trains with MiB's unbiased cross-entropy unless told otherwise
    assert all(c.unbiased_ce for c in arms.values())
    assert all(c.unbiased_ce for c in rq3_configs(True).values())
    assert not rq3_configs(arms=["r4"], unbiased_ce=False)["r4"].unbiased_ce
    with pytest.raises(SegxaiError, match="tasks"):
        rq3_configs(tasks=[[1, 2], [3], [4], [5]])


@pytest.mark.parametrize("argv, option", [
    (["--budget-bytes", "1000"], "--budget-bytes"),
    (["--tasks", "10-5"], "--tasks"),
    (["--r", "0.5"], "--r"),
    (["--tau", "0"], "--tau"),
    (["--tau", "1"], "--tau"),
    (["--task-target", "0"], "--task-target"),
    (["--task-rounds", "0"], "--task-rounds"),
    (["--study", "rq3", "--arms", "r5"], "--arms"),
])
def test_cli_refuses_bad_input_naming_the_option(argv, option, tmp_path, capsys):
    from segxai.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        code = main(["continual", *argv, "--out", str(out), "--quiet"])
        raise SystemExit(code)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert option in err
    assert not out.exists()


def test_cli_unbiased_ce_can_be_turned_on_and_off():
    from segxai.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["continual"]).unbiased_ce is None  # the config's / study's default
    assert parse(["continual", "--unbiased-ce"]).unbiased_ce is True
    assert parse(["continual", "--study", "rq3", "--no-unbiased-ce"]).unbiased_ce is False
