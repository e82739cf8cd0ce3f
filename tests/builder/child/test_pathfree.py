"""Path-free builds (ovmfgen/builder/child/pathfree.py): the wrappers run for real, with stand-in tools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ovmfgen.builder.child import pathfree
from ovmfgen.run import run

ECHO_TOOL = "#!/bin/sh\necho \"cwd=$PWD\"\nfor a in \"$@\"; do echo \"arg=$a\"; done\n"


def _tool(path: Path, text: str = ECHO_TOOL) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pathfree.write_executable(str(path), text)
    return str(path)


def _lines(argv: list[str], cwd: Path) -> list[str]:
    proc = run(argv, cwd=cwd, check=True)
    return proc.stdout.splitlines()


def test_prefix_maps_cover_each_root_as_given_and_resolved_deepest_last(tmp_path: Path):
    real = tmp_path / "real-tree"
    real.mkdir()
    link = tmp_path / "t"
    link.symlink_to(real)
    ws = tmp_path / "ws"
    nested = ws / "edk2"
    flags = pathfree.prefix_map_flags([str(ws), str(link) + "/", str(nested)])
    assert f"-ffile-prefix-map={link}/=" in flags and f"-ffile-prefix-map={real}/=" in flags
    # GCC tries the last matching map first: the nested root must come after the workspace.
    assert flags.index(f"-ffile-prefix-map={nested}/=") > flags.index(f"-ffile-prefix-map={ws}/=")
    assert len(flags) == len(set(flags)) == 4
    assert pathfree.prefix_map_flags(["/"]) == []


def test_gcc_wrapper_puts_the_maps_before_the_callers_arguments(tmp_path: Path):
    nxt = _tool(tmp_path / "next" / "gcc")
    wrapper = _tool(tmp_path / "bin" / "gcc", pathfree.gcc_wrapper(nxt, ["-ffile-prefix-map=/w s/=", "-O1"]))
    out = _lines([wrapper, "-c", "a b.c", "-o", "x.o"], tmp_path)
    assert out[1:] == ["arg=-ffile-prefix-map=/w s/=", "arg=-O1", "arg=-c", "arg=a b.c", "arg=-o", "arg=x.o"]


def test_genfw_wrapper_runs_in_the_workspace_with_relative_names(tmp_path: Path):
    ws = tmp_path / "work space"
    mod = ws / "Build" / "X64" / "Pkg" / "Mod" / "DEBUG"
    mod.mkdir(parents=True)
    (mod / "Mod.dll").write_bytes(b"elf")
    elsewhere = tmp_path / "tree" / "x.bin"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"x")
    real = _tool(tmp_path / "real" / "GenFw")
    wrapper = _tool(ws / ".ovmfgen" / "pathfree" / "GenFw", pathfree.genfw_wrapper(real, str(ws)))
    # As edk2's build rules call it: absolute names under the workspace, option values that are no files.
    out = _lines([wrapper, "-e", "PEIM", "-o", str(mod / "Mod.efi"), str(mod / "Mod.dll"), str(elsewhere)], tmp_path)
    assert out == [f"cwd={ws}", "arg=-e", "arg=PEIM", "arg=-o", "arg=Build/X64/Pkg/Mod/DEBUG/Mod.efi",
                   "arg=Build/X64/Pkg/Mod/DEBUG/Mod.dll", f"arg={elsewhere}"]
    # Relative names from the caller's directory: existing files and -o's value, made relative to the workspace.
    out = _lines([wrapper, "-o", "Mod.efi", "Mod.dll", "-e", "DXE_DRIVER"], mod)
    assert out == [f"cwd={ws}", "arg=-o", "arg=Build/X64/Pkg/Mod/DEBUG/Mod.efi", "arg=Build/X64/Pkg/Mod/DEBUG/Mod.dll",
                   "arg=-e", "arg=DXE_DRIVER"]


def test_install_wrappers_writes_both_once(tmp_path: Path):
    ws, tree = tmp_path / "ws", tmp_path / "cache" / "tree"
    bin_dir = pathfree.install_wrappers(str(ws), [str(tree)], "/usr/bin/gcc", "/bt/GenFw")
    assert bin_dir == str(ws / ".ovmfgen" / "pathfree")
    gcc = Path(bin_dir, "gcc")
    assert os.access(gcc, os.X_OK) and os.access(Path(bin_dir, "GenFw"), os.X_OK)
    text = gcc.read_text()
    assert f"-ffile-prefix-map={ws}/=" in text and f"-ffile-prefix-map={tree}/=" in text
    stamp = gcc.stat().st_mtime_ns
    pathfree.install_wrappers(str(ws), [str(tree)], "/usr/bin/gcc", "/bt/GenFw")
    assert gcc.stat().st_mtime_ns == stamp  # unchanged text is not rewritten


def test_build_environment_sets_the_release_date_and_drops_package_metadata():
    assert pathfree.source_date_epoch("2025-02-21") == 1740096000
    setting, dropped = pathfree.build_environment({"ELF_PACKAGE_METADATA": "{}", "HOME": "/root"}, 1740096000)
    assert setting == {"SOURCE_DATE_EPOCH": "1740096000"} and dropped == ["ELF_PACKAGE_METADATA"]
    assert pathfree.build_environment({}, None) == ({}, [])


def test_file_prefix_map_reaches_file_in_a_real_compile(tmp_path: Path):
    """The flags do what the wrapper relies on: gcc's __FILE__ of a file under a root loses the root."""
    if run(["gcc", "--version"], check=False).returncode != 0:
        pytest.skip("no gcc")
    root = tmp_path / "root-path"
    src = root / "MdePkg" / "f.c"
    src.parent.mkdir(parents=True)
    src.write_text('const char *f = __FILE__;\n')
    wrapper = _tool(tmp_path / "bin" / "gcc", pathfree.gcc_wrapper("gcc", pathfree.prefix_map_flags([str(root)])))
    run([wrapper, "-c", str(src), "-o", str(tmp_path / "f.o")], check=True)
    data = (tmp_path / "f.o").read_bytes()
    assert b"MdePkg/f.c\0" in data and str(root).encode() not in data

