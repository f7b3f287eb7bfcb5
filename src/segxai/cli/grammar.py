"""The one option grammar of every ``segxai`` command: ``--model``, ``--method``, ``--param``.

* ``--model SPEC`` (+ ``--weights FILE``, ``--num-classes K``): any model
  :func:`segxai.models.zoo.load_model` knows.
* ``--method NAME`` (repeatable): registered explainers; a command may restrict the choice
  (the attack offers only differentiable ones) or take exactly one.
* ``--param METHOD.KEY=VALUE`` (repeatable; bare ``KEY=VALUE`` when one method is selected):
  explainer parameters, checked against the explainer's constructor.

Old option names (``--checkpoint``, ``--teacher``, ``--methods``, ``--explainer``,
``--method-param``) are accepted as hidden aliases that print a one-line deprecation note.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segxai.cli.common import Range, parse_key_values
from segxai.core.errors import SegxaiError

__all__ = [
    "add_deprecated",
    "add_method_options",
    "add_model_options",
    "differentiable_explainers",
    "explainer_keys",
    "load_cli_model",
    "registered_explainers",
    "resolve_methods",
    "resolve_params",
]


def registered_explainers() -> list[str]:
    """Every registered explainer (importing segxai registers the built-in ones)."""
    import segxai  # noqa: F401  (registers the built-in explainers)
    from segxai.core.registry import list_explainers

    return list_explainers()


def differentiable_explainers() -> list[str]:
    """Registered explainers whose maps can be differentiated (``differentiable = True``)."""
    from segxai.core.registry import get_explainer

    return [m for m in registered_explainers() if get_explainer(m).differentiable]


def explainer_keys(method: str) -> list[str]:
    """The parameter names of the explainer registered as ``method`` (its ``__init__``)."""
    from segxai.core.registry import get_explainer

    params = inspect.signature(get_explainer(method).__init__).parameters
    return [name for name, p in params.items() if name != "self"
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _takes_any_key(method: str) -> bool:
    """Whether the explainer's ``__init__`` has ``**kwargs`` (then it checks keys itself)."""
    from segxai.core.registry import get_explainer

    params = inspect.signature(get_explainer(method).__init__).parameters.values()
    return any(p.kind == p.VAR_KEYWORD for p in params)


class _Deprecated(argparse.Action):
    """A hidden old option name: prints a one-line note and stores into the new option."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str,
                 convert: Callable[[str], list[str]] | None = None, append: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new, self.convert, self.append = new, convert, append

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"segxai: note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        if self.append:
            items = self.convert(values) if self.convert else [values]
            setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), *items])
        else:
            setattr(namespace, self.dest, values)


def add_model_options(parser: argparse.ArgumentParser, *, what: str = "the model",
                      old: Sequence[str] = (), default: str | None = "builtin",
                      default_text: str = "%(default)s") -> None:
    """Add ``--model`` (default ``default``; ``None`` for a command that picks it after
    parsing, described in the help by ``default_text``), ``--weights`` and ``--num-classes``
    (and hidden ``old`` aliases of ``--model``)."""
    parser.add_argument(
        "--model", default=default, metavar="SPEC",
        help=f"{what}: 'builtin' (the cached built-in U-Net, trained on first use), "
             "'builtin-quick' (the smaller quick built-in U-Net), a segxai "
             "checkpoint directory, a torchvision segmentation model name (e.g. "
             "deeplabv3_mobilenet_v3_large), 'smp:ARCH:ENCODER' (segmentation_models_pytorch, "
             "e.g. smp:Unet:resnet34), a TorchScript .pt/.ts file, an ONNX .onnx or TFLite "
             ".tflite file (run as a black box: perturbation methods only), or "
             f"'package.module:factory' (default {default_text})")
    parser.add_argument(
        "--weights", type=Path, default=None, metavar="FILE",
        help="state dict for a torchvision, smp or factory model: .safetensors, or a "
             ".pt/.pth file read with weights_only=True; keys must match exactly")
    parser.add_argument(
        "--num-classes", type=Range(int, 1), default=None, metavar="K",
        help="output classes of a torchvision/smp model (default 21), also passed to a "
             "factory that takes num_classes")
    for name in old:
        add_deprecated(parser, name, dest="model", new="--model")


def add_deprecated(parser: argparse.ArgumentParser, old: str, *, dest: str, new: str) -> None:
    """A hidden old option name ``old`` that stores into ``dest`` with a deprecation note."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new)


def load_cli_model(args: argparse.Namespace, *, seed: int = 0) -> Any:
    """``segxai.models.zoo.load_model`` on the parsed model options; its errors name the
    command-line options (--model, --weights)."""
    from segxai.models.zoo import load_model

    try:
        return load_model(str(args.model), weights=args.weights, num_classes=args.num_classes,
                          device=args.device, quick=bool(getattr(args, "quick", False)),
                          progress=not getattr(args, "quiet", False), seed=seed)
    except SegxaiError as exc:
        message = str(exc)
        if message.startswith(("model:", "weights:")):
            raise type(exc)("--" + message) from exc
        raise


def _comma_list(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def add_method_options(parser: argparse.ArgumentParser, *, choices: Sequence[str],
                       default: str, one: bool = False, params: bool = True,
                       old_list: str | None = None,
                       old_single: str | None = None, old_param: str | None = None) -> None:
    """Add ``--method`` (repeatable) and ``--param`` (repeatable).

    Args:
        parser: the command's parser.
        choices: the methods offered (listed in the help).
        default: what no ``--method`` means, for the help text.
        one: the command takes exactly one method (said in the help; checked by
            :func:`resolve_methods`).
        params: also add ``--param``.
        old_list: a hidden deprecated comma-list alias (``--methods``).
        old_single: a hidden deprecated single-method alias (``--explainer``).
        old_param: a hidden deprecated alias of ``--param`` (``--method-param``).
    """
    parser.add_argument("--method", action="append", default=None, metavar="NAME",
                        help=("explainer (one); " if one else "explainer, repeatable; ")
                        + f"one of {', '.join(choices)} (default {default})")
    if params:
        parser.add_argument("--param", action="append", default=[],
                            metavar="METHOD.KEY=VALUE",
                            help="explainer parameter, repeatable, e.g. smoothgrad.n_samples=10 "
                                 "or seg-grad-cam.layer=backbone.16; KEY=VALUE alone when one "
                                 "method is selected; unknown keys are rejected")
    if old_list:
        parser.add_argument(old_list, dest="method", action=_Deprecated, new="--method",
                            convert=_comma_list, append=True)
    if old_single:
        parser.add_argument(old_single, dest="method", action=_Deprecated, new="--method",
                            append=True)
    if old_param:
        parser.add_argument(old_param, dest="param", action=_Deprecated, new="--param",
                            append=True)


def _unknown(kind: str, option: str, name: str, valid: Sequence[str]) -> SegxaiError:
    close = difflib.get_close_matches(name, list(valid), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return SegxaiError(f"{option}: expected one of {', '.join(valid)}, got unknown {kind} "
                       f"{name!r}{hint}")


def resolve_methods(given: Sequence[str] | None, *, choices: Sequence[str],
                    default: Sequence[str], one: bool = False,
                    extra: Sequence[str] = ()) -> list[str]:
    """The selected methods, checked against ``choices`` (plus pseudo-methods in ``extra``).

    Raises:
        SegxaiError: an unknown method (with close names), a repeated one, or more than one
            where the command takes ``one``.
    """
    methods = list(given) if given else list(default)
    valid = [*choices, *extra]
    for m in methods:
        if m not in valid:
            raise _unknown("method", "--method", m, valid)
    if len(set(methods)) != len(methods):
        raise SegxaiError(f"--method: expected distinct methods, got {', '.join(methods)}")
    if one and len(methods) != 1:
        raise SegxaiError(f"--method: expected one method for this command, got "
                          f"{len(methods)} ({', '.join(methods)})")
    return methods


def resolve_params(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--param`` items as ``{method: {key: value}}``, every key checked.

    Values are Python literals where they parse (``10``, ``False``, ``(8, 16)``), else strings.

    Raises:
        SegxaiError: an item without ``=``, a bare ``KEY=VALUE`` with several methods, a
            method that is not selected, or a key the explainer does not take (the message
            lists the valid keys).
    """
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_key_values(list(items), "--param").items():
        if "." in key:
            method, name = key.split(".", 1)
        elif len(methods) == 1:
            method, name = methods[0], key
        else:
            raise SegxaiError(f"--param: expected METHOD.KEY=VALUE with several methods "
                              f"selected ({', '.join(methods)}), got {key!r}")
        if method not in methods:
            raise SegxaiError(f"--param: expected a selected method ({', '.join(methods)}) "
                              f"before the dot, got {method!r} in {key!r}")
        valid = explainer_keys(method)
        if name not in valid and not _takes_any_key(method):
            raise _unknown(f"{method} parameter", "--param", name, valid)
        out.setdefault(method, {})[name] = value
    return out
