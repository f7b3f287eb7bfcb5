"""Small helpers shared by the CLI commands (argument conventions, JSON output)."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
from collections.abc import Callable, Iterator
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
    parser.add_argument("--out", default=out_default, type=out_dir,
                        help="output directory for machine-readable results; refused if it "
                             "is a file, not writable, or holds a run with other settings"
                             + (" (default %(default)s)" if out_default else ""))
    parser.add_argument("--device", default="cpu", type=device,
                        help="torch device: cpu, cuda, cuda:N or mps, checked against what "
                             "this machine has (default %(default)s)")
    parser.add_argument("--seed", type=Range(int, 0), default=0,
                        help="random seed (default %(default)s)")
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


# ------------------------------------------------------------------------ checked option types
class Range:
    """An ``argparse`` type: an integer or number within bounds.

    A value out of range (or not a number) is reported by argparse as
    ``argument --NAME: expected an integer >= 1, got '0'`` (exit status 2);
    :func:`document_ranges` appends the accepted range to every such option's help.

    Args:
        kind: ``int`` or ``float``.
        low: smallest accepted value (``None``: no bound).
        high: largest accepted value (``None``: no bound).
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.
    """

    def __init__(self, kind: type[int] | type[float], low: float | None = None,
                 high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False) -> None:
        self.kind, self.low, self.high = kind, low, high
        self.low_open, self.high_open = low_open, high_open
        self.__name__ = "integer" if kind is int else "number"  # argparse names the type

    def describe(self) -> str:
        """The accepted values in words, e.g. ``an integer >= 1`` or ``a number in (0, 1]``."""
        what = "an integer" if self.kind is int else "a number"
        low, high = self.low, self.high
        if low is not None and high is not None:
            return (f"{what} in {'(' if self.low_open else '['}{low:g}, {high:g}"
                    f"{')' if self.high_open else ']'}")
        if low is not None:
            return f"{what} {'>' if self.low_open else '>='} {low:g}"
        if high is not None:
            return f"{what} {'<' if self.high_open else '<='} {high:g}"
        return what

    def __call__(self, text: str) -> int | float:
        try:
            value = self.kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not self._inside(value):
            raise argparse.ArgumentTypeError(f"expected {self.describe()}, got {text!r}")
        return value

    def _inside(self, v: float) -> bool:
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return not (self.high is not None
                    and (v >= self.high if self.high_open else v > self.high))

    def __repr__(self) -> str:
        return f"Range({self.describe()})"


def document_ranges(parser: argparse.ArgumentParser) -> None:
    """Append ``[RANGE]`` to the help of every :class:`Range` option of ``parser`` and of its
    sub-commands, so that ``--help`` shows what each numeric option accepts."""
    for action in parser._actions:  # argparse offers no public walk over its actions
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                document_ranges(sub)
        elif isinstance(action.type, Range) and action.help not in (None, argparse.SUPPRESS):
            note = f"[{action.type.describe()}]"
            if note not in str(action.help):
                action.help = f"{action.help} {note}"


def device(text: str) -> str:
    """An ``argparse`` type: a torch device this machine has (``cpu``, ``cuda[:N]``, ``mps``)."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda, cuda:1 "
                                         f"or mps, got {text!r}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"expected a device this machine has, got {text!r}"
                                             " but no CUDA GPU is available; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"expected cuda:0 to cuda:{count - 1} (this "
                                             f"machine has {count} GPU(s)), got {text!r}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"expected a device this machine has, got {text!r}"
                                             " but MPS is not available; use --device cpu")
    elif dev.type != "cpu":
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def out_dir(text: str) -> Path:
    """An ``argparse`` type: a directory that exists and is writable, or can be created.

    Nothing is created here; a run with other settings in it is refused later by the run
    store (:class:`segxai.core.runstore.RunStore`).
    """
    path = Path(text)
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory, got an empty path")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a directory, got the existing file {text!r}")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise argparse.ArgumentTypeError(f"expected a directory that can be created, got "
                                         f"{text!r} inside the file {str(parent)!r}")
    if not os.access(parent if parent.exists() else Path.cwd(), os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"expected a writable directory, got {text!r} "
                                         f"({str(parent)!r} is not writable)")
    return path


#: library argument names that mean the same option in every command
COMMON_OPTIONS = {"out": "--out", "device": "--device", "seed": "--seed"}


def as_option(message: str, names: dict[str, str] | None = None) -> str:
    """``"name: ..."`` → ``"--option: ..."`` when ``name`` is a key of ``names`` (default:
    :data:`COMMON_OPTIONS`); other messages unchanged."""
    key, sep, rest = message.partition(":")
    option = (COMMON_OPTIONS if names is None else names).get(key.strip())
    return f"{option}:{rest}" if sep and option else message


@contextlib.contextmanager
def options_named(*names: str, **renames: str) -> Iterator[None]:
    """Report a library user error about argument ``name`` (message ``name: ...``) as one
    about the option ``--name`` (underscores as dashes) for each of ``names``, or about the
    option given for it in ``renames`` (``box="--roi"``)."""
    mapping = {n: f"--{n.replace('_', '-')}" for n in names} | renames
    try:
        yield
    except SegxaiError as exc:
        message = as_option(str(exc), mapping)
        if message != str(exc):
            raise type(exc)(message) from exc
        raise


def check_explainer_params(params: dict[str, dict[str, Any]]) -> None:
    """Build each explainer with its ``--param`` values once, before any work, so that a bad
    value (``occlusion.window=0``) is a one-line error naming ``--param METHOD.KEY``."""
    from segxai.core.registry import get_explainer

    for method, kwargs in params.items():
        try:
            get_explainer(method)(**kwargs)
        except (ValueError, TypeError) as exc:
            message = str(exc)
            key = message.split(":", 1)[0]
            if key in kwargs:
                message = f"{method}.{message}"
            raise SegxaiError(f"--param {message}") from exc
