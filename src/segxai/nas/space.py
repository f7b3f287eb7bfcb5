"""The U-Net search space: genes, sampling, mutation, crossover and exact measures.

Genes (all fields of :class:`segxai.models.UNetConfig`):

* ``depth``: number of down-sampling stages;
* ``base_width``: channels of the first stage;
* ``width_multipliers``: one multiplier of ``base_width`` per encoder stage plus one for the
  bottleneck (``depth + 1`` genes ``mult.0 … mult.depth``);
* ``kernel_size``; ``block`` (plain, residual, depthwise-separable);
* ``decoder_width``: one width for every decoder stage, or ``None`` (mirror the encoder).

A configuration is the plain dict of :meth:`UNetConfig.to_dict` (JSON, hashable through
:func:`~segxai.nas.state.config_key`). Mutating a gene moves an ordinal gene (widths,
multipliers, depth, kernel) by one or two steps along its choices, as Zen-NAS scales channels
by a bounded factor, and redraws a categorical gene (block) uniformly. Changing the depth
inserts or removes the multiplier of the deepest encoder stage (the bottleneck keeps its own).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segxai.core.errors import SegxaiError
from segxai.nas.counting import count_flops, count_params, unet_counts

if TYPE_CHECKING:
    from segxai.models import UNet

__all__ = ["SearchSpace", "build_unet"]


def build_unet(config: dict[str, Any]) -> UNet:
    """Instantiate :class:`segxai.models.UNet` from a configuration dict (module-level, so it
    can be sent to Ray workers)."""
    from segxai.models import UNet, UNetConfig

    return UNet(UNetConfig.from_dict(config))


@dataclass(frozen=True)
class SearchSpace:
    """Choices of every gene and the fixed fields (input channels, classes, resolution).

    Attributes:
        depths: allowed depths.
        base_widths: allowed base widths.
        multipliers: allowed per-stage width multipliers.
        kernel_sizes: allowed (odd) kernel sizes.
        blocks: allowed block types.
        decoder_widths: allowed decoder widths (``None`` = mirror the encoder).
        in_channels: input channels.
        num_classes: classes.
        resolution: ``(H, W)`` at which FLOPs are counted.
    """

    depths: tuple[int, ...] = (2, 3, 4)
    base_widths: tuple[int, ...] = (4, 6, 8, 12, 16, 24, 32)
    multipliers: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
    kernel_sizes: tuple[int, ...] = (3, 5)
    blocks: tuple[str, ...] = ("plain", "residual", "dwsep")
    decoder_widths: tuple[int | None, ...] = (None, 4, 8, 16, 32)
    in_channels: int = 3
    num_classes: int = 5
    resolution: tuple[int, int] = (64, 64)

    def __post_init__(self) -> None:
        for name in ("depths", "base_widths", "multipliers", "kernel_sizes", "blocks",
                     "decoder_widths"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise SegxaiError(f"{name}: expected a non-empty tuple of distinct choices, "
                                 f"got {values!r}")
        if any(k % 2 != 1 for k in self.kernel_sizes):
            raise SegxaiError(f"kernel_sizes: expected odd sizes, got {self.kernel_sizes}")
        bad = set(self.blocks) - {"plain", "residual", "dwsep"}
        if bad:
            raise SegxaiError(f"blocks: unknown block type(s) {sorted(bad)}")
        if min(self.depths) < 1:
            raise SegxaiError(f"depths: expected depths >= 1, got {self.depths}")

    # ------------------------------------------------------------------ identity
    @property
    def space_id(self) -> str:
        """A string that identifies the space (stored in search checkpoints)."""
        return repr(sorted(asdict(self).items()))

    def _config(self, depth: int, base_width: int, mults: list[float], kernel_size: int,
                block: str, decoder_width: int | None) -> dict[str, Any]:
        return {"depth": int(depth), "base_width": int(base_width),
                "width_multipliers": [float(m) for m in mults], "kernel_size": int(kernel_size),
                "block": str(block),
                "decoder_width": None if decoder_width is None else int(decoder_width),
                "in_channels": self.in_channels, "num_classes": self.num_classes}

    def initial(self) -> dict[str, Any]:
        """``F0``: the smallest network of the space (every ordinal gene at its minimum)."""
        depth = min(self.depths)
        return self._config(depth, min(self.base_widths), [min(self.multipliers)] * (depth + 1),
                            min(self.kernel_sizes), self.blocks[0],
                            min((d for d in self.decoder_widths if d is not None), default=None))

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """A configuration with every gene drawn uniformly."""
        depth = int(rng.choice(self.depths))
        return self._config(depth, int(rng.choice(self.base_widths)),
                            [float(rng.choice(self.multipliers)) for _ in range(depth + 1)],
                            int(rng.choice(self.kernel_sizes)),
                            str(self.blocks[int(rng.integers(len(self.blocks)))]),
                            self.decoder_widths[int(rng.integers(len(self.decoder_widths)))])

    def contains(self, config: dict[str, Any]) -> bool:
        """Whether every gene of ``config`` is one of the space's choices."""
        try:
            depth = config["depth"]
            mults = config["width_multipliers"]
            return (depth in self.depths and config["base_width"] in self.base_widths
                    and mults is not None and len(mults) == depth + 1
                    and all(m in self.multipliers for m in mults)
                    and config["kernel_size"] in self.kernel_sizes
                    and config["block"] in self.blocks
                    and config["decoder_width"] in self.decoder_widths
                    and config["in_channels"] == self.in_channels
                    and config["num_classes"] == self.num_classes)
        except (KeyError, TypeError):
            return False

    def genes(self, config: dict[str, Any]) -> list[str]:
        """The genes of ``config`` that a mutation can change (multipliers of its depth)."""
        names = ["depth", "base_width", "kernel_size", "block", "decoder_width"]
        names += [f"mult.{i}" for i in range(config["depth"] + 1)]
        return [g for g in names if len(self._choices(g)) > 1]

    def _choices(self, gene: str) -> tuple[Any, ...]:
        if gene.startswith("mult."):
            return self.multipliers
        return {"depth": self.depths, "base_width": self.base_widths,
                "kernel_size": self.kernel_sizes, "block": self.blocks,
                "decoder_width": self.decoder_widths}[gene]

    # ------------------------------------------------------------------ variation
    def _step(self, choices: tuple[Any, ...], current: Any, rng: np.random.Generator,
              ordinal: bool) -> Any:
        others = [c for c in choices if c != current]
        if not ordinal or current not in choices:
            return others[int(rng.integers(len(others)))]
        i = choices.index(current)
        near = [choices[j] for j in range(max(0, i - 2), min(len(choices), i + 3)) if j != i]
        return near[int(rng.integers(len(near)))]

    def mutate(self, config: dict[str, Any], num_genes: int,
               rng: np.random.Generator) -> dict[str, Any]:
        """A copy of ``config`` with ``num_genes`` distinct genes changed.

        Args:
            config: parent configuration (inside the space).
            num_genes: genes to change (1 or 2 in Zen-NAS).
            rng: NumPy generator.

        Returns:
            The child configuration (always inside the space).
        """
        child = {**config, "width_multipliers": list(config["width_multipliers"])}
        genes = self.genes(child)
        chosen = rng.choice(len(genes), size=min(num_genes, len(genes)), replace=False)
        # apply depth last so that multiplier genes refer to the parent's stages
        order = sorted((genes[int(i)] for i in chosen), key=lambda g: g == "depth")
        for gene in order:
            if gene.startswith("mult."):
                i = int(gene.split(".")[1])
                mults = child["width_multipliers"]
                mults[i] = float(self._step(self.multipliers, mults[i], rng, True))
            elif gene == "depth":
                new = int(self._step(tuple(sorted(self.depths)), child["depth"], rng, True))
                mults = child["width_multipliers"]
                while len(mults) < new + 1:
                    mults.insert(len(mults) - 1, mults[-2] if len(mults) > 1 else mults[-1])
                while len(mults) > new + 1:
                    del mults[-2]
                child["depth"] = new
            elif gene == "block":
                child["block"] = self._step(self.blocks, child["block"], rng, False)
            elif gene == "decoder_width":
                child["decoder_width"] = self._step(self.decoder_widths, child["decoder_width"],
                                                    rng, False)
            else:
                ordered = tuple(sorted(self._choices(gene)))
                child[gene] = int(self._step(ordered, child[gene], rng, True))
        return self._config(child["depth"], child["base_width"], child["width_multipliers"],
                            child["kernel_size"], child["block"], child["decoder_width"])

    def crossover(self, a: dict[str, Any], b: dict[str, Any],
                  rng: np.random.Generator) -> dict[str, Any]:
        """Uniform crossover: each gene from ``a`` or ``b`` with probability 1/2; the
        multipliers follow the parent that gives the depth (stage genes stay aligned)."""
        pick = [a, b]
        depth_parent = pick[int(rng.integers(2))]
        return self._config(depth_parent["depth"],
                            pick[int(rng.integers(2))]["base_width"],
                            list(depth_parent["width_multipliers"]),
                            pick[int(rng.integers(2))]["kernel_size"],
                            pick[int(rng.integers(2))]["block"],
                            pick[int(rng.integers(2))]["decoder_width"])

    # ------------------------------------------------------------------ measures
    def measure(self, config: dict[str, Any]) -> dict[str, int]:
        """Exact ``params``, ``flops`` (one image at :attr:`resolution`) and ``depth``.

        Closed form (:func:`~segxai.nas.counting.unet_counts`); :meth:`measure_network`
        counts on the built network instead (same numbers, checked by the tests).
        """
        return unet_counts(config, self.resolution)

    def measure_network(self, config: dict[str, Any]) -> dict[str, int]:
        """Counts on the network built on PyTorch's ``meta`` device (shapes only) with
        :func:`~segxai.nas.counting.count_params` and ``FlopCounterMode``."""
        with torch.device("meta"):
            model = build_unet(config)
        return {"params": count_params(model),
                "flops": count_flops(model, (self.in_channels, *self.resolution), device="meta"),
                "depth": int(config["depth"])}
