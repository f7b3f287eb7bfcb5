"""Small helpers shared by the CLI commands (argument conventions, JSON output)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def add_common(parser: argparse.ArgumentParser, *, out_default: str | None = None) -> None:
    """Add the options every long command shares: ``--quick``, ``--out``, ``--device``,
    ``--seed`` and ``--quiet``."""
    parser.add_argument("--quick", action="store_true",
                        help="same pipeline at a size that finishes in about a minute")
    parser.add_argument("--out", default=out_default, type=Path,
                        help="output directory for machine-readable results")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON atomically (write to a temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_default))
    tmp.replace(path)


def parse_key_values(items: list[str], option: str) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings; values are Python literals where they parse, else strings.

    Raises:
        ValueError: an item without ``=`` (the message names ``option``).
    """
    import ast

    params: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{option}: expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            params[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key.strip()] = value
    return params
