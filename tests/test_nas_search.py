"""Evolutionary search: toy optimum, determinism, resume after SIGKILL."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kill_after_rows import run_killed
from segxai.core.errors import SegxaiError
from segxai.nas import Budget, EvolutionSettings, evolve

TOY = textwrap.dedent('''
    import json, sys
    from segxai.nas import Budget, EvolutionSettings, evolve

    class Toy:
        genes = {"a": list(range(8)), "b": list(range(8)), "c": list(range(8))}
        def initial(self): return {"a": 0, "b": 0, "c": 0}
        def sample(self, rng): return {k: int(rng.choice(v)) for k, v in self.genes.items()}
        def mutate(self, cfg, n, rng):
            cfg = dict(cfg)
            for k in rng.choice(sorted(self.genes), size=n, replace=False):
                k = str(k)
                cfg[k] = int(rng.choice(self.genes[k]))  # Zen-NAS: may redraw the same
            return cfg
        def crossover(self, a, b, rng):
            return {k: (a[k] if rng.random() < 0.5 else b[k]) for k in sorted(a)}
        def measure(self, cfg):
            return {"params": cfg["a"] + cfg["b"] + cfg["c"], "flops": 0, "depth": 1}

    OPT = {"a": 6, "b": 2, "c": 5}

    def fitness(configs, seeds):
        return [-float(sum((c[k] - OPT[k]) ** 2 for k in OPT)) for c in configs]

    def run(out=None, seed=0, iterations=60, crossover=0.3, random_search=False):
        settings = EvolutionSettings(population=12, iterations=iterations,
                                     children_per_iteration=4, seed=seed,
                                     crossover_prob=crossover, random_search=random_search)
        res = evolve(Toy(), fitness, settings, budget=Budget(max_params=15),
                     store=out, progress=False, space_id="toy")
        d = res.to_dict()
        d.pop("seconds"); d.pop("resumed_from")
        return d

    if __name__ == "__main__":
        print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else None)))
''')


@pytest.fixture()
def toy(tmp_path: Path):
    path = tmp_path / "toy_search.py"
    path.write_text(TOY)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        import toy_search
        importlib.reload(toy_search)
        yield toy_search, path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("toy_search", None)


def test_search_finds_the_known_optimum(toy) -> None:
    mod, _ = toy
    res = mod.run(iterations=80)
    assert res["best"]["config"] == mod.OPT
    assert res["best"]["score"] == 0.0
    assert res["best"]["params"] <= 15
    # the history's best score never decreases
    best = [h["best_score"] for h in res["history"]]
    assert best == sorted(best)


def test_search_is_deterministic_and_seeded(toy) -> None:
    mod, _ = toy
    a, b = mod.run(seed=3, iterations=10), mod.run(seed=3, iterations=10)
    c = mod.run(seed=4, iterations=10)
    assert a == b
    assert a["population"] != c["population"]


def test_random_search_baseline_samples_uniformly(toy) -> None:
    mod, _ = toy
    res = mod.run(iterations=10, random_search=True)
    # 1 (F0) + up to 10 x 4 distinct children
    assert 20 <= res["candidates_scored"] <= 41
    assert len({json.dumps(m["config"], sort_keys=True) for m in res["population"]}) \
        == len(res["population"])


def test_zen_nas_mutation_schedule() -> None:
    """While the population holds <= 10 members every child is F0 with one gene changed."""
    seen = []

    class Spy:
        def initial(self):
            return {"a": 0, "b": 0}

        def sample(self, rng):
            return {"a": int(rng.integers(9)), "b": int(rng.integers(9))}

        def mutate(self, cfg, n, rng):
            seen.append((dict(cfg), n))
            out = dict(cfg)
            for k in rng.choice(["a", "b"], size=n, replace=False):
                out[str(k)] = (out[str(k)] + 1 + int(rng.integers(8))) % 9
            return out

        def crossover(self, a, b, rng):
            return a

        def measure(self, cfg):
            return {"params": 1, "flops": 1, "depth": 1}

    evolve(Spy(), lambda cs, ss: [float(c["a"] + c["b"]) for c in cs],
           EvolutionSettings(population=20, iterations=12, children_per_iteration=1, seed=0),
           progress=False)
    early = [s for s in seen[:10]]
    assert all(cfg == {"a": 0, "b": 0} and n == 1 for cfg, n in early)
    assert any(n == 2 for _, n in seen[12:])


def test_resume_after_sigkill_gives_identical_result(toy, tmp_path: Path) -> None:
    mod, script = toy
    reference = mod.run(out=tmp_path / "ref")
    out = tmp_path / "killed"
    proc = run_killed(f"""
        import sys
        sys.path.insert(0, {str(script.parent)!r})
        import toy_search
        toy_search.run(out={str(out)!r})
    """, 7, rows="iterations", timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert json.loads((out / "search_state.json").read_text())["iteration"] == 7
    assert len((out / "iterations.jsonl").read_text().splitlines()) == 7
    resumed = mod.run(out=out)  # in-process
    assert resumed["history"] == reference["history"]
    assert json.loads(json.dumps(resumed)) == json.loads(json.dumps(reference))
    assert [json.loads(line) for line in (out / "iterations.jsonl").read_text().splitlines()] \
        == json.loads(json.dumps(reference["history"]))
    # no temp files left behind
    assert sorted(p.name for p in out.iterdir()) == ["iterations.jsonl", "run.json",
                                                     "search_state.json"]


def test_resume_with_other_settings_is_refused(toy, tmp_path: Path) -> None:
    mod, _ = toy
    mod.run(out=tmp_path, iterations=3)
    with pytest.raises(SegxaiError, match=r"other settings \(differing: settings\.seed\)"):
        mod.run(out=tmp_path, iterations=3, seed=9)
    with pytest.raises(SegxaiError,
                       match=r"differing: settings\.crossover_prob, settings\.iterations\)"):
        mod.run(out=tmp_path, iterations=4, crossover=0.5)


def test_failed_scores_rank_last() -> None:
    class Line:
        def initial(self):
            return {"x": 0}

        def sample(self, rng):
            return {"x": int(rng.integers(50))}

        def mutate(self, cfg, n, rng):
            return {"x": int(rng.integers(50))}

        def crossover(self, a, b, rng):
            return a

        def measure(self, cfg):
            return {"params": cfg["x"], "flops": 0, "depth": 1}

    res = evolve(Line(), lambda cs, ss: [float("nan") if c["x"] % 2 else float(c["x"])
                                         for c in cs],
                 EvolutionSettings(population=5, iterations=6, children_per_iteration=3, seed=1),
                 budget=Budget(max_params=40), progress=False)
    assert res.best["config"]["x"] % 2 == 0
    assert np.isfinite(res.best["score"])
