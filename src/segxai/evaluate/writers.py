"""The files of an evaluation run: ``results.csv``, ``summary.md``, ``summary.json``, figures.

Everything is written through the run's :class:`~segxai.core.runstore.RunStore`, so each file
is replaced atomically (a kill leaves the previous version, never half of a file).
"""

from __future__ import annotations

import io
from typing import Any

from segxai.core.runstore import RunStore
from segxai.evaluate.config import EvalConfig
from segxai.evaluate.summary import interpret, summary_markdown

__all__ = ["write_outputs"]

RESULT_COLUMNS = ("image", "method", "metric", "value")


def write_outputs(store: RunStore, rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                  curves: dict[str, dict[str, list[list[float]]]], config: EvalConfig,
                  failures: list[dict[str, Any]], skipped: list[dict[str, Any]],
                  figures: bool = True) -> None:
    """Write the tidy table, the summaries and (``figures=True``) the figures.

    Args:
        store: the run's store.
        rows: tidy rows ``{"image", "method", "metric", "value"}``.
        summary: means per method (:func:`~segxai.evaluate.summarise`).
        curves: ``{method: {kind: [curve per image]}}``.
        config: the run's settings.
        failures: ``{"image", "method", "error"}`` per failed pair.
        skipped: ``{"image", "method", "reason"}`` per skipped pair.
        figures: also write ``figures/curves.png``, ``auc_vs_seconds.png`` and
            ``noisiness_vs_cost.png``.
    """
    # repr keeps every digit of the float, so a resumed run's table equals a fresh one's
    store.write_csv("results.csv", ({**r, "value": repr(float(r["value"]))} for r in rows),
                    fieldnames=RESULT_COLUMNS)
    lines = interpret(summary)
    store.write_text("summary.md", summary_markdown(summary, lines, config, failures, skipped))
    store.write_json("summary.json", {"summary": summary, "findings": lines,
                                      "failures": failures, "skipped": skipped,
                                      "config": config.to_dict()})
    if not summary or not figures:
        return
    import matplotlib.pyplot as plt

    from segxai.evaluate.figures import (
        plot_auc_vs_seconds,
        plot_mean_curves,
        plot_noisiness_vs_cost,
    )

    for name, fig in (("curves.png", plot_mean_curves(curves, score=config.score)),
                      ("auc_vs_seconds.png", plot_auc_vs_seconds(summary)),
                      ("noisiness_vs_cost.png", plot_noisiness_vs_cost(summary))):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        store.write_bytes(f"figures/{name}", buf.getvalue())
