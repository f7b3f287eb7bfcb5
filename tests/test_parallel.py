"""Dataset-scale ``segxai evaluate`` / ``segxai explain --images`` on local processes and Ray:
identical results to one process, resume after a kill, and clear messages for bad input."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kill_after_rows import ROOT, run_killed
from segxai.cli import main
from segxai.core.errors import SegxaiError
from segxai.core.executor import InProcessExecutor, ProcessExecutor, chunks, make_executor
from segxai.models import save_checkpoint
from segxai.models.unet import UNet, UNetConfig

METHODS = ["--method", "gradient", "--method", "occlusion", "--param",
           "occlusion.window=16", "--param", "occlusion.stride=16"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, base_width=4, num_classes=3))
    with torch.no_grad():  # a foreground class predicted somewhere in most images
        model.head.bias.copy_(torch.tensor([0.0, 0.05, 0.05]))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "unet")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for k in range(3):
        arr = (rng.random((32, 32, 3)) * 255).astype("uint8")
        arr[8:20, 6 + 3 * k:18 + 3 * k, 0] = 255
        Image.fromarray(arr).save(d / f"img{k}.png")
    return d


def _csv_without_seconds(path: Path) -> list[str]:
    """results.csv lines, byte for byte, except the wall-clock ``seconds`` measurements."""
    lines = path.read_text().splitlines()
    return [line for line in lines if ",seconds," not in line]


def _evaluate(ckpt: Path, out: Path, *extra: str) -> int:
    return main(["evaluate", "--quick", "--quiet", "--model", str(ckpt), "--images", "3",
                 "--steps", "6", *METHODS, "--out", str(out), *extra])


def test_chunks_cover_every_index_once() -> None:
    idx = list(range(11))
    for workers in (1, 2, 5):
        parts = chunks(idx, workers)
        assert [i for c in parts for i in c] == idx
        assert len(parts) >= min(len(idx), workers)  # every worker has work
    assert chunks([], 2) == []


def test_process_pool_is_kept_while_the_shared_data_stays_the_same() -> None:
    # a checkpointed loop maps one task chunk by chunk: its processes start once
    with ProcessExecutor(2, threads=1) as ex:
        assert ex.map(pow, 2, [1, 2, 3]) == [2, 4, 8]
        first = ex._pool
        assert ex.map(pow, 2, [4, 5, 6, 7, 8]) == [16, 32, 64, 128, 256]
        assert ex._pool is first and ex.pools_started == 1
        # other shared data: a new pool, whose workers see the new data
        assert ex.map(pow, 3, [2, 3]) == [9, 27]
        assert ex.pools_started == 2
        # a caller that stops early leaves no queued work behind: the pool is dropped
        for _ in ex.imap(pow, 3, range(20)):
            break
        assert ex._pool is None
        assert ex.map(pow, 3, [4]) == [81] and ex.pools_started == 3
    assert ex._pool is None


def test_executors_map_in_item_order() -> None:
    items = list(range(7))
    assert InProcessExecutor().map(pow, 2, items) == [pow(2, i) for i in items]
    assert list(InProcessExecutor().imap(pow, 3, items))[2] == (2, 9)
    # --workers 1 runs in this process with one torch thread, restored after
    torch.set_num_threads(2)
    try:
        executor = make_executor(workers=1)
        assert isinstance(executor, InProcessExecutor)
        with executor.pinned():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_evaluate_two_workers_equal_one(ckpt: Path, tmp_path: Path) -> None:
    assert _evaluate(ckpt, tmp_path / "one", "--workers", "1") == 0
    assert _evaluate(ckpt, tmp_path / "two", "--workers", "2") == 0
    one = _csv_without_seconds(tmp_path / "one" / "results.csv")
    assert len(one) > 40 and {"gradient", "occlusion"} <= {r.split(",")[1] for r in one[1:]}
    assert _csv_without_seconds(tmp_path / "two" / "results.csv") == one
    # the two-worker run resumes (nothing left) and rewrites the same table
    assert _evaluate(ckpt, tmp_path / "two", "--workers", "2") == 0
    assert _csv_without_seconds(tmp_path / "two" / "results.csv") == one


def _explain(ckpt: Path, images: list[str], out: Path, *extra: str) -> int:
    return main(["explain", "--quiet", "--model", str(ckpt), "--images", *images, *METHODS,
                 "--out", str(out), *extra])


def _maps(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes()
            for p in sorted(out.rglob("*")) if p.suffix in (".npy", ".png")}


def _index(out: Path) -> list[dict[str, str]]:
    with (out / "results.csv").open() as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_explain_images_two_workers_equal_one(ckpt: Path, folder: Path, tmp_path: Path) -> None:
    assert _explain(ckpt, [str(folder)], tmp_path / "one", "--workers", "1") == 0
    assert _explain(ckpt, [str(folder)], tmp_path / "two", "--workers", "2") == 0
    one, two = _maps(tmp_path / "one"), _maps(tmp_path / "two")
    assert len(one) == 3 * 2 * 2 and "img0/occlusion.npy" in one
    for name in one:
        if name.endswith(".npy"):
            a = np.load(tmp_path / "one" / name)
            assert a.shape == (32, 32) and np.isfinite(a).all() and a.std() > 0
            np.testing.assert_array_equal(a, np.load(tmp_path / "two" / name))
    assert one == two  # the .npy maps and the overlays, byte for byte
    rows = _index(tmp_path / "one")
    assert [(r["image"], r["method"]) for r in rows] == [
        (f"img{k}", m) for k in range(3) for m in ("gradient", "occlusion")]
    assert rows == _index(tmp_path / "two")


def test_explain_images_resumes_after_sigkill(ckpt: Path, folder: Path, tmp_path: Path) -> None:
    glob = str(folder / "img*.png")
    assert _explain(ckpt, [glob], tmp_path / "full") == 0
    args = ["explain", "--quiet", "--model", str(ckpt), "--images", glob, *METHODS,
            "--out", str(tmp_path / "part")]
    killed = run_killed(f"""
        import sys
        from segxai.cli import main
        sys.exit(main({args!r}))
    """, 2, rows="results")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len((tmp_path / "part" / "results.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "part" / "results.csv").exists()
    assert _explain(ckpt, [glob], tmp_path / "part") == 0
    assert len((tmp_path / "part" / "results.jsonl").read_text().splitlines()) == 6
    assert _maps(tmp_path / "part") == _maps(tmp_path / "full")
    assert _index(tmp_path / "part") == _index(tmp_path / "full")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_inputs_name_the_option(ckpt: Path, folder: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    for run in (lambda: _evaluate(ckpt, tmp_path / "e", "--workers", "0"),
                lambda: _explain(ckpt, [str(folder)], tmp_path / "x", "--workers", "0")):
        with pytest.raises(SystemExit) as info:  # argparse refuses it before any work
            run()
        assert info.value.code == 2
        assert "--workers: expected an integer >= 1, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "e").exists() and not (tmp_path / "x").exists()

    port = _free_port()  # nothing listens there
    start = time.monotonic()
    assert _evaluate(ckpt, tmp_path / "e", "--ray", f"127.0.0.1:{port}") == 2
    err = capsys.readouterr().err
    assert time.monotonic() - start < 30
    assert f"--ray: expected a running Ray cluster at 127.0.0.1:{port}" in err
    with pytest.raises(SegxaiError, match="--workers: expected no value with --ray"):
        make_executor(workers=2, ray="auto")

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    assert _explain(ckpt, [str(empty)], tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "--images: expected image files (.png, .jpg, .jpeg" in err and str(empty) in err

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (32, 32)).save(mixed / "a.png")
    Image.new("RGB", (40, 24)).save(mixed / "b.png")
    assert _explain(ckpt, [str(mixed)], tmp_path / "x") == 2
    err = capsys.readouterr().err
    assert "a.png (32x32)" in err and "b.png (40x24)" in err and "--size" in err
    assert not (tmp_path / "x" / "results.csv").exists()


@pytest.mark.slow
def test_ray_cluster_equals_one_process(ckpt: Path, folder: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    # a private test cluster: no token authentication (Ray's default depends on ~/.ray)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent))
    if ray_bin is None:
        pytest.skip("the ray command is not installed")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p),
        "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    temp = Path("/tmp") / f"ray-{port}"  # short: Ray's socket paths must stay < 108 bytes
    start = subprocess.run([ray_bin, "start", "--head", "--port", str(port), "--num-cpus", "2",
                            "--include-dashboard=false", "--temp-dir", str(temp),
                            "--disable-usage-stats"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, start.stderr
    try:
        address = f"127.0.0.1:{port}"
        assert _evaluate(ckpt, tmp_path / "ray", "--ray", address) == 0
        assert _evaluate(ckpt, tmp_path / "one", "--workers", "1") == 0
        assert _csv_without_seconds(tmp_path / "ray" / "results.csv") == \
            _csv_without_seconds(tmp_path / "one" / "results.csv")
        assert _explain(ckpt, [str(folder)], tmp_path / "xray", "--ray", address) == 0
        assert _explain(ckpt, [str(folder)], tmp_path / "xone", "--workers", "1") == 0
        assert _maps(tmp_path / "xray") == _maps(tmp_path / "xone")
    finally:
        _stop_ray(str(temp))
        shutil.rmtree(temp, ignore_errors=True)


def _stop_ray(marker: str) -> None:
    """Stop the Ray processes this test started, by their ids: those whose command line or
    open files name the test's own temp dir (``ray stop`` would stop every Ray on the
    machine, and others share it)."""
    def ours() -> list[int]:
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:  # Ray's agents rename themselves, but keep files open in the temp dir
                seen = [(entry / "cmdline").read_bytes().decode(errors="replace")]
                seen += [os.readlink(fd) for fd in (entry / "fd").iterdir()]
            except OSError:
                continue
            if any(marker in text for text in seen):
                pids.append(int(entry.name))
        return pids

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in ours():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + 10
        while ours() and time.monotonic() < deadline:
            time.sleep(0.2)
