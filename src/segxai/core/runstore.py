"""One run store for every long command: atomic files, append-only rows, a settings fingerprint.

A long job (training, an evaluation, an attack study, an architecture search or validation, a
continual-learning experiment) writes everything it produces through a :class:`RunStore`:

* whole files (JSON, text, CSV, NPZ, safetensors, raw bytes) are written to a temporary file in
  the same directory, flushed to disk and renamed over the target, so a kill at any moment
  leaves either the old or the new file, never half of one;
* rows (one JSON object per finished unit of work: an image × method pair, an architecture, a
  seed × task) are appended to a JSON-lines file and fsynced one by one; on resume the rows
  already there are read back (a line cut by a kill is dropped and recomputed);
* ``run.json`` holds the run's kind and settings. Opening the store again with other settings
  raises a :class:`~segxai.core.errors.SegxaiError` naming the keys that differ, so a resumed
  run can never mix results computed under two configurations.

Tests simulate a hard kill with :attr:`RunStore.on_row`, a hook called after every appended
row (``monkeypatch.setattr(RunStore, "on_row", ...)``); library code reads no environment
variables for this.

Example:
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     store = RunStore(d, kind="demo", settings={"n": 3})
    ...     store.append_row("rows", {"i": 0, "value": 1.5})
    ...     store.write_json("summary.json", {"mean": 1.5})
    ...     again = RunStore(d, kind="demo", settings={"n": 3})
    ...     [r["value"] for r in again.rows("rows")]
    [1.5]
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segxai.core.errors import SegxaiError

__all__ = [
    "RunStore",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fingerprint",
    "publish_directory",
    "read_rows",
    "settings_diff",
    "to_jsonable",
]

RUN_FILE = "run.json"


def to_jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars/arrays, paths, tuples and sets turned into JSON types.

    Non-finite floats become ``None`` (JSON has no NaN), so every file the store writes is
    strict JSON that any reader accepts.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(to_jsonable(v) for v in value)
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return to_jsonable(value.item())  # a 0-d torch tensor
    return value


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> Path:
    """Write ``data`` as strict JSON (keys sorted) to ``path`` atomically."""
    text = json.dumps(to_jsonable(data), indent=indent, sort_keys=True, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def publish_directory(work: str | Path, final: str | Path) -> bool:
    """Move the finished directory ``work`` to ``final`` in one rename, so that readers see
    all of it or nothing (e.g. a model cache entry built under a temporary name).

    If ``final`` cannot be replaced (another process published it first), ``work`` is
    removed and ``final`` kept.

    Returns:
        Whether ``work`` became ``final``.
    """
    work, final = Path(work), Path(final)
    try:
        os.replace(work, final)  # refuses a non-empty ``final`` directory
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
        return False
    _fsync_dir(final.parent)
    return True


def fingerprint(settings: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``settings`` (key order does not matter)."""
    canon = json.dumps(to_jsonable(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the keys whose values differ between two settings dicts (sorted)."""
    old_j, new_j = to_jsonable(old), to_jsonable(new)
    out: list[str] = []
    for key in sorted(set(old_j) | set(new_j)):
        name = f"{prefix}{key}"
        a, b = old_j.get(key, "<absent>"), new_j.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(settings_diff(a, b, prefix=name + "."))
        elif a != b:
            out.append(name)
    return out


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a missing file is empty and a torn last line is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill: that unit of work is recomputed
    return rows


class RunStore:
    """The output directory of one long job.

    Args:
        root: the directory (created if missing). A path naming an existing file is refused.
        kind: what wrote the run (``"train"``, ``"evaluate"``, ...); a directory holding a run
            of another kind is refused.
        settings: everything that determines the results (JSON-serialisable). Settings that
            change only speed or output (progress bars, worker counts) do not belong here.
        resume: ``True`` (default) continues a run with the same settings; ``False`` refuses a
            directory that already holds a run.
        mutable: top-level setting keys that may differ on resume (for example a list of
            methods that a resumed evaluation extends); the new values are recorded.

    Raises:
        SegxaiError: ``out`` is a file or not writable, holds a run of another kind, or holds
            a run with other settings (the message lists the differing keys).
    """

    #: Called as ``on_row(store, name, row)`` after each appended row. ``None`` in library use;
    #: tests set it (monkeypatch) to simulate a kill at a chosen point.
    on_row: ClassVar[Callable[[RunStore, str, dict[str, Any]], None] | None] = None

    def __init__(self, root: str | Path, *, kind: str, settings: Mapping[str, Any],
                 resume: bool = True, mutable: Sequence[str] = ()) -> None:
        self.root = Path(root)
        self.kind = str(kind)
        self.settings: dict[str, Any] = to_jsonable(dict(settings))
        if self.root.exists() and not self.root.is_dir():
            raise SegxaiError(f"out: expected a directory, got the existing file {self.root}")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SegxaiError(f"out: cannot create the directory {self.root} "
                              f"({exc.strerror or exc})") from None
        if not os.access(self.root, os.W_OK):
            raise SegxaiError(f"out: the directory {self.root} is not writable")
        self.resumed = False
        run_file = self.root / RUN_FILE
        if run_file.exists():
            try:
                old = json.loads(run_file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SegxaiError(f"out: {run_file} is not a segxai run record ({exc}); "
                                  "choose another --out directory") from None
            if not isinstance(old, dict) or "settings" not in old:
                raise SegxaiError(f"out: {run_file} is not a segxai run record; "
                                  "choose another --out directory")
            if old.get("kind") != self.kind:
                raise SegxaiError(f"out: {self.root} holds a {old.get('kind')!r} run, not a "
                                  f"{self.kind!r} run; choose another --out directory")
            if not resume:
                raise SegxaiError(f"out: {self.root} already holds a {self.kind!r} run; "
                                  "choose another --out directory or resume it")
            old_settings = dict(old["settings"])
            new_cmp, old_cmp = dict(self.settings), dict(old_settings)
            for key in mutable:
                new_cmp.pop(key, None)
                old_cmp.pop(key, None)
            differ = settings_diff(old_cmp, new_cmp)
            if differ:
                raise SegxaiError(
                    f"out: {self.root} holds a {self.kind!r} run with other settings "
                    f"(differing: {', '.join(differ)}); resume with the same settings or "
                    "choose another --out directory")
            self.resumed = True
        self._write_run_record()

    # ------------------------------------------------------------------ identity
    @property
    def fingerprint(self) -> str:
        """Fingerprint of the run's settings."""
        return fingerprint(self.settings)

    def _write_run_record(self) -> None:
        atomic_write_json(self.root / RUN_FILE, {
            "kind": self.kind, "settings": self.settings, "fingerprint": self.fingerprint})

    def path(self, name: str) -> Path:
        """Absolute path of ``name`` inside the run (parents created)."""
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def exists(self, name: str) -> bool:
        return (self.root / name).exists()

    # ------------------------------------------------------------------ whole files
    def write_bytes(self, name: str, data: bytes) -> Path:
        return atomic_write_bytes(self.path(name), data)

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path(name), text)

    def write_json(self, name: str, data: Any) -> Path:
        return atomic_write_json(self.path(name), data)

    def read_json(self, name: str, default: Any = None) -> Any:
        """The JSON file ``name``, or ``default`` when it does not exist."""
        p = self.root / name
        if not p.exists():
            return default
        return json.loads(p.read_text(encoding="utf-8"))

    def write_csv(self, name: str, rows: Iterable[Mapping[str, Any]],
                  fieldnames: Sequence[str] | None = None) -> Path:
        """Write ``rows`` as CSV (columns: ``fieldnames``, or the keys in first-seen order)."""
        rows = [dict(r) for r in rows]
        if fieldnames is None:
            seen: dict[str, None] = {}
            for r in rows:
                seen.update(dict.fromkeys(r))
            fieldnames = list(seen)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in fieldnames})
        return self.write_text(name, buf.getvalue())

    def write_npz(self, name: str, **arrays: Any) -> Path:
        """Write NumPy arrays as a compressed ``.npz`` (no pickled objects allowed)."""
        buf = io.BytesIO()
        # numpy's stubs type **kwds together with allow_pickle: bool, so a ** of arrays fails
        np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
        return self.write_bytes(name, buf.getvalue())

    def read_npz(self, name: str) -> dict[str, np.ndarray]:
        with np.load(self.root / name, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def write_tensors(self, name: str, tensors: Mapping[str, Any],
                      metadata: Mapping[str, str] | None = None) -> Path:
        """Write a flat ``name -> tensor`` dict as safetensors."""
        from safetensors.torch import save

        flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        return self.write_bytes(name, save(flat, metadata=dict(metadata or {})))

    def read_tensors(self, name: str) -> dict[str, Any]:
        from safetensors.torch import load_file

        return load_file(str(self.root / name))

    # ------------------------------------------------------------------ rows
    def rows(self, name: str) -> list[dict[str, Any]]:
        """Rows appended so far to ``name`` (``name.jsonl``)."""
        return read_rows(self._rows_path(name))

    def append_row(self, name: str, row: Mapping[str, Any]) -> None:
        """Append one row to ``name.jsonl`` and fsync it before returning."""
        record = to_jsonable(dict(row))
        with open(self._rows_path(name), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        hook = type(self).on_row
        if hook is not None:
            hook(self, name, record)

    def _rows_path(self, name: str) -> Path:
        return self.path(name if name.endswith(".jsonl") else f"{name}.jsonl")

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r}, kind={self.kind!r}, resumed={self.resumed})"
