"""``segxai demo --quick`` end to end (in-process), the built-in model cache, ``segxai train``,
and the report figure helpers."""

from __future__ import annotations

import json
import re

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
    from segxai.models.mediapipe_selfie import selfie_path

    # the real-photograph section needs the selfie network fetched at install time: the
    # test's cache holds a link to it
    fetched = selfie_path().parent
    link = builtin_quick.path.parent / fetched.name
    if not link.exists():
        link.symlink_to(fetched, target_is_directory=True)
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
    assert "data:image/webp;base64," in page
    # issue 16: the page stays small and opens offline from disk (nothing fetched from outside)
    assert index.stat().st_size <= 1_500_000, index.stat().st_size
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "A real model on real photographs" in page
    real = report["A real model on real photographs"]
    assert len(real["photos"]) >= 2 and real["findings"]
    assert {r["method"] for r in real["rows"]} == set(segxai.list_explainers()) | {"random"}


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
def test_figure_helpers(name: str, tmp_path) -> None:
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

    html = figure_to_html(fig, "cap", save_to=tmp_path / "fig.png")
    assert html.startswith("<figure><img src=\"data:image/webp;base64,")
    from PIL import Image

    with Image.open(tmp_path / "fig.png") as png:  # the saved copy is the full-quality PNG
        assert png.format == "PNG"
    cm = figures.colour_mask(torch.tensor([[0, 1], [2, 9]]), 3)
    assert cm.shape == (2, 2, 3) and (cm[1, 1] == 1).all() and (cm[0, 0] == 0).all()


def test_table_html_collapses_long_tables() -> None:
    from segxai.report.html import COLLAPSE_ROWS, table_html

    short = table_html([{"a": i} for i in range(COLLAPSE_ROWS)], caption="few")
    assert short.startswith("<table>") and "<details>" not in short and "few" in short
    long = table_html([{"a": i} for i in range(COLLAPSE_ROWS + 1)], caption="per image")
    assert long.startswith("<details><summary>per image (13 rows")
    assert long.count("<tr>") == COLLAPSE_ROWS + 2   # header + every row, folded not cut
    assert "<details>" not in table_html([{"a": i} for i in range(50)], collapse=None)
