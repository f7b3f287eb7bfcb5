"""The viewer's model, images and selections: plain functions from inputs to outputs.

Nothing here imports Gradio, so every step the page performs can be tested without a browser:
load a model (:func:`load_viewer_model`), gather images (:func:`builtin_samples`,
:func:`images_from_paths`, :func:`read_image`), predict (:func:`predict`), and turn a click or a
box into a class and an ROI (:func:`select_object`, :func:`select_box`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segxai.core.adapter import ModelAdapter, adapt
from segxai.core.errors import SegxaiError

__all__ = [
    "IMAGE_SUFFIXES",
    "PHOTOS",
    "Selection",
    "ViewerModel",
    "builtin_samples",
    "display_factor",
    "enlarge",
    "images_from_paths",
    "load_viewer_model",
    "parse_box",
    "predict",
    "prediction_image",
    "read_image",
    "select_box",
    "select_object",
    "selection_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
PHOTOS = ("astronaut", "coffee", "chelsea")
"""scikit-image photographs offered as samples (when scikit-image is installed)."""


@dataclass
class ViewerModel:
    """The model the viewer explains.

    Attributes:
        adapter: the model behind a :class:`~segxai.core.adapter.ModelAdapter`.
        class_names: a name per class (``class K`` where the model gives none).
        spec: how it was loaded (shown in the page and the JSON record).
        size: images are resized to ``size × size`` first (fixed-size networks), or ``None``.
        device: torch device of the model.
    """

    adapter: ModelAdapter
    class_names: list[str]
    spec: str
    size: int | None = None
    device: str = "cpu"

    def class_name(self, index: int) -> str:
        return self.class_names[index] if 0 <= index < len(self.class_names) else f"class {index}"


@dataclass
class Selection:
    """What the user chose to explain: one class and its ROI in one image.

    Attributes:
        class_index: the explained class.
        roi: ``(H, W)`` boolean region of interest.
        how: a short description (``click at (row, col)``, ``box (x0, y0, x1, y1)``).
    """

    class_index: int
    roi: np.ndarray
    how: str

    def describe(self, model: ViewerModel) -> str:
        return (f"class {self.class_index} ({model.class_name(self.class_index)}), ROI of "
                f"{int(self.roi.sum())} pixels from {self.how}")


def load_viewer_model(spec: str = "builtin", *, weights: str | Path | None = None,
                      num_classes: int | None = None, size: int | None = None,
                      device: str = "cpu", quick: bool = False,
                      progress: bool = True) -> ViewerModel:
    """Load a model with :func:`segxai.models.zoo.load_model` for the viewer.

    Args:
        spec: any ``--model`` spec.
        weights: state dict file for torchvision/smp/factory models.
        num_classes: classes of a torchvision/smp model.
        size: resize images to ``size × size`` before explaining them (``None`` keeps them).
        device: torch device.
        quick: the quick built-in model.
        progress: show training progress if the built-in model must be trained first.

    Returns:
        A :class:`ViewerModel`.
    """
    from segxai.models.zoo import load_model

    if size is not None and (isinstance(size, bool) or int(size) < 8):
        raise SegxaiError(f"size: expected an integer >= 8, got {size!r}")
    loaded = load_model(spec, weights=weights, num_classes=num_classes, device=device,
                        quick=quick, progress=progress)
    names = loaded.class_names or getattr(loaded.model, "class_names", None)
    adapter = adapt(loaded.model)
    probe = torch.zeros(1, 3, size or 64, size or 64, device=device)
    k = adapter.num_classes(adapter.from_pixels(probe))
    names = list(names)[:k] if names else []
    names += [f"class {i}" for i in range(len(names), k)]
    return ViewerModel(adapter=adapter, class_names=names, spec=spec, size=size, device=device)


def _resize(pixels: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or pixels.shape[:2] == (size, size):
        return pixels
    from PIL import Image

    img = Image.fromarray(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0


def read_image(source: str | Path | np.ndarray, size: int | None = None,
               name: str = "image") -> np.ndarray:
    """An RGB image as ``(H, W, 3)`` float32 in ``[0, 1]``.

    Args:
        source: a file path, or an array ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` (uint8 in
            ``[0, 255]`` or float in ``[0, 1]``; alpha is dropped), as Gradio uploads it.
        size: resize to ``size × size`` (bilinear).
        name: what to call the input in error messages.

    Raises:
        SegxaiError: a missing or unreadable file, or an array of another shape.
    """
    if isinstance(source, (str, Path)):
        from PIL import Image, UnidentifiedImageError

        path = Path(source)
        if not path.is_file():
            raise SegxaiError(f"{name}: expected an image file, got missing file {str(path)!r}")
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError) as exc:
            raise SegxaiError(f"{name}: expected a PNG/JPEG/... image, got unreadable file "
                              f"{str(path)!r} ({exc})") from None
    else:
        arr = np.asarray(source)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4) or min(arr.shape[:2]) < 2:
        raise SegxaiError(f"{name}: expected an (H, W, 3) RGB image, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        pixels = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all():
        pixels = np.clip(arr.astype(np.float32), 0.0, 1.0)
    else:
        raise SegxaiError(f"{name}: expected uint8 or finite float pixels, got {arr.dtype}")
    return _resize(pixels, size)


def builtin_samples(size: int | None = None, n_shapes: int = 4,
                    photos: bool = True) -> dict[str, np.ndarray]:
    """The viewer's built-in images: ``n_shapes`` synthetic ``shapes`` scenes (the built-in
    model's data, 64×64) and scikit-image's photographs (256×256; skipped when scikit-image is
    missing). With ``size`` every image is resized to ``size × size``."""
    from segxai.data import make_shapes

    ds = make_shapes(n_shapes, seed=1234)
    out = {f"shapes {i}": _resize(ds.images[i].permute(1, 2, 0).numpy().astype(np.float32), size)
           for i in range(n_shapes)}
    if photos:
        try:
            from skimage import data as skdata
        except ImportError:
            return out
        for name in PHOTOS:
            out[name] = read_image(getattr(skdata, name)(), size or 256, name=name)
    return out


def images_from_paths(paths: list[str | Path], size: int | None = None) -> dict[str, np.ndarray]:
    """Images named on the command line: files, or folders (their image files, sorted).

    Raises:
        SegxaiError: a path that does not exist, a folder without images, an unreadable file.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise SegxaiError(f"images: expected image files ({', '.join(IMAGE_SUFFIXES)}) "
                                  f"in folder {str(p)!r}, got none")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise SegxaiError(f"images: expected image files or folders, got missing {str(p)!r}")
    return {f.name: read_image(f, size, name=f"image {str(f)!r}") for f in files}


def predict(model: ViewerModel, pixels: np.ndarray) -> np.ndarray:
    """The model's predicted class map ``(H, W)`` for an ``(H, W, 3)`` image in ``[0, 1]``."""
    x = model.adapter.from_pixels(_tensor(pixels, model.device))
    return model.adapter.predict(x)[0].cpu().numpy()


def _tensor(pixels: np.ndarray, device: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float().to(device)


def model_input(model: ViewerModel, pixels: np.ndarray) -> torch.Tensor:
    """The model-space ``(1, 3, H, W)`` tensor of an image."""
    return model.adapter.from_pixels(_tensor(pixels, model.device))


def prediction_image(pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids ``(H, W)`` as a colour image ``(H, W, 3)`` uint8 (black background)."""
    import matplotlib

    tab = matplotlib.colormaps["tab10"](np.arange(10))[:, :3]
    cols = np.vstack([np.zeros(3)] + [tab[(i - 1) % 10] for i in range(1, max(num_classes, 2))])
    return (cols[np.clip(pred, 0, len(cols) - 1)] * 255).astype(np.uint8)


def select_object(pred: np.ndarray, pixel: tuple[int, int]) -> Selection:
    """A click: the class predicted at ``pixel = (row, col)``; ROI = its 8-connected
    component of that class."""
    from scipy import ndimage

    h, w = pred.shape
    r, c = int(pixel[0]), int(pixel[1])
    if not (0 <= r < h and 0 <= c < w):
        raise SegxaiError(f"pixel: expected (row, col) inside an image of size {(h, w)}, "
                          f"got {(r, c)}")
    cls = int(pred[r, c])
    labels, _ = ndimage.label(pred == cls, structure=np.ones((3, 3), dtype=int))
    return Selection(cls, labels == labels[r, c], f"click at (row {r}, col {c})")


def parse_box(text: str) -> tuple[int, int, int, int]:
    """``"x0, y0, x1, y1"`` (pixels, end exclusive) as integers."""
    try:
        values = [int(round(float(v))) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise SegxaiError(f"box: expected 'x0, y0, x1, y1' (4 numbers), got {text!r}")
    x0, y0, x1, y1 = values
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def select_box(pred: np.ndarray, box: tuple[int, int, int, int],
               class_index: int | None = None) -> Selection:
    """A box ``(x0, y0, x1, y1)``: the class is ``class_index`` or else the most frequent
    predicted foreground class inside the box (background when the box holds none); ROI = the
    box's pixels predicted as that class, or the whole box when there are none."""
    h, w = pred.shape
    x0, y0, x1, y1 = box
    x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        raise SegxaiError(f"box: expected a non-empty box inside an image of size {(h, w)}, "
                          f"got {box}")
    inside = np.zeros_like(pred, dtype=bool)
    inside[y0:y1, x0:x1] = True
    if class_index is None:
        counts = np.bincount(pred[inside].ravel())
        fg = counts[1:]
        class_index = int(np.argmax(fg)) + 1 if fg.size and fg.max() > 0 else 0
    roi = inside & (pred == class_index)
    if not roi.any():
        roi = inside
    return Selection(int(class_index), roi, f"box ({x0}, {y0}, {x1}, {y1})")


def display_factor(shape: tuple[int, ...], least: int = 320) -> int:
    """The integer factor that enlarges an image of ``shape = (H, W, ...)`` to at least
    ``least`` pixels on its longer side (1 when it already is that large).

    The page shows small images enlarged by this factor (nearest neighbour): a browser draws
    an image no larger than its natural size, so a 64×64 sample would be too small to click.
    """
    return max(1, -(-int(least) // max(int(shape[0]), int(shape[1]))))


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` ``(H, W, ...)`` repeated ``factor`` times along both axes."""
    return image if factor == 1 else image.repeat(factor, axis=0).repeat(factor, axis=1)


def selection_image(pixels: np.ndarray, selection: Selection | None) -> np.ndarray:
    """The image (uint8) with the ROI tinted and outlined in white."""
    img = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if selection is None:
        return img
    from scipy import ndimage

    roi = selection.roi
    edge = roi & ~ndimage.binary_erosion(roi, structure=np.ones((3, 3), bool))
    out = img.astype(np.float32)
    out[roi] = 0.7 * out[roi] + 0.3 * np.array([255.0, 255.0, 0.0])
    out[edge] = 255.0
    return out.astype(np.uint8)


def record_of(model: ViewerModel, image_name: str, selection: Selection,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-friendly description of one explained selection."""
    return {"model": model.spec, "image": image_name, "class_index": selection.class_index,
            "class_name": model.class_name(selection.class_index), "roi": selection.how,
            "roi_pixels": int(selection.roi.sum()), **(extra or {})}
