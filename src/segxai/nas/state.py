"""Search-state checkpoints: JSON, written atomically (temp file, fsync, rename).

A search killed at any moment (even with SIGKILL) leaves either the previous or the new
checkpoint on disk, never a half-written one, so a restarted search resumes from the last
completed iteration and, being deterministic, finishes with the identical result.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_json", "config_key", "derive_seed", "read_json"]


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` atomically.

    Args:
        path: destination file.
        data: JSON-serialisable object.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def config_key(config: dict[str, Any]) -> str:
    """Canonical string of a configuration (sorted keys, compact): its identity in caches."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from ``seed`` and ``parts`` by SHA-256, independent of any global
    random state (the same inputs give the same seed in every process)."""
    h = hashlib.sha256(repr((int(seed),) + tuple(str(p) for p in parts)).encode("utf-8"))
    return int.from_bytes(h.digest()[:8], "big") & ((1 << 63) - 1)
