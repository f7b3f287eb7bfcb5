"""segxai's user-error type.

Every problem with what a user passed in (an argument, an option, a file, a model that cannot
be explained as asked) raises a :class:`SegxaiError` whose message has the form
``name: expected X, got Y``. It subclasses :class:`ValueError`, so ``except ValueError`` keeps
working; :class:`SegxaiTypeError` is the same for a value of the wrong type and also subclasses
:class:`TypeError`. The command line prints these in one line (exit status 2); any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["SegxaiError", "SegxaiFileNotFoundError", "SegxaiTypeError"]


class SegxaiError(ValueError):
    """A problem with the user's input; the message names the argument, option or file."""


class SegxaiTypeError(SegxaiError, TypeError):
    """A user input of the wrong type (also a :class:`TypeError`)."""


class SegxaiFileNotFoundError(SegxaiError, FileNotFoundError):
    """A file or folder the user named does not exist (also a :class:`FileNotFoundError`)."""
