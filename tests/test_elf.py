"""The PVH ELF post-processor (ovmfgen.elf): header computation, FD checks, the loader acceptance checker."""

from __future__ import annotations

import io
import os
import random
import re
import shutil
import struct
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovmfgen import elf
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import REPO_ROOT
from ovmfgen.run import run

MIB = 1 << 20

# The top 0xA0 bytes of a real OvmfXen X64 DEBUG FD (edk2-stable202502, GCC5): xenPVHMain's first
# instructions (at end - 0xA0), the PVH entry `jmp xenPVHMain` (EB 8E at end - 0x30) and its NOP
# padding, DD 0,0,0, 'VTF\0' (end - 0x14) and the 16-bit reset vector (E9 3D FF at end - 0x10).
XEN_RESET_VECTOR_TAIL = bytes.fromhex(
    "66bf4250891d00808000c7050480800058505648bc10808000e8000000005a81ea7effffffbbfcfeffff01d3b810ffff"
    "ff01d08943020f0113b8230000000f22c06a10b8acffffff01d050cbb8400600000f22e066b808008ed88ec08ee08ee8"
    "8ed031e4b80000000001d0e96effffffeb8e909090909090909090909090909000000000000000000000000056544600"
    "e93dff90909090909090909090909090"
)
assert len(XEN_RESET_VECTOR_TAIL) == 0xA0


def _xen_pvh_reserved(size: int) -> int:
    """The header region xen-pvh's YAML reserves for an FD of ``size`` bytes (elf.header_region)."""
    from ovmfgen.platform.load import load_platform

    spec = load_platform("xen-pvh").elf
    assert spec is not None
    return spec.reserved_for(size // 1024)


def make_fd(size: int, reserved: int | None = None) -> bytes:
    """A synthetic OvmfXen FD: erased header region, some non-0xff content, XenResetVector's tail."""
    reserved = reserved if reserved is not None else _xen_pvh_reserved(size)
    fd = bytearray(b"\xff" * size)
    # What follows the reserved region in a real FD (FTW working block signature, then FVs): content
    # make_pvh_elf must leave alone.
    fd[reserved : reserved + 16] = bytes.fromhex("2b29589e687c7d49a0ce6500fd9f1b95")
    fd[reserved + 0x2000 : reserved + 0x3000] = random.Random(size).randbytes(0x1000)
    fd[size - len(XEN_RESET_VECTOR_TAIL) :] = XEN_RESET_VECTOR_TAIL
    return bytes(fd)


FD1, FD2, FD4 = make_fd(1 * MIB), make_fd(2 * MIB), make_fd(4 * MIB)
ELF2 = elf.make_pvh_elf(FD2)


def failed(findings: list[elf.Finding]) -> set[str]:
    return {f.rule for f in findings if not f.ok}


def detail(findings: list[elf.Finding], rule: str) -> str:
    return next(f.detail for f in findings if f.rule == rule)


# --- the header and the image ----------------------------------------------------------------------


@pytest.mark.parametrize("fd", [FD1, FD2, FD4], ids=["1MiB", "2MiB", "4MiB"])
def test_make_pvh_elf_passes_every_rule_and_keeps_the_fd(fd: bytes) -> None:
    image = elf.make_pvh_elf(fd)
    assert len(image) == len(fd)
    assert image[elf.HEADER_SIZE :] == fd[elf.HEADER_SIZE :]
    assert image[: elf.HEADER_SIZE] == elf.pvh_header(len(fd))
    findings = elf.check_elf(image)
    assert [f.rule for f in findings] == list(elf.RULES)
    assert failed(findings) == set(), findings


@pytest.mark.parametrize("fd", [FD1, FD2, FD4], ids=["1MiB", "2MiB", "4MiB"])
def test_pyelftools_sees_one_load_and_the_pvh_note(fd: bytes) -> None:
    size = len(fd)
    parsed = ELFFile(io.BytesIO(elf.make_pvh_elf(fd)))
    assert parsed.elfclass == 32 and parsed.little_endian
    assert parsed["e_machine"] == "EM_386" and parsed["e_type"] == "ET_EXEC"
    entry = 0x100000 + size - 0x30
    assert parsed["e_entry"] == entry
    segments = list(parsed.iter_segments())
    assert [s["p_type"] for s in segments] == ["PT_LOAD", "PT_NOTE"]
    load, note_seg = segments
    assert (load["p_offset"], load["p_vaddr"], load["p_paddr"]) == (0, 0x100000, 0x100000)
    assert load["p_filesz"] == load["p_memsz"] == size
    assert note_seg["p_offset"] != 0 and note_seg["p_align"] == 4
    notes = list(note_seg.iter_notes())
    assert len(notes) == 1
    assert notes[0]["n_name"] == "Xen" and notes[0]["n_type"] == elf.XEN_ELFNOTE_PHYS32_ENTRY
    assert notes[0]["n_descsz"] == 4 and struct.unpack("<I", notes[0]["n_desc"])[0] == entry


def test_readelf_reads_the_note(tmp_path: Path) -> None:
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) not installed")
    path = tmp_path / "ovmf.elf"
    path.write_bytes(elf.make_pvh_elf(FD4))
    out = run(["readelf", "-W", "-l", "-n", path]).stdout
    assert re.search(r"LOAD\s+0x000000 0x00100000 0x00100000 0x400000 0x400000 RWE 0x1000", out), out
    assert re.search(r"NOTE\s+0x000074 0x00100074 0x00100074 0x00014 0x00014 R\s+0x4", out), out
    assert re.search(r"Xen\s+0x00000004\s+Unknown note type: \(0x00000012\)", out), out
    assert "description data: d0 ff 4f 00" in out, out  # entry 0x4fffd0
    assert "Entry point 0x4fffd0" in out, out


def test_header_is_a_pure_function_with_the_documented_layout() -> None:
    h = elf.pvh_header(2 * MIB, 0x200000)
    assert h == elf.pvh_header(2 * MIB, 0x200000) and len(h) == elf.HEADER_SIZE == 0x88
    entry = 0x200000 + 2 * MIB - 0x30
    assert struct.unpack_from("<I", h, 0x18)[0] == entry  # e_entry
    assert h[0x74:0x88] == struct.pack("<III", 4, 4, 18) + b"Xen\x00" + struct.pack("<I", entry)
    assert failed(elf.check_elf(elf.make_pvh_elf(FD2, base=0x200000))) == set()


def test_inspect_fd_reports_the_reset_vector_layout() -> None:
    info = elf.inspect_fd(FD4, reserved=0x40000)
    assert info.size == 4 * MIB
    assert info.entry_offset == 4 * MIB - 0x30 and info.entry(0x100000) == 0x4FFFD0
    assert info.pvh_main_offset == 4 * MIB - 0xA0  # EB 8E: 0x...d0 + 2 - 0x72
    assert info.vtf_offset == 4 * MIB - 0x14 and info.reset_vector_offset == 4 * MIB - 0x10
    assert info.erased == 0x40000


def test_reserved_sizes_follow_upstream_layout() -> None:
    """xen-pvh reserves the header where upstream's layouts put the variable store: 0xE000, and 0x40000 in 4 MiB."""
    assert [_xen_pvh_reserved(s) for s in (MIB, 2 * MIB, 4 * MIB)] == [0xE000, 0xE000, 0x40000]


# --- bad input -------------------------------------------------------------------------------------

NOT_OVMF = "not an OvmfXen FD (no XenResetVector at its top): "


def patched(fd: bytes, offset: int, data: bytes) -> bytes:
    b = bytearray(fd)
    b[offset % len(fd) : offset % len(fd) + len(data)] = data
    return bytes(b)


BAD_FDS = [
    ("empty", b"", None, "FD image is empty"),
    ("truncated", FD2[:-16], None,
     "FD image is 0x1ffff0 bytes, not a whole number of MiB: truncated, or not a flash device image"),
    ("3MiB", b"\xff" * MIB + FD2, None, "FD image is 3 MiB; OvmfXen FDs are 1, 2 or 4 MiB"),
    ("already-elf", ELF2, None,
     "FD already starts with an ELF header (upstream's hand-written one?): its header region must be left "
     "erased (0xff)"),
    ("header-not-erased", patched(FD2, 0x40, b"\x00"), None,
     "FD header region is not erased: byte at offset 0x40 is 0x00, expected 0xff in the first 0x88 bytes"),
    ("reserved-not-erased", patched(FD2, 0xD000, b"\x12"), 0xE000,
     "FD header region is not erased: byte at offset 0xd000 is 0x12, expected 0xff in the first 0xe000 bytes"),
    ("reserved-too-small", FD2, 0x10,
     "reserved header region 0x10 must hold the 0x88-byte ELF header and end below the reset vector"),
    ("all-erased", b"\xff" * (2 * MIB), None, NOT_OVMF + "no VTF signature at offset 0x1fffec (found ff ff ff ff)"),
    ("no-vtf", patched(FD2, -0x14, b"VTX\x00"), None,
     NOT_OVMF + "no VTF signature at offset 0x1fffec (found 56 54 58 00)"),
    ("garbage-entry", patched(FD2, -0x30, b"\x00"), None,
     NOT_OVMF + "no PVH entry jmp at offset 0x1fffd0 (found 00 8e 90 90 90)"),
    ("entry-jumps-up", patched(FD2, -0x30, b"\xeb\x00"), None,
     NOT_OVMF + "the PVH entry jmp at offset 0x1fffd0 lands at 0x1fffd2, outside the code below it"),
    ("entry-jumps-wrong", patched(FD2, -0x30, b"\xeb\xf0"), None,
     NOT_OVMF + "the PVH entry jmp at offset 0x1fffd0 lands at 0x1fffc2, which is not XenResetVector's "
     "xenPVHMain (found 31 e4 b8 00 00 00 00 01)"),
    ("entry-long-jmp-wrong", patched(FD4, -0x30, b"\xe9\x00\x00\xf0\xff"), None,
     NOT_OVMF + "the PVH entry jmp at offset 0x3fffd0 lands at 0x2fffd5, which is not XenResetVector's "
     "xenPVHMain (found ff ff ff ff ff ff ff ff)"),
    ("no-reset-vector", patched(FD1, -0x10, b"\x90"), None,
     NOT_OVMF + "no reset vector jmp at offset 0xffff0 (found 90 3d ff)"),
]


@pytest.mark.parametrize("fd, reserved, message", [b[1:] for b in BAD_FDS], ids=[b[0] for b in BAD_FDS])
def test_bad_fds_are_one_clear_error(fd: bytes, reserved: int | None, message: str) -> None:
    with pytest.raises(OvmfgenError) as exc:
        elf.make_pvh_elf(fd, reserved=reserved)
    assert exc.value.message == message
    assert "\n" not in str(exc.value)


def test_entry_via_e9_rel32_is_accepted() -> None:
    # NASM may emit the long form when xenPVHMain is further away: E9 rel32 to end - 0xA0.
    fd = patched(FD2, -0x30, b"\xe9" + struct.pack("<i", -0xA0 + 0x30 - 5))
    assert elf.inspect_fd(fd).pvh_main_offset == 2 * MIB - 0xA0


@pytest.mark.parametrize("base, message", [
    (0x100800, "load base 0x100800 is not 4 KiB aligned"),
    (0x80000, "load base 0x80000 is below 1 MiB"),
    (0xFBF00000, "load base 0xfbf00000 puts the end of the image (0xfc100000) above the PVH MMIO hole at 0xfc000000"),
])
def test_bad_base(base: int, message: str) -> None:
    with pytest.raises(OvmfgenError) as exc:
        elf.pvh_header(2 * MIB, base)
    assert exc.value.message == message


def test_header_for_unsupported_size() -> None:
    with pytest.raises(OvmfgenError, match=r"^error: FD image is 8 MiB; OvmfXen FDs are 1, 2 or 4 MiB$"):
        elf.pvh_header(8 * MIB)


# --- upstream's hand-written header ----------------------------------------------------------------


def _edk2_root() -> Path | None:
    """The edk2 tree: ovmfgen.edk2.tree.locate(), else $OVMFGEN_EDK2, the setup cache, the dev machine's tree."""
    try:
        from ovmfgen.edk2 import tree as edk2

        return edk2.locate().root
    except (ImportError, AttributeError, OvmfgenError):
        pass
    candidates = [os.environ.get("OVMFGEN_EDK2")]
    try:
        from ovmfgen.edk2 import tree as edk2

        candidates += [str(edk2.debian_tree_root()), str(edk2.submodule_root())]
    except (ImportError, AttributeError):
        pass
    candidates.append("/tmp/edk2try/src/edk2-2025.02")
    for c in candidates:
        if c and (Path(c) / "OvmfPkg" / "Include" / "Fdf" / "XenElfHeader.fdf.inc").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="module")
def upstream_header() -> bytes:
    """The DATA bytes of upstream's OvmfPkg/Include/Fdf/XenElfHeader.fdf.inc."""
    root = _edk2_root()
    if root is None:
        pytest.skip("no edk2 tree found (run `invoke setup` or set OVMFGEN_EDK2)")
    text = (root / "OvmfPkg/Include/Fdf/XenElfHeader.fdf.inc").read_text(encoding="utf-8")
    text = re.sub(r"#[^\n]*", "", text)
    body = re.search(r"DATA\s*=\s*\{(.*?)\}", text, re.S)
    assert body, "no DATA block in XenElfHeader.fdf.inc"
    return bytes(int(tok, 16) for tok in re.findall(r"0x[0-9a-fA-F]+", body.group(1)))


def test_upstream_header_on_2mib_fd_fails_only_on_the_note_alignment(upstream_header: bytes) -> None:
    image = upstream_header + FD2[len(upstream_header) :]
    findings = elf.check_elf(image)
    # p_align 0: QEMU 7.2 divides by it (SIGFPE), so it never arrives at an entry to agree on.
    assert failed(findings) == {"note-align", "entry-agree"}, findings
    assert "p_align 0" in detail(findings, "note-align") and "SIGFPE" in detail(findings, "note-align")
    assert detail(findings, "entry-agree") == "Xen: 0x2fffd0, QEMU: fails"


def test_upstream_header_on_4mib_fd_has_wrong_load_size_and_entry(upstream_header: bytes) -> None:
    image = upstream_header + FD4[len(upstream_header) :]
    findings = elf.check_elf(image)
    assert {"fd-loaded", "entry-code", "note-align"} <= failed(findings), findings
    assert detail(findings, "fd-loaded") == (
        "PT_LOAD maps 0x200000 of the file's 0x400000 bytes: the FD's top (reset vector, SEC) is not loaded")
    assert detail(findings, "entry-code").startswith("PVH entry 0x2fffd0 (file offset 0x1fffd0): ")


def test_our_header_differs_from_upstream_only_where_intended(upstream_header: bytes) -> None:
    ours = elf.pvh_header(2 * MIB)
    assert len(upstream_header) == len(ours)
    fields = {  # offset -> (name, size)
        7: "EI_OSABI", 0x2E: "e_shentsize", 0x34 + 28: "PT_LOAD p_align", 0x54 + 28: "PT_NOTE p_align",
    }
    diff = {o for o in range(len(ours)) if ours[o] != upstream_header[o]}
    assert {max(f for f in fields if f <= o) for o in diff} == set(fields), sorted(hex(o) for o in diff)
    assert struct.unpack_from("<I", upstream_header, 0x54 + 28)[0] == 0  # the QEMU SIGFPE
    assert struct.unpack_from("<I", ours, 0x54 + 28)[0] == 4


# --- each rule can fail ----------------------------------------------------------------------------


def mutate(image: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(image)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


PH_LOAD, PH_NOTE = 0x34, 0x54  # program header offsets in ovmfgen's header
MUTATIONS = [
    ("elf-class", 4, "<B", 3),
    ("elf-data", 5, "<B", 2),
    ("elf-machine", 0x12, "<H", 40),
    ("elf-flags", 0x24, "<I", 0x4),
    ("not-bzimage", 0x202, "<I", int.from_bytes(b"HdrS", "little")),
    ("phdr-table", 0x2A, "<H", 40),  # e_phentsize
    ("phdr-table", 0x1C, "<I", 0xFFFFFF00),  # e_phoff
    ("shdr-table", 0x30, "<H", 5),  # e_shnum with e_shoff 0: table 0..200 fits; see below
    ("load-segments", PH_LOAD + 24, "<I", 0),  # p_flags
    ("load-bounds", PH_LOAD + 16, "<I", 2 * MIB + 0x1000),  # p_filesz past EOF
    ("load-filesz", PH_LOAD + 20, "<I", MIB),  # p_memsz < p_filesz
    ("load-aligned", PH_LOAD + 12, "<I", 0x100800),  # p_paddr
    ("load-above-1mib", PH_LOAD + 12, "<I", 0x80000),
    ("load-below-hole", PH_LOAD + 12, "<I", 0xFBF00000),
    ("fd-loaded", PH_LOAD + 16, "<I", MIB),  # p_filesz: only half the FD
    ("pvh-note", PH_NOTE + 4, "<I", 0),  # PT_NOTE p_offset 0: Xen skips it
    ("pvh-note", 0x74 + 8, "<I", 17),  # note type
    ("note-name", 0x74, "<I", 3),  # namesz 3 ("Xen" without its NUL)
    ("note-descsz", 0x74 + 4, "<I", 3),
    ("note-align", PH_NOTE + 28, "<I", 0),
    ("note-align", PH_NOTE + 28, "<I", 8),
    ("entry-agree", 0x74 + 4, "<I", 2),  # descsz 2: Xen reads 16 bits, QEMU 32
    ("entry-in-load", 0x84, "<I", 0x5000000),  # the PHYS32_ENTRY descriptor
    ("e-entry", 0x18, "<I", 0),
    ("entry-code", 0x84, "<I", 0x110000),
]


@pytest.mark.parametrize("rule, offset, fmt, value", MUTATIONS, ids=[f"{m[0]}-{i}" for i, m in enumerate(MUTATIONS)])
def test_each_rule_catches_its_defect(rule: str, offset: int, fmt: str, value: int) -> None:
    image = mutate(ELF2, offset, fmt, value)
    if rule == "shdr-table":
        image = mutate(image, 0x20, "<I", 2 * MIB - 100)  # e_shoff near the end: 5 * 40 bytes overflow
    findings = elf.check_elf(image)
    assert rule in failed(findings), findings
    assert [f.rule for f in findings] == list(elf.RULES)


def test_note_alignment_8_makes_qemu_read_the_wrong_bytes() -> None:
    findings = elf.check_elf(mutate(ELF2, PH_NOTE + 28, "<I", 8))
    assert failed(findings) == {"note-align", "entry-agree"}
    assert detail(findings, "note-align") == "PT_NOTE #1 p_align 8: QEMU reads the descriptor at note+0x14, not note+0x10"
    assert detail(findings, "entry-agree") == "Xen reads 0x2fffd0, QEMU reads 0xffffffff"


def test_multiboot_header_is_detected() -> None:
    magic, flags = 0x1BADB002, 0x00010003
    mb = struct.pack("<III", magic, flags, (-(magic + flags)) & 0xFFFFFFFF)
    findings = elf.check_elf(patched(ELF2, 0x1000, mb))
    assert failed(findings) == {"not-multiboot"}
    assert detail(findings, "not-multiboot") == "multiboot header at 0x1000: QEMU boots it as multiboot, not PVH"


def test_not_an_elf_reports_every_rule() -> None:
    findings = elf.check_elf(FD2)
    assert [f.rule for f in findings] == list(elf.RULES)
    assert failed(findings) == set(elf.RULES)
    assert findings[0].detail == "not an ELF file (magic is ff ff ff ff)"
    assert findings[1].detail == "not checked: no ELF header"


# --- the commands ----------------------------------------------------------------------------------


def ovmfgen_cli(*args: str) -> tuple[int, str]:
    proc = run([sys.executable, "-m", "ovmfgen", *args], cwd=REPO_ROOT, check=False)
    return proc.returncode, proc.stdout


def test_cli_elf_writes_a_checked_image(tmp_path: Path) -> None:
    fd, out = tmp_path / "OVMF.fd", tmp_path / "out" / "OVMF.elf"
    fd.write_bytes(FD4)
    code, output = ovmfgen_cli("elf", "--fd", str(fd), "--output", str(out), "--base", "0x200000")
    assert code == 0, output
    assert out.read_bytes() == elf.make_pvh_elf(FD4, base=0x200000)
    assert f"{out}: PVH ELF, entry 0x5fffd0, loads 0x200000-0x600000 (4 MiB), {len(elf.RULES)} loader rules ok" in output


@pytest.mark.parametrize("content, base, located, message", [
    (FD2[: MIB + 5], "0x100000", True,
     "FD image is 0x100005 bytes, not a whole number of MiB: truncated, or not a flash device image"),
    (FD2, "0x100800", True, "load base 0x100800 is not 4 KiB aligned"),
    (FD2, "one-meg", False, "invalid load base 'one-meg': expected a number such as 0x100000"),
], ids=["truncated", "bad-base", "garbage-base"])
def test_cli_elf_bad_input_is_one_line(tmp_path: Path, content: bytes, base: str, located: bool, message: str) -> None:
    fd, out = tmp_path / "OVMF.fd", tmp_path / "OVMF.elf"
    fd.write_bytes(content)
    code, output = ovmfgen_cli("elf", "--fd", str(fd), "--output", str(out), "--base", base)
    assert code == 1
    assert "Traceback" not in output
    assert output.splitlines() == [f"{fd}: error: {message}" if located else f"error: {message}"]
    assert not out.exists() and list(tmp_path.iterdir()) == [fd]


def test_cli_elf_missing_fd(tmp_path: Path) -> None:
    code, output = ovmfgen_cli("elf", "--fd", str(tmp_path / "nope.fd"), "--output", str(tmp_path / "x.elf"))
    assert code == 1 and output.strip().count("\n") == 0
    assert "error: cannot read FD" in output and "No such file or directory" in output


def test_check_elf_command_lists_rules_and_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.elf", tmp_path / "bad.elf"
    good.write_bytes(ELF2)
    bad.write_bytes(mutate(ELF2, PH_NOTE + 28, "<I", 0))
    elf.check_elf_command(good)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(elf.RULES) and all(line.startswith("ok   ") for line in lines)
    with pytest.raises(OvmfgenError) as exc:
        elf.check_elf_command(bad)
    lines = capsys.readouterr().out.splitlines()
    assert "FAIL note-align: PT_NOTE #1 has p_align 0: QEMU divides by it reading the PVH entry (SIGFPE)" in lines
    assert exc.value.message == f"2 of {len(elf.RULES)} loader rules failed (note-align, entry-agree)"


def test_cli_check_elf_exit_status(tmp_path: Path) -> None:
    bad = tmp_path / "bad.elf"
    bad.write_bytes(mutate(ELF2, PH_NOTE + 28, "<I", 0))
    code, output = ovmfgen_cli("check-elf", "--elf", str(bad))
    assert code == 1 and "Traceback" not in output
    assert output.splitlines()[-1].endswith("error: 2 of 24 loader rules failed (note-align, entry-agree)")


# --- robustness (hypothesis) -----------------------------------------------------------------------

# OVMFGEN_HYPOTHESIS_EXAMPLES raises the example count for a deeper search (default: fast enough for CI).
FAST = settings(
    max_examples=int(os.environ.get("OVMFGEN_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _never_crashes(data: bytes) -> None:
    findings = elf.check_elf(data)
    assert [f.rule for f in findings] == list(elf.RULES)
    try:
        elf.make_pvh_elf(data)
    except OvmfgenError as exc:
        assert "\n" not in exc.message


@FAST
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _never_crashes(data)
    _never_crashes(elf.ELFMAG + data)


SMALL = elf.make_pvh_elf(FD1)


@FAST
@given(st.integers(0, len(SMALL)))
def test_truncations(n: int) -> None:
    _never_crashes(SMALL[:n])


@FAST
@given(st.lists(st.tuples(st.integers(0, 0x400), st.integers(0, 7)), min_size=1, max_size=8),
       st.lists(st.tuples(st.integers(0, MIB - 1), st.integers(0, 7)), max_size=4))
def test_bit_flips(header_flips: list[tuple[int, int]], anywhere: list[tuple[int, int]]) -> None:
    b = bytearray(SMALL)
    for off, bit in header_flips + anywhere:
        b[off] ^= 1 << bit
    _never_crashes(bytes(b))
    # The same flips on the FD, before it gets a header.
    fd = bytearray(FD1)
    for off, bit in header_flips + anywhere:
        fd[off] ^= 1 << bit
    _never_crashes(bytes(fd))


# Structured garbage reaches deeper than random bytes: a well-formed Ehdr with arbitrary fields and
# program headers (any type, offsets, sizes, alignments, including 0) over random notes.
u32 = st.integers(0, 0xFFFFFFFF)
interesting = st.one_of(u32, st.sampled_from([0, 1, 3, 4, 8, 12, 16, 18, 0x74, 0x88, 0x1000, 0x100000, 0xFFFFFFFF]))


@FAST
@given(
    st.sampled_from([1, 2, 3]), st.sampled_from([1, 2]), st.integers(0, 6),
    st.lists(st.tuples(st.sampled_from([0, 1, 4, 6]), interesting, interesting, interesting, interesting,
                       interesting, interesting, interesting), max_size=5),
    st.binary(min_size=0, max_size=512), interesting,
)
def test_structured_garbage(cls: int, data_order: int, phentsize_sel: int, phdrs: list, tail: bytes,
                            entry: int) -> None:
    phentsize = [32, 56, 0, 40, 1, 0xFFFF, 32][phentsize_sel]
    ident = elf.ELFMAG + bytes([cls, data_order, 1]) + bytes(9)
    table = b"".join(struct.pack("<8I", *p) for p in phdrs)
    ehdr = struct.pack("<16sHHIIIIIHHHHHH", ident, 2, 3, 1, entry, 52, 0, 0, 52, phentsize, len(phdrs), 40, 0, 0)
    if cls == 2:
        ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, 62, 1, entry, 64, 0, 0, 64, phentsize, len(phdrs), 64, 0, 0)
    _never_crashes(ehdr + table + tail)


# --- the boot firmware volume (SECFV): where SEC runs on each entry path ---------------------------


def _with_fv(size: int, off: int) -> bytes:
    """An erased image of ``size`` bytes with a valid FV header at ``off`` spanning to the top."""
    img = bytearray(b"\xff" * size)
    hdr = bytearray(0x48)
    hdr[0x20:0x28] = (size - off).to_bytes(8, "little")
    hdr[0x28:0x2C] = b"_FVH"
    hdr[0x30:0x32] = (0x48).to_bytes(2, "little")
    checksum = (-sum(int.from_bytes(hdr[i:i + 2], "little") for i in range(0, 0x48, 2))) & 0xFFFF
    hdr[0x32:0x34] = checksum.to_bytes(2, "little")
    img[off:off + 0x48] = hdr
    return bytes(img)


@pytest.mark.parametrize("off", [0x1CC000, 0x1DC000])
def test_boot_fv_is_read_from_the_image(off: int) -> None:
    """202502's 2 MiB layout has SECFV at 0x1CC000, 202605's at 0x1DC000: derived, not assumed."""
    img = _with_fv(2 * elf.MIB, off)
    assert elf.boot_fv_offset(img) == off
    assert elf.boot_fv_address(img, "pvh") == 0x100000 + off
    assert elf.boot_fv_address(img, "reset") == (1 << 32) - 2 * elf.MIB + off
    with pytest.raises(OvmfgenError, match="unknown boot entry"):
        elf.boot_fv_address(img, "hvm")


def test_boot_fv_of_an_image_without_one_is_one_line() -> None:
    with pytest.raises(OvmfgenError) as ei:
        elf.boot_fv_offset(b"\xff" * elf.MIB)
    assert str(ei.value) == "error: no firmware volume ends at the top of the image (no SECFV holding the reset vector)"
    # An FV that does not reach the top (e.g. the variable store) is not the boot FV.
    img = bytearray(_with_fv(elf.MIB, 0))
    img[0x20:0x28] = (0x20000).to_bytes(8, "little")
    with pytest.raises(OvmfgenError):
        elf.boot_fv_offset(bytes(img))
