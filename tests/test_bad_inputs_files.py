"""Bad files: images, masks, weights, checkpoints and configs each give a SegxaiError that
names the file (never a PIL, safetensors, pickle or JSON traceback), and no pickle payload
ever runs."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from segxai.core.errors import SegxaiError
from segxai.data import folder
from segxai.data.folder import load_folder, read_image, read_mask
from segxai.models import load_checkpoint, save_checkpoint
from segxai.models.unet import UNet, UNetConfig
from segxai.models.zoo import load_model, read_weights

# ------------------------------------------------------------------ images


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR claiming ``width × height`` with a tiny IDAT: a small
    file that would decode to a huge image (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


BAD_IMAGES = {
    "random bytes": lambda p: p.write_bytes(os.urandom(256)),
    "empty": lambda p: p.write_bytes(b""),
    "truncated png": lambda p: p.write_bytes(_png_bytes()[:60]),
    "text": lambda p: p.write_text("not an image\n"),
    "1x1": lambda p: Image.new("RGB", (1, 1)).save(p),
    "4x64": lambda p: Image.new("RGB", (4, 64)).save(p),
    "bomb": lambda p: _png_header_only(p, 40_000, 40_000),
}
NEEDLES = {"random bytes": "cannot be decoded", "empty": "empty file",
           "truncated png": "cannot be decoded", "text": "cannot be decoded",
           "1x1": "at least 8×8", "4x64": "at least 8×8", "bomb": "at most"}


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(
        buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_file_names_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind.replace(' ', '_')}.png"
    BAD_IMAGES[kind](path)
    with pytest.raises(SegxaiError, match="image") as info:
        read_image(path)
    assert path.name in str(info.value) and NEEDLES[kind] in str(info.value)


def test_missing_image_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SegxaiError, match="missing file"):
        read_image(tmp_path / "nope.png", what="--image")


def test_pixel_limit_is_a_module_setting(tmp_path: Path, monkeypatch) -> None:
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    monkeypatch.setattr(folder, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(SegxaiError, match="at most 1000 pixels"):
        read_image(tmp_path / "a.png")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=512))
def test_random_bytes_as_an_image_never_escape_as_another_error(tmp_path: Path,
                                                                data: bytes) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with pytest.raises(SegxaiError):
        read_image(path)


def _rgb16(tmp_path: Path) -> Path:
    arr = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 64)
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    return path


def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    x = read_image(_rgb16(tmp_path))
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.unique(x).size > 500  # clipping at 255 would leave almost every pixel white


def test_palette_grayscale_and_alpha_images_become_rgb(tmp_path: Path) -> None:
    Image.new("P", (16, 16), 3).save(tmp_path / "p.png")
    Image.new("L", (16, 16), 128).save(tmp_path / "l.png")
    Image.new("RGBA", (16, 16), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("LA", (16, 16), (200, 255)).save(tmp_path / "la.png")
    for name in ("p", "l", "clear", "la"):
        x = read_image(tmp_path / f"{name}.png")
        assert x.shape == (3, 16, 16) and 0 <= x.min() and x.max() <= 1
    assert np.allclose(read_image(tmp_path / "l.png"), 128 / 255)
    assert read_image(tmp_path / "clear.png").max() == 0  # transparent over black
    assert np.allclose(read_image(tmp_path / "la.png"), 200 / 255)


# ------------------------------------------------------------------ masks and folders
def _folder(root: Path, image_size=(16, 16), mask_size=(16, 16), value: int = 1) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.new("RGB", image_size, (10, 20, 30)).save(root / "images" / "a.png")
    mask = np.zeros(mask_size[::-1], np.uint8)
    mask[2:6, 2:6] = value
    Image.fromarray(mask).save(root / "masks" / "a.png")
    Image.new("RGB", image_size).save(root / "images" / "b.png")
    Image.fromarray(np.zeros(image_size[::-1], np.uint8)).save(root / "masks" / "b.png")
    return root


@pytest.mark.parametrize("size", [None, 32])
def test_mask_of_another_size_is_refused_even_when_resizing(tmp_path: Path, size) -> None:
    root = _folder(tmp_path / "d", mask_size=(16, 12))
    with pytest.raises(SegxaiError, match="masks: a.png is 16×12 but a.png is 16×16"):
        load_folder(root, size=size)


def test_mask_values_outside_the_classes_name_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", value=9)
    with pytest.raises(SegxaiError, match="unknown class id.*9.* in a"):
        load_folder(root, class_names=["background", "thing"])


def test_colour_mask_and_corrupt_mask_name_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    Image.new("RGB", (16, 16)).save(root / "masks" / "a.png")
    with pytest.raises(SegxaiError, match="a.png has mode RGB"):
        load_folder(root)
    (root / "masks" / "a.png").write_bytes(os.urandom(100))
    with pytest.raises(SegxaiError, match="masks: .*a.png"):
        load_folder(root)
    with pytest.raises(SegxaiError, match="masks"):
        read_mask(root / "masks" / "a.png")


def test_corrupt_image_in_a_folder_names_it(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    (root / "images" / "b.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(SegxaiError, match="b.png"):
        load_folder(root)


def test_missing_folder_is_a_segxai_and_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(SegxaiError, match="root") as info:
        load_folder(tmp_path / "nope")
    assert isinstance(info.value, FileNotFoundError)


# ------------------------------------------------------------------ weights
class _Payload:
    """Unpickling this would create a file: the test checks it never is."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _weights_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    marker = tmp_path / "PWNED"
    cases: dict[str, tuple[bytes, str, str]] = {
        "random .safetensors": (os.urandom(300), ".safetensors", "safetensors"),
        "empty .safetensors": (b"", ".safetensors", "safetensors"),
        "pickle payload .pt": (pickle.dumps({"w": _Payload(marker)}), ".pt",
                               "never loaded"),
        "random .pt": (os.urandom(300), ".pt", "not one"),
        "json as .pth": (b'{"weight": [1, 2]}', ".pth", "not one"),
    }
    out = {}
    for name, (data, suffix, needle) in cases.items():
        path = tmp_path / (name.split()[0] + suffix)
        path.write_bytes(data)
        out[name] = (path, needle)
    return out


@pytest.mark.parametrize("case", ["random .safetensors", "empty .safetensors",
                                  "pickle payload .pt", "random .pt", "json as .pth"])
def test_bad_weights_file_names_the_file_and_runs_nothing(tmp_path: Path, case: str) -> None:
    path, needle = _weights_cases(tmp_path)[case]
    with pytest.raises(SegxaiError, match="weights") as info:
        read_weights(path)
    assert str(path) in str(info.value) and needle in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_weights_of_non_tensors_and_wrong_keys(tmp_path: Path) -> None:
    torch.save({"w": [1, 2, 3]}, tmp_path / "list.pt")
    with pytest.raises(SegxaiError, match="dict of tensors"):
        read_weights(tmp_path / "list.pt")
    torch.save({"nothing.matches": torch.zeros(1)}, tmp_path / "keys.pt")
    with pytest.raises(SegxaiError, match="missing keys .* unexpected keys .*nothing.matches"):
        load_model("lraspp_mobilenet_v3_large", weights=tmp_path / "keys.pt", num_classes=2)


# ------------------------------------------------------------------ checkpoints
def _checkpoint(root: Path) -> Path:
    net = UNet(UNetConfig(depth=1, base_width=4, num_classes=2))
    return save_checkpoint(net, root / "ck", class_names=["a", "b"])


CONFIG_CASES = {
    "not JSON": (b"{nope", "expected JSON"),
    "binary": (b"\xff\xfe\x00garbage", "expected JSON"),
    "a list": (b"[1, 2]", "JSON object"),
    "other format": (b'{"format": "other"}', "not a segxai-unet-v1"),
    "model missing": (b'{"format": "segxai-unet-v1"}', "'model' object"),
    "unknown field": (b'{"format": "segxai-unet-v1", "model": {"wings": 2}}', "wings"),
    "bad value": (b'{"format": "segxai-unet-v1", "model": {"depth": -1}}', "depth"),
    "class names": (b'{"format": "segxai-unet-v1", "model": {}, "class_names": 3}',
                    "class_names"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_garbage_checkpoint_config_names_the_file(tmp_path: Path, case: str) -> None:
    ck = _checkpoint(tmp_path)
    data, needle = CONFIG_CASES[case]
    (ck / "config.json").write_bytes(data)
    with pytest.raises(SegxaiError, match="directory") as info:
        load_checkpoint(ck)
    assert needle in str(info.value)


def test_checkpoint_weights_not_safetensors_or_not_matching(tmp_path: Path) -> None:
    ck = _checkpoint(tmp_path)
    good = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(SegxaiError, match=r"safetensors.*model\.safetensors"):
        load_checkpoint(ck)
    (ck / "model.safetensors").write_bytes(good)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["model"]["base_width"] = 8
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SegxaiError, match="mis-shaped keys"):
        load_checkpoint(ck)
    (ck / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_checkpoint(ck)


@pytest.mark.parametrize(("values", "ignore"), [([0, 3], None), ([-1, 0], None),
                                                ([0, 7], 255), ([0, 255], None)])
def test_dataset_mask_values_outside_the_classes_are_refused(values, ignore) -> None:
    from segxai.data.dataset import SegDataset

    masks = torch.tensor(values).repeat_interleave(8).view(1, 4, 4)
    with pytest.raises(SegxaiError, match=r"masks: expected class ids 0-2"):
        SegDataset(torch.zeros(1, 3, 4, 4), masks, ["a", "b", "c"], ignore_index=ignore)


def test_dataset_ignore_index_is_not_a_bad_value() -> None:
    from segxai.data.dataset import SegDataset

    masks = torch.tensor([0, 2, 255, 1]).repeat_interleave(4).view(1, 4, 4)
    assert len(SegDataset(torch.zeros(1, 3, 4, 4), masks, ["a", "b", "c"],
                          ignore_index=255)) == 1
