"""Atomic, pickle-free outputs."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from kmx_eval import io
from kmx_eval.errors import KmxError


def test_json_is_byte_stable_and_nan_is_null(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    io.write_json(a, {"b": 1.5, "a": [np.float32(2.0), float("nan")], "c": np.int64(3)})
    io.write_json(b, {"c": 3, "a": [2.0, None], "b": 1.5})
    assert a.read_bytes() == b.read_bytes()
    assert io.read_json(a)["a"] == [2.0, None]


def test_failed_write_leaves_previous_output(tmp_path):
    target = tmp_path / "out.json"
    io.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert io.read_json(target) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_folder_outputs_are_replaced_whole(tmp_path):
    folder = tmp_path / "heads"
    for value in (1, 2):
        with io.atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "a.txt").write_text(str(value))
    assert (folder / "a.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heads"]


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    stale = tmp_path / ".out.json.abc123.tmp"
    stale.mkdir()
    (stale / "out.json").write_text("half")
    io.write_json(tmp_path / "out.json", {"v": 1})
    assert not stale.exists()


def test_disk_full_is_one_clear_error_and_no_partial_file(tmp_path, monkeypatch):
    def full(target, data):
        with open(target, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io, "_fsync_write", full)
    with pytest.raises(KmxError, match="no space left on device"):
        io.write_json(tmp_path / "m.json", {"v": list(range(100))})
    assert list(tmp_path.iterdir()) == []


def test_npz_round_trip_refuses_object_arrays(tmp_path):
    io.save_npz(tmp_path / "a.npz", {"x": np.arange(6, dtype=np.float32).reshape(2, 3)})
    assert io.load_npz(tmp_path / "a.npz")["x"].shape == (2, 3)
    with pytest.raises(TypeError, match="pickle"):
        io.save_npz(tmp_path / "b.npz", {"x": np.array([{"a": 1}], dtype=object)})


def test_outputs_outside_the_output_folders_are_refused(tmp_path):
    assert io.check_output_path("metrics/x.json", root=tmp_path) == (tmp_path / "metrics/x.json").resolve()
    for bad in ("kmx_eval/evil.py", "../elsewhere/x", "/etc/passwd", "metrics/../stages/x.py"):
        with pytest.raises(KmxError, match="refusing to write"):
            io.check_output_path(bad, root=tmp_path)


def test_stage_guard_refuses_writes_outside_the_output_folders(tmp_path):
    with io.guard_outputs(tmp_path):
        io.write_json(tmp_path / "metrics" / "ok.json", {"v": 1})
        with pytest.raises(KmxError, match="refusing to write"):
            io.write_json(tmp_path / "stages" / "evil.json", {"v": 1})
    assert not (tmp_path / "stages").exists()
    io.write_json(tmp_path / "anywhere.json", {"v": 1})  # library use outside a stage is free


def test_outputs_replaced_together_or_not_at_all(tmp_path, monkeypatch):
    folder = tmp_path / "reports"
    for version in ("old", "new"):
        with io.replace_together(folder, ["tables", "index.html"]) as staging:
            (staging / "tables").mkdir()
            io.write_text(staging / "tables" / "a.csv", version)
            io.write_text(staging / "index.html", version)
    assert (folder / "tables" / "a.csv").read_text() == "new" and (folder / "index.html").read_text() == "new"
    # A failure while writing: nothing changes, no staging folder is left.
    with pytest.raises(RuntimeError):
        with io.replace_together(folder, ["tables", "index.html"]) as staging:
            io.write_text(staging / "index.html", "newer")
            raise RuntimeError("disk full")
    # A name that was not written: refused, nothing changes.
    with pytest.raises(RuntimeError, match="tables"):
        with io.replace_together(folder, ["tables", "index.html"]) as staging:
            io.write_text(staging / "index.html", "newer")
    # A failure during the swap itself: what was moved is put back.
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == "index.html" and Path(src).parent.name.startswith(".replace."):
            raise OSError(5, "I/O error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        with io.replace_together(folder, ["tables", "summary.md", "index.html"]) as staging:
            (staging / "tables").mkdir()
            io.write_text(staging / "tables" / "a.csv", "newer")
            io.write_text(staging / "summary.md", "newer")
            io.write_text(staging / "index.html", "newer")
    assert (folder / "tables" / "a.csv").read_text() == "new" and (folder / "index.html").read_text() == "new"
    assert sorted(p.name for p in folder.iterdir()) == ["index.html", "tables"]
