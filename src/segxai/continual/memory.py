"""A replay memory with a real byte budget, split evenly over the classes seen so far.

The memory holds, per class, an ordered list of exemplars (dictionaries of ``uint8``/``uint16``
arrays from :func:`segxai.continual.compress.compress`). Its size is the sum of the stored
arrays' ``nbytes`` (nothing simulated). As in CIM (``samples_per_class = memory // seen``, in
bytes here), each seen class gets ``budget // n_seen`` bytes: a new class fills its share in
selection order until the next exemplar does not fit; when more classes arrive, every class
keeps the longest prefix of its list that fits its smaller share. The total can therefore
never exceed the budget.

The memory also records which classes the masks of each task know (``known``: task → the
classes its label maps label, the task's own classes): at replay, a stored mask's background
pixels are "unknown" for every seen class its task did not know (:meth:`ReplayMemory.replay`),
so an exemplar never teaches a class learned later as background.

The memory is saved as ``memory.npz`` (arrays only, loaded with ``allow_pickle=False``) plus a
``memory.json`` index.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from segxai.continual.compress import (
    COMPRESSED_STRATEGIES,
    STRATEGIES,
    exemplar_nbytes,
    reconstruct,
)
from segxai.core.errors import SegxaiError, SegxaiTypeError
from segxai.core.runstore import atomic_write_bytes, atomic_write_json

__all__ = ["ReplayMemory"]

_ARRAY_NAMES = ("image", "mask", "low_image", "low_mask", "meta")


class ReplayMemory:
    """Exemplars per class under a byte budget.

    Args:
        strategy: one of :data:`segxai.continual.compress.STRATEGIES` (``"none"`` stores
            nothing).
        budget_bytes: total bytes the stored arrays may use.
        size: ``(H, W)`` of the examples (for reconstruction).
        params: compression parameters kept with the memory (``r``, ``tau``, ``patch``).

    Example:
        >>> import numpy as np
        >>> from segxai.continual.compress import compress
        >>> mem = ReplayMemory("full", budget_bytes=1000, size=(8, 8))
        >>> mem.set_classes([1, 2])
        >>> ex = compress(np.zeros((3, 8, 8), np.uint8), np.ones((8, 8), np.uint8), "full",
        ...               task=0, cls=1)
        >>> mem.add(1, ex), mem.nbytes
        (True, 260)
    """

    def __init__(self, strategy: str, budget_bytes: int, size: tuple[int, int],
                 params: dict[str, Any] | None = None) -> None:
        if strategy not in STRATEGIES:
            raise SegxaiError(f"strategy: expected one of {STRATEGIES}, got {strategy!r}")
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, np.integer)) \
                or budget_bytes < 0:
            raise SegxaiError(f"budget_bytes: expected an integer >= 0, got {budget_bytes!r}")
        self.strategy = strategy
        self.budget_bytes = int(budget_bytes)
        self.size = (int(size[0]), int(size[1]))
        self.params = dict(params or {})
        self.classes: list[int] = []
        self.items: dict[int, list[dict[str, np.ndarray]]] = {}
        self.known: dict[int, list[int]] = {}

    # ------------------------------------------------------------------ accounting
    @property
    def nbytes(self) -> int:
        """Bytes of all stored arrays."""
        return sum(exemplar_nbytes(ex) for lst in self.items.values() for ex in lst)

    def class_nbytes(self, cls: int) -> int:
        """Bytes stored for class ``cls``."""
        return sum(exemplar_nbytes(ex) for ex in self.items.get(int(cls), []))

    def __len__(self) -> int:
        return sum(len(lst) for lst in self.items.values())

    def quota(self) -> int:
        """Bytes each seen class may use: ``budget // n_seen`` (0 before any class)."""
        if self.strategy == "none" or not self.classes:
            return 0
        return self.budget_bytes // len(self.classes)

    # ------------------------------------------------------------------ updates
    def set_classes(self, classes: list[int]) -> None:
        """Declare the seen classes (old + new) and shrink every list to its new share."""
        new = sorted({int(c) for c in classes})
        if any(c not in new for c in self.classes):
            raise SegxaiError(f"classes: expected a superset of {self.classes}, got {new}")
        self.classes = new
        for c in new:
            self.items.setdefault(c, [])
        q = self.quota()
        for c in new:
            kept, used = [], 0
            for ex in self.items[c]:
                nb = exemplar_nbytes(ex)
                if used + nb > q:
                    break
                kept.append(ex)
                used += nb
            self.items[c] = kept

    def fits(self, cls: int, nbytes: int) -> bool:
        """Whether an exemplar of ``nbytes`` still fits class ``cls``'s share."""
        return self.class_nbytes(cls) + int(nbytes) <= self.quota()

    def add(self, cls: int, arrays: dict[str, np.ndarray]) -> bool:
        """Append an exemplar to class ``cls`` if it fits its share.

        Returns:
            True if stored, False if it would exceed the share (nothing is stored).
        """
        cls = int(cls)
        if cls not in self.classes:
            raise SegxaiError(f"cls: class {cls} is not among the seen classes {self.classes}")
        if self.strategy == "none":
            return False
        for name, a in arrays.items():
            if name not in _ARRAY_NAMES or a.dtype not in (np.uint8, np.uint16):
                raise SegxaiTypeError(f"arrays: unexpected entry {name!r} of dtype {a.dtype}")
        if not self.fits(cls, exemplar_nbytes(arrays)):
            return False
        self.items[cls].append(arrays)
        return True

    def set_known(self, task: int, classes: list[int]) -> None:
        """Record the foreground classes that task ``task``'s stored masks label."""
        self.known[int(task)] = sorted({int(c) for c in classes if int(c) != 0})

    def known_classes(self, arrays: dict[str, np.ndarray]) -> list[int]:
        """Classes the exemplar's mask knows: its task's (:meth:`set_known`), else its class."""
        task, cls = int(arrays["meta"][0]), int(arrays["meta"][1])
        return self.known.get(task, [cls])

    # ------------------------------------------------------------------ replay
    def exemplars(self) -> list[tuple[int, dict[str, np.ndarray]]]:
        """``(class, arrays)`` for every exemplar, classes in increasing order."""
        return [(c, ex) for c in sorted(self.items) for ex in self.items[c]]

    def reconstructed(self) -> tuple[np.ndarray, np.ndarray]:
        """Every exemplar rebuilt to full size.

        Returns:
            ``uint8`` images ``(N, 3, H, W)`` and masks ``(N, H, W)`` (N may be 0).
        """
        h, w = self.size
        pairs = [reconstruct(ex, self.strategy, self.size) for _, ex in self.exemplars()]
        if not pairs:
            return np.zeros((0, 3, h, w), np.uint8), np.zeros((0, h, w), np.uint8)
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def replay(self, seen: list[int], num_classes: int,
               labels: Literal["unbiased", "ignore", "stored"] = "unbiased",
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The exemplars rebuilt for replay in a task whose seen classes are ``seen``.

        Args:
            seen: background + every class seen so far (now).
            num_classes: classes of the dataset (background included).
            labels: ``"unbiased"``: masks as stored, and each exemplar's background may be
                any seen class its mask does not know (``bg_set`` rows; the loss folds them
                into background, MiB-style); ``"ignore"``: background pixels of an exemplar
                that does not know every seen class become 255; ``"stored"``: the stored
                masks as plain labels (background means background; the biased baseline).

        Returns:
            ``uint8`` images ``(N, 3, H, W)``, masks ``(N, H, W)`` and ``bg_set``
            ``(N, num_classes)`` bool.
        """
        if labels not in ("unbiased", "ignore", "stored"):
            raise SegxaiError(f"labels: expected 'unbiased', 'ignore' or 'stored', got {labels!r}")
        images, masks = self.reconstructed()
        bg = np.zeros((len(images), int(num_classes)), dtype=bool)
        bg[:, 0] = True
        if labels == "stored":
            return images, masks, bg
        for i, (_, ex) in enumerate(self.exemplars()):
            unknown = [c for c in seen if c != 0 and c not in self.known_classes(ex)]
            if not unknown:
                continue
            if labels == "ignore":
                masks[i][masks[i] == 0] = 255
            else:
                bg[i, unknown] = True
        return images, masks, bg

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        """Write ``memory.npz`` and ``memory.json`` into ``directory`` (atomically)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        index: dict[str, list[list[str]]] = {}
        for c in sorted(self.items):
            index[str(c)] = []
            for i, ex in enumerate(self.items[c]):
                names = []
                for name, a in ex.items():
                    key = f"c{c}_{i}_{name}"
                    arrays[key] = a
                    names.append(name)
                index[str(c)].append(names)
        buf = io.BytesIO()
        # numpy's stubs type **kwds together with allow_pickle: bool, so a ** of arrays fails
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        atomic_write_bytes(directory / "memory.npz", buf.getvalue())
        meta = {"strategy": self.strategy, "budget_bytes": self.budget_bytes,
                "size": list(self.size), "params": self.params, "classes": self.classes,
                "items": index, "nbytes": self.nbytes, "exemplars": len(self),
                "known": {str(t): v for t, v in sorted(self.known.items())}}
        atomic_write_json(directory / "memory.json", meta)

    @classmethod
    def load(cls, directory: str | Path) -> ReplayMemory:
        """Reload a memory written by :meth:`save` (no pickle)."""
        directory = Path(directory)
        meta = json.loads((directory / "memory.json").read_text())
        mem = cls(meta["strategy"], int(meta["budget_bytes"]), tuple(meta["size"]),
                  meta.get("params"))
        mem.classes = [int(c) for c in meta["classes"]]
        mem.known = {int(t): [int(c) for c in v] for t, v in meta.get("known", {}).items()}
        with np.load(directory / "memory.npz", allow_pickle=False) as data:
            for c_str, entries in meta["items"].items():
                c = int(c_str)
                mem.items[c] = [{name: np.array(data[f"c{c}_{i}_{name}"]) for name in names}
                                for i, names in enumerate(entries)]
        for c in mem.classes:
            mem.items.setdefault(c, [])
        if mem.nbytes != int(meta["nbytes"]):
            raise SegxaiError(f"memory: {directory} is inconsistent ({mem.nbytes} bytes loaded, "
                             f"{meta['nbytes']} recorded)")
        return mem


def memory_strategies() -> tuple[str, ...]:
    """Strategies that store exemplars."""
    return COMPRESSED_STRATEGIES
