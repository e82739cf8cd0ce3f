"""ovmfgen.patch.intree: the platform as upstream keeps it (the ELF header include, Maintainers.txt, PlatformCI)."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ovmfgen import elf
from ovmfgen.edk2 import tree as edk2
from ovmfgen.patch import intree as patch_intree
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.model import Comment, Conditional, Include, Region, RegionContent, ReservedRegion, walk
from ovmfgen.platform.syntax import parse_fdf, strip_comment


MIB = 1 << 20


# --- the header include -------------------------------------------------------------------------


def include_headers(text: str) -> dict[int, bytes]:
    """FD_SIZE_IN_KB -> the DATA bytes of each ``!if`` block, read with ovmfgen's FDF reader.

    An ``!include`` is textual: inside the FDF the file's lines sit in the [FD.OVMF] section.
    """
    sections = parse_fdf("[FD.OVMF]\r\n" + text, "XenOvmfElfHeader.fdf.inc")
    assert [s.header for s in sections] == ["FD.OVMF"]
    out: dict[int, bytes] = {}
    for stmt in sections[0].body:
        if isinstance(stmt, Comment):
            continue
        assert isinstance(stmt, Conditional), stmt
        (branch,) = stmt.branches
        m = re.fullmatch(r"\$\(FD_SIZE_IN_KB\) == (\d+)", branch.expr)
        assert m and branch.directive == "if", branch
        (data,) = [s for s in branch.body if isinstance(s, RegionContent)]
        assert data.kind == "DATA"
        body = "\n".join(strip_comment(line) for line in data.value.splitlines())
        values = re.sub(r"[{}\s]", "", body).split(",")
        out[int(m.group(1))] = bytes(int(v, 16) for v in values)
    return out


def test_header_include_has_the_pvh_header_for_each_fd_size(platform) -> None:
    text = patch_intree.elf_header_include(platform)
    headers = include_headers(text)
    assert sorted(headers) == [1024, 2048, 4096]
    for size_kb, data in headers.items():
        fd_size = size_kb * 1024
        assert data == elf.pvh_header(fd_size, 0x100000)
        # What the bytes mean, read independently of elf.pvh_header:
        e_entry = struct.unpack_from("<I", data, 24)[0]
        assert e_entry == 0x100000 + fd_size - 0x30
        load = struct.unpack_from("<8I", data, 52)
        note = struct.unpack_from("<8I", data, 84)
        assert load[0] == 1 and load[2] == 0x100000 and load[4] == load[5] == fd_size
        assert note[0] == 4 and note[7] == 4  # PT_NOTE, p_align 4 (QEMU divides by it)
        assert struct.unpack_from("<I", data, len(data) - 4)[0] == e_entry


def test_header_include_follows_edk2_conventions(platform) -> None:
    data = patch_intree.elf_header_include(platform).encode()
    lines = data.split(b"\r\n")
    assert lines[-1] == b"" and all(b"\n" not in ln and b"\r" not in ln for ln in lines)
    assert data.startswith(b"## @file\r\n")
    assert b"SPDX-License-Identifier: BSD-2-Clause-Patent" in data
    assert b"\t" not in data and all(ln == ln.rstrip() for ln in lines)


def test_header_include_rejects_a_region_too_small(platform) -> None:
    from dataclasses import replace

    small = replace(platform, elf=replace(platform.elf, header_region=((2048, 0x40),)))
    with pytest.raises(OvmfgenError, match="reserves 0x40 bytes for the ELF header, which needs 0x88"):
        patch_intree.elf_header_include(small)


# --- the in-tree DSC/FDF ------------------------------------------------------------------------


def test_in_tree_platform_includes_the_header_where_the_region_was_reserved(platform) -> None:
    before = [s for sec in platform.fdf for s in walk(sec.body) if isinstance(s, ReservedRegion)]
    assert before, "xen-pvh reserves the header region"
    moved = patch_intree.in_tree_platform(platform)
    after = [s for sec in moved.fdf for s in walk(sec.body)]
    assert not any(isinstance(s, ReservedRegion) for s in after)
    includes = [s for s in after if isinstance(s, Include) and s.path == "OvmfPkg/XenOvmfElfHeader.fdf.inc"]
    assert len(includes) == len(before)
    # Each include directly follows its region line (offset 0), as upstream's OvmfXen.fdf does.
    for sec in moved.fdf:
        for stmt in walk(sec.body):
            if isinstance(stmt, Conditional):
                for br in stmt.branches:
                    for i, s in enumerate(br.body):
                        if isinstance(s, Include) and s in includes:
                            assert isinstance(br.body[i - 1], Region) and int(br.body[i - 1].offset, 16) == 0
    assert moved.dsc == platform.dsc  # only the FDF changes


def test_in_tree_files_are_crlf_and_say_nothing_of_post_processing(platform) -> None:
    files = patch_intree.in_tree_files(platform)
    assert sorted(files) == ["OvmfPkg/XenOvmf.dsc", "OvmfPkg/XenOvmf.fdf"]
    fdf = files["OvmfPkg/XenOvmf.fdf"].decode()
    assert "0x00000000|0x0000e000\r\n!include OvmfPkg/XenOvmfElfHeader.fdf.inc\r\n" in fdf
    assert "0x00000000|0x00040000\r\n!include OvmfPkg/XenOvmfElfHeader.fdf.inc\r\n" in fdf
    for data in files.values():
        text = data.decode()
        assert "ovmfgen writes" not in text and "Generated by ovmfgen" not in text
        assert "SPDX-License-Identifier: BSD-2-Clause-Patent\r\n" in text
        assert text.count("\n") == text.count("\r\n")
    assert "FLASH_DEFINITION               = OvmfPkg/XenOvmf.fdf\r\n" in files["OvmfPkg/XenOvmf.dsc"].decode()


def test_a_platform_without_a_reserved_region_has_nothing_to_put_the_header_in(platform) -> None:
    from dataclasses import replace

    with pytest.raises(OvmfgenError, match="reserves no region for the PVH ELF header"):
        patch_intree.in_tree_platform(replace(platform, fdf=()))


# --- Maintainers.txt, PlatformCI ----------------------------------------------------------------


MAINTAINERS = (
    "OvmfPkg: Xen-related modules\r\n"
    "F: OvmfPkg/OvmfXen.*\r\n"
    "F: OvmfPkg/XenBusDxe/\r\n"
    "F: OvmfPkg/XenPlatformPei/\r\n"
    "R: Anthony Perard <anthony@xenproject.org> [tperard]\r\n"
    "\r\n"
    "OvmfPkg: RISC-V Qemu Virt Platform\r\n"
    "F: OvmfPkg/RiscVVirt\r\n"
)


def test_maintainers_lines_go_in_order_into_the_xen_section() -> None:
    out = patch_intree.add_maintainers(MAINTAINERS.encode(), ["OvmfPkg/XenOvmf*", "OvmfPkg/PlatformCI/XenOvmfBuild.py"])
    assert out.decode().split("\r\n")[:7] == [
        "OvmfPkg: Xen-related modules",
        "F: OvmfPkg/OvmfXen.*",
        "F: OvmfPkg/PlatformCI/XenOvmfBuild.py",
        "F: OvmfPkg/XenBusDxe/",
        "F: OvmfPkg/XenOvmf*",
        "F: OvmfPkg/XenPlatformPei/",
        "R: Anthony Perard <anthony@xenproject.org> [tperard]",
    ]
    assert out.decode().endswith("F: OvmfPkg/RiscVVirt\r\n")
    with pytest.raises(OvmfgenError, match="already lists 'F: OvmfPkg/XenOvmf\\*'"):
        patch_intree.add_maintainers(out, ["OvmfPkg/XenOvmf*"])
    with pytest.raises(OvmfgenError, match="no 'OvmfPkg: Xen-related modules' section"):
        patch_intree.add_maintainers(b"OvmfPkg\r\nF: OvmfPkg/\r\n", ["OvmfPkg/XenOvmf*"])


def test_maintainers_patterns_match_the_new_files_the_way_getmaintainer_does(tree: edk2.Edk2Tree) -> None:
    sys.path.insert(0, str(tree.root / "BaseTools" / "Scripts"))
    try:
        gm = pytest.importorskip("GetMaintainer")
    finally:
        sys.path.pop(0)
    for new in ("OvmfPkg/XenOvmf.dsc", "OvmfPkg/XenOvmf.fdf", "OvmfPkg/XenOvmfElfHeader.fdf.inc"):
        assert re.match(gm.pattern_to_regex("OvmfPkg/XenOvmf*"), new)


def test_ci_script_is_upstream_xenbuild_with_our_dsc(platform, tree: edk2.Edk2Tree, tmp_path: Path) -> None:
    template = (tree.root / patch_intree.CI_TEMPLATE).read_bytes()
    script = patch_intree.ci_script(platform, template)
    assert script.count(b"\r\n") == script.count(b"\n")
    assert b'return "XenOvmf.dsc"' in script and b"OvmfXen.dsc" not in script
    # It works with the tree's PlatformBuildLib and the installed stuart (edk2toolext).
    ci = tmp_path / "PlatformCI"
    ci.mkdir()
    (ci / "PlatformBuildLib.py").write_bytes((tree.root / "OvmfPkg/PlatformCI/PlatformBuildLib.py").read_bytes())
    (ci / "XenOvmfBuild.py").write_bytes(script)
    probe = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('XenOvmfBuild', {str(ci / 'XenOvmfBuild.py')!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "s = m.SettingsManager(); s.SetArchitectures(['X64'])\n"
        "print(s.GetPlatformDscAndConfig()[0], m.CommonPlatform.ArchSupported)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "OvmfPkg/XenOvmf.dsc ('X64',)"
    with pytest.raises(OvmfgenError, match="is not the XenBuild.py this series is derived from"):
        patch_intree.ci_script(platform, b"# @file\r\nprint()\r\n")


def test_ci_job_follows_upstream_xen_job(platform, tree: edk2.Edk2Tree) -> None:
    import yaml

    pipeline, ci_tc = patch_intree.ci_pipeline(tree.root)
    assert (pipeline, ci_tc) == ("OvmfPkg/PlatformCI/.azurepipelines/Ubuntu-GCC5.yml", "GCC5")  # 202502's CI
    text = (tree.root / pipeline).read_bytes()
    out = patch_intree.add_ci_job(text, platform, pipeline)
    assert out.count(b"\r\n") == out.count(b"\n")
    matrix = yaml.safe_load(out)["jobs"][0]["strategy"]["matrix"]
    names = list(matrix)
    assert names[names.index("OVMF_XEN_X64_DEBUG") + 1] == "XENOVMF_X64_DEBUG"
    assert matrix["XENOVMF_X64_DEBUG"]["Build.File"] == "$(package)/PlatformCI/XenOvmfBuild.py"
    assert matrix["XENOVMF_X64_DEBUG"]["Run.Flags"] == "QEMU_SKIP=TRUE"
    with pytest.raises(OvmfgenError, match="already has a XENOVMF_X64_DEBUG job"):
        patch_intree.add_ci_job(out, platform, pipeline)
