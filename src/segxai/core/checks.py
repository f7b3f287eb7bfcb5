"""Validation at the public boundary. Every message names the argument and what was expected."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Integral, Real

import torch
from torch import Tensor

from segxai.core.errors import SegxaiError, SegxaiTypeError


def check_images(images: object, name: str = "images", channels: int | None = None) -> Tensor:
    """Return ``images`` if it is a finite floating (N, C, H, W) tensor, else raise.

    Raises:
        SegxaiTypeError: not a tensor, or not a floating dtype.
        SegxaiError: wrong rank, wrong channel count, empty, NaN or Inf values.
    """
    if not isinstance(images, Tensor):
        raise SegxaiTypeError(f"{name}: expected a torch.Tensor of shape (N, C, H, W), "
                        f"got {type(images).__name__}")
    if images.dim() != 4:
        raise SegxaiError(f"{name}: expected a 4-D tensor (N, C, H, W), "
                         f"got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise SegxaiTypeError(f"{name}: expected a floating tensor (float32/float64), got "
                        f"{images.dtype}; convert with images.float() / 255 for uint8 images")
    if min(images.shape) == 0:
        raise SegxaiError(f"{name}: expected non-empty (N, C, H, W), got {tuple(images.shape)}")
    if channels is not None and images.shape[1] != channels:
        raise SegxaiError(f"{name}: expected {channels} channels (N, {channels}, H, W), "
                         f"got {images.shape[1]} in shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise SegxaiError(f"{name}: contains NaN or Inf values")
    return images


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or int(value) < minimum:
        raise SegxaiError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def check_nonneg_int(value: object, name: str) -> int:
    return check_positive_int(value, name, minimum=0)


def check_fraction(value: object, name: str, *, low: float = 0.0, high: float = 1.0,
                   low_open: bool = False, high_open: bool = False) -> float:
    """Check ``low (<|<=) value (<|<=) high`` and return it as float."""
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        raise SegxaiError(f"{name}: expected a number in {'(' if low_open else '['}{low}, "
                         f"{high}{')' if high_open else ']'}, got {value!r}")
    v = float(value)
    bad_low = v <= low if low_open else v < low
    bad_high = v >= high if high_open else v > high
    if bad_low or bad_high:
        raise SegxaiError(f"{name}: expected a number in {'(' if low_open else '['}{low}, "
                         f"{high}{')' if high_open else ']'}, got {value!r}")
    return v


def check_choice(value: object, name: str, choices: tuple[str, ...] | list[str]) -> str:
    if value not in choices:
        raise SegxaiError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


# ---------------------------------------------------------------------- model outputs
#: rounding slack (pixels) between an output side and the input side divided by the stride
_SIZE_SLACK = 2.0


def _stride_interval(big: int, small: int) -> tuple[float, float]:
    """Strides ``s`` for which ``small`` is ``big / s`` up to the rounding slack."""
    low = big / (small + _SIZE_SLACK)
    high = big / (small - _SIZE_SLACK) if small > _SIZE_SLACK else math.inf
    return low, high


def check_model_output(out: Tensor, size: Sequence[int], batch: int | None = None) -> Tensor:
    """Check a raw model output ``N×K×h×w`` against the input it came from and return it.

    The spatial size may differ from the input's ``size`` (the adapter resizes it), but both
    sides must follow from one common stride up to a rounding of two pixels, so that a
    transposed, flattened or cropped-to-garbage output is not silently stretched.

    Args:
        out: the model's output (unwrapped).
        size: the input's ``(H, W)``.
        batch: the input's batch size, if known.

    Raises:
        SegxaiError: wrong rank, no class channel, another batch size, a spatial size that
            cannot come from the input, or NaN/Inf logits (naming the images and classes).
    """
    if out.dim() != 4:
        raise SegxaiError(f"model output: expected N×K×h×w logits (rank 4), got shape "
                          f"{tuple(out.shape)}")
    n, k, h, w = (int(v) for v in out.shape)
    if k < 1 or h < 1 or w < 1:
        raise SegxaiError(f"model output: expected at least one class and one pixel, got shape "
                          f"{tuple(out.shape)}")
    if batch is not None and n != batch:
        raise SegxaiError(f"model output: expected {batch} image(s) in the batch like the "
                          f"input, got shape {tuple(out.shape)}")
    big_h, big_w = int(size[0]), int(size[1])
    low_h, high_h = _stride_interval(big_h, h)
    low_w, high_w = _stride_interval(big_w, w)
    if max(low_h, low_w) >= min(high_h, high_w):
        raise SegxaiError(f"model output: expected a spatial size that is the input's "
                          f"{big_h}×{big_w} divided by one stride, got {h}×{w} (shape "
                          f"{tuple(out.shape)}); a transposed or flattened output?")
    if out.is_floating_point() or out.is_complex():
        finite = torch.isfinite(out.detach())
        if not bool(finite.all()):
            bad = (~finite).flatten(2).any(2).nonzero().tolist()
            images = sorted({i for i, _ in bad})
            classes = sorted({c for _, c in bad})
            raise SegxaiError(f"model output: expected finite logits, got NaN or Inf in "
                              f"image(s) {_few(images)} for class(es) {_few(classes)}")
    return out


def _few(values: list[int], limit: int = 10) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def spatially_constant(t: Tensor, rtol: float = 1e-5) -> bool:
    """Whether every ``N×C`` plane of ``t`` holds one value, up to ``rtol`` of the largest
    magnitude in ``t`` (bilinear upsampling of a 1×1 map is constant only up to rounding)."""
    flat = t.detach().flatten(2)
    first, last = flat[..., 0], flat[..., -1]
    # fast answer for the usual case: two pixels already differ by more than any constant
    # plane's spread s could (s <= rtol * (max(|first|, |last|) + s))
    gap = float((first - last).abs().max())
    if gap * (1 - rtol) > rtol * float(torch.maximum(first.abs(), last.abs()).max()):
        return False
    flat = flat.float()
    spread = flat.amax(-1) - flat.amin(-1)
    return bool((spread <= rtol * float(flat.abs().amax())).all())


#: sides probed when a model's output is constant over a small image
PROBE_SIDES = (8, 16, 32, 64, 128, 256, 512)


def smallest_varying_side(forward: Callable[[Tensor], Tensor], like: Tensor) -> int | None:
    """The smallest side in :data:`PROBE_SIDES` above ``like``'s at which ``forward`` of a
    random image is not spatially constant, or ``None`` if none is (a model whose output does
    not depend on the pixel position). Sizes the model rejects are skipped."""
    gen = torch.Generator().manual_seed(0)
    side = max(int(like.shape[-2]), int(like.shape[-1]))
    for s in PROBE_SIDES:
        if s <= side:
            continue
        probe = torch.randn(1, like.shape[1], s, s, generator=gen, dtype=like.dtype)
        try:
            out = forward(probe.to(like.device))
        except Exception:  # noqa: BLE001 - a size the model cannot take; try the next one
            continue
        if out.dim() == 4 and not spatially_constant(out):
            return s
    return None
