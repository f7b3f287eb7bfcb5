"""``--workers N`` and ``--ray [ADDRESS]``: the options that spread a command's work, and the
executor they select (:func:`segxai.core.executor.make_executor`)."""

from __future__ import annotations

import argparse

from segxai.cli.common import Range
from segxai.core.executor import Executor, make_executor

__all__ = ["add_fanout_options", "cli_executor"]


def add_fanout_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--workers`` and ``--ray``."""
    parser.add_argument("--workers", type=Range(int, 1), default=None, metavar="N",
                        help="local worker processes, one torch thread each (so that results "
                             "are identical for any N; use N = cores; default: this process "
                             "with torch's default threads)")
    parser.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                        help="run as tasks on an existing Ray cluster (ray.init(address=...); "
                             "HOST:PORT, ray://HOST:PORT, or no value for the cluster "
                             "`ray start` runs on this machine); one task per chunk of "
                             "images x method, one GPU per task with --device cuda")


def cli_executor(args: argparse.Namespace) -> Executor:
    """The executor of the parsed ``--workers``/``--ray``/``--device``."""
    return make_executor(workers=args.workers, ray=args.ray, device=args.device)
