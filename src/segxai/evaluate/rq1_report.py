"""``rq1.md``: the RQ1 tables and a plain-language conclusion generated from the numbers.

Every sentence of :func:`conclusions` is computed from the study's numbers (the best method
per model and metric, whether its interval separates it from the runner-up, whether the
default layer's Seg-Grad-CAM beats the random baseline, how much the substrate changes the
ranking); nothing is written by hand.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from segxai.core.intervals import format_interval
from segxai.evaluate.config import METRIC_DIRECTION, RANDOM_BASELINE
from segxai.evaluate.tables import best_method, format_row, lookup

__all__ = ["conclusions", "default_layer_verdict", "main_table_markdown", "rq1_markdown"]

MAIN_METRICS = ("deletion_auc", "insertion_auc", "context_deletion_auc", "pointing_game",
                "energy_pointing_game", "seconds")
LABEL = {"deletion_auc": "deletion AUC ↓", "insertion_auc": "insertion AUC ↑",
         "context_deletion_auc": "context-only deletion AUC ↓", "pointing_game": "pointing ↑",
         "energy_pointing_game": "energy pointing ↑", "seconds": "seconds ↓"}


def _fmt(e: dict[str, Any] | None, digits: int = 3) -> str:
    return "–" if e is None else format_interval(e["mean"], e["lo"], e["hi"], digits)


def main_table_markdown(table: Sequence[dict[str, Any]],
                        metrics: Sequence[str] = MAIN_METRICS) -> str:
    """Markdown table: one row per method, ``mean [95 % CI]`` per metric, and the paired
    difference to the random baseline for deletion and insertion (✓ = better, ✗ = worse,
    interval excluding 0)."""
    methods = list(dict.fromkeys(e["method"] for e in table))
    cols = [LABEL.get(m, m) for m in metrics] + ["Δ deletion vs random", "Δ insertion vs random"]
    out = io.StringIO()
    out.write("| method | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n")
    for m in methods:
        cells = [_fmt(lookup(table, m, metric), 4 if metric == "seconds" else 3)
                 for metric in metrics]
        for metric in ("deletion_auc", "insertion_auc"):
            e = lookup(table, m, metric)
            cells.append(format_row(e)[1] if e is not None and "diff" in e else "")
        out.write(f"| {m} | " + " | ".join(cells) + " |\n")
    return out.getvalue()


def default_layer_verdict(part: dict[str, Any]) -> dict[str, Any]:
    """Does the default layer's Seg-Grad-CAM beat the random baseline on deletion and
    insertion (paired intervals excluding 0)? Also the layers where it does."""
    table = part["layers"]["table"]
    default = part["default_layer"]
    out: dict[str, Any] = {"layer": default}
    for metric in ("deletion_auc", "insertion_auc"):
        e = lookup(table, f"seg-grad-cam@{default}", metric)
        out[metric] = e
        out[f"{metric}_beats"] = bool(e is not None and e.get("beats_baseline") is True)
    good = []
    for st in part["layers"]["stages"]:
        es = [lookup(table, f"seg-grad-cam@{st['name']}", m)
              for m in ("deletion_auc", "insertion_auc")]
        if all(e is not None and e.get("beats_baseline") is True for e in es):
            good.append(st["name"])
    out["layers_that_beat_random"] = good
    out["beats"] = out["deletion_auc_beats"] and out["insertion_auc_beats"]
    return out


def _separated(table: Sequence[dict[str, Any]], best: dict[str, Any], metric: str) -> bool:
    """The best method's interval does not overlap the runner-up's."""
    sign = METRIC_DIRECTION.get(metric, 1)
    others = [e for e in table if e["metric"] == metric and e["method"] != best["method"]
              and e["method"] != RANDOM_BASELINE]
    if not others:
        return False
    second = max(others, key=lambda e: sign * e["mean"])
    return bool(best["hi"] < second["lo"] if sign < 0 else best["lo"] > second["hi"])


def conclusions(result: dict[str, Any]) -> list[str]:
    """Plain-language findings, each computed from ``result`` (the study's numbers)."""
    lines: list[str] = []
    wins: dict[str, list[tuple[str, str]]] = {}
    for part in result["models"]:
        if "skipped" in part:
            lines.append(f"{part['model']} (val mIoU {part['val_miou']:.3f}): not evaluated, "
                         f"{part['skipped']}.")
            continue
        if "main" not in part:  # an interrupted study: this model's parts are still to come
            lines.append(f"{part['model']}: not finished yet.")
            continue
        name, table = part["model"], part["main"]
        for metric in ("deletion_auc", "insertion_auc", "context_deletion_auc"):
            b = best_method(table, metric)
            if b is None:
                continue
            wins.setdefault(metric, []).append((b["method"], name))
            cost = lookup(table, b["method"], "seconds")
            clear = ("clearly ahead (its interval does not overlap the runner-up's)"
                     if _separated(table, b, metric) else
                     "not separated from the runner-up (overlapping intervals)")
            lines.append(f"{name}: best {LABEL[metric]} is {b['method']} "
                         f"{_fmt(b)}, {clear}; it costs {_fmt(cost, 4)} s per explanation.")
        worse = [e["method"] for e in table if e["metric"] in ("deletion_auc", "insertion_auc")
                 and e.get("beats_baseline") is not True and e["method"] != RANDOM_BASELINE]
        if worse:
            lines.append(f"{name}: not better than random on deletion or insertion AUC "
                         f"(paired interval includes 0 or is worse): "
                         f"{', '.join(sorted(set(worse)))}.")
        v = default_layer_verdict(part) if "layers" in part else None
        if v is not None and v["beats"]:
            lines.append(f"{name}: Seg-Grad-CAM at the default layer {v['layer']} beats the "
                         f"random baseline on deletion ({format_row(v['deletion_auc'])[1]}) "
                         f"and insertion ({format_row(v['insertion_auc'])[1]}).")
        elif v is not None:
            good = v["layers_that_beat_random"]
            lines.append(f"{name}: Seg-Grad-CAM at the default layer {v['layer']} does NOT beat "
                         f"the random baseline on both deletion and insertion; layers where it "
                         f"does: {', '.join(good) if good else 'none'} (see the layer figure).")
        agree = [a for a in part.get("substrates", {}).get("agreement", []) if "rho" in a]
        if agree:
            low = min(agree, key=lambda a: a["rho"])
            lines.append(f"{name}: the method ranking under {low['reference']} vs "
                         f"{low['substrate']} ({low['metric']}) has Spearman ρ "
                         f"{format_interval(low['rho'], low['lo'], low['hi'], 2)}, the least "
                         f"agreement among the substrates compared.")
    for metric, won in wins.items():
        names = [m for m, _ in won]
        top = max(sorted(set(names)), key=names.count)
        if names.count(top) * 2 > len(names):
            lines.append(f"Overall, {top} has the best {LABEL[metric]} on {names.count(top)} "
                         f"of {len(names)} models.")
        else:
            lines.append(f"Overall, no method has the best {LABEL[metric]} on most models: "
                         + ", ".join(f"{m} ({model})" for m, model in won) + ".")
    cb = result.get("context_bias", {}).get("methods", {})
    found = [m for m, e in cb.items() if "cbl_difference" in e and e["cbl_difference"][1] > 0]
    if cb:
        learned = result["context_bias"].get("biased_sanity", {}).get("learned_bias")
        lines.append(f"Context bias: the biased model {'did' if learned else 'did not'} learn "
                     f"the cue (sanity protocol); methods whose CBL is higher on it than on the "
                     f"control model (paired interval above 0): "
                     f"{', '.join(found) if found else 'none'}.")
    return lines


def rq1_markdown(result: dict[str, Any]) -> str:
    """The whole ``rq1.md``."""
    cfg = result["config"]
    out = io.StringIO()
    out.write("# RQ1: which explanation method (segxai evaluate --study rq1)\n\n")
    if result.get("complete") is False:
        out.write("**Interrupted or still running: only the finished parts are shown; run the "
                  "same command again to resume.**\n\n")
    out.write(f"Steps {cfg['steps']}, seed {cfg['seed']}, {'quick' if cfg['quick'] else 'full'}"
              f" model recipe; wall time {result.get('seconds', 0):.0f} s. Every mean has a "
              "95 % bootstrap interval over images; Δ = per-image paired difference to the "
              "random baseline (✓ better, ✗ worse, interval excluding 0).\n\n")
    out.write("## Conclusions (generated from the numbers)\n\n")
    for line in conclusions(result):
        out.write(f"- {line}\n")
    for part in result["models"]:
        if "skipped" in part:
            out.write(f"\n## {part['model']} (val mIoU {part['val_miou']:.3f})\n\n"
                      f"Not evaluated: {part['skipped']}.\n")
            continue
        if "main" not in part:
            continue
        out.write(f"\n## {part['model']} (val mIoU {part['val_miou']:.3f}, default layer "
                  f"`{part['default_layer']}`, {part['images']} images)\n\n")
        out.write(main_table_markdown(part["main"]))
        if "layers" not in part:
            continue
        lay = part["layers"]
        out.write(f"\n### Layers ({lay['images']} images; figure `{lay['figure']}`)\n\n")
        out.write("| method@layer | deletion AUC ↓ | Δ vs random | insertion AUC ↑ | Δ vs random "
                  "| context deletion ↓ | pointing ↑ | energy pointing ↑ |\n"
                  "|---|---|---|---|---|---|---|---|\n")
        for name in dict.fromkeys(e["method"] for e in lay["table"]):
            d, i = lookup(lay["table"], name, "deletion_auc"), lookup(lay["table"], name,
                                                                       "insertion_auc")
            cells = [_fmt(d), format_row(d)[1] if d else "", _fmt(i),
                     format_row(i)[1] if i else ""]
            cells += [_fmt(lookup(lay["table"], name, m)) for m in
                      ("context_deletion_auc", "pointing_game", "energy_pointing_game")]
            out.write(f"| {name} | " + " | ".join(cells) + " |\n")
        if "substrates" not in part:
            continue
        sub = part["substrates"]
        out.write(f"\n### Substrates ({sub['images']} images): ranking agreement with "
                  f"`{cfg['substrates'][0]}`\n\n| metric | substrate | Spearman ρ [95 % CI] |"
                  "\n|---|---|---|\n")
        for a in sub["agreement"]:
            rho = (format_interval(a["rho"], a["lo"], a["hi"], 2) if "rho" in a
                   else a.get("error", ""))
            out.write(f"| {a['metric']} | {a['substrate']} | {rho} |\n")
    cb = result.get("context_bias")
    if cb:
        out.write("\n## Context bias (ground truth): CBL on the biased vs the control model\n\n"
                  "| method | CBL biased | CBL control | Δ (paired) | CBD biased |\n"
                  "|---|---|---|---|---|\n")
        for m, e in cb["methods"].items():
            cells = [format_interval(*e[k][:3]) if k in e else "–"
                     for k in ("biased_cbl", "control_cbl", "cbl_difference", "biased_cbd")]
            out.write(f"| {m} | " + " | ".join(cells) + " |\n")
    return out.getvalue()
