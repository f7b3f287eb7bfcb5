"""A progress bar counted in images: rate in images/s and the time left.

Long commands work in (image, method) pairs; users think in images. :class:`ImageProgress`
takes one :meth:`~ImageProgress.update` per finished pair and shows ``images done / images``,
where an image counts as done when all its methods are (``per_image`` pairs make one image).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ImageProgress"]

_FORMAT = "{l_bar}{bar}| {n:.4g}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


class ImageProgress:
    """A tqdm bar over ``images`` images of ``per_image`` units (pairs) each.

    Args:
        images: number of images.
        per_image: units of work per image (methods).
        done: units already finished (a resumed run).
        desc: the bar's label.
        enabled: ``False`` shows nothing.
    """

    def __init__(self, images: int, per_image: int = 1, done: int = 0, desc: str = "",
                 enabled: bool = True) -> None:
        self.per_image = max(1, int(per_image))
        self.units = int(done)
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=images, initial=self.units / self.per_image, desc=desc,
                             unit="image", bar_format=_FORMAT)

    def update(self, units: int = 1) -> None:
        """Count ``units`` more finished units."""
        before = self.units
        self.units += int(units)
        if self._bar is not None:
            self._bar.update(self.units / self.per_image - before / self.per_image)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
