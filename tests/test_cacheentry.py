"""ovmfgen.cacheentry: an entry is absent or complete; killed runs' leftovers go; a stale stamp remakes it;
a second caller waits on the lock and finds the entry the first one made."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import ovmfgen
from ovmfgen import cacheentry
from ovmfgen.fsutil import exclusive

ROOT = Path(ovmfgen.__file__).resolve().parent.parent


def _child(code: str) -> subprocess.Popen:
    """A Python child running ``code`` with this checkout's ovmfgen."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def _writer(content: str, calls: list[str] | None = None):
    def make(stage: Path) -> dict:
        if calls is not None:
            calls.append(content)
        (stage / "data").write_text(content)
        return {"sha": content.upper()}
    return make


def test_an_entry_is_made_once_with_its_stamp(tmp_path: Path) -> None:
    final = tmp_path / "c" / "thing-1"
    calls: list[str] = []
    got = cacheentry.ensure(final, _writer("one", calls), stamp={"version": 1}, lock=tmp_path / "c" / ".lock")
    assert got == final and (final / "data").read_text() == "one"
    # the caller's stamp plus what make returned, sorted JSON
    assert json.loads((final / "stamp.json").read_text()) == {"version": 1, "sha": "ONE"}
    assert (final / "stamp.json").read_text() == '{\n  "sha": "ONE",\n  "version": 1\n}\n'
    assert oct(final.stat().st_mode & 0o777) == oct(0o755)
    # current: make is not called again
    cacheentry.ensure(final, _writer("two", calls), stamp={"version": 1}, lock=tmp_path / "c" / ".lock")
    assert calls == ["one"] and (final / "data").read_text() == "one"
    assert sorted(p.name for p in final.parent.iterdir()) == [".lock", "thing-1"]


def test_a_stamp_mismatch_makes_the_entry_again(tmp_path: Path) -> None:
    final = tmp_path / "thing"
    lock = tmp_path / ".lock"
    calls: list[str] = []
    cacheentry.ensure(final, _writer("old", calls), stamp={"version": 1}, lock=lock)
    cacheentry.ensure(final, _writer("new", calls), stamp={"version": 2}, lock=lock)
    assert calls == ["old", "new"] and (final / "data").read_text() == "new"
    assert cacheentry.read_stamp(final) == {"version": 2, "sha": "NEW"}
    # a key the stamp lacks is a mismatch too
    cacheentry.ensure(final, _writer("more", calls), stamp={"version": 2, "recipe": 3}, lock=lock)
    assert calls[-1] == "more"
    # an unreadable stamp, or none, is no entry
    (final / "stamp.json").write_text("{not json")
    cacheentry.ensure(final, _writer("fixed", calls), stamp={"version": 2, "recipe": 3}, lock=lock)
    (final / "stamp.json").unlink()
    cacheentry.ensure(final, _writer("again", calls), stamp={"version": 2, "recipe": 3}, lock=lock)
    assert calls[-2:] == ["fixed", "again"]
    # `complete` can refuse an entry whose stamp matches (a file added to the recipe since)
    cacheentry.ensure(final, _writer("complete", calls), stamp={"version": 2, "recipe": 3}, lock=lock,
                      complete=lambda d: (d / "extra").is_file())
    assert calls[-1] == "complete"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".lock"]


def test_a_failing_make_keeps_the_previous_entry_and_leaves_no_stage(tmp_path: Path) -> None:
    final = tmp_path / "thing"
    cacheentry.ensure(final, _writer("good"), stamp={"v": 1}, lock=tmp_path / ".lock")

    def broken(stage: Path) -> None:
        (stage / "data").write_text("half")
        raise RuntimeError("download failed")

    with pytest.raises(RuntimeError, match="download failed"):
        cacheentry.ensure(final, broken, stamp={"v": 2}, lock=tmp_path / ".lock")
    assert (final / "data").read_text() == "good" and cacheentry.read_stamp(final) == {"v": 1, "sha": "GOOD"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "thing"]


def test_older_siblings_go_once_a_new_entry_is_in(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    cacheentry.ensure(tmp_path / "dom0-aaa", _writer("a"), stamp={}, lock=lock, siblings="dom0-*")
    (tmp_path / "kernel-x").mkdir()
    cacheentry.ensure(tmp_path / "dom0-bbb", _writer("b"), stamp={}, lock=lock, siblings="dom0-*")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "dom0-bbb", "kernel-x"]


def test_what_a_killed_run_left_is_removed_and_the_entry_made(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    final = cache / "thing-1"
    # A run killed inside make: its stage stays behind, half written, and there is no entry.
    child = _child(f"""
        import os, signal
        from pathlib import Path
        from ovmfgen import cacheentry
        def make(stage):
            (stage / "data").write_text("half")
            Path({str(tmp_path / "started")!r}).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        cacheentry.ensure(Path({str(final)!r}), make, stamp={{"v": 1}}, lock=Path({str(cache / ".lock")!r}))
    """)
    _wait_for(tmp_path / "started", child)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    left = [p.name for p in cache.iterdir() if p.name != ".lock"]
    assert len(left) == 1 and left[0].startswith(".thing-1.tmp-") and not final.exists(), left
    assert not cacheentry.is_current(final, {"v": 1})
    # Also what older runs left: replace_dir's aside copy, an atomic write's temp file, an old-style stage.
    (cache / ".thing-0.old").mkdir()
    (cache / ".stamp.json.abc123.tmp").write_text("x")
    (cache / ".hypervisor.k3j_x.tmp").mkdir()
    (cache / "other-entry").mkdir()     # entries and the lock stay
    cacheentry.ensure(final, _writer("whole"), stamp={"v": 1}, lock=cache / ".lock")
    assert (final / "data").read_text() == "whole"
    assert sorted(p.name for p in cache.iterdir()) == [".lock", "other-entry", "thing-1"]


def test_a_second_caller_waits_on_the_lock_then_finds_the_entry(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    final = tmp_path / "thing"
    lock = tmp_path / ".lock"
    started, go = tmp_path / "started", tmp_path / "go"
    # The first caller (another process) is inside make until the test says go.
    child = _child(f"""
        import time
        from pathlib import Path
        from ovmfgen import cacheentry
        def make(stage):
            Path({str(started)!r}).touch()
            while not Path({str(go)!r}).exists():
                time.sleep(0.02)
            (stage / "data").write_text("first")
        cacheentry.ensure(Path({str(final)!r}), make, stamp={{"v": 1}}, lock=Path({str(lock)!r}),
                          what="another run is making the thing")
    """)
    _wait_for(started, child)
    calls: list[str] = []
    result: list[Path] = []
    second = threading.Thread(target=lambda: result.append(
        cacheentry.ensure(final, _writer("second", calls), stamp={"v": 1}, lock=lock, what="another run is making the thing")))
    second.start()
    deadline, err = time.monotonic() + 30, ""
    while "waiting for lock" not in err:
        assert time.monotonic() < deadline, "the second caller never said it waits"
        time.sleep(0.02)
        err += capfd.readouterr().err
    assert "another run is making the thing" in err
    assert second.is_alive() and not calls   # blocked on the lock, made nothing
    go.touch()
    second.join(timeout=60)
    assert not second.is_alive()
    assert child.wait(timeout=60) == 0, child.communicate()
    assert result == [final] and calls == []  # found the first caller's entry
    assert (final / "data").read_text() == "first"


def test_a_caller_holding_the_lock_passes_it(tmp_path: Path) -> None:
    # The Xen cache holds its lock across several entries: ensure must not take it a second time.
    (tmp_path / ".thing.tmp-dead").mkdir()
    with exclusive(tmp_path / ".lock", "test") as held:
        cacheentry.ensure(tmp_path / "thing", _writer("x"), stamp={}, lock=held)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "thing"]


def test_staged_publishes_a_subdirectory_or_nothing(tmp_path: Path) -> None:
    final = tmp_path / "tree"
    with cacheentry.staged(final, content="top") as stage:
        (stage / "top").mkdir()
        (stage / "top" / "f").write_text("1")
        (stage / "other").write_text("dropped")
    assert sorted(p.name for p in final.iterdir()) == ["f"]
    with pytest.raises(ValueError):
        with cacheentry.staged(final) as stage:
            (stage / "g").write_text("2")
            raise ValueError
    assert sorted(p.name for p in final.iterdir()) == ["f"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]
