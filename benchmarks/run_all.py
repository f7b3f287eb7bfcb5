"""Run every benchmark in ``benchmarks/`` and print one table of ratios against the peers.

Run: ``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/run_all.py [--quick] [--only NAME]
[--json FILE] [--verbose]`` (``make bench`` runs it in full).

Each benchmark runs as its own process (so that one's threads, caches and imports do not
distort the next), its output is parsed, and one row per comparison is printed:

| benchmark | ours | peer | ours s | peer s | peer/ours | note |

``peer/ours`` > 1 means segxai is faster. The peers: Captum and pytorch-grad-cam
(``bench_core``, ``bench_perturbation``), the plain batched forwards a deletion/insertion curve
needs (``bench_deletion``, goal peer/ours >= 0.83, i.e. curves <= 1.2x the forwards) and the
time goal of the explanation attack (``bench_attack``, 60 s per image on 2 cores).
``--quick`` runs each benchmark at a size that finishes in seconds to a minute (a smoke run;
its ratios are not the documented ones). The exit status is 1 if a benchmark failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ATTACK_GOAL_S = 60.0  # issue 6: seconds per attacked image on 2 cores


@dataclass
class Row:
    """One comparison: our time, the peer's, and ``peer_s / ours_s``."""

    benchmark: str
    ours: str
    peer: str
    ours_s: float
    peer_s: float
    note: str = ""

    @property
    def ratio(self) -> float:
        ok = math.isfinite(self.ours_s) and self.ours_s > 0
        return self.peer_s / self.ours_s if ok else float("nan")


Parser = Callable[[str, Path], list[Row]]


def _parse_core(out: str, _: Path) -> list[Row]:
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("ours", "---"):
            continue
        rows.append(Row("core", cells[0], cells[1], float(cells[2]), float(cells[3]), cells[5]))
    return rows


def _parse_perturbation(_: str, json_path: Path) -> list[Row]:
    data = json.loads(json_path.read_text())
    return [Row("perturbation", r["method"], r["peer"], r["ours_s"], r["peer_s"],
                r["agreement"]) for r in data["rows"]]


def _parse_deletion(out: str, _: Path) -> list[Row]:
    base = re.search(r"baseline: (\d+) batched forwards\s+([\d.]+) s", out)
    curves = re.search(r"curves:\s+(\d+)-step deletion \+ insertion\s+([\d.]+) s", out)
    if not (base and curves):
        raise ValueError("bench_deletion: no 'baseline:'/'curves:' lines in its output")
    return [Row("deletion", f"{curves[1]}-step deletion + insertion curves",
                f"{base[1]} batched forwards", float(curves[2]), float(base[2]),
                "goal peer/ours >= 0.83 (curves <= 1.2x the forwards)")]


def _parse_attack(out: str, _: Path) -> list[Row]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("method ")
                 and "seconds/image" in line)
    rows = []
    for line in lines[start + 1:]:
        parts = line.split()
        if len(parts) != 5:
            break
        method, success, target_r, agreement, seconds = parts
        rows.append(Row("attack", f"attack on {method}", f"goal {ATTACK_GOAL_S:.0f} s/image",
                        float(seconds), ATTACK_GOAL_S,
                        f"success {success}, target r {target_r}, agreement {agreement}"))
    return rows


def _parse_workers(out: str, _: Path) -> list[Row]:
    """``--workers N`` against ``--workers 1`` (the "peer" is one process; goal >= 1.7x)."""
    walls: dict[str, float] = {}
    for line in out.splitlines():
        m = re.match(r"\|\s*--workers (\d+)\s*\|\s*1\s*\|\s*([0-9.]+)\s*\|", line)
        if m:
            walls[m.group(1)] = float(m.group(2))
    n = max(walls, key=int)
    return [Row("workers", f"evaluate --workers {n}", "evaluate --workers 1", walls[n],
                walls["1"], "goal >= 1.7x; identical results.csv checked")]


def _parse_smoothgrad(out: str, _: Path) -> list[Row]:
    """SmoothGrad variants vs NoiseTunnel (median wall seconds; the note keeps the ratios'
    median and range over the rounds)."""
    rows = []
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[0].startswith("segxai smoothgrad"):
            continue
        ours_s, peer_s = (float(c.split("/")[0]) for c in cells[1:3])
        rows.append(Row("smoothgrad", cells[0], "captum NoiseTunnel", ours_s, peer_s,
                        f"ratio wall {cells[3]}, CPU {cells[4]}"))
    return rows


# bench_memory: ours -> the peer measured beside it (growth of peak memory during the method)
MEMORY_PAIRS = {"gradient": "captum Saliency", "smoothgrad n=8": "captum NoiseTunnel n=8",
                "occlusion w64 s64 (incremental)": "captum Occlusion w64 s64 ppe=16"}


def _parse_train_memory_format(out: str, _: Path) -> list[Row]:
    m = re.search(r"NCHW ([\d.]+) s, NHWC ([\d.]+) s CPU", out)
    if m is None:
        raise ValueError("no total line")
    return [Row("nas training", "channels_last", "contiguous (the old path)", float(m.group(2)),
                float(m.group(1)), "CPU s, band students of the built-in teacher")]


def _parse_memory(_: str, json_path: Path) -> list[Row]:
    """Memory growth during each method vs its peer (ratio = peer MiB / ours MiB)."""
    rows = {r["method"]: r for r in json.loads(json_path.read_text())}
    return [Row("memory", f"{ours} (MiB)", f"{peer} (MiB)", rows[ours]["growth_mib"],
                rows[peer]["growth_mib"], "peak-memory growth during the method")
            for ours, peer in MEMORY_PAIRS.items() if ours in rows and peer in rows]


# name -> (full arguments, --quick arguments, parser); "{json}" becomes a temporary file
BENCHMARKS: dict[str, tuple[list[str], list[str], Parser]] = {
    "bench_core": ([], ["--rounds", "1", "--size", "128", "--nt-samples", "2"], _parse_core),
    "bench_perturbation": (["--json", "{json}"], ["--quick", "--json", "{json}"],
                           _parse_perturbation),
    "bench_deletion": ([], ["--repeats", "1", "--steps", "10"], _parse_deletion),
    "bench_attack": ([], ["--quick", "--images", "1", "--iterations", "10", "--methods",
                          "gradient"], _parse_attack),
    "bench_workers": ([], ["--quick"], _parse_workers),
    "bench_memory": (["--json", "{json}"], ["--size", "128", "--json", "{json}"], _parse_memory),
    "bench_smoothgrad": ([], ["--rounds", "1", "--size", "128", "--n", "2", "--batch", "2"],
                         _parse_smoothgrad),
    "bench_train_memory_format": (["--archs", "10", "--steps", "40"], ["--quick"],
                                  _parse_train_memory_format),
}


def run_one(name: str, quick: bool, verbose: bool) -> tuple[list[Row], str | None]:
    """Run one benchmark; returns its rows and an error message (None on success)."""
    full, quick_args, parse = BENCHMARKS[name]
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / f"{name}.json"
        args = [a.replace("{json}", str(json_path)) for a in (quick_args if quick else full)]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *args],
                              capture_output=True, text=True, cwd=HERE.parent,
                              env={**os.environ, "MPLBACKEND": "Agg"})
        seconds = time.perf_counter() - t0
        if verbose or proc.returncode != 0:
            print(proc.stdout, end="")
        print(f"{name}: {'ok' if proc.returncode == 0 else 'FAILED'} in {seconds:.1f} s",
              file=sys.stderr, flush=True)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            return [], f"{name}: exit status {proc.returncode}: {tail[0]}"
        try:
            return parse(proc.stdout, json_path), None
        except (ValueError, KeyError, StopIteration, OSError) as exc:
            return [], f"{name}: could not read its results ({exc!r})"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else "-"
    return str(value).replace("|", "\\|")  # a literal | would split the markdown cell


def format_table(rows: list[Row]) -> str:
    """The combined markdown table."""
    lines = ["| benchmark | ours | peer | ours s | peer s | peer/ours | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = f"{r.ratio:.2f}x" if math.isfinite(r.ratio) else "-"
        cells = [_cell(v) for v in (r.benchmark, r.ours, r.peer, r.ours_s, r.peer_s)]
        lines.append(f"| {' | '.join(cells)} | {ratio} | {_cell(r.note)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short smoke run of every benchmark (ratios not representative)")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS), default=None,
                        help="run only this benchmark (repeatable; default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--verbose", action="store_true", help="print each benchmark's output")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    errors: list[str] = []
    for name in args.only or list(BENCHMARKS):
        got, error = run_one(name, args.quick, args.verbose)
        rows.extend(got)
        if error:
            errors.append(error)
    print(f"\nsegxai benchmarks{' (--quick smoke run)' if args.quick else ''}; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          "peer/ours > 1: segxai is faster\n")
    print(format_table(rows))
    for error in errors:
        print(f"FAILED {error}")
    if args.json is not None:
        records = [{k: v if not isinstance(v, float) or math.isfinite(v) else None
                    for k, v in {**asdict(r), "ratio": r.ratio}.items()} for r in rows]
        args.json.write_text(json.dumps(records, indent=2))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
