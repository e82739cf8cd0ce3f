"""ovmfgen.builder.publish: the atomic swap into dist/ and recovery from a killed one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ovmfgen.builder import publish as build_publish


def _files(tag: str) -> dict[str, bytes]:
    return {"OVMF.fd": tag.encode() * 100, "ovmf.elf": tag.encode() * 50, "manifest.json": b'{"t": "%s"}' % tag.encode()}


def _read(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir()}


@pytest.mark.parametrize("exchange", [True, False])
def test_publish_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool) -> None:
    if not exchange:
        monkeypatch.setattr(build_publish, "_exchange", lambda a, b: False)  # the fsutil.replace_dir fallback
    final = tmp_path / "dist" / "xen-pvh" / "DEBUG"
    build_publish.publish(_files("old"), final)
    assert _read(final) == _files("old")
    build_publish.publish(_files("new"), final)
    assert _read(final) == _files("new")
    assert sorted(p.name for p in final.parent.iterdir()) == ["DEBUG"]


def test_failure_mid_publish_leaves_the_old_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "dist" / "xen-pvh" / "DEBUG"
    build_publish.publish(_files("old"), final)
    before = _read(final)

    real_fsync = os.fsync
    calls = {"n": 0}

    def failing_fsync(fd: int) -> None:  # dies after the first file is staged
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(build_publish.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        build_publish.publish(_files("new"), final)
    assert _read(final) == before
    assert sorted(p.name for p in final.parent.iterdir()) == ["DEBUG"]  # no staging left behind

    # The swap itself failing also leaves the old artifacts.
    monkeypatch.setattr(build_publish.os, "fsync", real_fsync)

    def failing_exchange(a: Path, b: Path) -> bool:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(build_publish, "_exchange", failing_exchange)
    with pytest.raises(OSError):
        build_publish.publish(_files("new"), final)
    assert _read(final) == before


def test_recover_after_a_killed_publish(tmp_path: Path) -> None:
    final = tmp_path / "dist" / "xen-pvh" / "DEBUG"
    final.parent.mkdir(parents=True)
    # Killed between replace_dir's two renames: only the old copy exists, plus a half-written staging dir.
    old = final.parent / ".DEBUG.old"
    old.mkdir()
    (old / "OVMF.fd").write_bytes(b"good")
    staging = final.parent / ".DEBUG.staging-999999"
    staging.mkdir()
    (staging / "OVMF.fd").write_bytes(b"half")
    build_publish.recover_dist(final)
    assert (final / "OVMF.fd").read_bytes() == b"good"
    assert sorted(p.name for p in final.parent.iterdir()) == ["DEBUG"]
