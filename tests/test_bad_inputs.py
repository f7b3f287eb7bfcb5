"""Bad input raises a specific error whose message names the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segxai
from models_for_tests import TinySeg

S = 16


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinySeg(classes=3, width=4).eval()


def _x(n: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, S, S)


def _t(n: int = 1, cls: int = 1) -> segxai.Target:
    return segxai.Target.whole_image(cls, size=(S, S), n=n)


def _nan() -> torch.Tensor:
    x = _x()
    x[0, 0, 0, 0] = float("nan")
    return x


def _inf() -> torch.Tensor:
    x = _x()
    x[0, 1, 2, 3] = float("inf")
    return x


CASES = [
    ("wrong rank", lambda: segxai.explain(_model(), torch.rand(3, S, S), _t()), ValueError, "images"),
    ("wrong channels", lambda: segxai.explain(_model(), torch.rand(1, 2, S, S), _t()), ValueError,
     "images"),
    ("NaN image", lambda: segxai.explain(_model(), _nan(), _t()), ValueError, "images"),
    ("Inf image", lambda: segxai.explain(_model(), _inf(), _t()), ValueError, "images"),
    ("integer image", lambda: segxai.explain(_model(), torch.randint(0, 255, (1, 3, S, S)), _t()),
     TypeError, "images"),
    ("numpy image", lambda: segxai.explain(_model(), np.zeros((1, 3, S, S), np.float32), _t()),
     TypeError, "images"),
    ("class out of range", lambda: segxai.explain(_model(), _x(), _t(cls=7)), ValueError,
     "class_index"),
    ("negative class", lambda: segxai.Target.whole_image(-1, size=(S, S)), ValueError,
     "class_index"),
    ("float class", lambda: segxai.Target.from_mask(torch.ones(S, S, dtype=torch.bool), 1.5),
     TypeError, "class_index"),
    ("empty ROI", lambda: segxai.Target.from_mask(torch.zeros(1, S, S, dtype=torch.bool), 1),
     ValueError, "roi"),
    ("mask shape mismatch",
     lambda: segxai.explain(_model(), _x(), segxai.Target.whole_image(1, size=(8, 8))),
     ValueError, "roi"),
    ("mask rank", lambda: segxai.Target.from_mask(torch.ones(S), 1), ValueError, "mask"),
    ("label map as mask", lambda: segxai.Target.from_mask(torch.full((S, S), 3), 1), ValueError,
     "mask"),
    ("target count mismatch", lambda: segxai.explain(_model(), _x(2), _t(1)), ValueError, "target"),
    ("not a target", lambda: segxai.explain(_model(), _x(), "class 1"), TypeError, "target"),
    ("unknown layer", lambda: segxai.explain(_model(), _x(), _t(), layer="encoder.99"), ValueError,
     "layer"),
    ("unknown method", lambda: segxai.explain(_model(), _x(), _t(), method="gradcam++"),
     ValueError, "method"),
    ("negative n_samples",
     lambda: segxai.explain(_model(), _x(), _t(), method="smoothgrad", n_samples=-3), ValueError,
     "n_samples"),
    ("negative noise", lambda: segxai.explain(_model(), _x(), _t(), method="smoothgrad",
                                              noise=-0.1), ValueError, "noise"),
    ("zero batch_size", lambda: segxai.explain(_model(), _x(), _t(), method="smoothgrad",
                                               batch_size=0), ValueError, "batch_size"),
    ("unknown weighting", lambda: segxai.explain(_model(), _x(), _t(), weighting="eigen"),
     ValueError, "weighting"),
    ("unknown reduce", lambda: segxai.explain(_model(), _x(), _t(), method="gradient",
                                              reduce="median"), ValueError, "reduce"),
    ("unknown parameter", lambda: segxai.explain(_model(), _x(), _t(), method="gradient",
                                                 sigma=2), TypeError, "sigma"),
    ("unknown score", lambda: segxai.Target.whole_image(1, size=(S, S), score="dice"), ValueError,
     "score"),
    ("empty box", lambda: segxai.Target.from_box((5, 5, 5, 9), 1, size=(S, S)), ValueError, "box"),
    ("pixel outside", lambda: segxai.Target.from_pixel((S, 0), 1, size=(S, S)), ValueError,
     "pixel"),
    ("class not predicted", lambda: segxai.Target.from_prediction(
        lambda x: torch.zeros(x.shape[0], 3, S, S), _x(), 2), ValueError, "roi"),
    ("unknown ROI kind", lambda: segxai.Target.from_prediction(_model(), _x(), 1, roi="blob"),
     ValueError, "roi"),
    ("top_p out of range", lambda: segxai.top_p(torch.rand(1, S, S), 0), ValueError, "p"),
    ("maps rank", lambda: segxai.minmax(torch.rand(S, S)), ValueError, "maps"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case) -> None:
    _name, call, exc, argument = case
    with pytest.raises(exc) as info:
        call()
    assert argument in str(info.value), str(info.value)


def test_unknown_layer_lists_close_names() -> None:
    with pytest.raises(ValueError, match="closest: enc"):
        segxai.find_layer(_model(), "encc")


def test_unknown_method_suggests() -> None:
    with pytest.raises(ValueError, match="did you mean seg-grad-cam"):
        segxai.get_explainer("seg-grad-cm")
