"""Command-line interface: ``segxai <command> ...``.

The CLI is thin. Each command lives in its own module under ``segxai.cli.commands`` and
exposes ``register(subparsers)``, which adds an ``argparse`` sub-parser whose ``func`` default
receives the parsed arguments and returns an exit code. Commands are discovered at start-up,
so adding one is one new file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from segxai import __version__
    from segxai.cli import commands

    parser = argparse.ArgumentParser(
        prog="segxai",
        description=(
            "Explainable semantic segmentation: explain any PyTorch segmentation model, "
            "evaluate and attack the explanations, and use them for architecture search and "
            "continual learning."
        ),
    )
    parser.add_argument("--version", action="version", version=f"segxai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"segxai.cli.commands.{info.name}")
        module.register(sub)
    from segxai.cli.common import document_ranges

    document_ranges(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``segxai`` with ``argv``; returns the exit status.

    A user error (:class:`~segxai.core.errors.SegxaiError`) is printed in one line,
    ``segxai: error: ...``, with exit status 2; any other exception is a bug and propagates
    with its traceback.
    """
    from segxai.cli.common import as_option
    from segxai.core.errors import SegxaiError

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SegxaiError as exc:
        print(f"segxai: error: {as_option(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
