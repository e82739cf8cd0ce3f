"""ovmfgen.stamp: a stamp answers only while every raw input is as it was when the full path wrote it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ovmfgen import paths, stamp
from ovmfgen.paths import Layout


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    (tmp_path / "platforms" / "common").mkdir(parents=True)
    (tmp_path / "platforms" / "p.yaml").write_text("name: p\n")
    (tmp_path / "platforms" / "common" / "frag.yaml").write_text("x: 1\n")
    (tmp_path / "overrides" / "p").mkdir(parents=True)
    (tmp_path / "overrides" / "p" / "fix.patch").write_text("--- a/x\n")
    return Layout(tmp_path / "platforms", tmp_path / "overrides", tmp_path / "build", tmp_path / "dist")


def _write(layout: Layout, key: dict | None = None) -> None:
    key = key if key is not None else {"target": "DEBUG"}
    stamp.write_stamp(layout, "build", "p", key, {"dist": "d"}, stamp.raw_digest(layout, "p", key))


def test_a_stamp_answers_while_nothing_changed(layout: Layout) -> None:
    _write(layout)
    assert stamp.read_stamp(layout, "build", "p", {"target": "DEBUG"}) == {"dist": "d"}
    assert stamp.read_stamp(layout, "build", "p", {"target": "RELEASE"}) is None   # another request
    assert stamp.read_stamp(layout, "render", "p", {"target": "DEBUG"}) is None    # another kind


@pytest.mark.parametrize("edit", ["platforms/p.yaml", "platforms/common/frag.yaml", "overrides/p/fix.patch",
                                  "overrides/p/new.c"])
def test_any_edited_input_misses(layout: Layout, edit: str) -> None:
    _write(layout)
    path = layout.platforms_dir.parent / edit
    path.write_text(path.read_text() + "# edited\n" if path.exists() else "new\n")
    assert stamp.read_stamp(layout, "build", "p", {"target": "DEBUG"}) is None


def test_another_tool_or_tree_misses(layout: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(layout)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    nasm = bin_dir / "nasm"
    nasm.write_text("#!/bin/sh\n")
    nasm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert stamp.read_stamp(layout, "build", "p", {"target": "DEBUG"}) is None
    _write(layout)
    ident = paths.cache_dir() / "edk2" / "edk2-stable202502" / "identity.json"
    ident.parent.mkdir(parents=True)
    ident.write_text("{}\n")
    assert stamp.read_stamp(layout, "build", "p", {"target": "DEBUG"}) is None


def test_the_code_is_an_input(layout: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = tmp_path / "code"
    shutil.copytree(stamp.PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(stamp, "PACKAGE_DIR", code)
    _write(layout)
    (code / "elf.py").write_text((code / "elf.py").read_text() + "\n# edited\n")
    assert stamp.read_stamp(layout, "build", "p", {"target": "DEBUG"}) is None


def test_no_fast_path_for_a_platform_file_or_a_checkout(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    assert stamp.raw_digest(layout, "platforms/p.yaml", {}) is None
    assert stamp.raw_digest(layout, "p", {}) is not None
    monkeypatch.setenv("OVMFGEN_EDK2", "/some/checkout")
    assert stamp.raw_digest(layout, "p", {}) is None


def test_a_stamp_written_before_an_edit_never_answers(layout: Layout) -> None:
    """The full path takes the digest before it reads anything: an edit during the build makes it miss."""
    key = {"target": "DEBUG"}
    digest = stamp.raw_digest(layout, "p", key)
    (layout.platforms_dir / "p.yaml").write_text("name: p\n# edited while building\n")
    stamp.write_stamp(layout, "build", "p", key, {"dist": "d"}, digest)
    assert stamp.read_stamp(layout, "build", "p", key) is None
