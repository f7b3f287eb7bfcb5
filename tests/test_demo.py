"""``segxai demo --quick`` end to end (in-process), the built-in model cache, ``segxai train``,
and the report figure helpers."""

from __future__ import annotations

import json

import pytest
import torch

from segxai.cli import main
from segxai.report.demo import discover_sections, pick_samples


def test_pick_samples_covers_classes() -> None:
    masks = torch.zeros(5, 4, 4, dtype=torch.long)
    masks[0, 0, 0] = 1
    masks[1, 0, 0] = 1
    masks[1, 1, 1] = 2
    masks[3, 0, 0] = 3
    masks[4, 0, 0] = 4
    masks[4, 1, 1] = 3
    idx = pick_samples(masks, 3, 5)
    assert idx[:2] == [1, 4]  # two new classes each, lower index first on ties
    covered = set()
    for i in idx:
        covered |= set(masks[i].unique().tolist())
    assert covered == {0, 1, 2, 3, 4}


def test_sections_are_discovered_in_order() -> None:
    mods = discover_sections()
    orders = [m.ORDER for m in mods]
    assert orders == sorted(orders)
    names = [m.__name__.rsplit(".", 1)[-1] for m in mods]
    assert "s00_overview" in names and "s10_explainers" in names


def test_builtin_quick_model(builtin_quick) -> None:
    b = builtin_quick
    assert b.val_miou > 0.5
    assert (b.path / "model.safetensors").is_file() and (b.path / "config.json").is_file()
    assert b.val_data.images.shape[1:] == (3, 64, 64)
    assert not b.model.training
    assert b.config == b.model.config
    # the cache is used: loading again gives the same weights without training
    from segxai.models import load_or_train_builtin

    again = load_or_train_builtin(cache_dir=b.path.parent, quick=True, progress=False)
    assert again.path == b.path
    x = b.val_data.images[:2]
    assert torch.equal(again.model(x), b.model(x))


def test_demo_quick_writes_every_section(tmp_path, monkeypatch, builtin_quick) -> None:
    import segxai

    # reuse the session's quick model: copy of its cache layout
    monkeypatch.setenv("SEGXAI_CACHE", str(builtin_quick.path.parent))
    out = tmp_path / "report"
    rc = main(["demo", "--quick", "--quiet", "--out", str(out)])
    index = out / "index.html"
    assert index.is_file()
    page = index.read_text(encoding="utf-8")
    for mod in discover_sections():
        assert mod.TITLE in page
    run = json.loads((out / "run.json").read_text())
    assert rc == 0, run["failures"]
    assert run["failures"] == []
    report = json.loads((out / "report.json").read_text())
    methods = {row["method"] for row in report["Explanations of every registered method"]["methods"]}
    assert methods == set(segxai.list_explainers())
    assert (out / "figures" / "explanations.png").is_file()
    assert "data:image/png;base64," in page


def test_cache_dir_and_keys(tmp_path, monkeypatch) -> None:
    """$SEGXAI_CACHE is honoured; quick and full models are cached under different keys."""
    from segxai.models import builtin_recipe, default_cache_dir

    monkeypatch.setenv("SEGXAI_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SEGXAI_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "segxai")
    assert builtin_recipe(quick=True) != builtin_recipe(quick=False)


def test_train_command_quick_and_resume(tmp_path) -> None:
    out = tmp_path / "t"
    args = ["train", "shapes", "--quick", "--quiet", "--out", str(out), "--epochs", "2",
            "--n-train", "24", "--n-val", "8", "--size", "32", "--base-width", "4",
            "--depth", "2", "--batch-size", "8"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["val_miou"]) == 2 and metrics["dataset"] == "shapes"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    # running again loads the completed run; a different config is refused with exit code 2
    assert main(args) == 0
    assert main([*args[:-2], "--batch-size", "4"]) == 2


@pytest.mark.parametrize("name", ["explanation_grid", "segmentation_grid", "overlay_figure"])
def test_figure_helpers(name: str) -> None:
    from segxai.report import figures

    imgs = torch.rand(2, 3, 16, 16)
    masks = torch.randint(0, 3, (2, 16, 16))
    if name == "explanation_grid":
        fig = figures.explanation_grid(imgs, {"a": torch.rand(2, 16, 16), "b": None},
                                       rois=masks == 1, titles=["x", "y"])
    elif name == "segmentation_grid":
        fig = figures.segmentation_grid(imgs, masks, masks, ["bg", "a", "b"])
    else:
        fig = figures.overlay_figure(imgs[0], torch.rand(16, 16), roi=masks[0] == 1)
    from segxai.report.html import figure_to_html

    assert figure_to_html(fig, "cap").startswith("<figure><img src=\"data:image/png;base64,")
    cm = figures.colour_mask(torch.tensor([[0, 1], [2, 9]]), 3)
    assert cm.shape == (2, 2, 3) and (cm[1, 1] == 1).all() and (cm[0, 0] == 0).all()
