"""Bad model outputs and bad API arguments: each raises a SegxaiError naming what is wrong.

What comes back from the model is checked as well as what goes in: NaN/Inf logits (naming the
images and classes), outputs of the wrong rank, batch or spatial size, and an image smaller
than the model's downsampling (a constant map, reported with the smallest size that works).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import segxai
from models_for_tests import TinySeg
from segxai.core.adapter import adapt
from segxai.core.checks import check_model_output, spatially_constant
from segxai.core.errors import SegxaiError, SegxaiTypeError

S = 16


class Fixed(nn.Module):
    """Returns ``make(x)``: a stand-in for a model whose output is broken in a chosen way."""

    def __init__(self, make) -> None:
        super().__init__()
        self.make = make
        self.conv = nn.Conv2d(3, 2, 1)  # gives the adapter a device and channel count

    def forward(self, x: torch.Tensor):
        return self.make(x, self.conv(x))


class Strided(nn.Module):
    """Downsamples by 16 with strided convolutions, then upsamples to the input size (like
    torchvision's DeepLab): below 16×16 pixels every pixel gets the same logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 4, 4, 3, stride=2, padding=1)
                                    for i in range(4)])
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.head(self.body(x)), size=x.shape[-2:], mode="bilinear",
                             align_corners=False)


def _explain(model: nn.Module, x: torch.Tensor | None = None, method: str = "gradient"):
    x = torch.rand(1, 3, S, S) if x is None else x
    target = segxai.Target.whole_image(1, size=tuple(x.shape[-2:]))
    return segxai.explain(model, x, target, method=method)


# ------------------------------------------------------------------ model outputs
OUTPUT_CASES = [
    ("NaN logits", lambda x, y: y * float("nan"), "finite"),
    ("Inf logits", lambda x, y: y + float("inf"), "finite"),
    ("rank 3", lambda x, y: y[:, 0], "rank 4"),
    ("rank 5", lambda x, y: y.unsqueeze(0), "rank 4"),
    ("no class channel", lambda x, y: y[:, :0], "at least one class"),
    ("other batch", lambda x, y: torch.cat([y, y]), "image(s) in the batch"),
    ("transposed", lambda x, y: y.transpose(-1, -2).contiguous(), "one stride"),
    ("flattened", lambda x, y: y.flatten(2).unsqueeze(2), "one stride"),
    ("dict without out", lambda x, y: {"pred": y}, "'out'"),
    ("string", lambda x, y: "not a tensor", "expected a tensor"),
]


@pytest.mark.parametrize(("make", "needle"), [c[1:] for c in OUTPUT_CASES],
                         ids=[c[0] for c in OUTPUT_CASES])
def test_bad_model_output_is_a_named_error(make, needle: str) -> None:
    x = torch.rand(1, 3, S, 2 * S)  # not square, so that a transposed output shows
    with pytest.raises(SegxaiError, match="model output") as info:
        adapt(Fixed(make))(x)
    assert needle in str(info.value)


def test_nan_logits_name_the_images_and_classes() -> None:
    def make(x, y):
        y = y.clone()
        y[1, 0, 2, 3] = float("nan")
        y[2, 1, 0, 0] = float("-inf")
        return y

    with pytest.raises(SegxaiError, match=r"image\(s\) \[1, 2\] for class\(es\) \[0, 1\]"):
        adapt(Fixed(make))(torch.rand(3, 3, S, S))


def test_nan_logits_stop_an_explainer_instead_of_an_all_nan_map() -> None:
    with pytest.raises(SegxaiError, match="finite"):
        _explain(Fixed(lambda x, y: y * float("nan")), method="occlusion")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 3), k=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9),
       where=st.integers(0, 10_000), value=st.sampled_from([float("nan"), float("inf"),
                                                            float("-inf")]))
def test_any_non_finite_value_anywhere_is_found(n, k, h, w, where, value) -> None:
    out = torch.randn(n, k, h, w)
    flat = where % out.numel()
    out.view(-1)[flat] = value
    img, cls = flat // (k * h * w), (flat // (h * w)) % k
    with pytest.raises(SegxaiError, match=rf"image\(s\) \[{img}\] for class\(es\) \[{cls}\]"):
        check_model_output(out, (h, w))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 96), w=st.integers(8, 96), stride=st.sampled_from([1, 2, 4, 8, 16]),
       ceil=st.booleans())
def test_outputs_of_any_stride_are_accepted(h: int, w: int, stride: int, ceil: bool) -> None:
    f = (lambda v: -(-v // stride)) if ceil else (lambda v: max(1, v // stride))
    out = torch.zeros(1, 2, f(h), f(w))
    assert check_model_output(out, (h, w)) is out


@settings(max_examples=40, deadline=None)
@given(h=st.integers(24, 96), w=st.integers(24, 96))
def test_transposed_outputs_of_non_square_inputs_are_refused(h: int, w: int) -> None:
    if abs(h - w) <= 4:
        return
    with pytest.raises(SegxaiError, match="one stride"):
        check_model_output(torch.zeros(1, 2, w, h), (h, w))


def test_image_smaller_than_the_downsampling_gives_the_minimum_size() -> None:
    model = Strided().eval()
    with pytest.raises(SegxaiError, match=r"images: expected images of at least 32×32") as info:
        _explain(model, torch.rand(1, 3, 3, 3))
    assert "3×3" in str(info.value)
    assert _explain(model, torch.rand(1, 3, 32, 32)).maps.shape == (1, 32, 32)


def test_position_free_model_is_not_mistaken_for_a_small_image() -> None:
    # a global-pooling head is constant over the image at every size: a model choice
    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean((2, 3), keepdim=True).expand(-1, -1, *x.shape[-2:])

    adapter = adapt(Pooled())
    logits = adapter(torch.rand(1, 3, 4, 4))
    assert spatially_constant(logits)


def test_constant_image_is_not_reported_as_too_small() -> None:
    adapter = adapt(Strided().eval())
    assert adapter(torch.zeros(1, 3, 3, 3)).shape == (1, 3, 3, 3)


# ------------------------------------------------------------------ API arguments
def _model() -> nn.Module:
    return TinySeg(classes=3, width=4).eval()


API_CASES = [
    ("images list", lambda: segxai.explain(_model(), [[0.0]], segxai.Target.whole_image(
        1, size=(S, S))), SegxaiTypeError, "images"),
    ("images rank 2", lambda: _explain(_model(), torch.rand(S, S)), SegxaiError, "images"),
    ("images empty", lambda: _explain(_model(), torch.rand(0, 3, S, S)), SegxaiError, "images"),
    ("images float16 NaN", lambda: segxai.explain(
        _model(), torch.full((1, 3, S, S), float("nan")),
        segxai.Target.whole_image(1, size=(S, S))), SegxaiError, "images"),
    ("unknown method", lambda: _explain(_model(), method="no-such-method"), SegxaiError,
     "no-such-method"),
    ("model not callable", lambda: adapt(42), SegxaiTypeError, "model"),
    ("negative std", lambda: adapt(_model(), mean=(0, 0, 0), std=(1, -1, 1)), SegxaiError,
     "std"),
    ("adapter twice", lambda: adapt(adapt(_model()), mean="imagenet"), SegxaiError, "adapt"),
    ("zero window", lambda: segxai.get_explainer("occlusion")(window=0), SegxaiError, "window"),
    ("load_model num_classes 0", lambda: __import__(
        "segxai.models.zoo", fromlist=["load_model"]).load_model(
        "deeplabv3_mobilenet_v3_large", num_classes=0), SegxaiError, "num_classes"),
]


@pytest.mark.parametrize(("call", "kind", "name"), [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])
def test_bad_api_argument_names_it(call, kind: type[Exception], name: str) -> None:
    with pytest.raises(kind) as info:
        call()
    assert name in str(info.value)


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=6),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8,
                              torch.bool]))
def test_random_shapes_and_dtypes_are_refused_or_accepted_cleanly(shape, dtype) -> None:
    x = torch.zeros(shape, dtype=dtype)
    ok = len(shape) == 4 and min(shape) > 0 and shape[1] == 3 and dtype.is_floating_point \
        and shape[2] >= 1 and shape[3] >= 1
    if ok:
        return  # valid inputs are covered by the contract tests
    with pytest.raises(SegxaiError, match="images"):
        segxai.explain(_model(), x, segxai.Target.whole_image(1, size=(4, 4)),
                       method="gradient")
