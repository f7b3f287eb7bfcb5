"""What deleted pixels become in deletion/insertion curves (the *substrate*).

All substrates are defined in pixel space ``[0, 1]`` and mapped into the model's input space
with the adapter:

* ``"road"`` (the default of deletion): ROAD's noisy linear imputation (Rong et al., ICML
  2022, :func:`~segxai.evaluate.road.road_impute`): each removed pixel is the weighted mean of
  its 8 neighbours (solved jointly), plus N(0, 0.01²). It depends on *which* pixels are removed,
  so it is computed per curve step. A constant fill leaves the outline of the removed set
  visible, and since that set comes from the attribution, the network can read the class from
  the outline (class leakage); imputation hides it. An image with every pixel removed has no
  neighbour to impute from and is filled with its own mean colour.
* ``"dataset-mean"``: the data set's mean colour (``fill``; the runner passes the mean colour
  of the evaluated images).
* ``"mean"``: each image's own mean colour (or ``fill`` when given: the old behaviour).
* ``"blur"``: Gaussian blur (kernel 11, σ 5, as RISE; the default of insertion).
* ``"black"``: pixel 0; ``"noise"``: uniform ``[0, 1]`` pixels (seeded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from segxai.core.adapter import ModelAdapter
from segxai.core.checks import check_choice
from segxai.core.errors import SegxaiError
from segxai.core.ops import gaussian_blur
from segxai.core.registry import make_generator
from segxai.evaluate.road import road_impute

__all__ = ["CONSTANT_SUBSTRATES", "ROAD", "ROAD_NOISE", "SUBSTRATES", "Substrate", "fill_removed",
           "road_fill", "substrate_images"]

ROAD = "road"
ROAD_NOISE = 0.01
"""Standard deviation of ROAD's noise on ``[0, 1]`` pixels (the paper's value)."""
CONSTANT_SUBSTRATES = ("black", "mean", "dataset-mean", "blur", "noise")
"""Substrates that are one image per input, whatever is removed."""
SUBSTRATES = (ROAD, *CONSTANT_SUBSTRATES)
Substrate = Literal["road", "dataset-mean", "mean", "blur", "black", "noise"]


def substrate_images(adapter: ModelAdapter, images: Tensor, substrate: Substrate | Tensor, *,
                     seed: int = 0, fill: Sequence[float] | float | None = None,
                     blur_kernel: int = 11, blur_sigma: float = 5.0) -> Tensor:
    """The fully perturbed images (model space) for a substrate defined in pixel space.

    Args:
        adapter: the model adapter (knows the input normalisation).
        images: ``N×C×H×W`` model-space images.
        substrate: one of :data:`CONSTANT_SUBSTRATES` or a model-space tensor ``C×H×W`` /
            ``N×C×H×W`` (``"road"`` depends on the removed pixels: use :func:`fill_removed`).
        seed: seed of the noise substrate.
        fill: pixel-space colour for ``"dataset-mean"`` (required) and ``"mean"`` (optional;
            default each image's mean).
        blur_kernel: blur kernel size.
        blur_sigma: blur standard deviation in pixels.

    Returns:
        ``N×C×H×W`` model-space substrate images.
    """
    if isinstance(substrate, Tensor):
        sub = substrate.to(device=images.device, dtype=images.dtype)
        if sub.dim() == 3:
            sub = sub.unsqueeze(0)
        if sub.dim() != 4 or sub.shape[1:] != images.shape[1:] or sub.shape[0] not in (
                1, images.shape[0]):
            raise SegxaiError(f"substrate: expected a tensor of shape {tuple(images.shape[1:])} "
                              f"or {tuple(images.shape)}, got {tuple(substrate.shape)}")
        return sub.expand_as(images).clone()
    check_choice(substrate, "substrate", CONSTANT_SUBSTRATES)
    pixels = adapter.to_pixels(images)
    if substrate == "black":
        return adapter.colour(0.0, images).expand_as(images).clone()
    if substrate == "dataset-mean" and fill is None:
        raise SegxaiError("fill: expected the data set's mean colour for the 'dataset-mean' "
                          "substrate, got None")
    if substrate in ("mean", "dataset-mean"):
        if fill is not None:
            return adapter.colour(fill, images).expand_as(images).clone()
        colour = pixels.mean(dim=(2, 3), keepdim=True)
        return adapter.from_pixels(colour.expand_as(pixels).clone())
    if substrate == "blur":
        return adapter.from_pixels(gaussian_blur(pixels, sigma=blur_sigma,
                                                 kernel_size=blur_kernel))
    gen = make_generator(seed)
    noise = torch.rand(pixels.shape, generator=gen, dtype=torch.float32)
    return adapter.from_pixels(noise.to(device=images.device, dtype=images.dtype))


def road_fill(pixels: Tensor, removed: Tensor, *, seed: int = 0,
              noise: float = ROAD_NOISE) -> Tensor:
    """ROAD imputation of the ``removed`` pixels of pixel-space images; an image with every
    pixel removed becomes its own mean colour (plus the same noise).

    Args:
        pixels: ``(N, C, H, W)`` pixel-space images.
        removed: ``(N, H, W)`` bool, True = remove.
        seed: seed of the noise.
        noise: its standard deviation.

    Returns:
        The filled images (kept pixels unchanged).
    """
    everything = removed.flatten(1).all(1)
    out = pixels.clone()
    some = ~everything
    if bool(some.any()):
        out[some] = road_impute(pixels[some], removed[some], noise=noise, seed=seed)
    if bool(everything.any()):
        full = pixels[everything]
        mean = full.mean(dim=(2, 3), keepdim=True).expand_as(full)
        gen = make_generator(seed)
        jitter = noise * torch.randn(full.shape, generator=gen, dtype=torch.float32)
        out[everything] = mean + jitter.to(device=full.device, dtype=full.dtype)
    return out


def fill_removed(adapter: ModelAdapter, images: Tensor, removed: Tensor,
                 substrate: Tensor | str, *, seed: int = 0) -> Tensor:
    """``images`` with the ``removed`` pixels replaced: from a substrate image (model space,
    as :func:`substrate_images` returns) or by ROAD imputation (``substrate="road"``).

    Args:
        adapter: the model adapter.
        images: ``(N, C, H, W)`` model-space images.
        removed: ``(N, H, W)`` bool, True = replace.
        substrate: ``(N, C, H, W)`` model-space substrate images, or ``"road"``.
        seed: seed of ROAD's noise.

    Returns:
        ``(N, C, H, W)`` model-space images.
    """
    if isinstance(substrate, str):
        check_choice(substrate, "substrate", (ROAD,))
        filled = road_fill(adapter.to_pixels(images), removed, seed=seed)
        return adapter.from_pixels(filled)
    return torch.where(removed.unsqueeze(1), substrate, images)
