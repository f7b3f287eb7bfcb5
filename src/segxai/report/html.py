"""A small, self-contained HTML report: one ``index.html`` that opens offline from disk.

Figures are embedded as base64 WebP (lossy, quality :data:`WEBP_QUALITY`): about a sixth of
the PNG size for these plots and overlays (large method × image grids also at a lower dpi), which keeps the default demo's page under
1.5 MB; the full-quality PNG of a figure is saved next to the page when a path is given.
Tables longer than :data:`COLLAPSE_ROWS` rows are folded into a ``<details>`` element.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["COLLAPSE_ROWS", "WEBP_QUALITY", "Section", "figure_to_html", "save_figure",
           "table_html", "write_report"]

WEBP_QUALITY = 75
"""Quality of the embedded WebP figures (0-100)."""
COLLAPSE_ROWS = 12
"""Tables with more rows than this are collapsed (``<details>``) by default."""


@dataclass
class Section:
    """One part of the report.

    Attributes:
        title: heading (also used for the table of contents).
        body: HTML fragment (use :func:`table_html` and :func:`figure_to_html` to build it).
        data: machine-readable numbers shown in the section (saved to ``report.json``).
        order: position in the report (smaller first).
    """

    title: str
    body: str
    data: dict[str, Any] = field(default_factory=dict)
    order: int = 100


def escape(text: object) -> str:
    return html.escape(str(text))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape(v)


def table_html(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
               caption: str | None = None, collapse: int | None = COLLAPSE_ROWS) -> str:
    """An HTML table from a list of dicts (one row each).

    Args:
        rows: one dict per row.
        columns: the columns shown (default: the first row's keys).
        caption: the table's caption.
        collapse: more rows than this fold the table into ``<details>`` (its summary shows the
            caption and the row count); ``None`` never folds.
    """
    if not rows:
        return "<p><em>(no rows)</em></p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    if collapse is not None and len(rows) > collapse:
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        return (f"<details><summary>{escape(caption or 'table')} ({len(rows)} rows; click to "
                f"show)</summary>{table}</details>")
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _webp(png: bytes, quality: int = WEBP_QUALITY) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="WEBP", quality=quality, method=4)
    return buf.getvalue()


def figure_to_html(fig: Any, caption: str = "", save_to: Path | None = None,
                   dpi: int = 100) -> str:
    """Embed a matplotlib figure as a base64 WebP (see the module docstring), optionally
    saving its full-quality PNG (at 100 dpi) to ``save_to``; closes the figure.

    Args:
        fig: the figure.
        caption: shown under it (and its alt text).
        save_to: where to save the PNG, or ``None``.
        dpi: resolution of the embedded copy (large grids use less to keep the page small).
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    if save_to is not None:
        save_to = Path(save_to)
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_bytes(buf.getvalue())
    if dpi != 100:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(_webp(buf.getvalue())).decode("ascii")
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return (f'<figure><img src="data:image/webp;base64,{data}" alt="{escape(caption)}"/>'
            f"{cap}</figure>")


def save_figure(fig: Any, path: Path) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f3f3f3}caption{caption-side:top;text-align:left;font-style:italic}
figure{margin:1em 0}img{max-width:100%}figcaption{font-size:90%;color:#555}
.note{background:#f7f7ff;border-left:4px solid #88f;padding:.5em 1em}
details{margin:1em 0}summary{cursor:pointer;font-style:italic}
"""


def write_report(sections: Sequence[Section], out_dir: Path, title: str = "segxai report",
                 intro: str = "") -> Path:
    """Write ``out_dir/index.html`` (self-contained) and ``out_dir/report.json``."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(sections, key=lambda s: s.order)
    toc = "".join(f'<li><a href="#s{i}">{escape(s.title)}</a></li>' for i, s in enumerate(ordered))
    parts = [f'<h2 id="s{i}">{escape(s.title)}</h2>\n{s.body}' for i, s in enumerate(ordered)]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>{intro}"
            f"<ol>{toc}</ol>{''.join(parts)}</body></html>")
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    (out_dir / "report.json").write_text(
        json.dumps({s.title: s.data for s in ordered}, indent=2, default=str), encoding="utf-8")
    return index
