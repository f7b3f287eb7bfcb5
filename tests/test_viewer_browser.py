"""``segxai view`` end to end in a real headless Chromium (Debian's ``chromium`` package driven
by Playwright for Python; no browser is downloaded).

The viewer runs on a free loopback port in a background thread; the test loads the page,
clicks an object of a built-in sample, waits for the Seg-Grad-CAM overlay, checks it is an
image that differs from the input, and saves a screenshot to ``tests/artifacts/``.
"""

from __future__ import annotations

import io
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the viewer needs the optional extra 'viewer' (gradio)")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs Playwright for Python (pip install "
                                  "playwright)")

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _chromium() -> str | None:
    """Debian's chromium binary (the wrapper script's target first), or None."""
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found (Debian: apt-get install -y chromium); .ci/run "
                             "installs it so CI always runs this test")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def viewer_server(builtin_quick, tmp_path_factory):
    from segxai.core.adapter import adapt
    from segxai.viewer import ViewerApp, ViewerModel, builtin_samples, launch

    model = ViewerModel(adapt(builtin_quick.model), list(builtin_quick.class_names),
                        "builtin (quick)")
    viewer = ViewerApp(model, builtin_samples(photos=False),
                       out_dir=tmp_path_factory.mktemp("viewer-out"))
    port = _free_port()
    demo = launch(viewer, host="127.0.0.1", port=port, block=False, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", viewer
    finally:
        demo.close()


def _object_pixel(viewer) -> tuple[int, int, int]:
    """``(row, col, class)`` of a pixel deep inside the largest predicted object of the first
    sample (its distance-transform maximum)."""
    from scipy import ndimage

    cur = viewer.current(next(iter(viewer.images)))
    labels, n = ndimage.label(cur.pred > 0)
    assert n > 0, "the quick model predicts no object on the first sample"
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    depth = ndimage.distance_transform_edt(labels == largest)
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return int(r), int(c), int(cur.pred[r, c])


def _image_xy(page, selector: str, row: float, col: float) -> tuple[float, float]:
    """Page coordinates of pixel ``(row, col)`` of the ``<img>`` at ``selector`` (natural
    size), drawn centred and scaled down to fit (CSS ``object-fit: scale-down``)."""
    box = page.eval_on_selector(selector, """img => {
        const r = img.getBoundingClientRect();
        return {x: r.x, y: r.y, w: r.width, h: r.height,
                nw: img.naturalWidth, nh: img.naturalHeight};
    }""")
    s = min(box["w"] / box["nw"], box["h"] / box["nh"], 1.0)
    off_x, off_y = (box["w"] - s * box["nw"]) / 2, (box["h"] - s * box["nh"]) / 2
    return box["x"] + off_x + col * s, box["y"] + off_y + row * s


def test_click_on_object_shows_seg_grad_cam_overlay(viewer_server) -> None:
    from PIL import Image

    url, viewer = viewer_server
    row, col, cls = _object_pixel(viewer)
    first = next(iter(viewer.images))
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "viewer_seg_grad_cam.png"
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="domcontentloaded")
            img_sel = "#segxai-image img"
            page.wait_for_selector(img_sel, timeout=60_000)
            page.wait_for_function(f"document.querySelector('{img_sel}').naturalWidth > 0",
                                   timeout=60_000)
            assert "segxai viewer" in page.content()
            f = viewer.current(first).factor  # the page shows small images enlarged
            x, y = _image_xy(page, img_sel, (row + 0.5) * f, (col + 0.5) * f)
            page.mouse.click(x, y)
            try:
                page.wait_for_selector("#segxai-overlays img", timeout=120_000)
            except playwright_api.Error:
                page.screenshot(path=str(shot), full_page=True)  # to see what went wrong
                raise
            status = page.inner_text("#segxai-status")
            assert f"class {cls}" in status, status
            assert "Error" not in status, status
            src = page.get_attribute("#segxai-overlays img", "src")
            assert src
            data = page.request.get(src if src.startswith("http") else url.rstrip("/") + src)
            overlay = np.asarray(Image.open(io.BytesIO(data.body())).convert("RGB"), float)
            page.wait_for_timeout(500)  # let the gallery and curves settle for the screenshot
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    original = viewer.current(first).shown(viewer.images[first]) * 255.0
    assert overlay.shape == original.shape
    assert np.abs(overlay - original).mean() > 10.0  # a heat map is blended in
    assert shot.is_file() and shot.stat().st_size > 10_000
    print(f"viewer screenshot: {shot}")
