"""Image operations shared by explainers and metrics (one implementation each).

:func:`gaussian_blur` is the blur behind the occlusion ``"blur"`` fill, the grid-saliency blur
baseline and the ``"blur"`` deletion/insertion substrate, so that the three are the same
operation.
"""

from __future__ import annotations

from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import Tensor

from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = ["gaussian_blur", "gaussian_taps"]


def gaussian_taps(kernel_size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> Tensor:
    """The 1-D Gaussian ``exp(-x² / 2σ²)`` at ``x = -r..r`` (``r = kernel_size // 2``),
    normalised to sum 1; shared by :func:`gaussian_blur` and the SSIM window."""
    taps = torch.arange(kernel_size, dtype=dtype, device=device) - kernel_size // 2
    g = torch.exp(-(taps**2) / (2 * float(sigma) ** 2))
    return g / g.sum()


def gaussian_blur(images: Tensor, *, sigma: float = 5.0, kernel_size: int = 11) -> Tensor:
    """Separable Gaussian blur of ``N×C×H×W`` images.

    The kernel has ``kernel_size`` taps ``exp(-x² / 2σ²)`` at ``x = -r..r`` (``r =
    kernel_size // 2``), normalised to sum 1, applied along the width and then the height.

    Padding: ``reflect`` (the border pixel is the mirror axis, as in OpenCV's
    ``BORDER_REFLECT_101``), so a blurred border is not pulled towards one repeated edge
    value; where an image side is not longer than ``r`` reflection is undefined and
    ``replicate`` is used instead (for both axes).

    Args:
        images: ``(N, C, H, W)`` floating tensor.
        sigma: standard deviation of the Gaussian in pixels (> 0).
        kernel_size: number of taps; a positive odd integer (an even size has no centre tap
            and is rejected rather than silently changed).

    Returns:
        The blurred images, same shape, dtype and device.

    Raises:
        SegxaiError: a bad ``kernel_size`` or ``sigma``, or images that are not ``N×C×H×W``.

    Example:
        >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 1.0
        >>> y = gaussian_blur(x, sigma=1.0, kernel_size=3)
        >>> round(float(y.sum()), 6), bool(y[0, 0, 2, 2] < 1)
        (1.0, True)
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise SegxaiTypeError(f"images: expected a floating (N, C, H, W) tensor, got {got}")
    if (isinstance(kernel_size, bool) or not isinstance(kernel_size, Integral) or kernel_size < 1
            or kernel_size % 2 == 0):
        raise SegxaiError(f"kernel_size: expected a positive odd integer, got {kernel_size!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, Real) or not sigma > 0:
        raise SegxaiError(f"sigma: expected a positive number, got {sigma!r}")
    kernel_size = int(kernel_size)
    r = kernel_size // 2
    g = gaussian_taps(kernel_size, sigma, dtype=images.dtype, device=images.device)
    c = images.shape[1]
    mode = "reflect" if min(images.shape[-2:]) > r else "replicate"
    out = F.pad(images, (r, r, 0, 0), mode=mode)
    out = F.conv2d(out, g.view(1, 1, 1, kernel_size).expand(c, 1, 1, kernel_size), groups=c)
    out = F.pad(out, (0, 0, r, r), mode=mode)
    return F.conv2d(out, g.view(1, 1, kernel_size, 1).expand(c, 1, kernel_size, 1), groups=c)
