"""Fetch MediaPipe's selfie segmentation model at install time, verified by SHA-256.

The model file ships inside the ``mediapipe`` wheel on PyPI (Apache-2.0). This step downloads
that wheel with ``pip download --no-deps`` (MediaPipe itself is never installed or imported:
it pins old numpy and protobuf), pinned to one platform build so that every machine gets the
same bytes, extracts ``selfie_segmentation.tflite`` and the licence, checks the model's
SHA-256 and stores both in the segxai cache. Run it once::

    python -m segxai.models.mediapipe_selfie [--cache-dir DIR] [--wheel FILE]

Runtime code never downloads: :func:`selfie_path` raises a :class:`SegxaiError` that says how
to fetch the file when it is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from segxai.core.errors import SegxaiError
from segxai.core.runstore import atomic_write_bytes, atomic_write_json
from segxai.models.builtin import default_cache_dir

__all__ = ["LICENSE_FILE", "MEDIAPIPE_VERSION", "MODEL_FILE", "SELFIE_SHA256", "WHEEL_MEMBER",
           "fetch_selfie", "main", "selfie_dir", "selfie_path", "sha256_file"]

MEDIAPIPE_VERSION = "0.10.21"
WHEEL_MEMBER = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"
LICENSE_MEMBER = f"mediapipe-{MEDIAPIPE_VERSION}.dist-info/LICENSE"
SELFIE_SHA256 = "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"
"""SHA-256 of ``selfie_segmentation.tflite`` in the mediapipe 0.10.21 wheels (249,505 bytes)."""
MODEL_FILE = "selfie_segmentation.tflite"
LICENSE_FILE = "LICENSE-mediapipe.txt"
# One build of the wheel for every machine (the model file is the same in all of them); pip
# can download a wheel for another platform than its own when dependencies are not resolved.
_PIP_PLATFORM = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                 "--implementation", "cp", "--abi", "cp311")
_FETCH_COMMAND = "python -m segxai.models.mediapipe_selfie"


def selfie_dir(cache_dir: str | Path | None = None) -> Path:
    """Where the model is stored: ``{cache}/mediapipe-selfie-{version}``, the cache being
    ``cache_dir``, else ``$SEGXAI_CACHE``, else ``~/.cache/segxai``."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"mediapipe-selfie-{MEDIAPIPE_VERSION}"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def selfie_path(cache_dir: str | Path | None = None) -> Path:
    """The fetched, verified model file.

    Raises:
        SegxaiError: the file is absent (the message gives the fetch command) or its
            checksum differs from :data:`SELFIE_SHA256`.
    """
    path = selfie_dir(cache_dir) / MODEL_FILE
    if not path.is_file():
        opt = f" --cache-dir {cache_dir}" if cache_dir is not None else ""
        raise SegxaiError(f"selfie model: expected the file {str(path)!r}, got nothing there; "
                          f"fetch it once with `{_FETCH_COMMAND}{opt}` (needs network access "
                          "to PyPI)")
    digest = sha256_file(path)
    if digest != SELFIE_SHA256:
        raise SegxaiError(f"selfie model: expected SHA-256 {SELFIE_SHA256}, got {digest} for "
                          f"{str(path)!r}; delete it and run `{_FETCH_COMMAND}` again")
    return path


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", f"mediapipe=={MEDIAPIPE_VERSION}",
           "--no-deps", "--only-binary=:all:", *_PIP_PLATFORM, "--dest", str(dest),
           "--disable-pip-version-check", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if done.returncode != 0 or not wheels:
        tail = (done.stderr or done.stdout).strip()[-800:]
        raise SegxaiError(f"pip download: expected the mediapipe {MEDIAPIPE_VERSION} wheel, got "
                          f"exit status {done.returncode}: {tail}; download it elsewhere and "
                          f"pass it with `{_FETCH_COMMAND} --wheel FILE`")
    return wheels[0]


def fetch_selfie(cache_dir: str | Path | None = None, wheel: str | Path | None = None,
                 force: bool = False) -> Path:
    """Extract the selfie model from the mediapipe wheel into the cache; verify its SHA-256.

    Args:
        cache_dir: cache root (default ``$SEGXAI_CACHE`` or ``~/.cache/segxai``).
        wheel: an already downloaded ``mediapipe-0.10.21-*.whl``; ``None`` downloads one with
            ``pip download --no-deps`` into a temporary directory.
        force: fetch again even when a verified file is present.

    Returns:
        The path of the verified ``selfie_segmentation.tflite``; next to it
        ``LICENSE-mediapipe.txt`` (Apache-2.0) and ``source.json`` (provenance).

    Raises:
        SegxaiError: pip fails, the wheel lacks the model, or the checksum differs (nothing
            is stored then).
    """
    target = selfie_dir(cache_dir)
    if not force:
        try:
            return selfie_path(cache_dir)
        except SegxaiError:
            pass
    with tempfile.TemporaryDirectory(prefix="segxai-mediapipe-") as tmp:
        wheel_path = Path(wheel) if wheel is not None else _download_wheel(Path(tmp))
        if not wheel_path.is_file():
            raise SegxaiError(f"wheel: expected a mediapipe wheel file, got {str(wheel_path)!r}")
        try:
            with zipfile.ZipFile(wheel_path) as zf:
                names = set(zf.namelist())
                if WHEEL_MEMBER not in names:
                    raise SegxaiError(f"wheel: expected {WHEEL_MEMBER} inside, got a wheel "
                                      f"without it ({wheel_path.name})")
                model = zf.read(WHEEL_MEMBER)
                licence = zf.read(LICENSE_MEMBER) if LICENSE_MEMBER in names else b""
        except zipfile.BadZipFile as exc:
            raise SegxaiError(f"wheel: expected a zip file, got {str(wheel_path)!r}") from exc
        digest = hashlib.sha256(model).hexdigest()
        if digest != SELFIE_SHA256:
            raise SegxaiError(f"{WHEEL_MEMBER}: expected SHA-256 {SELFIE_SHA256}, got {digest} "
                              f"(from {wheel_path.name}); not stored")
        if not licence:
            raise SegxaiError(f"wheel: expected the licence {LICENSE_MEMBER} inside, got none")
        wheel_sha = sha256_file(wheel_path)
    atomic_write_bytes(target / LICENSE_FILE, licence)
    atomic_write_json(target / "source.json", {
        "package": f"mediapipe=={MEDIAPIPE_VERSION}", "wheel": wheel_path.name,
        "wheel_sha256": wheel_sha, "member": WHEEL_MEMBER, "sha256": digest,
        "license": "Apache-2.0", "license_file": LICENSE_FILE})
    return atomic_write_bytes(target / MODEL_FILE, model)


def main(argv: list[str] | None = None) -> int:
    """Command line: fetch the model, print where it is."""
    parser = argparse.ArgumentParser(prog=_FETCH_COMMAND.removeprefix("python -m "),
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None,
                        help="cache root (default $SEGXAI_CACHE or ~/.cache/segxai)")
    parser.add_argument("--wheel", default=None, help="use this downloaded mediapipe wheel")
    parser.add_argument("--force", action="store_true", help="fetch even if present")
    args = parser.parse_args(argv)
    try:
        path = fetch_selfie(args.cache_dir, wheel=args.wheel, force=args.force)
    except SegxaiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{path} (sha256 {SELFIE_SHA256})")
    return 0
