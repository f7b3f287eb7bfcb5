"""The viewer's logic without a browser: images, selections, explanations, exports, the
page handlers (errors become status messages) and the ``segxai view`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from models_for_tests import TinySeg, calibrated
from segxai.core.adapter import adapt
from segxai.core.errors import SegxaiError
from segxai.viewer.app import ViewerApp
from segxai.viewer.logic import (
    ViewerModel,
    display_factor,
    enlarge,
    images_from_paths,
    parse_box,
    read_image,
    select_box,
    select_object,
    selection_image,
)
from segxai.viewer.results import (
    RANDOM,
    cost_markdown,
    curves_image,
    explain_selection,
    export_results,
    parse_params,
)


def _png(path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


@pytest.fixture()
def tiny() -> ViewerModel:
    torch.manual_seed(0)
    return ViewerModel(adapt(calibrated(TinySeg(classes=3))), ["bg", "a", "b"], "tiny")


@pytest.fixture()
def pixels() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((32, 32, 3)).astype(np.float32)


# ---------------------------------------------------------------------------- images
def test_read_image_file_array_and_errors(tmp_path) -> None:
    arr = (np.arange(4 * 6 * 3) % 256).astype(np.uint8).reshape(4, 6, 3)
    _png(tmp_path / "a.png", arr)
    got = read_image(tmp_path / "a.png")
    assert got.shape == (4, 6, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, arr / 255.0, atol=1e-6)
    assert read_image(arr, size=8).shape == (8, 8, 3)
    rgba = np.concatenate([arr, np.full((4, 6, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_allclose(read_image(rgba), got)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(SegxaiError, match="bad.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(SegxaiError, match="missing file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(SegxaiError, match=r"expected an \(H, W, 3\) RGB image, got shape"):
        read_image(np.zeros((4, 4, 5), np.uint8))


def test_images_from_paths(tmp_path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("b.png", "a.png"):
        _png(folder / name, np.zeros((5, 5, 3), np.uint8))
    (folder / "notes.txt").write_text("x")
    got = images_from_paths([folder])
    assert list(got) == ["a.png", "b.png"]
    assert images_from_paths([folder / "a.png"], size=16)["a.png"].shape == (16, 16, 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SegxaiError, match="in folder"):
        images_from_paths([empty])
    with pytest.raises(SegxaiError, match="missing"):
        images_from_paths([tmp_path / "missing"])


def test_display_factor_and_enlarge() -> None:
    assert display_factor((64, 64, 3)) == 5
    assert display_factor((256, 200)) == 2
    assert display_factor((512, 512)) == 1
    img = np.arange(4).reshape(2, 2)
    assert enlarge(img, 2).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]


# ---------------------------------------------------------------------------- selections
def test_select_object_takes_the_clicked_component() -> None:
    pred = np.zeros((10, 10), int)
    pred[1:3, 1:3] = 1          # two separate objects of class 1
    pred[6:9, 6:9] = 1
    pred[1:3, 6:9] = 2
    sel = select_object(pred, (7, 7))
    assert sel.class_index == 1
    assert sel.roi.sum() == 9 and sel.roi[6:9, 6:9].all() and not sel.roi[1:3, 1:3].any()
    assert select_object(pred, (1, 7)).class_index == 2
    bg = select_object(pred, (5, 0))
    assert bg.class_index == 0 and bg.roi.sum() == (pred == 0).sum()  # background is connected
    with pytest.raises(SegxaiError, match="inside an image of size"):
        select_object(pred, (10, 0))


def test_select_box_and_parse_box() -> None:
    pred = np.zeros((10, 10), int)
    pred[2:5, 2:5] = 1
    pred[4:6, 4:8] = 2
    assert parse_box(" 8, 6 ,1,2") == (1, 2, 8, 6)
    with pytest.raises(SegxaiError, match="4 numbers"):
        parse_box("1,2,3")
    sel = select_box(pred, (0, 0, 6, 6))
    assert sel.class_index == 1 and sel.roi.sum() == (pred[0:6, 0:6] == 1).sum()
    sel2 = select_box(pred, (0, 0, 6, 6), class_index=2)
    assert sel2.class_index == 2 and sel2.roi.sum() == (pred[0:6, 0:6] == 2).sum()
    empty = select_box(pred, (8, 8, 10, 10))            # only background: the class is 0
    assert empty.class_index == 0 and empty.roi.sum() == 4
    whole = select_box(pred, (8, 8, 10, 10), class_index=1)   # class absent: the whole box
    assert whole.roi.sum() == 4
    with pytest.raises(SegxaiError, match="non-empty box"):
        select_box(pred, (12, 12, 20, 20))


def test_selection_image_outlines_the_roi(pixels) -> None:
    pred = np.zeros((32, 32), int)
    pred[8:20, 8:20] = 1
    sel = select_object(pred, (10, 10))
    img = selection_image(pixels, sel)
    assert img.dtype == np.uint8 and img.shape == (32, 32, 3)
    assert (img[8, 8:20] == 255).all()                   # the outline is white
    np.testing.assert_array_equal(img[0], selection_image(pixels, None)[0])


# ---------------------------------------------------------------------------- explanations
def test_explain_selection_curves_cost_and_errors(tiny, pixels) -> None:
    pred = np.zeros((32, 32), int)
    pred[4:20, 4:20] = 1
    sel = select_object(pred, (10, 10))
    params = parse_params("occlusion.window=8; occlusion.stride=8", ["seg-grad-cam", "occlusion"])
    assert params == {"occlusion": {"window": 8, "stride": 8}}
    results = explain_selection(tiny, pixels, sel, ["seg-grad-cam", "occlusion", "no-such"],
                                params, steps=5)
    names = [r.method for r in results]
    assert names == ["seg-grad-cam", "occlusion", "no-such", RANDOM]
    ok = results[:2]
    for r in ok:
        assert r.error is None and r.saliency.shape == (32, 32)
        assert r.overlay.shape == (32, 32, 3) and r.overlay.dtype == np.uint8
        assert r.deletion.shape == (6,) and r.insertion.shape == (6,)
        assert 0.0 <= r.deletion_auc <= 1.0 and r.cost["forward_passes"] >= 1
    assert results[1].cost["forward_passes"] > results[0].cost["forward_passes"]
    assert "unknown explainer" in results[2].error and results[2].saliency is None
    # the overlay shows the map: it differs from the plain image
    assert np.abs(ok[0].overlay / 255.0 - pixels).mean() > 0.05
    table = cost_markdown(results)
    assert "| seg-grad-cam |" in table and "unknown explainer" in table
    img = curves_image(results)
    assert img is not None and img.ndim == 3 and img.shape[-1] == 3
    assert explain_selection(tiny, pixels, sel, ["gradient"], steps=0)[-1].method == "gradient"
    with pytest.raises(SegxaiError, match="unknown gradient parameter"):
        parse_params("gradient.nope=1", ["gradient"])
    with pytest.raises(SegxaiError, match="at least one method"):
        explain_selection(tiny, pixels, sel, [])


def test_export_results_writes_maps_and_record(tiny, pixels, tmp_path) -> None:
    pred = np.zeros((32, 32), int)
    pred[4:20, 4:20] = 2
    sel = select_object(pred, (10, 10))
    results = explain_selection(tiny, pixels, sel, ["seg-grad-cam", "gradient"], steps=4)
    files = export_results(results, tiny, "pic.png", sel, tmp_path / "out")
    assert [f.name for f in files] == ["seg-grad-cam.png", "seg-grad-cam.npy", "gradient.png",
                                       "gradient.npy", "record.json"]
    np.testing.assert_array_equal(np.load(files[1]), results[0].saliency)
    rec = json.loads(files[-1].read_text())
    assert rec["class_index"] == 2 and rec["class_name"] == "b" and rec["image"] == "pic.png"
    assert rec["roi_pixels"] == 256
    assert [r["method"] for r in rec["results"]] == ["seg-grad-cam", "gradient", RANDOM]
    assert rec["results"][0]["deletion_auc"] == pytest.approx(results[0].deletion_auc)


# ---------------------------------------------------------------------------- page handlers
class _Fixed16(nn.Module):
    """Takes only 16×16 images (a fixed-size network)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinySeg(classes=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (16, 16):
            raise SegxaiError(f"images: expected 16x16 inputs, got {tuple(x.shape[-2:])}")
        return self.net(x)


def test_handlers_turn_errors_into_status(tiny, pixels, tmp_path) -> None:
    viewer = ViewerApp(tiny, {"pic": pixels}, out_dir=tmp_path)
    cur, shown, pred_img, status = viewer.pick_image("pic")
    assert cur is not None and "pic" in status
    assert shown.shape == (32 * cur.factor, 32 * cur.factor, 3) and pred_img.shape == shown.shape
    none, _, _, err = viewer.pick_image("upload", np.zeros((3, 3, 7), np.uint8))
    assert none is None and err.startswith("**Error:**") and "RGB image" in err
    assert viewer.pick_image("missing")[3].startswith("**Error:**")
    # object click (coordinates on the enlarged page image)
    f = cur.factor
    corner, out = viewer.click(cur, (5 * f, 6 * f), "object", None, ["seg-grad-cam"], "", 3)
    assert corner is None and "Error" not in out.status, out.status
    assert out.selection.roi[6, 5] and out.overlays and len(out.files) == 3
    # box mode: first click keeps the corner, the second explains
    corner, out = viewer.click(cur, (0, 0), "box", None, ["gradient"], "", 0)
    assert corner == (0, 0) and out.overlays is None and "corner" in out.status
    corner, out = viewer.click(cur, (10 * f, 12 * f), "box", corner, ["gradient"], "", 0)
    assert corner is None and out.selection.how == "box (0, 0, 11, 13)"
    assert viewer.use_box(cur, "1,2", "", ["gradient"], "", 0).status.startswith("**Error:**")
    assert "class: expected 0..2" in viewer.use_box(cur, "0,0,8,8", "7", ["gradient"], "", 0).status
    bad = viewer.explain(cur, out.selection, ["gradient"], "gradient.nope=1", 0)
    assert bad.status.startswith("**Error:**") and "nope" in bad.status
    assert viewer.explain(cur, None, ["gradient"], "", 0).status.startswith("**Error:**")
    # a model that cannot take the image: the error is in the page, not raised
    fixed = ViewerModel(adapt(_Fixed16()), ["bg", "fg"], "fixed16")
    v16 = ViewerApp(fixed, {"ok": pixels[:16, :16]}, out_dir=tmp_path)
    assert v16.pick_image("ok")[0] is not None
    cur16, _, _, msg = v16.pick_image("upload", (pixels * 255).astype(np.uint8))
    assert cur16 is None and "expected 16x16 inputs" in msg


def test_build_app_without_launching(tiny, pixels, tmp_path) -> None:
    pytest.importorskip("gradio")
    from segxai.viewer import build_app

    demo = build_app(ViewerApp(tiny, {"pic": pixels}, out_dir=tmp_path))
    assert type(demo).__name__ == "Blocks"


# ---------------------------------------------------------------------------- command
def test_view_command_binds_loopback_and_reports_bad_images(monkeypatch, tmp_path,
                                                            capsys) -> None:
    pytest.importorskip("gradio")
    import segxai.viewer
    from segxai.cli import main

    calls = {}

    def fake_launch(viewer, *, host, port, block, quiet):
        calls.update(host=host, port=port, images=list(viewer.images), methods=viewer.methods)

    monkeypatch.setattr(segxai.viewer, "launch", fake_launch)
    _png(tmp_path / "x.png", np.zeros((16, 16, 3), np.uint8))
    factory = "models_for_tests:TinySeg"
    rc = main(["view", "--model", factory, "--quiet", "--method", "gradient",
               str(tmp_path / "x.png")])
    assert rc == 0 and calls == {"host": "127.0.0.1", "port": 7860, "images": ["x.png"],
                                 "methods": ["gradient"]}
    assert main(["view", "--model", factory, "--quiet", str(tmp_path / "nope.png")]) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # argparse refuses it before any work
        main(["view", "--model", factory, "--quiet", "--port", "70000"])
    assert info.value.code == 2
    assert "--port: expected an integer in [1, 65535]" in capsys.readouterr().err
