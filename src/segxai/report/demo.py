"""The demo runner behind ``segxai demo``.

1. Load the built-in U-Net from the cache (or train it on ``shapes`` first).
2. Pick sample images of the validation split that together show every class.
3. Build a :class:`~segxai.report.context.DemoContext` and call every section module of
   :mod:`segxai.report.sections` in ``ORDER`` (a failing section becomes an error box).
4. Write the self-contained ``index.html`` (and ``report.json``) to the output directory.
"""

from __future__ import annotations

import html
import importlib
import pkgutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from segxai.core.errors import SegxaiError
from segxai.report.context import DemoContext
from segxai.report.html import Section, table_html, write_report

__all__ = ["DemoResult", "discover_sections", "pick_samples", "run_demo"]

DEFAULT_OUT = Path("segxai-report")


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        index: path of ``index.html``.
        sections: ``(title, seconds, ok)`` per section, in report order.
        failures: titles of sections (or parts) that failed.
        seconds: total wall time, model loading/training included.
        model_seconds: time spent loading or training the built-in model.
    """

    index: Path
    sections: list[tuple[str, float, bool]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def discover_sections() -> list[ModuleType]:
    """Every module of :mod:`segxai.report.sections` (``_``-prefixed excluded), sorted by
    ``ORDER`` then name. A module must define ``ORDER``, ``TITLE`` and ``build``."""
    from segxai.report import sections

    mods = []
    for info in pkgutil.iter_modules(sections.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"segxai.report.sections.{info.name}")
        missing = [a for a in ("ORDER", "TITLE", "build") if not hasattr(mod, a)]
        if missing:
            raise ValueError(f"section {info.name}: missing {', '.join(missing)}")
        mods.append(mod)
    return sorted(mods, key=lambda m: (int(m.ORDER), m.__name__))


def pick_samples(masks: Tensor, n: int, num_classes: int) -> list[int]:
    """Indices of ``n`` images that together show as many classes as possible.

    Greedy and deterministic: repeatedly take the image adding the most unseen classes
    (ties: more classes in the image, then the lower index).
    """
    present = [set(torch.unique(m).tolist()) - {0} for m in masks]
    chosen: list[int] = []
    seen: set[int] = set()
    for _ in range(min(n, len(present))):
        best = max((i for i in range(len(present)) if i not in chosen),
                   key=lambda i: (len(present[i] - seen), len(present[i]), -i))
        chosen.append(best)
        seen |= present[best]
    return chosen


def _error_section(mod: ModuleType, exc: BaseException) -> Section:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    body = (f"<p class='note'><strong>This section failed:</strong> "
            f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>"
            f"<details><summary>traceback</summary><pre>{html.escape(tb)}</pre></details>")
    return Section(title=str(mod.TITLE), body=body, data={"error": f"{type(exc).__name__}: {exc}"},
                   order=int(mod.ORDER))


def run_demo(out_dir: str | Path = DEFAULT_OUT, *, quick: bool = False, device: str = "cpu",
             seed: int = 0, progress: bool = True, cache_dir: str | Path | None = None,
             n_images: int | None = None, only: list[str] | None = None) -> DemoResult:
    """Run the demo and write ``out_dir/index.html``.

    Args:
        out_dir: report directory (created).
        quick: the quick model and reduced budgets in every section.
        device: torch device.
        seed: base seed (built-in model and sections).
        progress: progress bars.
        cache_dir: model cache (default ``$SEGXAI_CACHE`` or ``~/.cache/segxai``).
        n_images: sample images to explain (default 4; at least 4 is recommended).
        only: restrict to the section modules with these names (e.g. ``["s00_overview"]``).

    Returns:
        A :class:`DemoResult`.
    """
    from segxai.models.builtin import default_cache_dir, load_or_train_builtin

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_images = 4 if n_images is None else int(n_images)
    if n_images < 1:
        raise SegxaiError(f"n_images: expected an integer >= 1, got {n_images}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    t0 = time.perf_counter()
    builtin = load_or_train_builtin(cache_dir=cache, quick=quick, device=device,
                                    progress=progress, seed=seed)
    model_seconds = time.perf_counter() - t0
    val = builtin.val_data
    idx = pick_samples(val.masks, n_images, val.num_classes)
    ctx = DemoContext(model=builtin.model, images=val.images[idx].to(device),
                      masks=val.masks[idx].to(device), class_names=list(builtin.class_names),
                      out_dir=out_dir, quick=quick, device=device, seed=seed,
                      progress=progress, cache_dir=cache,
                      extra={"builtin": builtin, "sample_indices": idx, "failures": [],
                             "model_seconds": model_seconds})
    mods = discover_sections()
    if only:
        names = {m.__name__.rsplit(".", 1)[-1]: m for m in mods}
        unknown = [o for o in only if o not in names]
        if unknown:
            raise SegxaiError(f"only: unknown section(s) {unknown}; available: {sorted(names)}")
        mods = [m for m in mods if m.__name__.rsplit(".", 1)[-1] in only]
    result = DemoResult(index=out_dir / "index.html", model_seconds=model_seconds)
    built: list[Section] = []
    for mod in mods:
        t = time.perf_counter()
        try:
            section = mod.build(ctx)
            if not isinstance(section, Section):
                raise TypeError(f"build returned {type(section).__name__}, expected a Section")
            section.order = int(mod.ORDER)
            ok = True
        except Exception as exc:  # a failing section must not lose the others
            section = _error_section(mod, exc)
            ok = False
            result.failures.append(str(mod.TITLE))
        seconds = time.perf_counter() - t
        result.sections.append((str(mod.TITLE), seconds, ok))
        built.append(section)
    result.failures.extend(str(f) for f in ctx.extra.get("failures", []))
    result.seconds = time.perf_counter() - t_start
    rows: list[dict[str, Any]] = [{"section": "built-in model (load or train)",
                                   "seconds": round(model_seconds, 2), "status": "ok"}]
    rows += [{"section": title, "seconds": round(s, 2), "status": "ok" if ok else "FAILED"}
             for title, s, ok in result.sections]
    intro = (f"<p>Built-in U-Net on the synthetic <code>shapes</code> data "
             f"({'quick' if quick else 'full'} mode, seed {seed}, device {html.escape(device)}); "
             f"{len(idx)} sample images; total {result.seconds:.1f} s.</p>"
             + table_html(rows, caption="run time per section")
             + ("<p class='note'><strong>Failures:</strong> "
                + html.escape(", ".join(result.failures)) + "</p>" if result.failures else ""))
    write_report(built, out_dir, title="segxai demo report", intro=intro)
    return result
