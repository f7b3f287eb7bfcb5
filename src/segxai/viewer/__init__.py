"""An interactive viewer (``segxai view``): a local Gradio page where a user picks or uploads
an image, clicks an object or gives a box, chooses methods and parameters, and sees the
overlays, deletion/insertion curves and cost, with downloads of the maps and a JSON record.

The page logic lives in plain functions (:mod:`segxai.viewer.logic`,
:mod:`segxai.viewer.results`) and state-free handlers (:class:`ViewerApp`); only
:func:`build_app` and :func:`launch` import Gradio (the optional extra ``viewer``).
"""

from segxai.viewer.app import ViewerApp, build_app, launch
from segxai.viewer.logic import (
    Selection,
    ViewerModel,
    builtin_samples,
    images_from_paths,
    load_viewer_model,
    read_image,
    select_box,
    select_object,
)
from segxai.viewer.results import MethodResult, explain_selection, export_results

__all__ = [
    "MethodResult",
    "Selection",
    "ViewerApp",
    "ViewerModel",
    "build_app",
    "builtin_samples",
    "explain_selection",
    "export_results",
    "images_from_paths",
    "launch",
    "load_viewer_model",
    "read_image",
    "select_box",
    "select_object",
]
