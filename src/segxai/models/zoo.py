"""One model loader for every kind of model the command line accepts.

:func:`load_model` turns a model *spec* into a model in eval mode:

* ``builtin``: the built-in U-Net (trained on first use, then cached);
* ``builtin-quick``: the quick built-in U-Net (recipe ``quick``: fewer parameters, trained in
  about a minute on first use), whatever ``quick`` says;
* a directory: a segxai checkpoint (``model.safetensors`` + ``config.json``);
* a torchvision segmentation model name (``deeplabv3_resnet50``, ...), optionally with
  ``weights``;
* ``smp:ARCH:ENCODER`` (e.g. ``smp:Unet:resnet34``): a segmentation_models_pytorch model,
  optionally with ``weights``;
* a ``.pt``/``.ts`` file: a TorchScript archive (``torch.jit.load``);
* ``package.module:factory``: any callable returning an ``nn.Module`` (called with
  ``num_classes=`` when it accepts it and ``num_classes`` is given), optionally with ``weights``;
* a ``.onnx`` file (onnxruntime) or a ``.tflite`` file (LiteRT): a
  :class:`~segxai.core.BlackBox`, explained by the perturbation methods only
  (:mod:`segxai.models.runtimes`).

Weights are read from safetensors, or from a tensor-only ``.pt``/``.pth`` state dict with
``torch.load(weights_only=True)``; never through pickle. They are loaded strictly: a file
whose keys or shapes do not match the model raises a :class:`SegxaiError` listing the missing,
unexpected and mis-shaped keys.

Models that expect ImageNet-normalised input (torchvision, smp) carry their normalisation as
``model.segxai_mean``/``model.segxai_std``, which :func:`segxai.core.adapter.adapt` reads.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from segxai.core.checks import check_positive_int
from segxai.core.errors import SegxaiError, SegxaiTypeError

__all__ = ["TORCHVISION_MODELS", "LoadedModel", "load_model", "load_state_dict_strict",
           "read_weights"]

TORCHVISION_MODELS = (
    "fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large",
)
_IMPORT_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
DEFAULT_NUM_CLASSES = 21  # torchvision's and smp's models are built with this many by default
TORCHSCRIPT_SUFFIXES = (".pt", ".ts")
RUNTIME_SUFFIXES = (".onnx", ".tflite")
BUILTIN_SPECS = ("builtin", "builtin-quick")
SPEC_FORMS = ("'builtin', 'builtin-quick', a segxai checkpoint directory, a torchvision "
              "model name (" + ", ".join(TORCHVISION_MODELS) + "), 'smp:ARCH:ENCODER', a "
              "TorchScript .pt/.ts file, an .onnx or .tflite file or 'package.module:factory'")


@dataclass
class LoadedModel:
    """A model loaded by :func:`load_model`.

    Attributes:
        model: the module, in eval mode, on the requested device.
        kind: ``"builtin"``, ``"checkpoint"``, ``"torchvision"``, ``"smp"``,
            ``"torchscript"``, ``"onnx"``, ``"tflite"`` or ``"import"``.
        spec: the spec it was loaded from.
        builtin: the :class:`~segxai.models.builtin.BuiltinModel` (with its data) for
            ``builtin``, else None.
        class_names: class names where known, else None.
    """

    model: nn.Module
    kind: str
    spec: str
    builtin: Any = None
    class_names: list[str] | None = None


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a tensor-only ``.pt``/``.pth`` file (no pickle).

    Raises:
        SegxaiError: the file is missing or holds something else than tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise SegxaiError(f"weights: expected a .safetensors or .pt/.pth file, got missing "
                          f"file {str(path)!r}")
    if path.suffix == ".safetensors":
        from segxai.models.checkpoint import read_safetensors

        return read_safetensors(path, "weights")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's pickle-protocol notes
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused or not a torch file: a bad input file
        raise SegxaiError(f"weights: expected a tensor-only state dict (.safetensors, or "
                          f".pt/.pth read with weights_only=True) in {str(path)!r}, got a file "
                          f"that is "
                          f"not one ({_load_reason(exc)}); pickled objects are never "
                          "loaded") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise SegxaiError(f"weights: expected a dict of tensors in {str(path)!r}, got "
                          f"{type(state).__name__}")
    return state


def _load_reason(exc: Exception) -> str:
    """One short line from ``torch.load``'s multi-line refusal."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            line = rest or (lines[i + 1] if i + 1 < len(lines) else "refused by the unpickler")
            return line.split(". Please", 1)[0][:200]  # drop torch's "allowlist it" advice
    return (lines[0] if lines else type(exc).__name__)[:200]


def _listed(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor],
                           source: str = "weights") -> None:
    """Load ``state`` into ``model``, every key and shape matching.

    Raises:
        SegxaiError: naming the missing, unexpected and mis-shaped keys.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listed(unexpected)}")
        if shapes:
            parts.append(f"mis-shaped keys (file vs model): {_listed(shapes)}")
        raise SegxaiError(f"{source}: expected the state dict of a {type(model).__name__}, got "
                          + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _imagenet(model: nn.Module) -> nn.Module:
    # torch's stubs type Module.__setattr__ values as Tensor | Module; any value works at runtime
    model.segxai_mean = "imagenet"  # type: ignore[assignment]
    model.segxai_std = "imagenet"  # type: ignore[assignment]
    return model


def _torchvision(name: str, state: dict[str, torch.Tensor] | None,
                 num_classes: int) -> nn.Module:
    from torchvision.models import segmentation

    # official weights carry the auxiliary head; build it when the file has it
    aux = state is not None and any(k.startswith("aux_classifier.") for k in state)
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None,
                              "num_classes": num_classes}
    if not name.startswith("lraspp"):
        kwargs["aux_loss"] = aux
    return _imagenet(getattr(segmentation, name)(**kwargs))


def _smp(spec: str, num_classes: int) -> nn.Module:
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts[1:]):
        raise SegxaiError(f"model: expected 'smp:ARCH:ENCODER' (e.g. smp:Unet:resnet34), "
                          f"got {spec!r}")
    try:
        import segmentation_models_pytorch as smp
    except ImportError as exc:
        raise SegxaiError(f"model: {spec!r} needs segmentation_models_pytorch "
                          "(pip install segxai[smp])") from exc
    try:
        model = smp.create_model(parts[1], encoder_name=parts[2], encoder_weights=None,
                                 classes=num_classes)
    except (KeyError, ValueError) as exc:  # smp's own unknown-architecture/encoder errors
        raise SegxaiError(f"model: expected a segmentation_models_pytorch ARCH and ENCODER, "
                          f"got {spec!r}: {exc}") from exc
    return _imagenet(model)


def _import(spec: str, num_classes: int | None) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SegxaiError(f"model: expected an importable 'package.module:factory', got "
                          f"{spec!r} ({exc})") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise SegxaiError(f"model: expected a callable {attr!r} in module {module_name}, got "
                          f"{type(factory).__name__}")
    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        try:
            accepts = "num_classes" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            accepts = False
        if accepts:
            kwargs["num_classes"] = num_classes
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise SegxaiTypeError(f"model: expected {spec!r} to return a torch.nn.Module, got "
                              f"{type(model).__name__}")
    return model


def _torchscript(path: Path) -> nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise SegxaiError(f"model: expected a TorchScript archive (torch.jit.save) in "
                          f"{str(path)!r}; state dicts go to weights; got: "
                          f"{str(exc).splitlines()[0]}") from exc


def _runtime(path: Path, state: dict[str, torch.Tensor] | None,
             num_classes: int | None) -> nn.Module:
    from segxai.models.runtimes import load_onnx, load_tflite

    if not path.is_file():
        raise SegxaiError(f"model: expected an existing {path.suffix} file, got missing file "
                          f"{str(path)!r}")
    if state is not None:
        raise SegxaiError(f"weights: expected no weights file for {path.suffix} model "
                          f"{str(path)!r} (it carries its own)")
    load = load_onnx if path.suffix == ".onnx" else load_tflite
    return load(path, num_classes=num_classes)


def load_model(spec: str, *, weights: str | Path | None = None, num_classes: int | None = None,
               device: str = "cpu", quick: bool = False, progress: bool = True,
               seed: int = 0) -> LoadedModel:
    """Load the model named by ``spec`` (see the module docstring for the forms).

    Args:
        spec: ``builtin``, ``builtin-quick``, a checkpoint directory, a torchvision name,
            ``smp:ARCH:ENCODER``, a TorchScript ``.pt``/``.ts`` file, an ``.onnx``/``.tflite``
            file (a :class:`~segxai.core.BlackBox`) or ``package.module:factory``.
        weights: a state dict file for a torchvision, smp or import-string model.
        num_classes: output classes of a torchvision/smp model (default 21), passed to a
            factory that accepts ``num_classes``, or checked against an ONNX/TFLite output.
        device: where to put the model.
        quick: the quick built-in model (``builtin`` only; ``builtin-quick`` is always the
            quick one).
        progress: show training progress if the built-in model must be trained.
        seed: seed of the built-in model's training.

    Returns:
        A :class:`LoadedModel`.

    Raises:
        SegxaiError: an unknown spec, a missing file, or weights that do not fit.
    """
    if not isinstance(spec, str) or not spec:
        raise SegxaiTypeError(f"model: expected a non-empty string, got {spec!r}")
    if num_classes is not None:
        check_positive_int(num_classes, "num_classes")
    state = read_weights(weights) if weights is not None else None
    builtin = None
    class_names = None
    model: nn.Module
    path = Path(spec)
    if spec in BUILTIN_SPECS or path.is_dir():
        if state is not None:
            raise SegxaiError(f"weights: expected no weights file for model {spec!r} (it "
                              "carries its own)")
        if spec in BUILTIN_SPECS:
            from segxai.models.builtin import load_or_train_builtin

            builtin = load_or_train_builtin(quick=quick or spec == "builtin-quick",
                                            device=device, progress=progress, seed=seed)
            model, kind, class_names = builtin.model, "builtin", list(builtin.class_names)
        else:
            from segxai.models.checkpoint import load_checkpoint

            model, kind = load_checkpoint(path, device=device), "checkpoint"
            class_names = getattr(model, "class_names", None)
    elif path.suffix in TORCHSCRIPT_SUFFIXES and path.is_file():
        if state is not None:
            raise SegxaiError(f"weights: expected no weights file for TorchScript model "
                              f"{spec!r} (it carries its own)")
        model, kind = _torchscript(path), "torchscript"
    elif path.suffix in RUNTIME_SUFFIXES:
        model, kind = _runtime(path, state, num_classes), path.suffix[1:]
    elif spec in TORCHVISION_MODELS:
        model = _torchvision(spec, state, num_classes or DEFAULT_NUM_CLASSES)
        kind = "torchvision"
    elif spec.startswith("smp:"):
        model, kind = _smp(spec, num_classes or DEFAULT_NUM_CLASSES), "smp"
    elif _IMPORT_SPEC.fullmatch(spec):
        model, kind = _import(spec, num_classes), "import"
    else:
        hint = ""
        if path.suffix in TORCHSCRIPT_SUFFIXES or path.suffix == ".safetensors":
            hint = " (no such file)"
        raise SegxaiError(f"model: expected {SPEC_FORMS}; got {spec!r}{hint}")
    if state is not None:
        load_state_dict_strict(model, state)
    return LoadedModel(model=model.to(device).eval(), kind=kind, spec=spec, builtin=builtin,
                       class_names=class_names)
