"""A small, configurable U-Net (Ronneberger et al., 2015) for the built-in experiments.

Stages are addressable by dotted names for CAM layers and hooks: ``encoder.0`` …
``encoder.{depth-1}``, ``bottleneck``, ``decoder.0`` … ``decoder.{depth-1}`` (``decoder.0`` is
the coarsest) and ``head`` (1×1 convolution to class logits). The forward pass returns logits
``N×K×H×W`` at the input size (inputs whose size is not a multiple of ``2**depth`` are padded
and the logits cropped back).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = ["BLOCKS", "UNet", "UNetConfig", "count_parameters"]

BLOCKS = ("plain", "residual", "dwsep")


@dataclass
class UNetConfig:
    """Architecture of a :class:`UNet` (small and JSON-serialisable, so searchable).

    Attributes:
        depth: number of down-sampling steps (encoder stages = decoder stages = ``depth``).
        base_width: channels of the first encoder stage.
        width_multipliers: ``depth + 1`` multipliers of ``base_width`` for the encoder stages and
            the bottleneck; ``None`` doubles per level (``1, 2, 4, ...``).
        kernel_size: odd convolution kernel size of every block.
        block: ``"plain"`` (two conv-BN-ReLU), ``"residual"`` (the same with an identity or 1×1
            shortcut) or ``"dwsep"`` (two depthwise-separable conv-BN-ReLU).
        decoder_width: channels of every decoder stage; ``None`` mirrors the encoder widths.
        in_channels: input channels.
        num_classes: output classes (logit channels).
        skips: ``True`` (default) concatenates each encoder stage's output into the decoder
            stage of the same resolution (a U-Net); ``False`` gives a plain encoder–decoder whose
            decoder stages see only the up-sampled path (for comparing model families). Only
            ``skips=False`` is written by :meth:`to_dict`, so configs, checkpoints and cache keys
            of U-Nets with skips are unchanged.
    """

    depth: int = 3
    base_width: int = 16
    width_multipliers: tuple[float, ...] | None = None
    kernel_size: int = 3
    block: str = "plain"
    decoder_width: int | None = None
    in_channels: int = 3
    num_classes: int = 5
    skips: bool = True

    def __post_init__(self) -> None:
        for name, lo in (("depth", 1), ("base_width", 1), ("in_channels", 1), ("num_classes", 1),
                         ("kernel_size", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise SegxaiError(f"{name}: expected an integer >= {lo}, got {v!r}")
        if self.kernel_size % 2 != 1:
            raise SegxaiError(f"kernel_size: expected an odd integer, got {self.kernel_size}")
        if self.block not in BLOCKS:
            raise SegxaiError(f"block: expected one of {', '.join(BLOCKS)}, got {self.block!r}")
        if self.width_multipliers is not None:
            mult = tuple(float(m) for m in self.width_multipliers)
            if len(mult) != self.depth + 1 or any(m <= 0 for m in mult):
                raise SegxaiError(f"width_multipliers: expected {self.depth + 1} positive numbers "
                                 f"(depth + 1), got {self.width_multipliers!r}")
            self.width_multipliers = mult
        if self.decoder_width is not None and (
                isinstance(self.decoder_width, bool) or not isinstance(self.decoder_width, int)
                or self.decoder_width < 1):
            raise SegxaiError(f"decoder_width: expected None or an integer >= 1, got "
                             f"{self.decoder_width!r}")
        if not isinstance(self.skips, bool):
            raise SegxaiTypeError(f"skips: expected True or False, got {self.skips!r}")

    @property
    def widths(self) -> list[int]:
        """Channels of encoder stages ``0..depth-1`` followed by the bottleneck."""
        mult = self.width_multipliers or tuple(2.0 ** i for i in range(self.depth + 1))
        return [max(1, round(self.base_width * m)) for m in mult]

    @property
    def decoder_widths(self) -> list[int]:
        """Channels of decoder stages ``0..depth-1`` (coarsest first)."""
        if self.decoder_width is not None:
            return [self.decoder_width] * self.depth
        return list(reversed(self.widths[:-1]))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        d = asdict(self)
        if d["width_multipliers"] is not None:
            d["width_multipliers"] = list(d["width_multipliers"])
        if d["skips"]:  # the default is left out: older configs and cache keys stay valid
            del d["skips"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        """Build a config from :meth:`to_dict` output (unknown keys raise ValueError)."""
        if not isinstance(data, dict):
            raise SegxaiTypeError(f"data: expected a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SegxaiError(f"data: unknown UNetConfig field(s) {sorted(unknown)}")
        d = dict(data)
        if d.get("width_multipliers") is not None:
            d["width_multipliers"] = tuple(d["width_multipliers"])
        return cls(**d)


def _conv_bn_relu(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=False)]


def _dwsep(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=False)]


class ConvBlock(nn.Module):
    """Two convolutions (plain, residual or depthwise-separable) with BatchNorm and ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "dwsep":
            self.body = nn.Sequential(*_dwsep(cin, cout, kernel_size),
                                      *_dwsep(cout, cout, kernel_size))
        elif kind == "plain":
            self.body = nn.Sequential(*_conv_bn_relu(cin, cout, kernel_size),
                                      *_conv_bn_relu(cout, cout, kernel_size))
        else:
            k = kernel_size
            self.body = nn.Sequential(
                *_conv_bn_relu(cin, cout, k),
                nn.Conv2d(cout, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout))
            self.shortcut = (nn.Identity() if cin == cout else
                             nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False),
                                           nn.BatchNorm2d(cout)))
            self.act = nn.ReLU(inplace=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "residual":
            return self.act(self.body(x) + self.shortcut(x))
        return self.body(x)


class EncoderStage(nn.Module):
    """Optional 2×2 max-pool followed by a :class:`ConvBlock`."""

    def __init__(self, cin: int, cout: int, kernel_size: int, kind: str, pool: bool) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.block = ConvBlock(cin, cout, kernel_size, kind)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(self.pool(x))


class DecoderStage(nn.Module):
    """2× transposed-convolution up-sampling, concatenation with the skip, :class:`ConvBlock`.

    With ``cskip=0`` there is no skip: the block sees only the up-sampled path.
    """

    def __init__(self, cin: int, cskip: int, cout: int, kernel_size: int, kind: str) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.block = ConvBlock(cout + cskip, cout, kernel_size, kind)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is None:
            return self.block(self.up(x))
        return self.block(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """U-Net returning logits ``N×K×H×W`` at the input size.

    Args:
        config: the architecture (default :class:`UNetConfig`).

    Example:
        >>> net = UNet(UNetConfig(depth=2, base_width=4, num_classes=3))
        >>> net(torch.rand(1, 3, 20, 20)).shape
        torch.Size([1, 3, 20, 20])
    """

    class_names: list[str] | None  # set by load_checkpoint; absent on a fresh network

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        config = config if config is not None else UNetConfig()
        if not isinstance(config, UNetConfig):
            raise SegxaiTypeError(f"config: expected a UNetConfig, got {type(config).__name__}")
        self.config = config
        w = config.widths
        k, kind = config.kernel_size, config.block
        self.encoder = nn.ModuleList(
            EncoderStage(config.in_channels if i == 0 else w[i - 1], w[i], k, kind, pool=i > 0)
            for i in range(config.depth))
        self.bottleneck = EncoderStage(w[config.depth - 1], w[config.depth], k, kind, pool=True)
        dec = config.decoder_widths
        skips = list(reversed(w[:-1])) if config.skips else [0] * config.depth
        self.decoder = nn.ModuleList(
            DecoderStage(w[-1] if i == 0 else dec[i - 1], skips[i], dec[i], k, kind)
            for i in range(config.depth))
        self.head = nn.Conv2d(dec[-1], config.num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = 2 ** self.config.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips: list[Tensor | None] = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x if self.config.skips else None)
        x = self.bottleneck(x)
        for stage, skip in zip(self.decoder, reversed(skips)):
            x = stage(x, skip)
        out = self.head(x)
        if ph or pw:
            out = out[..., :h, :w]
        return out

    def extra_repr(self) -> str:
        return f"config={self.config}"


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def layer_names_by_stage(config: UNetConfig) -> list[str]:
    """The stage names of a U-Net with ``config``, input to output."""
    return ([f"encoder.{i}" for i in range(config.depth)] + ["bottleneck"]
            + [f"decoder.{i}" for i in range(config.depth)] + ["head"])


def _as_config(config: UNetConfig | dict[str, Any] | None) -> UNetConfig:
    if config is None:
        return UNetConfig()
    if isinstance(config, UNetConfig):
        return config
    if isinstance(config, dict):
        return UNetConfig.from_dict(config)
    raise SegxaiTypeError(f"config: expected a UNetConfig or dict, got {type(config).__name__}")

