"""Checkpoints without pickle: weights as safetensors, configuration as JSON.

A model checkpoint is a directory with ``model.safetensors`` and ``config.json``
(``{"format", "model": UNetConfig.to_dict(), "class_names", ...}``). Optimizer states are
flattened into ``optimizer.safetensors`` (tensors) and ``optimizer.json`` (everything else).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import Tensor

from segxai.core.errors import SegxaiError, SegxaiFileNotFoundError, SegxaiTypeError
from segxai.core.runstore import atomic_write_bytes, atomic_write_text
from segxai.models.unet import UNet, UNetConfig

__all__ = [
    "FORMAT",
    "load_checkpoint",
    "load_optimizer_state",
    "read_checkpoint_config",
    "read_safetensors",
    "save_checkpoint",
    "save_optimizer_state",
]

FORMAT = "segxai-unet-v1"


def save_state_dict(tensors: dict[str, Tensor], path: Path) -> None:
    """Save a flat ``name -> tensor`` dict as safetensors (atomically)."""
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def save_checkpoint(model: UNet, directory: str | Path, *, class_names: list[str] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write ``directory/model.safetensors`` and ``directory/config.json``.

    Args:
        model: a :class:`UNet` (its ``config`` is stored).
        directory: the checkpoint directory (created).
        class_names: names of the output classes (stored in the JSON).
        extra: more JSON-serialisable entries for ``config.json`` (e.g. the training config).

    Returns:
        The directory.
    """
    if not isinstance(model, UNet):
        raise SegxaiTypeError(f"model: expected a segxai UNet, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_state_dict(model.state_dict(), directory / "model.safetensors")
    data: dict[str, Any] = {"format": FORMAT, "model": model.config.to_dict(),
                            "class_names": list(class_names) if class_names else None}
    if extra:
        data.update(extra)
    atomic_write_text(directory / "config.json", json.dumps(data, indent=2))
    return directory


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory.

    Raises:
        SegxaiFileNotFoundError: no ``config.json`` (also a ``FileNotFoundError``).
        SegxaiError: a file that is not JSON, not a JSON object, or not a segxai checkpoint
            configuration (the message names the file).
    """
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise SegxaiFileNotFoundError(f"directory: expected a segxai checkpoint with "
                                      f"config.json, got no config.json in {str(directory)!r}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegxaiError(f"directory: expected JSON in {str(path)!r}, got an unreadable "
                          f"file ({exc})") from None
    if not isinstance(data, dict):
        raise SegxaiError(f"directory: expected a JSON object in {str(path)!r}, got a "
                          f"{type(data).__name__}")
    if data.get("format") != FORMAT:
        raise SegxaiError(f"directory: {path} is not a {FORMAT} checkpoint "
                         f"(format={data.get('format')!r})")
    if not isinstance(data.get("model"), dict):
        raise SegxaiError(f"directory: expected a 'model' object (a UNetConfig) in "
                          f"{str(path)!r}, got {data.get('model')!r}")
    names = data.get("class_names")
    if names is not None and (not isinstance(names, list)
                              or not all(isinstance(n, str) for n in names)):
        raise SegxaiError(f"directory: expected 'class_names' to be a list of strings in "
                          f"{str(path)!r}, got {names!r}")
    return data


def read_safetensors(path: str | Path, what: str = "weights") -> dict[str, Tensor]:
    """The tensors of a safetensors file.

    Raises:
        SegxaiError: the file is not a safetensors file (random bytes, a pickle, ...),
            naming it and ``what``.
    """
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise SegxaiError(f"{what}: expected a safetensors file, got {str(path)!r} which is "
                          f"not one ({exc})") from None


def load_checkpoint(directory: str | Path, device: str = "cpu") -> UNet:
    """Rebuild the :class:`UNet` of a checkpoint directory and load its weights.

    Args:
        directory: a directory written by :func:`save_checkpoint` or ``segxai train``.
        device: where to put the model.

    Returns:
        The model in eval mode, with ``class_names`` set as an attribute.

    Raises:
        SegxaiFileNotFoundError: ``config.json`` or ``model.safetensors`` is missing.
        SegxaiError: a garbage or wrong-schema ``config.json``, a weights file that is not
            safetensors, or weights that do not fit the configuration (missing, unexpected
            and mis-shaped keys listed); every message names the file.
    """
    from segxai.models.zoo import load_state_dict_strict

    directory = Path(directory)
    data = read_checkpoint_config(directory)
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise SegxaiFileNotFoundError(f"directory: expected model.safetensors in "
                                      f"{str(directory)!r}, got none")
    try:
        model = UNet(UNetConfig.from_dict(data["model"]))
    except (TypeError, ValueError) as exc:
        raise SegxaiError(f"directory: expected a valid UNetConfig under 'model' in "
                          f"{str(directory / 'config.json')!r}, got {exc}") from None
    load_state_dict_strict(model, read_safetensors(weights, "directory"),
                           source=f"directory ({weights})")
    model.class_names = data.get("class_names")
    return model.to(device).eval()


# ---------------------------------------------------------------------------- optimizer state
def _to_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v) for v in value]}
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise SegxaiTypeError(f"optimizer state: cannot store a value of type {type(value).__name__}")


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def save_optimizer_state(optimizer: torch.optim.Optimizer, directory: str | Path) -> None:
    """Store ``optimizer.state_dict()`` as ``optimizer.safetensors`` + ``optimizer.json``."""
    directory = Path(directory)
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, v in state.items():
            if isinstance(v, Tensor):
                tensors[f"{pid}/{key}"] = v
            else:
                scalars.setdefault(str(pid), {})[key] = _to_json(v)
    save_state_dict(tensors, directory / "optimizer.safetensors")
    meta = {"param_groups": _to_json(sd["param_groups"]), "scalars": scalars,
            "ids": [str(pid) for pid in sd["state"]]}
    atomic_write_text(directory / "optimizer.json", json.dumps(meta))


def load_optimizer_state(optimizer: torch.optim.Optimizer, directory: str | Path) -> None:
    """Load a state saved by :func:`save_optimizer_state` into ``optimizer``."""
    directory = Path(directory)
    path = directory / "optimizer.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SegxaiError(f"out: expected a readable optimizer state in {str(path)!r}, got "
                          f"{exc}; choose another --out directory") from None
    tensors = read_safetensors(directory / "optimizer.safetensors", "out")
    state: dict[int, dict[str, Any]] = {int(pid): {} for pid in meta["ids"]}
    for name, v in tensors.items():
        pid, key = name.split("/", 1)
        state[int(pid)][key] = v
    for pid, entries in meta["scalars"].items():
        state[int(pid)].update({k: _from_json(v) for k, v in entries.items()})
    optimizer.load_state_dict({"state": state, "param_groups": _from_json(meta["param_groups"])})
