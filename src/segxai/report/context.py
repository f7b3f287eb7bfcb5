"""What every demo-report section receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn


@dataclass
class DemoContext:
    """Shared state of one ``segxai demo`` run.

    Attributes:
        model: the trained built-in U-Net (eval mode), on ``device``.
        images: ``(N, 3, H, W)`` sample images in ``[0, 1]`` (the built-in model's input space).
        masks: ``(N, H, W)`` ground-truth class ids of the samples.
        class_names: names of the classes, index = class id (0 = background).
        out_dir: the report directory (``./segxai-report`` by default).
        quick: reduced sizes (tests use it); every section must honour it.
        device: torch device string.
        seed: base seed.
        progress: show progress bars.
        cache_dir: where trained models are cached between runs.
        extra: free-form data sections may leave for later sections.
    """

    model: nn.Module
    images: Tensor
    masks: Tensor
    class_names: list[str]
    out_dir: Path
    quick: bool = False
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    cache_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def figures_dir(self) -> Path:
        path = self.out_dir / "figures"
        path.mkdir(parents=True, exist_ok=True)
        return path
