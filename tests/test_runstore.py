"""The run store: atomic files, append-only rows, settings fingerprint, kill hook."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segxai.core.errors import SegxaiError
from segxai.core.runstore import (
    RunStore,
    atomic_write_json,
    fingerprint,
    publish_directory,
    read_rows,
    settings_diff,
)


def test_rows_survive_reopen_and_torn_line(tmp_path):
    store = RunStore(tmp_path, kind="t", settings={"a": 1})
    store.append_row("rows", {"i": 0, "v": np.float32(1.5)})
    store.append_row("rows", {"i": 1, "v": float("nan")})
    with open(tmp_path / "rows.jsonl", "a") as fh:  # a kill in the middle of a write
        fh.write('{"i": 2, "v"')
    again = RunStore(tmp_path, kind="t", settings={"a": 1})
    assert again.resumed
    assert again.rows("rows") == [{"i": 0, "v": 1.5}, {"i": 1, "v": None}]


def test_other_settings_name_the_differing_keys(tmp_path):
    RunStore(tmp_path, kind="t", settings={"a": 1, "b": {"c": 2, "d": 3}, "e": 5})
    with pytest.raises(SegxaiError, match=r"differing: a, b\.c") as info:
        RunStore(tmp_path, kind="t", settings={"a": 2, "b": {"c": 9, "d": 3}, "e": 5})
    assert "out:" in str(info.value)


def test_mutable_keys_may_change_and_are_recorded(tmp_path):
    RunStore(tmp_path, kind="t", settings={"a": 1, "methods": ["x"]})
    s = RunStore(tmp_path, kind="t", settings={"a": 1, "methods": ["x", "y"]},
                 mutable=["methods"])
    assert json.loads((tmp_path / "run.json").read_text())["settings"]["methods"] == ["x", "y"]
    assert s.resumed


def test_refuses_file_other_kind_no_resume_and_garbage_record(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(SegxaiError, match="out: expected a directory"):
        RunStore(f, kind="t", settings={})
    RunStore(tmp_path / "r", kind="train", settings={})
    with pytest.raises(SegxaiError, match="'train' run, not a 'evaluate' run"):
        RunStore(tmp_path / "r", kind="evaluate", settings={})
    with pytest.raises(SegxaiError, match="already holds"):
        RunStore(tmp_path / "r", kind="train", settings={}, resume=False)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "run.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(SegxaiError, match="not a segxai run record"):
        RunStore(tmp_path / "g", kind="t", settings={})


def test_fingerprint_ignores_key_order_and_diff_is_exact():
    assert fingerprint({"a": 1, "b": (1, 2)}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert settings_diff({"a": 1, "b": 2}, {"a": 1, "c": 2}) == ["b", "c"]


def test_files_round_trip_and_leave_no_temporaries(tmp_path):
    store = RunStore(tmp_path, kind="t", settings={})
    store.write_json("s.json", {"x": np.int64(3), "y": float("inf")})
    assert store.read_json("s.json") == {"x": 3, "y": None}
    assert store.read_json("missing.json", default=7) == 7
    store.write_csv("r.csv", [{"a": 1, "b": 2}, {"a": 3, "c": 4}])
    assert (tmp_path / "r.csv").read_text() == "a,b,c\n1,2,\n3,,4\n"
    store.write_npz("m.npz", x=np.arange(4))
    np.testing.assert_array_equal(store.read_npz("m.npz")["x"], np.arange(4))
    store.write_tensors("w.safetensors", {"w": torch.ones(2, 2)})
    assert torch.equal(store.read_tensors("w.safetensors")["w"], torch.ones(2, 2))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(TypeError):  # not serialisable: the old file stays
        atomic_write_json(target, {"v": object()})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_on_row_hook_simulates_a_kill(tmp_path, monkeypatch):
    class Killed(Exception):
        pass

    def hook(store, name, row):
        if row["i"] == 1:
            raise Killed

    monkeypatch.setattr(RunStore, "on_row", staticmethod(hook))
    store = RunStore(tmp_path, kind="t", settings={})
    with pytest.raises(Killed):
        for i in range(3):
            store.append_row("rows", {"i": i})
    assert [r["i"] for r in read_rows(tmp_path / "rows.jsonl")] == [0, 1]


def test_publish_directory_keeps_the_first_finished(tmp_path):
    work, final = tmp_path / "entry.partial", tmp_path / "entry"
    work.mkdir()
    (work / "model.txt").write_text("mine")
    assert publish_directory(work, final)
    assert (final / "model.txt").read_text() == "mine" and not work.exists()
    late = tmp_path / "late.partial"  # another process finishing second
    late.mkdir()
    (late / "model.txt").write_text("theirs")
    assert not publish_directory(late, final)
    assert (final / "model.txt").read_text() == "mine" and not late.exists()
