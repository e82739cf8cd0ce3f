"""ovmfgen.edk2.conventions: one FD-size vocabulary, targets, the tree's tool chain tag, the build environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ovmfgen.edk2 import conventions as c
from ovmfgen.edk2.tree import KNOWN_TAGS
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import cache_dir


@pytest.mark.parametrize("text", ["4M", "4m", "4", 4, "4MB", "4MiB", " 4M ", "FD_SIZE_4MB"])
def test_every_fd_size_spelling_reads_as_mib(text: object) -> None:
    assert c.parse_fd_size(text) == 4  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["3M", "0", "4096", "4G", "FD_SIZE_3MB", "big"])
def test_bad_fd_size_is_one_line(text: str) -> None:
    with pytest.raises(OvmfgenError, match=rf"^error: bad FD size '{text}': expected one of 1M, 2M, 4M$"):
        c.parse_fd_size(text)


def test_fd_size_spellings_derive_from_mib() -> None:
    assert c.parse_fd_size(None) is None and c.parse_fd_size("") is None
    assert [c.fd_size_label(m) for m in c.FD_SIZES_MIB] == ["1M", "2M", "4M"]
    assert [c.fd_size_define(m) for m in c.FD_SIZES_MIB] == ["FD_SIZE_1MB", "FD_SIZE_2MB", "FD_SIZE_4MB"]
    assert c.FD_SIZES_KB == (1024, 2048, 4096)
    assert c.fd_size_bytes(2) == 2 * 1024 * 1024
    for m in c.FD_SIZES_MIB:  # each spelling reads back as the same size
        assert c.parse_fd_size(c.fd_size_label(m)) == c.parse_fd_size(c.fd_size_define(m)) == m
        assert c.FD_SIZE_DEFINE.match(c.fd_size_define(m))


def test_targets() -> None:
    assert c.parse_target("release") == "RELEASE"
    with pytest.raises(OvmfgenError, match="^error: bad target 'FAST': expected one of DEBUG, RELEASE, NOOPT$"):
        c.parse_target("FAST")


def _tree(root: Path, tools_def: str) -> Path:
    (root / c.TOOLS_DEF).parent.mkdir(parents=True)
    (root / c.TOOLS_DEF).write_text(tools_def)
    return root


def test_toolchain_tag_reads_the_tree(tmp_path: Path) -> None:
    both = _tree(tmp_path / "both", "*_GCC_*_*_FAMILY = GCC\n*_GCC5_*_*_FAMILY = GCC\n")
    gcc_only = _tree(tmp_path / "gcc", "# *_GCC5_*_*_FAMILY = GCC (a comment)\n*_GCC_*_*_FAMILY  = GCC\n")
    gcc5_only = _tree(tmp_path / "gcc5", "*_GCC5_*_*_FAMILY = GCC\n")
    assert c.toolchain_tag(both) == "GCC"
    assert c.toolchain_tag(gcc_only) == "GCC"
    assert c.toolchain_tag(gcc5_only) == "GCC5"
    with pytest.raises(OvmfgenError, match="not an edk2 tree"):
        c.toolchain_tag(tmp_path / "nothing")
    with pytest.raises(OvmfgenError, match="defines none of the tool chain tags GCC, GCC5"):
        c.toolchain_tag(_tree(tmp_path / "clang", "*_CLANGDWARF_*_*_FAMILY = GCC\n"))


@pytest.mark.parametrize("tag", sorted(KNOWN_TAGS))
def test_toolchain_tag_of_the_known_releases(tag: str, real_cache: None) -> None:
    """Both releases define GCC (202502 beside GCC5, 202605 alone): both build with GCC."""
    root = cache_dir() / "edk2" / tag / "tree"
    if not (root / c.TOOLS_DEF).is_file():
        pytest.skip(f"{tag} is not set up in the cache")
    assert c.toolchain_tag(root) == "GCC"


def test_build_env_is_edksetups(tmp_path: Path) -> None:
    base = {"PATH": "/usr/bin", "PACKAGES_PATH": "/elsewhere", "EDK_TOOLS_BIN": "/x", "HOME": "/h"}
    env = c.build_env(tmp_path / "ws", tmp_path / "BaseTools", tmp_path / "Conf", base=base)
    assert env["WORKSPACE"] == str(tmp_path / "ws") and env["CONF_PATH"] == str(tmp_path / "Conf")
    assert env["EDK_TOOLS_PATH"] == str(tmp_path / "BaseTools") and env["PYTHONHASHSEED"] == "1"
    assert env["PATH"] == f"{tmp_path / 'BaseTools' / 'BinWrappers' / 'PosixLike'}{os.pathsep}/usr/bin"
    assert "PACKAGES_PATH" not in env and "EDK_TOOLS_BIN" not in env and env["HOME"] == "/h"
    with_pp = c.build_env(tmp_path / "ws", tmp_path / "BaseTools", tmp_path / "Conf", [tmp_path / "edk2"], base)
    assert with_pp["PACKAGES_PATH"] == str(tmp_path / "edk2")
