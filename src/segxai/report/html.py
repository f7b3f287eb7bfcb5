"""A small, dependency-free, self-contained HTML report (figures embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Section", "figure_to_html", "save_figure", "table_html", "write_report"]


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
               caption: str | None = None) -> str:
    """An HTML table from a list of dicts (one row each)."""
    if not rows:
        return "<p><em>(no rows)</em></p>"
    cols = list(columns or rows[0].keys())
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_to_html(fig: Any, caption: str = "", save_to: Path | None = None) -> str:
    """Embed a matplotlib figure as a base64 PNG (optionally also saving it); closes it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    if save_to is not None:
        save_to = Path(save_to)
        save_to.parent.mkdir(parents=True, exist_ok=True)
        save_to.write_bytes(buf.getvalue())
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}"/>{cap}</figure>'


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
