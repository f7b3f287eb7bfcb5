"""Exact parameter and FLOP counts of a candidate network.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on one forward pass of
a single ``C×H×W`` image: convolutions, transposed convolutions and matrix products, two FLOPs
per multiply-accumulate. Element-wise operations (batch norm, activations, additions,
interpolation) are not counted, which is the usual convention of NAS budgets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = ["count_flops", "count_params", "network_counts", "unet_counts"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (every element of every parameter tensor).

    Args:
        model: the network.
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The parameter count.
    """
    if not isinstance(model, nn.Module):
        raise SegxaiTypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def count_flops(model: nn.Module, input_shape: Sequence[int] = (3, 64, 64),
                device: str | torch.device = "cpu") -> int:
    """FLOPs of one forward pass of one image (2 per multiply-accumulate).

    Args:
        model: the network (evaluated in eval mode without gradients; its mode is restored).
        input_shape: ``(C, H, W)`` of one input image.
        device: where to run the counting forward pass.

    Returns:
        The FLOP count for a batch of one image.
    """
    if not isinstance(model, nn.Module):
        raise SegxaiTypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    if len(input_shape) != 3 or any(int(s) < 1 for s in input_shape):
        raise SegxaiError(f"input_shape: expected (C, H, W) positive ints, got {tuple(input_shape)}")
    from torch.utils.flop_counter import FlopCounterMode  # imported lazily: slow import

    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        x = torch.zeros(1, *(int(s) for s in input_shape), device=device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        return int(counter.get_total_flops())
    finally:
        for m, flag in flags.items():
            m.training = flag


def _block_counts(cin: int, cout: int, k: int, kind: str) -> tuple[int, int]:
    """(parameters, multiply-accumulates per output pixel) of a U-Net ``ConvBlock``."""
    bn = 2 * cout  # BatchNorm γ and β
    if kind == "dwsep":
        macs = cin * k * k + cin * cout + cout * k * k + cout * cout
        return macs + 2 * bn, macs
    macs = cin * cout * k * k + cout * cout * k * k
    params = macs + 2 * bn
    if kind == "residual" and cin != cout:
        macs += cin * cout
        params += cin * cout + bn
    return params, macs


def unet_counts(config: dict[str, Any], resolution: Sequence[int] = (64, 64)) -> dict[str, int]:
    """Closed-form parameter and FLOP counts of :class:`segxai.models.UNet` for ``config``.

    The same numbers as :func:`count_params` and :func:`count_flops` on the built network
    (the tests check this on random configurations) in microseconds instead of a forward pass,
    so that budgets can be checked for thousands of children.

    Args:
        config: a ``UNetConfig`` dict.
        resolution: ``(H, W)`` of the input.

    Returns:
        ``{"params", "flops", "depth"}``.
    """
    from segxai.models import UNetConfig

    cfg = UNetConfig.from_dict(config)
    d, k, kind = cfg.depth, cfg.kernel_size, cfg.block
    m = 2 ** d
    h = -(-int(resolution[0]) // m) * m  # the U-Net pads to a multiple of 2**depth
    w = -(-int(resolution[1]) // m) * m
    widths, dec = cfg.widths, cfg.decoder_widths
    params, macs = 0, 0
    cin = cfg.in_channels
    for i in range(d + 1):  # encoder stages and the bottleneck
        p, per_px = _block_counts(cin, widths[i], k, kind)
        params += p
        macs += per_px * (h >> i) * (w >> i)
        cin = widths[i]
    for i in range(d):  # decoder stage i works at level d - 1 - i
        cout, skip = dec[i], widths[d - 1 - i]
        lvl = d - 1 - i
        params += cin * cout * 4 + cout  # 2x2 transposed convolution with bias
        macs += cin * cout * 4 * (h >> (lvl + 1)) * (w >> (lvl + 1))
        p, per_px = _block_counts(cout + skip, cout, k, kind)
        params += p
        macs += per_px * (h >> lvl) * (w >> lvl)
        cin = cout
    params += cin * cfg.num_classes + cfg.num_classes
    macs += cin * cfg.num_classes * h * w
    return {"params": int(params), "flops": int(2 * macs), "depth": int(d)}


def network_counts(model: nn.Module, input_shape: Sequence[int] = (3, 64, 64),
                   device: str | torch.device = "cpu") -> dict[str, int]:
    """``{"params", "flops"}`` of any network: closed form for a segxai ``UNet`` (no forward
    pass, no ``FlopCounterMode`` import), :func:`count_params`/:func:`count_flops` otherwise.

    Args:
        model: the network.
        input_shape: ``(C, H, W)``.
        device: device of the counting forward pass (non-U-Net models only).

    Returns:
        The counts.
    """
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    if type(model).__name__ == "UNet" and callable(to_dict):
        counts = unet_counts(to_dict(), input_shape[1:])
        if counts["params"] == count_params(model):  # guards against a modified network
            return {"params": counts["params"], "flops": counts["flops"]}
    return {"params": count_params(model), "flops": count_flops(model, input_shape, device)}
