"""Identity of architectures in search state: canonical keys and derived seeds.

Search and validation state is written through :class:`~segxai.core.runstore.RunStore`
(atomic files, append-only rows, a settings fingerprint); what is left here is how a
configuration is named in that state (:func:`config_key`) and how its seed is derived from
the run's seed (:func:`derive_seed`), independently of any global random state, so that a
resumed run recomputes exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from segxai.core.runstore import RunStore

__all__ = ["config_key", "derive_seed", "open_store"]


def config_key(config: dict[str, Any]) -> str:
    """Canonical string of a configuration (sorted keys, compact): its identity in caches."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed derived from ``seed`` and ``parts`` by SHA-256, independent of any global
    random state (the same inputs give the same seed in every process)."""
    h = hashlib.sha256(repr((int(seed),) + tuple(str(p) for p in parts)).encode("utf-8"))
    return int.from_bytes(h.digest()[:8], "big") & ((1 << 63) - 1)


def open_store(out: RunStore | str | Path | None, *, kind: str,
               settings: dict[str, Any]) -> RunStore | None:
    """``out`` as a :class:`RunStore` of ``kind`` with ``settings`` (``None`` stays ``None``;
    a store passed in is used as it is).

    Raises:
        SegxaiError: ``out`` holds a run of another kind or with other settings.
    """
    if out is None or isinstance(out, RunStore):
        return out
    return RunStore(out, kind=kind, settings=settings)
