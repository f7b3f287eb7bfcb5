"""The viewer's page: a Gradio layout wired to :mod:`segxai.viewer.logic` and
:mod:`segxai.viewer.results`.

The handlers here (``ViewerApp.pick_image``, ``click``, ``use_box``, ``explain``) take and
return plain values, so they are tested without a browser; every error they meet (a bad
image, a failing method, a model that cannot take the image) becomes a message in the page's
status box instead of an exception in the server.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segxai.core.errors import SegxaiError
from segxai.viewer.logic import (
    Selection,
    ViewerModel,
    display_factor,
    enlarge,
    parse_box,
    predict,
    prediction_image,
    read_image,
    select_box,
    select_object,
    selection_image,
)
from segxai.viewer.results import (
    MethodResult,
    cost_markdown,
    curves_image,
    explain_selection,
    export_results,
    parse_params,
)

__all__ = ["ClickMode", "Outputs", "ViewerApp", "build_app", "launch"]

ClickMode = Literal["object", "box"]
UPLOAD = "(uploaded image)"


@dataclass
class Current:
    """The image on the page: its name, pixels and the model's prediction."""

    name: str
    pixels: np.ndarray
    pred: np.ndarray

    @property
    def factor(self) -> int:
        """How much the page enlarges the image (see :func:`display_factor`)."""
        return display_factor(self.pixels.shape)

    def shown(self, image: np.ndarray) -> np.ndarray:
        """An image of this size as the page shows it (enlarged)."""
        return enlarge(image, self.factor)


@dataclass
class Outputs:
    """Everything an explanation changes on the page (``None`` leaves a component as is)."""

    image: np.ndarray | None = None
    selection: Selection | None = None
    overlays: list[tuple[np.ndarray, str]] | None = None
    curves: np.ndarray | None = None
    cost: str | None = None
    files: list[str] | None = None
    status: str = ""
    results: list[MethodResult] = field(default_factory=list)


def _error(exc: BaseException) -> str:
    kind = "" if isinstance(exc, SegxaiError) else f"{type(exc).__name__}: "
    return f"**Error:** {kind}{exc}"


class ViewerApp:
    """The viewer's state-free handlers for one model and a set of images.

    Args:
        model: the model to explain.
        images: named ``(H, W, 3)`` images in ``[0, 1]`` (the first one is shown first).
        out_dir: where downloads are written (one sub-folder per explanation).
        methods: methods ticked at start.
    """

    def __init__(self, model: ViewerModel, images: dict[str, np.ndarray],
                 out_dir: str | Path | None = None,
                 methods: list[str] | None = None) -> None:
        from segxai.core.registry import list_explainers

        if not images:
            raise SegxaiError("images: expected at least one image, got none")
        self.model = model
        self.images = images
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="segxai-view-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.all_methods = list_explainers()
        self.methods = methods or ["seg-grad-cam"]

    # ------------------------------------------------------------------ images
    def current(self, name: str, pixels: np.ndarray | None = None) -> Current:
        """The image called ``name`` (or the uploaded ``pixels``) with its prediction."""
        if pixels is not None:
            pix = read_image(pixels, self.model.size, name="upload")
        elif name in self.images:
            pix = self.images[name]
        else:
            raise SegxaiError(f"image: expected one of {list(self.images)}, got {name!r}")
        return Current(name, pix, predict(self.model, pix))

    def pick_image(self, name: str, upload: np.ndarray | None = None
                   ) -> tuple[Current | None, np.ndarray | None, np.ndarray | None, str]:
        """A sample chosen or an image uploaded: ``(current, shown image, prediction, status)``;
        on error ``current`` is ``None`` and the status says why."""
        try:
            cur = self.current(name, upload)
        except Exception as exc:  # shown in the page
            return None, None, None, _error(exc)
        present = sorted(int(c) for c in np.unique(cur.pred))
        classes = ", ".join(f"{c} {self.model.class_name(c)}" for c in present)
        return (cur, cur.shown(selection_image(cur.pixels, None)),
                cur.shown(prediction_image(cur.pred, len(self.model.class_names))),
                f"**{cur.name}** ({cur.pixels.shape[1]}×{cur.pixels.shape[0]}); predicted "
                f"classes: {classes}. Click an object to explain it.")

    # ------------------------------------------------------------------ selections
    def click(self, cur: Current | None, xy: tuple[int, int], mode: ClickMode,
              corner: tuple[int, int] | None, methods: list[str], params: str, steps: int
              ) -> tuple[tuple[int, int] | None, Outputs]:
        """A click at ``xy = (x, y)`` on the shown (enlarged) image: in ``object`` mode it selects the
        connected component of the predicted class under the pointer and explains it; in
        ``box`` mode the first click sets a corner and the second one the box.

        Returns:
            ``(corner kept for the next click, outputs)``.
        """
        if cur is None:
            return None, Outputs(status="**Error:** image: expected an image, got none")
        x, y = int(xy[0]) // cur.factor, int(xy[1]) // cur.factor
        try:
            if mode == "box":
                if corner is None:
                    return (x, y), Outputs(status=f"Box corner set at (x {x}, y {y}); click the "
                                                  "opposite corner.")
                box = (min(corner[0], x), min(corner[1], y),
                       max(corner[0], x) + 1, max(corner[1], y) + 1)
                return None, self.explain(cur, select_box(cur.pred, box), methods, params,
                                          steps)
            return None, self.explain(cur, select_object(cur.pred, (y, x)), methods, params,
                                      steps)
        except Exception as exc:  # shown in the page
            return None, Outputs(status=_error(exc))

    def use_box(self, cur: Current | None, box: str, class_index: str, methods: list[str],
                params: str, steps: int) -> Outputs:
        """An entered box ``x0, y0, x1, y1`` and optional class number."""
        if cur is None:
            return Outputs(status="**Error:** image: expected an image, got none")
        try:
            cls = None
            if str(class_index or "").strip():
                try:
                    cls = int(str(class_index).strip())
                except ValueError:
                    raise SegxaiError(f"class: expected an integer, got {class_index!r}") from None
                k = len(self.model.class_names)
                if not 0 <= cls < k:
                    raise SegxaiError(f"class: expected 0..{k - 1}, got {cls}")
            return self.explain(cur, select_box(cur.pred, parse_box(box), cls), methods,
                                params, steps)
        except Exception as exc:  # shown in the page
            return Outputs(status=_error(exc))

    # ------------------------------------------------------------------ explanations
    def explain(self, cur: Current | None, selection: Selection | None, methods: list[str],
                params: str, steps: int) -> Outputs:
        """Explain ``selection`` with ``methods``: overlays, curves, cost, downloads."""
        if cur is None or selection is None:
            return Outputs(status="**Error:** selection: expected a click on an object or a "
                                  "box first, got none")
        try:
            methods = list(methods or [])
            parsed = parse_params(params, methods) if methods else {}
            results = explain_selection(self.model, cur.pixels, selection, methods, parsed,
                                        steps=int(steps))
            folder = Path(tempfile.mkdtemp(prefix="explain-", dir=self.out_dir))
            files = export_results(results, self.model, cur.name, selection, folder)
        except Exception as exc:  # shown in the page
            return Outputs(image=cur.shown(selection_image(cur.pixels, selection)),
                           selection=selection, status=_error(exc))
        overlays = [(cur.shown(r.overlay), r.method) for r in results if r.overlay is not None]
        failed = [r for r in results if r.error]
        status = f"Explained {selection.describe(self.model)}."
        if failed:
            status += "\n\n" + "\n\n".join(f"**Error in {r.method}:** {r.error}" for r in failed)
        return Outputs(image=cur.shown(selection_image(cur.pixels, selection)),
                       selection=selection, overlays=overlays, curves=curves_image(results),
                       cost=cost_markdown(results), files=[str(f) for f in files],
                       status=status, results=results)


def build_app(viewer: ViewerApp) -> Any:
    """The Gradio ``Blocks`` page of ``viewer`` (not launched)."""
    import gradio as gr

    names = list(viewer.images)
    first, first_img, first_pred, first_status = viewer.pick_image(names[0])

    def outputs_tuple(o: Outputs) -> tuple[Any, ...]:
        keep = gr.skip()
        return (keep if o.image is None else o.image, o.selection or keep,
                keep if o.overlays is None else o.overlays, keep if o.curves is None else o.curves,
                keep if o.cost is None else o.cost, keep if o.files is None else o.files, o.status)

    with gr.Blocks(title="segxai viewer", analytics_enabled=False) as demo:
        gr.Markdown(f"## segxai viewer: `{viewer.model.spec}`\nPick an image, click an object "
                    "(or give a box), choose methods: overlays, deletion/insertion curves, cost "
                    "and downloads appear below.")
        cur_state = gr.State(first)
        sel_state = gr.State(None)
        corner_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                sample = gr.Dropdown(names, value=names[0], label="image")
                upload = gr.Image(label="or upload an image", sources=["upload"], type="numpy",
                                  height=140, elem_id="segxai-upload")
                mode = gr.Radio(["object", "box"], value="object", label="a click selects",
                                info="object: the predicted region under the pointer; box: two "
                                     "clicks give opposite corners")
                methods = gr.CheckboxGroup(viewer.all_methods, value=viewer.methods,
                                           label="methods", elem_id="segxai-methods")
                params = gr.Textbox(label="parameters (METHOD.KEY=VALUE, one per line)",
                                    lines=2, placeholder="smoothgrad.n_samples=8")
                steps = gr.Slider(0, 100, value=20, step=5, label="deletion/insertion steps")
                with gr.Row():
                    box = gr.Textbox(label="box x0, y0, x1, y1", scale=3)
                    cls = gr.Textbox(label="class (optional)", scale=1)
                box_btn = gr.Button("explain box")
                run_btn = gr.Button("explain selection again", variant="primary")
            with gr.Column(scale=2):
                status = gr.Markdown(first_status, elem_id="segxai-status")
                with gr.Row():
                    shown = gr.Image(first_img, label="click an object", interactive=False,
                                     elem_id="segxai-image", height=320, format="png")
                    pred = gr.Image(first_pred, label="prediction", interactive=False,
                                    height=320, format="png")
                gallery = gr.Gallery(label="overlays", elem_id="segxai-overlays", columns=4,
                                     height=300, format="png", object_fit="contain",
                                     fit_columns=False, allow_preview=False)
                curves = gr.Image(label="deletion / insertion", interactive=False,
                                  elem_id="segxai-curves", format="png")
                cost = gr.Markdown(elem_id="segxai-cost")
                files = gr.File(label="downloads (PNG, NPY, JSON)", file_count="multiple",
                                elem_id="segxai-files")
        outs = [shown, sel_state, gallery, curves, cost, files, status]

        def on_pick(name: str) -> tuple[Any, ...]:
            c, img, p, s = viewer.pick_image(name)
            return (c or gr.skip(), gr.skip() if img is None else img,
                    gr.skip() if p is None else p, s, None)

        def on_upload(arr: np.ndarray | None) -> tuple[Any, ...]:
            if arr is None:
                return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            c, img, p, s = viewer.pick_image(UPLOAD, arr)
            return (c or gr.skip(), gr.skip() if img is None else img,
                    gr.skip() if p is None else p, s, None)

        def on_click(c: Current | None, m: ClickMode, corner: Any, ms: list[str], ps: str,
                     st: float, evt: gr.SelectData) -> tuple[Any, ...]:
            kept, o = viewer.click(c, tuple(evt.index), m, corner, ms, ps, int(st))
            return (kept, *outputs_tuple(o))

        # Gradio finds the event argument by its annotation; under postponed annotations it
        # sees a string, so give it the class itself.
        on_click.__annotations__["evt"] = gr.SelectData

        def on_box(c: Current | None, b: str, k: str, ms: list[str], ps: str,
                   st: float) -> tuple[Any, ...]:
            return outputs_tuple(viewer.use_box(c, b, k, ms, ps, int(st)))

        def on_run(c: Current | None, s: Selection | None, ms: list[str], ps: str,
                   st: float) -> tuple[Any, ...]:
            return outputs_tuple(viewer.explain(c, s, ms, ps, int(st)))

        sample.change(on_pick, [sample], [cur_state, shown, pred, status, sel_state])
        upload.upload(on_upload, [upload], [cur_state, shown, pred, status, sel_state])
        shown.select(on_click, [cur_state, mode, corner_state, methods, params, steps],
                     [corner_state, *outs])
        box_btn.click(on_box, [cur_state, box, cls, methods, params, steps], outs)
        run_btn.click(on_run, [cur_state, sel_state, methods, params, steps], outs)
    return demo


def launch(viewer: ViewerApp, *, host: str = "127.0.0.1", port: int = 7860,
           block: bool = True, quiet: bool = False) -> Any:
    """Start the page on ``http://host:port`` (loopback by default). With ``block=False`` the
    server runs in a background thread and the ``Blocks`` object is returned (call its
    ``close()`` to stop it)."""
    import gradio as gr

    demo = build_app(viewer)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])
    demo.launch(server_name=host, server_port=int(port), share=False, inbrowser=False,
                prevent_thread_lock=not block, quiet=quiet, show_error=True, ssr_mode=False,
                allowed_paths=[str(viewer.out_dir)], theme=theme, footer_links=[])
    return demo
