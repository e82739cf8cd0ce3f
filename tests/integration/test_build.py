"""`invoke build` for real: a clean stuart build of xen-pvh, its manifest, the no-op path, the printed
stuart command on its own, the seeded stack cookies, a warm `--ccache` rebuild, a compile error's
one-line summary, and the workspace lock.

Full builds are expensive (~3-5 minutes on 2 cores): the clean build is the session fixture the QEMU
boot tests share; the `--ccache` test rebuilds warm the cold `--ccache` build made elsewhere (shared
with test_repro); the others here are incremental or fail early.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ovmfgen.platform.resolve import resolve
from ovmfgen import elf, paths
from ovmfgen.builder import command as build_cmd
from ovmfgen.builder import manifest as build_manifest
from ovmfgen.builder import plan as build_plan
from ovmfgen import request as build_request
from ovmfgen.edk2 import tree as edk2
from ovmfgen.nightly import repro
from ovmfgen.fsutil import sha256_file
from ovmfgen.paths import Layout

pytestmark = pytest.mark.integration

MIB = 1 << 20


def _manifest(dist: Path) -> dict:
    return json.loads((dist / "manifest.json").read_text())


def test_clean_build_publishes_what_its_manifest_says(xen_pvh_clean_build: build_cmd.BuildResult) -> None:
    result = xen_pvh_clean_build
    assert not result.noop
    dist = result.dist
    assert dist == resolve(build_request.make_request("xen-pvh", "DEBUG")).dist == paths.dist_root() / "xen-pvh" / "DEBUG"
    m = _manifest(dist)
    assert m == result.manifest
    assert (m["platform"], m["target"], m["fd_size"], m["toolchain"]) == ("xen-pvh", "DEBUG", "2M", "GCC")
    assert m["defines"] == {"FD_SIZE_2MB": "TRUE"} and m["features"]["debug_output"] == "debugcon"
    assert set(m["outputs"]) == {"OVMF.fd", "ovmf.elf", "build.log"}
    for name, rec in m["outputs"].items():
        data = (dist / name).read_bytes()
        assert rec == {"sha256": build_plan.sha256_bytes(data), "size": len(data)}, name
    assert build_manifest.outputs_intact(dist, m)

    fd = (dist / "OVMF.fd").read_bytes()
    image = (dist / "ovmf.elf").read_bytes()
    assert len(fd) == len(image) == 2 * MIB
    assert [f.rule for f in elf.check_elf(image) if not f.ok] == []
    # The ELF is the FD with the header written into the erased region at offset 0.
    assert image[len(elf.pvh_header(2 * MIB)):] == fd[len(elf.pvh_header(2 * MIB)):]
    assert fd[:0xE000] == b"\xff" * 0xE000

    tree = edk2.locate()
    assert m["edk2"]["digest"] == tree.digest and m["edk2"]["commit"] == tree.identity["commit"]
    assert m["tools"]["gcc"].startswith("gcc") and "NASM" in m["tools"]["nasm"]
    for fv in ("SECFV", "PEIFV", "DXEFV", "FVMAIN_COMPACT"):
        use = m["fv_usage"][fv]
        assert 0 < use["used"] <= use["size"] and use["used"] + use["free"] == use["size"], fv
    assert m["build_seconds"] > 0
    assert "- Done -" in (dist / "build.log").read_text(errors="replace")

    # The version stamps reached the firmware's SMBIOS driver as the --pcd values.
    autogen = (paths.build_root() / "xen-pvh" / "Build" / "XenOvmf" / "DEBUG_GCC" / "X64" / "OvmfPkg" /
               "SmbiosPlatformDxe" / "XenSmbiosPlatformDxe" / "DEBUG" / "AutoGen.c").read_text()
    as_c = ", ".join(str(ord(c)) for c in m["version_string"])
    assert "PcdFirmwareVersionString[" in autogen and as_c in autogen
    assert ", ".join(str(ord(c)) for c in m["release_date"]) in autogen


def test_rebuild_is_a_noop(xen_pvh_clean_build: build_cmd.BuildResult) -> None:
    before = _manifest(xen_pvh_clean_build.dist)
    again = build_cmd.build(resolve(build_request.make_request("xen-pvh")))
    assert again.noop and again.dist == xen_pvh_clean_build.dist
    assert again.seconds < 1.0, f"no-op took {again.seconds:.2f} s"
    assert _manifest(again.dist) == before
    # The same through the command line (a fresh interpreter: wall time includes Python's start-up).
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "build", "--platform", "xen-pvh"],
                          cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert "up to date, nothing to do" in proc.stderr and "stuart" not in proc.stderr
    assert wall < 5, f"`python -m ovmfgen build` no-op took {wall:.2f} s"


def test_printed_stuart_command_rebuilds_the_workspace_alone(xen_pvh_clean_build: build_cmd.BuildResult,
                                                             tmp_path: Path) -> None:
    """The command in the log/manifest, run by hand (other cwd, bare environment), rebuilds the same FD."""
    m = _manifest(xen_pvh_clean_build.dist)
    argv = shlex.split(m["stuart_command"])
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "VIRTUAL_ENV")}
    proc = subprocess.run(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:]
    fd = paths.build_root() / "xen-pvh" / "Build" / "XenOvmf" / "DEBUG_GCC" / "FV" / "OVMF.fd"
    assert sha256_file(fd) == m["outputs"]["OVMF.fd"]["sha256"]


def test_stack_cookies_are_the_seeded_ones(xen_pvh_clean_build: build_cmd.BuildResult) -> None:
    """The clean build used the cookie lists derived from its seed, not edk2's random ones."""
    from ovmfgen.builder.child import stuart_platform

    out = paths.build_root() / "xen-pvh" / "Build" / "XenOvmf" / "DEBUG_GCC"
    values = stuart_platform.stack_cookie_values("xen-pvh/DEBUG", 64)
    assert json.loads((out / "StackCookieValues64.json").read_text()) == values
    autogen = (out / "X64" / "OvmfPkg" / "XenPlatformPei" / "XenPlatformPei" / "DEBUG" / "AutoGen.h").read_text()
    cookie = next(line.split()[2] for line in autogen.splitlines() if line.startswith("#define STACK_COOKIE_VALUE"))
    assert int(cookie.rstrip("ULL"), 16) in values


def _ccache_stats(ccache_dir: Path) -> dict[str, int]:
    proc = subprocess.run(["ccache", "--dir", str(ccache_dir), "--print-stats"], capture_output=True, text=True,
                          check=True)
    return {k: int(v) for k, v in (line.split("\t") for line in proc.stdout.splitlines()) if v.isdigit()}


def test_warm_ccache_rebuild_reuses_everything_and_gives_the_same_firmware(
        xen_pvh_ccache_elsewhere: repro.PlacedBuild) -> None:
    """`--clean --ccache` again where the cold one was built (its own, private caches): the warm run
    compiles and links (almost) nothing, and gives the same bytes."""
    cold = xen_pvh_ccache_elsewhere
    ccache_dir, link_dir = cold.cache / "ccache", cold.cache / "linkcache"
    assert cold.root is not None
    # Nothing else builds with these caches: they hold what the cold build left.
    entries = sorted(p.name for p in link_dir.glob("??/*"))
    assert len(entries) >= 100  # every module's LTO link (DXE drivers, PEIMs, SEC, the Shell) was stored
    cold_stats = _ccache_stats(ccache_dir)
    assert cold_stats["direct_cache_miss"] > 1000

    warm = repro.build_at(build_request.make_request("xen-pvh", "DEBUG", clean=True, ccache=True),
                          cold.root, cold.cache).result
    assert not warm.noop
    for name in ("OVMF.fd", "ovmf.elf"):
        assert warm.manifest["outputs"][name] == cold.result.manifest["outputs"][name], name
    # The warm run compiles and links (almost) nothing anew. Almost: in one CI dry run 5 of 1634
    # compiles missed and 2 modules were linked again (same firmware bytes); a manual cold/warm pair
    # right after had 0 misses, and the cause is not found yet. A broken cache misses by the thousand.
    new_links = sorted(set(p.name for p in link_dir.glob("??/*")) - set(entries))
    assert len(new_links) <= 3, f"{len(new_links)} of {len(entries)} links stored anew by the warm run"
    warm_stats = _ccache_stats(ccache_dir)
    compiles = cold_stats["direct_cache_miss"]
    warm_misses = warm_stats["direct_cache_miss"] - compiles
    warm_hits = warm_stats["direct_cache_hit"] - cold_stats["direct_cache_hit"]
    assert warm_misses <= compiles // 100, f"{warm_misses} of {compiles} compiles missed ccache in the warm run"
    assert warm_hits + warm_misses == compiles


def _broken_layout(root: Path) -> tuple[Layout, Path]:
    """A private copy of xen-pvh whose override of UefiDriverEntryPoint (built early) does not compile.

    The overrides exist only in this layout's overrides/ (not in the repository's): validation passes
    only because the build hands it this layout.
    """
    module = "MdePkg/Library/UefiDriverEntryPoint"
    names = ("UefiDriverEntryPoint.inf", "DriverEntryPoint.c", "UefiDriverEntryPoint.uni")
    platforms = root / "platforms"
    platforms.mkdir(parents=True)
    yaml_text = (paths.PLATFORMS_DIR / "xen-pvh.yaml").read_text()
    # The platform's own overrides (the SEC fix) stay; the broken module's files join the list.
    assert yaml_text.count("\noverrides:\n") == 1
    (platforms / "xen-pvh.yaml").write_text(yaml_text.replace(
        "\noverrides:\n", "\noverrides:\n" + "".join(f"  - {module}/{n}\n" for n in names), 1))
    overrides = root / "overrides"
    shutil.copytree(paths.OVERRIDES_DIR / "xen-pvh", overrides / "xen-pvh")
    ov = overrides / "xen-pvh" / module
    ov.mkdir(parents=True)
    tree = edk2.locate().root
    for n in names:
        shutil.copyfile(tree / module / n, ov / n)
    src = (ov / "DriverEntryPoint.c").read_text()
    broken = src.replace("EFI_STATUS  Status;", "EFI_STATUS  Status;\n  ovmfgen_deliberate_error = 1;", 1)
    assert broken != src
    (ov / "DriverEntryPoint.c").write_text(broken)
    assert not (Layout().overrides_for("xen-pvh") / module).exists()
    return Layout(platforms, overrides, root / "build", root / "dist"), ov / "DriverEntryPoint.c"


def test_compile_error_is_one_line_and_the_previous_dist_stays(xen_pvh_clean_build: build_cmd.BuildResult,
                                                               tmp_path: Path) -> None:
    layout, broken_file = _broken_layout(tmp_path)
    # A previous good publication of this (private) platform.
    previous = layout.dist_root / "xen-pvh" / "DEBUG"
    shutil.copytree(xen_pvh_clean_build.dist, previous)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}

    with pytest.raises(build_cmd.BuildFailed) as ei:
        build_cmd.build(resolve(build_request.make_request("xen-pvh"), layout))
    text = str(ei.value)
    assert "\n" not in text
    # path:line:col of the file the user edits (the override, not the workspace copy), the module, the cause.
    assert text.startswith(f"{broken_file}:")
    assert "MdePkg/Library/UefiDriverEntryPoint/UefiDriverEntryPoint.inf" in text
    assert "ovmfgen_deliberate_error" in text and "undeclared" in text
    assert "log " in text and text.endswith("build-DEBUG.log)")

    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert sorted(p.name for p in previous.parent.iterdir()) == ["DEBUG"]


def test_a_second_build_waits_for_the_lock(xen_pvh_clean_build: build_cmd.BuildResult) -> None:
    """Two forced builds of the same workspace (each an incremental edk2 run): the second waits."""
    before = _manifest(xen_pvh_clean_build.dist)["outputs"]["OVMF.fd"]
    cmd = [sys.executable, "-m", "ovmfgen", "build", "--platform", "xen-pvh", "--force"]
    first = subprocess.Popen(cmd, cwd=paths.REPO_ROOT, stderr=subprocess.PIPE, text=True)
    started = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert first.stderr is not None
        for line in first.stderr:
            lines.append(line)
            if "stuart command" in line:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(300), "".join(lines)
        second = subprocess.run(cmd, cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=1800)
        assert first.wait(timeout=1800) == 0, "".join(lines)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    reader.join(10)
    assert second.returncode == 0, second.stderr
    assert "waiting for lock" in second.stderr and f"(pid {first.pid})" in second.stderr, second.stderr
    first_done = next(i for i, ln in enumerate(lines) if "published" in ln)
    assert first_done == len(lines) - 1  # the first finished its publish; the second then built on its own
    assert "published" in second.stderr.splitlines()[-1], second.stderr
    after = _manifest(xen_pvh_clean_build.dist)
    assert build_manifest.outputs_intact(xen_pvh_clean_build.dist, after)
    assert after["outputs"]["OVMF.fd"] == before  # same inputs, same firmware
