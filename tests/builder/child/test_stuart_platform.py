"""The stuart settings module (builder/child/stuart_platform.py): build parameters, the path-free wrappers
first on PATH, stack cookies from the seed."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from ovmfgen.builder import plan as build_plan


def test_settings_module_build_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """stuart_platform.PlatformBuilder composes edk2's `build` arguments, --pcd included, shell-safe."""
    import shlex

    from edk2toolext.environment.var_dict import VarDict

    from ovmfgen.builder.child import stuart_platform

    monkeypatch.setattr(sys, "argv", ["stuart_build", "--workspace", "/ws"])
    b = stuart_platform.PlatformBuilder()
    assert b.GetWorkspaceRoot() == "/ws"
    b.env = VarDict()
    b.Pcds = build_plan.pcd_arguments("edk2-x-ovmfgen-1", "02/21/2025")
    for key, value in {"TARGET": "DEBUG", "TOOL_CHAIN_TAG": "GCC5", "ACTIVE_PLATFORM": "OvmfPkg/XenOvmf.dsc",
                       "TARGET_ARCH": "X64", "MAX_CONCURRENT_THREAD_NUMBER": "2", "BUILDREPORTING": "TRUE",
                       "BUILDREPORT_FILE": "/ws/Build/R.TXT", "BUILDREPORT_TYPES": "FLASH",
                       "BLD_*_FD_SIZE_2MB": "TRUE"}.items():
        b.env.SetValue(key, value, "test")
    params = b.BuildParameters()
    assert params == ["-p", "OvmfPkg/XenOvmf.dsc", "-b", "DEBUG", "-t", "GCC5", "-n", "2", "-a", "X64",
                      "-y", "/ws/Build/R.TXT", "-Y", "FLASH", "-D", "FD_SIZE_2MB=TRUE",
                      "--pcd", b.Pcds[0], "--pcd", b.Pcds[1]]
    # RunCmd hands the string to a shell: it must split back into exactly these arguments.
    assert shlex.split(shlex.join(params)) == params


def test_settings_module_puts_the_path_free_wrappers_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every build: gcc and GenFw wrappers first on PATH (chained to the gcc found before), the release's
    SOURCE_DATE_EPOCH set and ELF_PACKAGE_METADATA gone from the environment the build inherits."""
    from edk2toolext.environment import shell_environment

    from ovmfgen.builder.child import stuart_platform

    tools = tmp_path / "basetools"
    genfw = tools / "BinWrappers" / "PosixLike" / "GenFw"
    genfw.parent.mkdir(parents=True)
    genfw.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", os.environ["PATH"])        # restored after the test
    monkeypatch.setenv("ELF_PACKAGE_METADATA", '{"type":"deb"}')
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    shell = shell_environment.GetEnvironment()
    checkpoint = shell.checkpoint()
    try:
        b = stuart_platform.PlatformBuilder()
        b.Workspace, b.Edk2, b.EdkToolsPath = str(tmp_path / "ws"), str(tmp_path / "tree"), str(tools)
        b.SourceDateEpoch = 1740096000
        before = shutil.which("gcc")
        assert b._path_free(shell)
        bin_dir = tmp_path / "ws" / ".ovmfgen" / "pathfree"
        assert os.environ["PATH"].split(os.pathsep)[0] == str(bin_dir)
        assert shutil.which("gcc") == str(bin_dir / "gcc") and shutil.which("GenFw") == str(bin_dir / "GenFw")
        gcc = (bin_dir / "gcc").read_text()
        assert f"exec {before} " in gcc and f"-ffile-prefix-map={tmp_path / 'tree'}/=" in gcc
        assert str(genfw) in (bin_dir / "GenFw").read_text()
        assert os.environ["SOURCE_DATE_EPOCH"] == "1740096000" and "ELF_PACKAGE_METADATA" not in os.environ
        assert b._path_free(shell)  # a second build: the wrapper does not chain to itself
        assert f"exec {before} " in (bin_dir / "gcc").read_text()
    finally:
        shell.restore_checkpoint(checkpoint)
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


def test_stack_cookies_come_from_the_seed(tmp_path: Path) -> None:
    """The cookie lists BaseTools would draw at random, derived instead (same seed, same firmware)."""
    from edk2toolext.environment.var_dict import VarDict

    from ovmfgen.builder.child import stuart_platform

    v64 = stuart_platform.stack_cookie_values("xen-pvh/DEBUG", 64)
    v32 = stuart_platform.stack_cookie_values("xen-pvh/DEBUG", 32)
    assert len(v64) == len(v32) == 100 and len(set(v64)) == len(set(v32)) == 100
    assert all(0 <= v < 2**64 - 1 for v in v64) and all(0 <= v < 2**32 - 1 for v in v32)  # secrets.randbelow's range
    assert max(v64) > 2**63  # the whole range is used, not only small numbers
    assert v64 == stuart_platform.stack_cookie_values("xen-pvh/DEBUG", 64)
    assert set(v64).isdisjoint(stuart_platform.stack_cookie_values("xen-pvh/RELEASE", 64))

    # PlatformPreBuild writes them where edk2's build looks (BUILD_OUTPUT_BASE), before build runs.
    out = tmp_path / "Build" / "XenOvmf" / "DEBUG_GCC5"
    b = stuart_platform.PlatformBuilder()
    b.env = VarDict()
    b.env.SetValue("BUILD_OUTPUT_BASE", str(out), "test")
    b.StackCookieSeed = "xen-pvh/DEBUG"
    assert b.PlatformPreBuild() == 0
    assert json.loads((out / "StackCookieValues64.json").read_text()) == v64
    assert json.loads((out / "StackCookieValues32.json").read_text()) == v32
    stamp = (out / "StackCookieValues64.json").stat().st_mtime_ns
    time.sleep(0.01)
    assert b.PlatformPreBuild() == 0
    assert (out / "StackCookieValues64.json").stat().st_mtime_ns == stamp  # unchanged: not rewritten
    b.StackCookieSeed = "other"
    b.PlatformPreBuild()
    assert json.loads((out / "StackCookieValues64.json").read_text()) == \
        stuart_platform.stack_cookie_values("other", 64)
    b.StackCookieSeed = None  # no seed: edk2's own random lists
    shutil.rmtree(out)
    assert b.PlatformPreBuild() == 0 and not out.exists()
