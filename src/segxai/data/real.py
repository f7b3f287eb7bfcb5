"""Real images that ship inside installed packages (optional extra ``data``).

The files are read by path; the packages are never imported (they are installed with
``pip install --no-deps`` and may not even be importable):

* ``nuclei``: the ``stardist`` wheel's ``data/images/img2d.tif`` and ``mask2d.tif`` (512×512
  fluorescence nuclei with 125 instance labels), read with ``tifffile``; instances become the
  class *nucleus* (foreground/background), cut into tiles.
* ``brain``: the ``nilearn`` wheel's MNI152 2009a T1 template with its grey- and white-matter
  probability maps (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``),
  read with ``nibabel``; probabilities thresholded at 0.5 give the labels background, grey
  matter, white matter on axial slices.
* ``photographs``: the natural photographs bundled with scikit-image, matplotlib,
  scikit-learn and gradio (:data:`PHOTOGRAPHS`), read with PIL, without labels (for models
  that define their own target, such as the selfie network's predicted person).
"""

from __future__ import annotations

import hashlib
import site
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from segxai.core.errors import SegxaiError, SegxaiFileNotFoundError
from segxai.data.dataset import SegDataset

__all__ = [
    "BRAIN_CLASSES",
    "NUCLEI_CLASSES",
    "PHOTOGRAPHS",
    "Photographs",
    "find_package_file",
    "load_brain",
    "load_nuclei",
    "load_photographs",
]

NUCLEI_CLASSES = ["background", "nucleus"]
BRAIN_CLASSES = ["background", "grey matter", "white matter"]
_STARDIST = ("stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif")
_MNI = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def _search_dirs() -> list[Path]:
    dirs: list[str] = list(sys.path)
    try:
        dirs += site.getsitepackages()
    except AttributeError:  # some embedded interpreters lack it
        pass
    user = getattr(site, "getusersitepackages", None)
    if user is not None:
        dirs.append(user())
    seen, out = set(), []
    for d in dirs:
        if d and d not in seen:
            seen.add(d)
            out.append(Path(d))
    return out


def find_package_file(relative: str) -> Path | None:
    """The first ``DIR/relative`` that exists for ``DIR`` in ``sys.path`` and the site-packages
    directories (without importing any package), or ``None``."""
    for d in _search_dirs():
        p = d / relative
        if p.is_file():
            return p
    return None


def _require(relative: str, package: str, reader: str) -> Path:
    path = find_package_file(relative)
    if path is None:
        raise SegxaiFileNotFoundError(
            f"dataset: expected {relative} (optional data), not found in sys.path or site-packages; install the optional data "
            f"with `pip install --no-deps {package}` and `pip install {reader}` "
            "(or `pip install segxai[data]`)")
    return path


def _import_reader(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise SegxaiFileNotFoundError(f"dataset: the {name} package is needed to read this data; "
                                f"install it with `pip install {name}`") from None


def _read(reader: Any, path: Path) -> Any:
    """``reader(str(path))``; a damaged file is a user error naming the file."""
    try:
        return reader(str(path))
    except (OSError, ValueError, EOFError) as exc:
        raise SegxaiError(f"dataset: expected a readable data file, got {str(path)!r} which "
                          f"cannot be read ({exc}); reinstall the package that ships it") from None


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SegxaiError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _to_channels(gray: np.ndarray, channels: int) -> torch.Tensor:
    """``(N, H, W)`` in [0, 1] → ``(N, C, H, W)`` float32 (the gray value repeated)."""
    t = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32)).unsqueeze(1)
    return t.repeat(1, channels, 1, 1)


def load_nuclei(tile: int = 128, stride: int | None = None, channels: int = 3) -> SegDataset:
    """Fluorescence nuclei from the ``stardist`` wheel as foreground/background tiles.

    The image is scaled to ``[0, 1]`` between its 1st and 99.8th percentiles; every instance
    label becomes class 1 (*nucleus*).

    Args:
        tile: tile height = width (8 to 512).
        stride: step between tiles (default ``tile``: non-overlapping).
        channels: image channels (the gray value repeated; 3 for RGB models).

    Returns:
        A :class:`SegDataset` with ``class_names == NUCLEI_CLASSES``; ``meta`` records the
        number of instances and the tile positions.

    Raises:
        FileNotFoundError: the ``stardist`` files or ``tifffile`` are not installed.
    """
    tile = _check_int(tile, "tile", 8)
    if tile > 512:
        raise SegxaiError(f"tile: expected at most 512 (the image size), got {tile}")
    stride = tile if stride is None else _check_int(stride, "stride", 1)
    channels = _check_int(channels, "channels", 1)
    tifffile = _import_reader("tifffile")
    img_path = _require(_STARDIST[0], "stardist", "tifffile")
    mask_path = _require(_STARDIST[1], "stardist", "tifffile")
    img = np.asarray(_read(tifffile.imread, img_path), dtype=np.float32)
    inst = np.asarray(_read(tifffile.imread, mask_path))
    if img.shape != inst.shape or img.ndim != 2:
        raise SegxaiError(f"nuclei: unexpected file shapes {img.shape} and {inst.shape}")
    lo, hi = np.percentile(img, [1.0, 99.8])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    labels = (inst > 0).astype(np.int64)
    h, w = img.shape
    pos = [(y, x) for y in range(0, h - tile + 1, stride) for x in range(0, w - tile + 1, stride)]
    images = np.stack([img[y:y + tile, x:x + tile] for y, x in pos])
    masks = np.stack([labels[y:y + tile, x:x + tile] for y, x in pos])
    meta = {"source": str(img_path), "tile": tile, "stride": stride,
            "num_instances": int(len(np.unique(inst)) - (1 if (inst == 0).any() else 0)),
            "positions": [list(p) for p in pos]}
    return SegDataset(_to_channels(images, channels), torch.from_numpy(masks),
                      list(NUCLEI_CLASSES), name="nuclei", meta=meta)


def load_brain(size: int = 128, min_tissue: float = 0.01, channels: int = 3,
               threshold: float = 0.5) -> SegDataset:
    """Axial slices of the MNI152 T1 template with grey/white-matter labels (``nilearn`` wheel).

    A voxel is white matter where its WM probability exceeds ``threshold``, else grey matter
    where its GM probability does, else background. Slices are shown anterior up, padded to a
    square and resized to ``size`` (bilinear image, nearest-neighbour labels).

    Args:
        size: output height = width (>= 16).
        min_tissue: keep slices whose tissue (grey or white) covers at least this fraction of
            the slice (0.01 keeps about 144 of 189 slices; 0 keeps every slice with tissue).
        channels: image channels (the gray value repeated).
        threshold: probability threshold of the tissue maps.

    Returns:
        A :class:`SegDataset` with ``class_names == BRAIN_CLASSES``; ``meta["slices"]`` holds
        the axial indices.

    Raises:
        FileNotFoundError: the ``nilearn`` files or ``nibabel`` are not installed.
    """
    size = _check_int(size, "size", 16)
    channels = _check_int(channels, "channels", 1)
    if not isinstance(min_tissue, (int, float)) or not 0 <= min_tissue < 1:
        raise SegxaiError(f"min_tissue: expected a fraction in [0, 1), got {min_tissue!r}")
    if not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise SegxaiError(f"threshold: expected a probability in (0, 1), got {threshold!r}")
    nib = _import_reader("nibabel")
    vols = {}
    for part in ("t1", "gm", "wm"):
        path = _require(_MNI.format(part), "nilearn", "nibabel")
        vols[part] = _read(lambda p: np.asarray(nib.load(p).dataobj, dtype=np.float32), path)
    t1, gm, wm = vols["t1"], vols["gm"], vols["wm"]
    scale = 255.0 if max(gm.max(), wm.max()) > 1.0 else 1.0  # stored as uint8 probabilities
    gm, wm = gm / scale, wm / scale
    labels = np.zeros(t1.shape, dtype=np.int64)
    labels[gm > threshold] = 1
    labels[wm > threshold] = 2
    t1 = t1 / max(float(t1.max()), 1e-6)
    tissue = (labels > 0).mean(axis=(0, 1))
    keep = np.flatnonzero(tissue > min_tissue if min_tissue > 0 else tissue > 0)
    # (x, y, z) in RAS: axial slice [:, :, z]; transpose and flip so anterior is up
    img = np.stack([t1[:, :, z].T[::-1] for z in keep])
    lab = np.stack([labels[:, :, z].T[::-1] for z in keep])
    n, h, w = img.shape
    side = max(h, w)
    pad = ((0, 0), ((side - h) // 2, side - h - (side - h) // 2),
           ((side - w) // 2, side - w - (side - w) // 2))
    img = np.pad(img, pad)
    lab = np.pad(lab, pad)
    x = torch.from_numpy(np.ascontiguousarray(img)).unsqueeze(1)
    y = torch.from_numpy(np.ascontiguousarray(lab)).unsqueeze(1).float()
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=(size, size), mode="nearest")
    x = x.clamp(0, 1).repeat(1, channels, 1, 1)
    meta = {"slices": [int(z) for z in keep], "size": size, "threshold": threshold,
            "min_tissue": float(min_tissue)}
    return SegDataset(x, y[:, 0].long(), list(BRAIN_CLASSES), name="brain", meta=meta)


PHOTOGRAPHS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage/data/astronaut.png", "person: Eileen Collins, NASA portrait"),
    "camera": ("skimage/data/camera.png", "person: the cameraman (grey)"),
    "grace_hopper": ("matplotlib/mpl-data/sample_data/grace_hopper.jpg",
                     "person: Grace Hopper, US Navy portrait"),
    "coffee": ("skimage/data/coffee.png", "a cup of coffee"),
    "chelsea": ("skimage/data/chelsea.png", "a cat"),
    "rocket": ("skimage/data/rocket.jpg", "a rocket on its launch pad"),
    "motorcycle": ("skimage/data/motorcycle_left.png", "a motorcycle in a garage (left view)"),
    "coins": ("skimage/data/coins.png", "Greek coins (grey)"),
    "moon": ("skimage/data/moon.png", "the moon's surface (grey)"),
    "ihc": ("skimage/data/ihc.png", "immunohistochemistry micrograph"),
    "retina": ("skimage/data/retina.jpg", "a retina (fundus photograph)"),
    "hubble": ("skimage/data/hubble_deep_field.jpg", "Hubble deep field"),
    "china": ("sklearn/datasets/images/china.jpg", "a Chinese pagoda and a lake"),
    "flower": ("sklearn/datasets/images/flower.jpg", "a dahlia"),
    "cheetah": ("gradio/media_assets/images/cheetah.jpg", "a running cheetah"),
    "cheetah1": ("gradio/media_assets/images/cheetah1.jpg", "a cheetah's head"),
    "cheetah2": ("gradio/test_data/cheetah2.jpg", "a cheetah cub's head"),
    "lion": ("gradio/media_assets/images/lion.jpg", "a lion and a lioness on a rock"),
    "tower": ("gradio/media_assets/images/tower.jpg", "the Eiffel tower from below"),
}
"""Natural photographs that installed packages ship as files: name → (path relative to
site-packages, what it shows). One entry per distinct photograph: byte-identical copies
(gradio's ``cheetah1-copy.jpg``) and the other view of a stereo pair (``motorcycle_right``)
are left out, so that no photograph counts twice; drawings, renders, textures, scans of text
and synthetic images (``horse``, ``color``, ``groot``, ``page``, ``brick``, ...) and the
25×25 face crops of ``lfw_subset`` are not photographs of a scene and are not listed. Only
the first three show people."""


@dataclass
class Photographs:
    """Bundled photographs as one batch.

    Attributes:
        images: ``(N, 3, size, size)`` float32 in ``[0, 1]`` (grey photographs repeated).
        names: the catalogue names, in order.
        sources: the files read.
        missing: requested names whose package is not installed (skipped, not an error).
    """

    images: torch.Tensor
    names: list[str]
    sources: list[str]
    missing: list[str] = field(default_factory=list)


def load_photographs(names: list[str] | tuple[str, ...] | None = None,
                     size: int = 256) -> Photographs:
    """Read photographs of :data:`PHOTOGRAPHS`, resized (bilinear, aspect ratio not kept) to
    ``size``×``size``; those whose package is not installed are listed in ``missing``.

    Args:
        names: catalogue names (default: all, in catalogue order).
        size: output height = width (>= 16).

    Returns:
        A :class:`Photographs`. Two files with the same content would be refused.

    Raises:
        SegxaiError: an unknown name, a duplicate, or a file that cannot be read.
        SegxaiFileNotFoundError: none of the requested photographs is installed.
    """
    from PIL import Image

    size = _check_int(size, "size", 16)
    wanted = list(PHOTOGRAPHS) if names is None else list(names)
    unknown = [n for n in wanted if n not in PHOTOGRAPHS]
    if unknown:
        raise SegxaiError(f"names: expected names of PHOTOGRAPHS ({', '.join(PHOTOGRAPHS)}), "
                          f"got {', '.join(map(repr, unknown))}")
    if len(set(wanted)) != len(wanted):
        raise SegxaiError(f"names: expected each photograph once, got {wanted}")
    images, found, sources, missing, digests = [], [], [], [], set()
    for name in wanted:
        path = find_package_file(PHOTOGRAPHS[name][0])
        if path is None:
            missing.append(name)
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in digests:
            raise SegxaiError(f"names: expected distinct photographs, got {path} twice")
        digests.add(digest)
        img = _read(lambda p: Image.open(p).convert("RGB"), path)
        img = img.resize((size, size), Image.Resampling.BILINEAR)
        images.append(torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1))
        found.append(name)
        sources.append(str(path))
    if not images:
        raise SegxaiFileNotFoundError(
            f"photographs: expected at least one of {', '.join(wanted)} installed, got none "
            "(they ship with scikit-image, matplotlib, scikit-learn and gradio)")
    return Photographs(torch.stack(images), found, sources, missing)
