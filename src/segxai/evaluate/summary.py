"""The evaluation summary: means per method, plain-language findings and ``summary.md``."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from segxai.core.stats import spearman
from segxai.evaluate.config import METRIC_DIRECTION, RANDOM_BASELINE, EvalConfig

__all__ = ["interpret", "summarise", "summary_markdown"]


def summarise(rows: Sequence[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    """Mean of every metric per method (NaNs ignored), in ``methods`` order."""
    out = []
    for m in methods:
        vals: dict[str, list[float]] = {}
        images = set()
        for r in rows:
            if r["method"] == m:
                vals.setdefault(r["metric"], []).append(float(r["value"]))
                images.add(r["image"])
        if not vals:
            continue
        entry: dict[str, Any] = {"method": m, "images": len(images)}
        for k, v in vals.items():
            arr = np.asarray(v, float)
            entry[k] = float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
        out.append(entry)
    return out


def interpret(summary: Sequence[dict[str, Any]]) -> list[str]:
    """Short plain-language findings computed from the summary numbers."""
    lines: list[str] = []
    real = [r for r in summary if r["method"] != RANDOM_BASELINE]
    base = next((r for r in summary if r["method"] == RANDOM_BASELINE), None)
    if not real:
        return ["No explanation method produced results."]

    def best(metric: str) -> dict[str, Any] | None:
        cands = [r for r in real if np.isfinite(r.get(metric, np.nan))]
        if not cands:
            return None
        sign = METRIC_DIRECTION.get(metric, 1)
        return max(cands, key=lambda r: sign * r[metric])

    for metric, label in (("deletion_auc", "deletion AUC (lower is better)"),
                          ("insertion_auc", "insertion AUC (higher is better)"),
                          ("context_deletion_auc", "context-only deletion AUC (lower is better)")):
        b = best(metric)
        if b is None:
            continue
        text = f"Best {label}: {b['method']} ({b[metric]:.3f})"
        if base is not None and np.isfinite(base.get(metric, np.nan)):
            text += f"; random baseline {base[metric]:.3f}"
        lines.append(text + ".")
    if base is not None:
        for metric, sign in (("deletion_auc", -1), ("insertion_auc", 1)):
            if not np.isfinite(base.get(metric, np.nan)):
                continue
            worse = [r["method"] for r in real if np.isfinite(r.get(metric, np.nan))
                     and sign * (r[metric] - base[metric]) <= 0]
            if worse:
                lines.append(f"Not better than random on {metric}: {', '.join(worse)}.")
    timed = [r for r in real if np.isfinite(r.get("seconds", np.nan))]
    if timed:
        fast = min(timed, key=lambda r: r["seconds"])
        slow = max(timed, key=lambda r: r["seconds"])
        lines.append(f"Cheapest: {fast['method']} ({fast['seconds']:.3g} s per explanation); "
                     f"most expensive: {slow['method']} ({slow['seconds']:.3g} s, "
                     f"{slow['seconds'] / max(fast['seconds'], 1e-9):.0f}x).")
        ins = [r for r in timed if np.isfinite(r.get("insertion_auc", np.nan))]
        if len(ins) >= 3:
            rho = spearman([r["seconds"] for r in ins], [r["insertion_auc"] for r in ins])
            if np.isfinite(rho):
                trend = ("more compute tended to buy better insertion AUC" if rho > 0.3 else
                         "more compute did not buy better insertion AUC" if rho < -0.3 else
                         "insertion AUC was roughly unrelated to compute")
                lines.append(f"Across methods, {trend} (Spearman ρ = {rho:.2f} between seconds "
                             "and insertion AUC).")
        dominated = []
        for r in ins:
            for o in ins:
                if o is not r and o["seconds"] <= r["seconds"] and \
                        o["insertion_auc"] >= r["insertion_auc"] and \
                        (o["seconds"] < r["seconds"] or o["insertion_auc"] > r["insertion_auc"]):
                    dominated.append(r["method"])
                    break
        front = [r["method"] for r in ins if r["method"] not in dominated]
        if front:
            lines.append("Pareto-optimal on (seconds, insertion AUC): " + ", ".join(front) + ".")
    n = max((r.get("images", 0) for r in summary), default=0)
    if n < 10:
        lines.append(f"Means over only {n} image(s): differences of a few hundredths are within "
                     "noise.")
    return lines



def summary_markdown(summary: list[dict[str, Any]], lines: list[str], config: EvalConfig,
                     failures: list[dict[str, Any]],
                     skipped: list[dict[str, Any]] | None = None) -> str:
    """The Markdown of ``summary.md``: settings, the mean table, findings, skips, failures."""
    cols = ["method", "images", "deletion_auc", "insertion_auc", "context_deletion_auc",
            "pointing_game", "energy_pointing_game", "sparseness", "complexity",
            "max_sensitivity", "seconds", "forward_passes", "backward_passes"]
    cols = [c for c in cols if any(c in r for r in summary)]
    out = io.StringIO()
    out.write("# segxai evaluate: summary\n\n")
    out.write(f"Curves: {config.steps} steps, score `{config.score}`, deletion substrate "
              f"`{config.deletion_substrate}`, insertion substrate `{config.insertion_substrate}`"
              f", seed {config.seed}. Means over images.\n\n")
    out.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
    for r in summary:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        out.write("| " + " | ".join(cells) + " |\n")
    out.write("\n## Findings\n\n")
    for line in lines:
        out.write(f"- {line}\n")
    if skipped:
        images = sorted({s["image"] for s in skipped})
        out.write(f"\nSkipped image(s) {', '.join(images)}: {skipped[0]['reason']}.\n")
    if failures:
        out.write("\n## Failures\n\n")
        for f in failures:
            out.write(f"- image {f['image']}, {f['method']}: {f['error']}\n")
    return out.getvalue()
