"""ovmfgen.builder.workspace: the per-workspace lock, the files written into the workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ovmfgen import paths
from ovmfgen.builder import workspace as build_workspace
from ovmfgen.builder.plan import plan
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen.paths import Layout


# argv: lock, output file, seconds to hold, [a file to wait for first: imports done, then contend].
LOCK_HOLDER = """
import sys, time
from pathlib import Path
from ovmfgen.builder.workspace import workspace_lock
while len(sys.argv) > 4 and not Path(sys.argv[4]).exists():
    time.sleep(0.005)
with workspace_lock(Path(sys.argv[1]), "test"):
    Path(sys.argv[2]).write_text(str(time.time()))
    time.sleep(float(sys.argv[3]))
    Path(sys.argv[2]).write_text(Path(sys.argv[2]).read_text() + " " + str(time.time()))
"""


def test_lock_serialises_two_processes(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "ws.lock"
    env = {**os.environ, "PYTHONPATH": str(paths.REPO_ROOT)}
    # The second process is started first and waits for the first to hold the lock: its own start-up
    # (imports) cannot outlast the first's hold on a loaded machine.
    second = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(lock), str(tmp_path / "b"), "0",
                               str(tmp_path / "a")], env=env, stderr=subprocess.PIPE, text=True)
    first = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(lock), str(tmp_path / "a"), "1.5"], env=env)
    _, second_stderr = second.communicate(timeout=60)
    second = subprocess.CompletedProcess(second.args, second.returncode, "", second_stderr)
    assert first.wait(timeout=60) == 0 and second.returncode == 0, second.stderr
    assert "waiting for lock" in second.stderr and f"(pid {first.pid})" in second.stderr
    a_start, a_end = map(float, (tmp_path / "a").read_text().split())
    b_start = float((tmp_path / "b").read_text().split()[0])
    assert b_start >= a_end > a_start


def test_prepare_workspace_writes_and_prunes_overrides(layout: Layout, fake_env: dict) -> None:
    yaml_path = layout.platforms_dir / "xen-pvh.yaml"
    original = yaml_path.read_text()
    ov_rel = "OvmfPkg/Include/Dsc/OvmfTpmDefines.dsc.inc"
    yaml_path.write_text(original.replace("\noverrides:\n", f"\noverrides:\n  - {ov_rel}\n", 1))
    src = layout.overrides_dir / "xen-pvh" / ov_rel
    src.parent.mkdir(parents=True)
    src.write_text("# override\n")
    p = plan(resolve(make_request("xen-pvh"), layout))
    written = build_workspace.prepare_workspace(p)
    # The whole-file overrides, the files the patch override changes (and their modules' other files:
    # none in this fake tree), the new override.
    assert set(written) == {"OvmfPkg/XenOvmf.dsc", "OvmfPkg/XenOvmf.fdf", "OvmfPkg/Sec/SecMain.c", ov_rel,
                            "OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c",
                            "OvmfPkg/Library/PlatformBootManagerLib/PlatformBootManagerLib.inf",
                            "OvmfPkg/Library/ResetSystemLib/BaseResetShutdownXen.c",
                            "OvmfPkg/XenPlatformPei/Platform.c", "OvmfPkg/XenPlatformPei/XenPlatformPei.inf",
                            *(f"UefiCpuPkg/Library/MpInitLib/{n}" for n in
                              ("MpLib.c", "MpLib.h", "MpEqu.inc", "X64/MpFuncs.nasm", "Ia32/MpFuncs.nasm"))}
    assert (p.workspace / ov_rel).read_text() == "# override\n"
    assert build_workspace.prepare_workspace(p) == []  # unchanged: nothing rewritten (EDK2 sees no change)
    yaml_path.write_text(original)
    q = plan(resolve(make_request("xen-pvh"), layout))
    build_workspace.prepare_workspace(q)
    assert not (q.workspace / ov_rel).exists()  # would otherwise still shadow edk2's file


def test_a_changed_set_of_overrides_makes_edk2_resolve_every_module_again(layout: Layout, fake_env: dict) -> None:
    p = plan(resolve(make_request("xen-pvh"), layout))
    stamp = p.workspace / "Build" / "XenOvmf" / "DEBUG_GCC5" / "X64" / "OvmfPkg" / "Sec" / "SecMain" / "AutoGenTimeStamp"
    stamp.parent.mkdir(parents=True)
    stamp.write_text("old place\n")
    build_workspace.prepare_workspace(p)                  # new overrides: the stamps go
    assert not stamp.exists()
    stamp.write_text("new place\n")
    build_workspace.prepare_workspace(p)                  # the same overrides: edk2's incremental AutoGen stays
    assert stamp.exists()
