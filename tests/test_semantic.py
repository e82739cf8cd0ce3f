"""invoke diff: xen-pvh differs from upstream OvmfXen by exactly its listed deltas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ovmfgen.platform.load import load_platform
from ovmfgen.paths import REPO_ROOT
from ovmfgen.platform.diff import diff_platform


def test_xen_pvh_shows_only_listed_deltas(edk2_tree) -> None:
    tree = edk2_tree.root
    platform = load_platform("xen-pvh")
    per_config, unexplained, stale = diff_platform(platform, tree / "OvmfPkg/OvmfXen.dsc",
                                                   tree / "OvmfPkg/OvmfXen.fdf", tree)
    assert unexplained == []
    assert stale == []
    default = {(d.kind, d.subject) for d in per_config["default"]}
    assert default == {("define", "PLATFORM_NAME"), ("define", "PLATFORM_GUID"), ("define", "OUTPUT_DIRECTORY"),
                       ("define", "FLASH_DEFINITION"), ("fd-region", "FD.OVMF 0x0|0xe000")}
    four = {(d.kind, d.subject) for d in per_config["FD_SIZE_4MB=TRUE"]}
    assert ("fd-region", "FD.OVMF 0x0|0x40000") in four


def test_unexplained_delta_fails(tmp_path: Path, edk2_tree) -> None:
    tree = edk2_tree.root
    text = (REPO_ROOT / "platforms" / "xen-pvh.yaml").read_text()
    text = text.replace("      - OvmfPkg/XenPvBlkDxe/XenPvBlkDxe.inf\n", "", 1)
    path = tmp_path / "xen-pvh-edited.yaml"
    path.write_text(text)
    platform = load_platform(path, platforms_dir=tmp_path)
    _, unexplained, _ = diff_platform(platform, tree / "OvmfPkg/OvmfXen.dsc", tree / "OvmfPkg/OvmfXen.fdf", tree)
    assert ("component", "OvmfPkg/XenPvBlkDxe/XenPvBlkDxe.inf") in [(d.kind, d.subject) for d in unexplained]
    # Everything else it reports is that module's library resolution, gone with it.
    assert all("XenPvBlkDxe" in d.subject for d in unexplained)


def test_diff_command_exit_status(edk2_tree) -> None:
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "diff", "--platform", "xen-pvh", "--against",
                           "edk2/OvmfPkg/OvmfXen.dsc"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PLATFORM_NAME: Ovmf -> XenOvmf" in proc.stdout
    assert "delta:" in proc.stdout and "unexplained" not in proc.stdout
