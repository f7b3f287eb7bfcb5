"""Small helpers shared by the CLI commands (argument conventions, JSON output)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.runstore import atomic_write_json

T = TypeVar("T")


def add_common(parser: argparse.ArgumentParser, *, out_default: str | None = None) -> None:
    """Add the options every long command shares: --quick, --out, --device, --seed and
    --quiet."""
    parser.add_argument("--quick", action="store_true",
                        help="same pipeline at a size that finishes in about a minute")
    parser.add_argument("--out", default=out_default, type=Path,
                        help="output directory for machine-readable results"
                             + (" (default %(default)s)" if out_default else ""))
    parser.add_argument("--device", default="cpu",
                        help="torch device, e.g. cpu or cuda (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def plain_text(doc: str | None) -> str:
    """A module docstring as plain help text: reST roles and literal quotes removed."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc or "")
    return text.replace("``", "").strip()


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented, strict JSON atomically (see
    :func:`segxai.core.runstore.atomic_write_json`: NumPy values and paths converted, NaN as
    null, keys sorted)."""
    atomic_write_json(path, data)


def parse_key_values(items: list[str], option: str) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings; values are Python literals where they parse, else strings.

    Raises:
        SegxaiError: an item without ``=`` (the message names ``option``).
    """
    import ast

    params: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SegxaiError(f"{option}: expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            params[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[key.strip()] = value
    return params


class QuickDefaults:
    """The defaults of one command's options that depend on ``--quick``, defined once.

    ``help(name)`` writes them into the help text; ``get(args, name)`` resolves an option
    left at None.
    """

    def __init__(self, full: dict[str, Any], quick: dict[str, Any]) -> None:
        if set(full) != set(quick):
            raise SegxaiTypeError("QuickDefaults: full and quick must name the same options")
        self.full, self.quick = dict(full), dict(quick)

    def help(self, name: str) -> str:
        """``"default 8; 2 with --quick"`` (or ``"default 8"`` when both agree)."""
        full, quick = self.full[name], self.quick[name]
        return f"default {full}" + (f"; {quick} with --quick" if quick != full else "")

    def get(self, args: argparse.Namespace, name: str) -> Any:
        value = getattr(args, name)
        if value is not None:
            return value
        return (self.quick if getattr(args, "quick", False) else self.full)[name]


def user_input(parse: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a library parser or validator of user input (e.g. ``parse_epsilon``) and report
    its ValueError as the user error it is."""
    try:
        return parse(*args, **kwargs)
    except SegxaiError:
        raise
    except ValueError as exc:
        raise SegxaiError(str(exc)) from exc
