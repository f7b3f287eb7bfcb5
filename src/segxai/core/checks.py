"""Validation at the public boundary. Every message names the argument and what was expected."""

from __future__ import annotations

import math
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
