"""Run Python code in a subprocess that SIGKILLs itself after ``k`` appended run-store rows.

The hook is installed through :attr:`segxai.core.runstore.RunStore.on_row` (library code
reads no environment variables for this), so a test can cut a long command at a chosen
row, resume it in-process and compare with an uninterrupted run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PRELUDE = textwrap.dedent('''
    import os, signal
    from segxai.core.runstore import RunStore

    _seen = []

    def _kill_after(store, name, row):
        if {rows!r} is None or name == {rows!r}:
            _seen.append(row)
            if len(_seen) >= {k}:
                os.kill(os.getpid(), signal.SIGKILL)

    RunStore.on_row = _kill_after
''')


def run_killed(code: str, k: int | None, rows: str | None = None, *,
               timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; with ``k`` set it is SIGKILLed right after its
    ``k``-th row (of the rows file ``rows``, or of any file when ``None``) was appended."""
    prelude = _PRELUDE.format(k=k, rows=rows) if k is not None else ""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
