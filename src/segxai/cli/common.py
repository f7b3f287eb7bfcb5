"""Small helpers shared by the CLI commands (argument conventions, JSON output)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from segxai.core.runstore import atomic_write_json


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


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented, strict JSON atomically (see
    :func:`segxai.core.runstore.atomic_write_json`: NumPy values and paths converted, NaN as
    null, keys sorted)."""
    atomic_write_json(path, data)


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
