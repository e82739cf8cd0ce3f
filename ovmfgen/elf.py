"""Turn an OvmfXen flash device image (FD) into a PVH-bootable ELF, and predict whether loaders take it.

Upstream OvmfXen hand-writes its ELF header (OvmfPkg/Include/Fdf/XenElfHeader.fdf.inc). Those bytes
are right for a 2 MiB FD only (a 4 MiB build gets a wrong entry point and load size) and give the
note segment p_align 0, on which QEMU 7.2's PVH loader divides by zero (SIGFPE). ovmfgen's platform
leaves the header region at FD offset 0 erased (0xff) instead, and this module computes the header
from the image it built:

- ``inspect_fd`` verifies the FD (size, erased header region, XenResetVector's PVH entry and VTF at
  its top) and ``pvh_header`` computes the header for an FD size and load base;
- ``make_pvh_elf`` writes that header over the erased region, leaving every other byte as it was (the
  result is still a valid FD for hvmloader, which ignores the region);
- ``check_elf`` predicts acceptance by Xen's libelf/libxc loader (xen/common/libelf/*.c,
  tools/libs/guest/xg_dom_elfloader.c, xg_dom_core.c, libxl) and by QEMU's PVH loader
  (hw/i386/x86.c load_elfboot/read_pvh_start_addr, include/hw/elf_ops.h load_elf), one finding per rule.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.edk2.conventions import FD_SIZES_MIB, fd_size_bytes
from ovmfgen.errors import Location, OvmfgenError, display_path
from ovmfgen.fsutil import atomic_write_bytes

MIB = 1 << 20
PAGE_SIZE = 0x1000

XEN_ELFNOTE_PHYS32_ENTRY = 18
DEFAULT_BASE = 0x100000

# XenResetVector (OvmfPkg/XenResetVector/Ia16/ResetVectorVtf0.asm) ends every OvmfXen FD with:
#   end - 0x30  xenPVHEntryPoint: `jmp xenPVHMain` (BITS 32: EB rel8 or E9 rel32), NOP padding
#   end - 0x20  DD 0, 0, 0
#   end - 0x14  vtfSignature: 'V', 'T', 'F', 0
#   end - 0x10  resetVector: `jmp EarlyBspInitReal16` (BITS 16: EB rel8 or E9 rel16), NOP padding
PVH_ENTRY_FROM_END = 0x30
VTF_FROM_END = 0x14
RESET_VECTOR_FROM_END = 0x10
VTF_SIGNATURE = b"VTF\x00"
# xenPVHMain (Ia32/XenPVHMain.asm) starts with `mov di, 'BP'` (66 BF 42 50 in BITS 32) and stores
# the magic 'XPVH' a few instructions later (`mov dword[PVH_SPACE (4)], 'XPVH'`).
XEN_PVH_MAIN_PROLOGUE = bytes.fromhex("66bf4250")
XEN_PVH_MAIN_MAGIC = b"XPVH"
XEN_PVH_MAIN_MAGIC_WITHIN = 32

# The FD sizes OvmfXen builds (FD_SIZE_1MB / 2MB / 4MB). The erased region at offset 0 the header goes
# in is the platform's to say (its YAML's elf.header_region): the build passes it as ``reserved``.
FD_SIZES = tuple(fd_size_bytes(mib) for mib in FD_SIZES_MIB)
ERASED = 0xFF

# libxl builds PVH guests with the MMIO hole starting at ACPI_INFO_PHYSICAL_ADDRESS (0xFC000000,
# libxl__domain_build / libxl_x86_acpi.c: min(special pages, LAPIC, ACPI info)): RAM, and so the
# kernel segment, ends below it.
PVH_MMIO_HOLE = 0xFC000000
LOW_LIMIT = 0x100000

# ELF constants (elf.h).
ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
EV_CURRENT = 1
ET_EXEC = 2
EM_386, EM_X86_64 = 3, 62
PT_LOAD, PT_NOTE = 1, 4
PF_X, PF_W, PF_R = 1, 2, 4

EHDR32 = struct.Struct("<16sHHIIIIIHHHHHH")  # 52 bytes
PHDR32 = struct.Struct("<IIIIIIII")  # 32 bytes
SHDR32_SIZE = 40
NOTE_HDR = struct.Struct("<III")  # namesz, descsz, type: the same 12 bytes in ELF32 and ELF64
XEN_NOTE_NAME = b"Xen\x00"

# The header pvh_header writes: Ehdr, PT_LOAD, PT_NOTE, then the one note.
NOTE_OFFSET = EHDR32.size + 2 * PHDR32.size  # 0x74
HEADER_SIZE = NOTE_OFFSET + NOTE_HDR.size + len(XEN_NOTE_NAME) + 4  # 0x88

# QEMU's elfboot refuses these e_flags bits (LOAD_ELF_HEADER_HAS_ADDR; x86.c load_elfboot).
QEMU_ELFBOOT_BAD_FLAGS = 0x00010004
# QEMU tries a Linux bzImage ("HdrS" at 0x202) and multiboot (magic in the first 8 KiB) before PVH.
BZIMAGE_MAGIC_OFFSET = 0x202
BZIMAGE_MAGIC = b"HdrS"
MULTIBOOT_MAGIC = 0x1BADB002
MULTIBOOT_SEARCH = 8192 - 48
# Xen's libelf stops parsing after this many notes (ELF_MAX_TOTAL_NOTE_COUNT).
XEN_MAX_NOTES = 1024


def _size_message(n: int) -> str:
    if n == 0:
        return "FD image is empty"
    if n % MIB:
        return f"FD image is {n:#x} bytes, not a whole number of MiB: truncated, or not a flash device image"
    return f"FD image is {n // MIB} MiB; OvmfXen FDs are 1, 2 or 4 MiB"


def _check_base(base: int, fd_size: int) -> None:
    """The load base must be one both loaders accept for an image of ``fd_size`` (see check_elf)."""
    if not isinstance(base, int) or isinstance(base, bool):
        raise OvmfgenError(f"load base must be an integer, not {base!r}")
    if base % PAGE_SIZE:
        raise OvmfgenError(f"load base {base:#x} is not 4 KiB aligned")
    if base < LOW_LIMIT:
        raise OvmfgenError(f"load base {base:#x} is below 1 MiB")
    if base + fd_size > PVH_MMIO_HOLE:
        raise OvmfgenError(
            f"load base {base:#x} puts the end of the image ({base + fd_size:#x}) above the PVH MMIO hole "
            f"at {PVH_MMIO_HOLE:#x}"
        )


@dataclass(frozen=True)
class FdInfo:
    """What ``inspect_fd`` verified about an OvmfXen FD (all offsets are FD offsets)."""

    size: int
    entry_offset: int  # xenPVHEntryPoint: size - PVH_ENTRY_FROM_END
    pvh_main_offset: int  # where the entry's jmp lands: xenPVHMain
    vtf_offset: int  # the 'VTF\0' signature: size - VTF_FROM_END
    reset_vector_offset: int  # the 16-bit reset vector: size - RESET_VECTOR_FROM_END
    erased: int  # length of the run of 0xff bytes at offset 0 (the free header region)

    def entry(self, base: int = DEFAULT_BASE) -> int:
        """The physical PVH entry address once the FD is loaded at ``base``."""
        return base + self.entry_offset


def _hex(b: bytes) -> str:
    return b.hex(" ") if b else "nothing (end of file)"


def _jmp_target(buf: bytes, off: int, bits: int) -> int | None:
    """Decode a near/short jmp at ``off`` (EB rel8, or E9 rel16/rel32 by ``bits``): its target, else None."""
    if off < 0 or off >= len(buf):
        return None
    op = buf[off]
    if op == 0xEB and off + 2 <= len(buf):
        return off + 2 + struct.unpack_from("<b", buf, off + 1)[0]
    if op == 0xE9:
        width = 4 if bits == 32 else 2
        if off + 1 + width <= len(buf):
            rel = struct.unpack_from("<i" if width == 4 else "<h", buf, off + 1)[0]
            return off + 1 + width + rel
    return None


def reset_vector_problem(buf: bytes, entry_off: int) -> tuple[str | None, int]:
    """Check that XenResetVector's top bytes sit around ``entry_off`` (the PVH entry) in ``buf``.

    Returns ``(problem, pvh_main_offset)``: ``problem`` is None when the PVH entry jmp, the
    xenPVHMain it lands on, the VTF signature and the reset vector jmp are all there.
    """
    vtf_off = entry_off + PVH_ENTRY_FROM_END - VTF_FROM_END
    rv_off = entry_off + PVH_ENTRY_FROM_END - RESET_VECTOR_FROM_END
    if entry_off < 0:
        return f"PVH entry offset {entry_off:#x} is outside the image", -1
    found = buf[vtf_off : vtf_off + 4]
    if found != VTF_SIGNATURE:
        return f"no VTF signature at offset {vtf_off:#x} (found {_hex(found)})", -1
    target = _jmp_target(buf, entry_off, 32)
    if target is None:
        return f"no PVH entry jmp at offset {entry_off:#x} (found {_hex(buf[entry_off : entry_off + 5])})", -1
    if not 0 <= target < entry_off:
        return f"the PVH entry jmp at offset {entry_off:#x} lands at {target:#x}, outside the code below it", -1
    main = buf[target : target + XEN_PVH_MAIN_MAGIC_WITHIN]
    if not main.startswith(XEN_PVH_MAIN_PROLOGUE) or XEN_PVH_MAIN_MAGIC not in main:
        return (
            f"the PVH entry jmp at offset {entry_off:#x} lands at {target:#x}, which is not XenResetVector's "
            f"xenPVHMain (found {_hex(main[:8])})"
        ), -1
    if _jmp_target(buf, rv_off, 16) is None:
        return f"no reset vector jmp at offset {rv_off:#x} (found {_hex(buf[rv_off : rv_off + 3])})", -1
    return None, target


def inspect_fd(fd: bytes, reserved: int | None = None) -> FdInfo:
    """Verify that ``fd`` is an OvmfXen FD ready for a PVH header; raise OvmfgenError (one line) if not.

    Checks: the size is 1, 2 or 4 MiB; the header region at offset 0 is erased (all 0xff) for at least
    HEADER_SIZE bytes, and for ``reserved`` bytes when given; the top of the image holds
    XenResetVector: the PVH entry (a jmp to xenPVHMain) at end - 0x30, the VTF signature at end - 0x14
    and the reset vector at end - 0x10.
    """
    fd = bytes(fd)
    n = len(fd)
    if n not in FD_SIZES:
        raise OvmfgenError(_size_message(n))
    if fd[:4] == ELFMAG:
        raise OvmfgenError(
            "FD already starts with an ELF header (upstream's hand-written one?): its header region "
            "must be left erased (0xff)"
        )
    need = HEADER_SIZE
    if reserved is not None:
        if not HEADER_SIZE <= reserved <= n - PVH_ENTRY_FROM_END:
            raise OvmfgenError(
                f"reserved header region {reserved:#x} must hold the {HEADER_SIZE:#x}-byte ELF header and "
                f"end below the reset vector"
            )
        need = reserved
    head = fd[:need]
    if head.count(ERASED) != need:
        i = next(i for i, b in enumerate(head) if b != ERASED)
        raise OvmfgenError(
            f"FD header region is not erased: byte at offset {i:#x} is {head[i]:#04x}, expected 0xff "
            f"in the first {need:#x} bytes"
        )
    entry_off = n - PVH_ENTRY_FROM_END
    problem, main_off = reset_vector_problem(fd, entry_off)
    if problem is not None:
        raise OvmfgenError(f"not an OvmfXen FD (no XenResetVector at its top): {problem}")
    erased = n - len(fd.lstrip(b"\xff"))
    return FdInfo(
        size=n,
        entry_offset=entry_off,
        pvh_main_offset=main_off,
        vtf_offset=n - VTF_FROM_END,
        reset_vector_offset=n - RESET_VECTOR_FROM_END,
        erased=erased,
    )


# Firmware volume header (PI spec): FvLength at 0x20, "_FVH" at 0x28, HeaderLength at 0x30,
# ExtHeaderOffset at 0x34. The one reader of FV headers: read_fv_header / fv_headers.
FVH_SIGNATURE = b"_FVH"
FOUR_GIB = 1 << 32


@dataclass(frozen=True)
class FvHeader:
    """A valid firmware volume header (signature, sane lengths, 16-bit checksum zero) at ``offset``."""

    offset: int
    length: int            # FvLength: the whole volume
    header_length: int     # HeaderLength: where the block map ends (files start here without an ext header)
    ext_header_offset: int  # ExtHeaderOffset (0: none)

    @property
    def end(self) -> int:
        """Where the volume ends in the image."""
        return self.offset + self.length


def read_fv_header(data: bytes, off: int) -> FvHeader | None:
    """The firmware volume header at ``off`` of ``data``, or None when there is no valid one."""
    if off < 0 or off + 0x38 > len(data) or data[off + 0x28: off + 0x2C] != FVH_SIGNATURE:
        return None
    fv_length = int.from_bytes(data[off + 0x20: off + 0x28], "little")
    header_length = int.from_bytes(data[off + 0x30: off + 0x32], "little")
    if not (0x48 <= header_length <= fv_length <= len(data) - off) or header_length % 2:
        return None
    words = data[off: off + header_length]
    if sum(int.from_bytes(words[i: i + 2], "little") for i in range(0, header_length, 2)) % 0x10000:
        return None
    return FvHeader(off, fv_length, header_length, int.from_bytes(data[off + 0x34: off + 0x36], "little"))


def fv_header_ok(fd: bytes, off: int) -> bool:
    """A valid firmware volume header at ``off``."""
    return read_fv_header(fd, off) is not None


def fv_headers(image: bytes, start: int = 0, step: int = PAGE_SIZE) -> Iterator[FvHeader]:
    """Every valid firmware volume header at ``start``, ``start + step``, ... of ``image`` (volumes are
    page-aligned in an FD)."""
    for off in range(start, len(image), step):
        fv = read_fv_header(image, off)
        if fv is not None:
            yield fv


def boot_fv_offset(image: bytes) -> int:
    """The offset of the boot firmware volume (SECFV) in an FD or PVH ELF: the FV ending at the image's top.

    SEC runs from it on both entry paths and prints its address first (``SecCoreStartupWithStack``);
    releases move it (0x1CC000 in edk2-stable202502's 2 MiB layout, 0x1DC000 in edk2-stable202605's).
    """
    for fv in fv_headers(image):
        if fv.end == len(image):
            return fv.offset
    raise OvmfgenError("no firmware volume ends at the top of the image (no SECFV holding the reset vector)")


def boot_fv_address(image: bytes, entry: str) -> int:
    """Where SECFV sits when SEC runs: in RAM where the PVH loader put the image (``pvh``: the ELF's
    load address, 1 MiB for a bare FD) + its offset, or in flash just below 4 GiB (``reset``: the image
    is mapped to end at 4 GiB)."""
    off = boot_fv_offset(image)
    if entry == "pvh":
        loads = _Elf(image).loads if image[:4] == ELFMAG else []
        base = loads[0].paddr - loads[0].offset if loads else DEFAULT_BASE
        return base + off
    if entry == "reset":
        return FOUR_GIB - len(image) + off
    raise OvmfgenError(f"unknown boot entry {entry!r}: expected pvh or reset")


def pvh_header(fd_size: int, base: int = DEFAULT_BASE) -> bytes:
    """The PVH ELF header (HEADER_SIZE bytes) for an OvmfXen FD of ``fd_size`` loaded at ``base``.

    ELF32 little-endian, EM_386, ET_EXEC, two program headers: a PT_LOAD mapping the whole file
    (offset 0) at paddr = vaddr = ``base``, and a PT_NOTE (p_align 4) holding one note: "Xen",
    XEN_ELFNOTE_PHYS32_ENTRY, 4-byte descriptor = ``base + fd_size - 0x30``; e_entry is the same.
    A pure function of its arguments, so the patch stage can emit it as an FDF DATA block.
    """
    if fd_size not in FD_SIZES:
        raise OvmfgenError(_size_message(fd_size))
    _check_base(base, fd_size)
    entry = base + fd_size - PVH_ENTRY_FROM_END
    ident = ELFMAG + bytes([ELFCLASS32, ELFDATA2LSB, EV_CURRENT]) + bytes(9)  # OSABI SYSV, ABI version 0
    ehdr = EHDR32.pack(
        ident, ET_EXEC, EM_386, EV_CURRENT, entry,
        EHDR32.size,  # e_phoff: right after the file header
        0, 0,  # e_shoff, e_flags: no section headers, no flags (QEMU refuses some)
        EHDR32.size, PHDR32.size, 2,  # e_ehsize, e_phentsize, e_phnum
        SHDR32_SIZE, 0, 0,  # e_shentsize, e_shnum, e_shstrndx
    )
    note_size = NOTE_HDR.size + len(XEN_NOTE_NAME) + 4
    load = PHDR32.pack(PT_LOAD, 0, base, base, fd_size, fd_size, PF_R | PF_W | PF_X, PAGE_SIZE)
    # p_align 4, not 0: QEMU aligns the note name up to p_align (a division) when it reads the entry.
    note = PHDR32.pack(PT_NOTE, NOTE_OFFSET, base + NOTE_OFFSET, base + NOTE_OFFSET, note_size, note_size, PF_R, 4)
    body = NOTE_HDR.pack(len(XEN_NOTE_NAME), 4, XEN_ELFNOTE_PHYS32_ENTRY) + XEN_NOTE_NAME + struct.pack("<I", entry)
    header = ehdr + load + note + body
    assert len(header) == HEADER_SIZE
    return header


def make_pvh_elf(fd: bytes, base: int = DEFAULT_BASE, reserved: int | None = None) -> bytes:
    """``fd`` (verified by ``inspect_fd``) with ``pvh_header`` written over its erased header region.

    Every byte after the header is left as it was, so the result is still a valid FD for hvmloader.
    """
    fd = bytes(fd)
    info = inspect_fd(fd, reserved)
    header = pvh_header(info.size, base)
    return header + fd[len(header) :]


# --------------------------------------------------------------------------------------------------
# The acceptance checker.


@dataclass(frozen=True)
class Finding:
    """One loader rule: whether ``check_elf``'s input passes it, with the value that decided."""

    rule: str
    ok: bool
    detail: str


# Every rule check_elf reports, in order.
RULES = (
    "elf-header", "elf-class", "elf-data", "elf-machine", "elf-flags", "not-bzimage", "not-multiboot",
    "phdr-table", "shdr-table", "load-segments", "load-bounds", "load-filesz", "load-aligned",
    "load-above-1mib", "load-below-hole", "fd-loaded", "pvh-note", "note-name", "note-descsz",
    "note-align", "entry-agree", "entry-in-load", "e-entry", "entry-code",
)


@dataclass(frozen=True)
class _Phdr:
    index: int
    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


@dataclass(frozen=True)
class _Note:
    """A note a loader found: where it sits, its header, and what the loader read as the entry."""

    phdr: _Phdr
    offset: int
    namesz: int
    descsz: int
    name: bytes
    value: int | None


@dataclass(frozen=True)
class _QemuOutcome:
    """What QEMU's load_elf + read_pvh_start_addr would end up with."""

    crash: str | None  # why QEMU dies (SIGFPE) or fails the load, if it does
    value: int  # pvh_start_addr (0 = none found)
    notes: tuple[_Note, ...]  # the notes QEMU took the entry from, in order


def _align_up(n: int, m: int, bits: int) -> int:
    """QEMU_ALIGN_UP in ``bits``-bit unsigned arithmetic (m != 0)."""
    mask = (1 << bits) - 1
    return (((n + m - 1) & mask) // m * m) & mask


def _align4(n: int) -> int:
    """libelf's `(x + 3) & ~3` on an unsigned (32-bit) note size."""
    return ((n + 3) & 0xFFFFFFFF) & ~3


class _Elf:
    """A bounds-checked view of possibly garbage ELF bytes (never raises on malformed input)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.is64 = len(data) > 4 and data[4] == ELFCLASS64
        # Xen's libelf byte-swaps a big-endian image; QEMU refuses it (rule elf-data). Parse as declared.
        self.endian = ">" if len(data) > 5 and data[5] == ELFDATA2MSB else "<"
        self.ehdr_size = 64 if self.is64 else 52
        self.phdr_size = 56 if self.is64 else 32
        fmt = "16sHHIQQQIHHHHHH" if self.is64 else "16sHHIIIIIHHHHHH"
        fields = self.read(0, fmt) or (b"",) + (0,) * 13
        (_, self.e_type, self.e_machine, self.e_version, self.e_entry, self.e_phoff, self.e_shoff,
         self.e_flags, self.e_ehsize, self.e_phentsize, self.e_phnum, self.e_shentsize, self.e_shnum,
         self.e_shstrndx) = fields
        self.phdrs = self._phdrs()

    def read(self, off: int, fmt: str) -> tuple | None:
        s = struct.Struct(self.endian + fmt)
        if off < 0 or off + s.size > len(self.data):
            return None
        return s.unpack_from(self.data, off)

    def u(self, off: int, size: int) -> int | None:
        """An unsigned integer of ``size`` bytes at ``off``, or None when it is not inside the file."""
        if off < 0 or off + size > len(self.data):
            return None
        return int.from_bytes(self.data[off : off + size], "big" if self.endian == ">" else "little")

    def _phdrs(self) -> tuple[_Phdr, ...]:
        # QEMU reads e_phnum entries of sizeof(Elf_Phdr) at e_phoff (it ignores e_phentsize); rule
        # phdr-table makes sure Xen (which strides by e_phentsize) sees the same table.
        out = []
        for i in range(self.e_phnum):
            off = self.e_phoff + i * self.phdr_size
            if self.is64:
                f = self.read(off, "IIQQQQQQ")
                if f is None:
                    break
                p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align = f
            else:
                f = self.read(off, "IIIIIIII")
                if f is None:
                    break
                p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align = f
            out.append(_Phdr(i, p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align))
        return tuple(out)

    @property
    def loads(self) -> list[_Phdr]:
        return [p for p in self.phdrs if p.type == PT_LOAD]

    @property
    def notes(self) -> list[_Phdr]:
        return [p for p in self.phdrs if p.type == PT_NOTE]

    def offset_of(self, paddr: int) -> int | None:
        """The file offset a PT_LOAD maps ``paddr`` from (file-backed bytes only), or None."""
        for p in self.loads:
            if p.paddr <= paddr < p.paddr + p.filesz and p.offset + (paddr - p.paddr) < len(self.data):
                return p.offset + (paddr - p.paddr)
        return None

    # -- Xen: xen/common/libelf/libelf-dominfo.c elf_xen_parse / elf_xen_parse_notes -----------------

    def xen_notes(self) -> tuple[list[_Note], list[_Note], str | None]:
        """The PHYS32_ENTRY notes Xen parses, those it skips (PT_NOTE at p_offset 0), and a fatal error."""
        found: list[_Note] = []
        skipped: list[_Note] = []
        error = None
        total = 0
        for ph in self.notes:
            # "Some versions of binutils do not correctly set p_offset for note segments": Xen skips
            # PT_NOTEs at offset 0. We still walk them, to tell the user why the note is not seen.
            walk = skipped if ph.offset == 0 else found
            ptr, end = ph.offset, ph.offset + ph.filesz
            while ptr < end:
                if ph.offset != 0:
                    if total >= XEN_MAX_NOTES:
                        break  # elf_mark_broken("too many ELF notes")
                    total += 1
                hdr = self.read(ptr, "III")
                if hdr is None:
                    break
                namesz, descsz, ntype = hdr
                name_end = self.data.find(b"\x00", ptr + NOTE_HDR.size)
                # elf_note_name: NULL unless the C string ends inside the image; then strcmp(name, "Xen").
                is_xen = name_end >= 0 and self.data[ptr + NOTE_HDR.size : name_end] == b"Xen"
                if is_xen and ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                    # elf_note_numeric: descsz 1, 2, 4 or 8, else 0 (out of the image: 0 too).
                    desc = ptr + NOTE_HDR.size + _align4(namesz)
                    value = self.u(desc, descsz) if descsz in (1, 2, 4, 8) else 0
                    value = value or 0
                    name = self.data[ptr + NOTE_HDR.size : ptr + NOTE_HDR.size + min(namesz, 64)]
                    walk.append(_Note(ph, ptr, namesz, descsz, name, value))
                    if ph.offset != 0 and value > 0xFFFFFFFF and error is None:
                        error = f"PHYS32_ENTRY {value:#x} out of bounds"  # elf_xen_parse_note fails
                # elf_note_next: terminate when the next note is not inside the image.
                nxt = ptr + NOTE_HDR.size + _align4(namesz) + _align4(descsz)
                if nxt >= len(self.data):
                    break
                ptr = nxt
        return found, skipped, error

    # -- QEMU: include/hw/elf_ops.h load_elf + hw/i386/x86.c read_pvh_start_addr ----------------------

    def qemu(self) -> _QemuOutcome:
        """Replay QEMU 7.2's load_elf over the program headers with the PVH note callback."""
        bits = 64 if self.is64 else 32
        mask = (1 << bits) - 1
        size = len(self.data)
        value = 0
        notes: list[_Note] = []

        def fail(why: str) -> _QemuOutcome:
            return _QemuOutcome(why, value, tuple(notes))

        for ph in self.phdrs:
            if ph.type not in (PT_LOAD, PT_NOTE):
                continue
            if ph.filesz > 0 and size < ph.filesz + ph.offset:
                kind = "PT_LOAD" if ph.type == PT_LOAD else "PT_NOTE"
                return fail(f"{kind} #{ph.index} extends past the end of the file: load fails")
            if ph.type == PT_LOAD:
                continue
            if ph.filesz == 0:
                continue  # data stays NULL: get_elf_note_type(NULL) finds nothing
            # get_elf_note_type: walk by 12 + ALIGN_UP(namesz, p_align) + ALIGN_UP(descsz, p_align)
            # until n_type matches (the name is not looked at).
            nhdr = ph.offset
            while True:
                hdr = self.read(nhdr, "III")
                if hdr is None:
                    return fail(f"PT_NOTE #{ph.index}: QEMU reads a note header past the end of the file "
                                f"at {nhdr:#x}")
                namesz, descsz, ntype = hdr
                if ntype == XEN_ELFNOTE_PHYS32_ENTRY:
                    break
                if ph.align == 0:
                    return fail(f"PT_NOTE #{ph.index} has p_align 0: QEMU divides by it stepping over note type "
                                f"{ntype} (SIGFPE)")
                step = NOTE_HDR.size + _align_up(namesz, ph.align, bits) + _align_up(descsz, ph.align, bits)
                step &= mask
                if step > ph.filesz:
                    nhdr = -1
                    break
                nhdr += step
            if nhdr < 0:
                continue
            namesz, descsz, _ = hdr
            if ph.align == 0:
                return fail(f"PT_NOTE #{ph.index} has p_align 0: QEMU divides by it reading the PVH entry (SIGFPE)")
            desc = nhdr + NOTE_HDR.size + _align_up(namesz, ph.align, bits)
            # QEMU 7.2 reads a uint32_t for ELF32 and a size_t for ELF64 (fw_cfg keeps the low 32 bits).
            raw = self.u(desc, 8 if self.is64 else 4)
            if raw is None:
                return fail(f"PT_NOTE #{ph.index}: QEMU reads the PVH entry past the end of the file at {desc:#x}")
            value = raw
            name = self.data[nhdr + NOTE_HDR.size : nhdr + NOTE_HDR.size + min(namesz, 64)]
            notes.append(_Note(ph, nhdr, namesz, descsz, name, raw & 0xFFFFFFFF))
        return _QemuOutcome(None, value, tuple(notes))


def check_elf(data: bytes) -> list[Finding]:
    """Predict whether Xen's libelf/libxc (PVH) and QEMU's PVH loader accept ``data``.

    One Finding per rule in RULES, in that order, carrying the value that decided. Never raises on
    malformed input: what cannot be checked is reported as a failed rule ("not checked: ...").
    """
    data = bytes(data)
    out: list[Finding] = []

    def add(rule: str, ok: bool, detail: str) -> None:
        out.append(Finding(rule, bool(ok), detail))

    def rest(reason: str) -> list[Finding]:
        done = {f.rule for f in out}
        return out + [Finding(r, False, f"not checked: {reason}") for r in RULES if r not in done]

    n = len(data)
    # Xen elf_is_elfbinary: at least sizeof(Elf32_Ehdr) bytes and the magic; QEMU reads a full Ehdr.
    if n < EHDR32.size or data[:4] != ELFMAG:
        what = f"file is {n} bytes" if n < EHDR32.size else f"magic is {_hex(data[:4])}"
        add("elf-header", False, f"not an ELF file ({what})")
        return rest("no ELF header")
    elf = _Elf(data)
    if n < elf.ehdr_size:
        add("elf-header", False, f"file is {n} bytes, shorter than the {elf.ehdr_size}-byte ELF64 header")
        return rest("no ELF header")
    add("elf-header", True, f"ELF magic, {elf.ehdr_size}-byte header")

    # Both loaders parse anything but ELFCLASS64 as ELF32; a class that is neither is not a valid ELF.
    cls = data[4]
    add("elf-class", cls in (ELFCLASS32, ELFCLASS64),
        {ELFCLASS32: "ELFCLASS32", ELFCLASS64: "ELFCLASS64"}.get(cls, f"invalid EI_CLASS {cls}"))
    # QEMU: load_elfboot passes ELFDATA2LSB: any other EI_DATA is ELF_LOAD_WRONG_ENDIAN.
    add("elf-data", data[5] == ELFDATA2LSB,
        "ELFDATA2LSB" if data[5] == ELFDATA2LSB else f"EI_DATA {data[5]}: QEMU wants little-endian (ELFDATA2LSB)")
    # QEMU: I386_ELF_MACHINE is EM_X86_64 for qemu-system-x86_64, which also takes EM_386.
    mach = {EM_386: "EM_386", EM_X86_64: "EM_X86_64"}.get(elf.e_machine)
    add("elf-machine", mach is not None, mach or f"e_machine {elf.e_machine}: QEMU wants EM_386 or EM_X86_64")
    # QEMU load_elfboot: "elfboot unsupported flags" for LOAD_ELF_HEADER_HAS_ADDR bits.
    add("elf-flags", not elf.e_flags & QEMU_ELFBOOT_BAD_FLAGS,
        f"e_flags {elf.e_flags:#x}" + ("" if not elf.e_flags & QEMU_ELFBOOT_BAD_FLAGS
                                       else f": QEMU's elfboot refuses bits {QEMU_ELFBOOT_BAD_FLAGS:#x}"))

    # QEMU x86_load_linux: "HdrS" at 0x202 means a Linux bzImage; it is booted as one, not as PVH.
    hdrs = data[BZIMAGE_MAGIC_OFFSET : BZIMAGE_MAGIC_OFFSET + 4] == BZIMAGE_MAGIC
    add("not-bzimage", not hdrs,
        f"'HdrS' at {BZIMAGE_MAGIC_OFFSET:#x}: QEMU boots it as a Linux bzImage" if hdrs
        else f"no 'HdrS' at {BZIMAGE_MAGIC_OFFSET:#x}")
    # QEMU load_multiboot runs before elfboot: a multiboot header (magic + flags + checksum == 0)
    # in the first 8 KiB wins.
    mb = _multiboot_offset(data)
    add("not-multiboot", mb is None,
        "no multiboot header in the first 8 KiB" if mb is None
        else f"multiboot header at {mb:#x}: QEMU boots it as multiboot, not PVH")

    # Xen elf_init: e_phoff + e_phentsize * phnum inside the file ("phdr overflow"); QEMU reads
    # e_phnum * sizeof(Elf_Phdr) bytes at e_phoff (and ignores e_phentsize).
    table_end = elf.e_phoff + elf.e_phnum * elf.phdr_size
    if elf.e_phnum == 0:
        add("phdr-table", False, "e_phnum is 0: no program headers")
    elif elf.e_phentsize != elf.phdr_size:
        add("phdr-table", False,
            f"e_phentsize {elf.e_phentsize}, expected {elf.phdr_size}: Xen strides by it, QEMU does not")
    else:
        add("phdr-table", table_end <= n,
            f"{elf.e_phnum} entries at {elf.e_phoff:#x}..{table_end:#x}"
            + ("" if table_end <= n else f", past the end of the file ({n:#x})"))
    # Xen elf_init: e_shoff + e_shentsize * e_shnum inside the file ("shdr overflow").
    sh_end = elf.e_shoff + elf.e_shentsize * elf.e_shnum
    add("shdr-table", sh_end <= n,
        (f"{elf.e_shnum} section headers" if elf.e_shnum else "no section headers")
        + ("" if sh_end <= n else f", table ends at {sh_end:#x}, past the end of the file ({n:#x})"))

    loads = [p for p in elf.loads if p.memsz or p.filesz]
    # Xen elf_phdr_is_loadable: PT_LOAD with any of PF_R/W/X; QEMU loads every PT_LOAD regardless.
    flagless = [p for p in loads if not p.flags & (PF_R | PF_W | PF_X)]
    if not loads:
        add("load-segments", False, "no PT_LOAD segment with a non-zero size")
        return rest("nothing to load")
    add("load-segments", not flagless,
        f"{len(loads)} PT_LOAD segment(s)" + (
            f"; #{flagless[0].index} has no R/W/X flag: Xen skips it, QEMU loads it" if flagless else ""))

    # QEMU: "g_mapped_file_get_length < file_size + data_offset" fails the load, and so does a total
    # memsz over INT_MAX; Xen elf_load_image's elf_memcpy_safe marks the image broken.
    past = [p for p in loads if p.filesz and p.offset + p.filesz > n]
    total_mem = sum(p.memsz for p in loads)
    if past:
        p = past[0]
        add("load-bounds", False,
            f"PT_LOAD #{p.index} file bytes {p.offset:#x}..{p.offset + p.filesz:#x} go past the end of the "
            f"file ({n:#x})")
    elif total_mem > 0x7FFFFFFF:
        add("load-bounds", False, f"segments total {total_mem:#x} bytes: QEMU fails with ELF_LOAD_TOO_BIG")
    else:
        add("load-bounds", True, "; ".join(
            f"#{p.index} file {p.offset:#x}..{p.offset + p.filesz:#x}" for p in loads[:4]))
    # Xen elf_load_image zeroes memsz - filesz bytes after the copy: filesz > memsz underflows.
    bad = [p for p in loads if p.filesz > p.memsz]
    add("load-filesz", not bad,
        f"PT_LOAD #{bad[0].index} p_filesz {bad[0].filesz:#x} > p_memsz {bad[0].memsz:#x}" if bad
        else "; ".join(f"#{p.index} filesz {p.filesz:#x} <= memsz {p.memsz:#x}" for p in loads[:4]))

    # Xen elf_parse_binary: pstart/pend from the loadable segments' paddr and memsz (uint64).
    xen_loads = [p for p in loads if p.flags & (PF_R | PF_W | PF_X)] or loads
    pstart = min(p.paddr for p in xen_loads)
    pend = max((p.paddr + p.memsz) & 0xFFFFFFFFFFFFFFFF for p in xen_loads)
    # libxc xc_dom_alloc_segment -> xc_dom_alloc_pad: "segment boundary isn't page aligned".
    add("load-aligned", pstart % PAGE_SIZE == 0,
        f"load start {pstart:#x}" + ("" if pstart % PAGE_SIZE == 0 else " is not 4 KiB aligned (libxc refuses it)"))
    # libxl puts a PVH guest's RSDP at 0xFFFC0 and its ACPI tables just below 1 MiB; under QEMU,
    # SeaBIOS (which runs pvh.bin) owns low memory and 0xE0000-0xFFFFF. Load at 1 MiB or above.
    add("load-above-1mib", pstart >= LOW_LIMIT,
        f"load start {pstart:#x}" + ("" if pstart >= LOW_LIMIT else " is below 1 MiB (BIOS/ACPI area)"))
    # libxl: a PVH guest's RAM below 4 GiB ends where the MMIO hole starts (ACPI_INFO_PHYSICAL_ADDRESS);
    # under QEMU the top of 4 GiB holds the BIOS flash, IOAPIC, HPET and LAPIC.
    add("load-below-hole", pend <= PVH_MMIO_HOLE,
        f"load end {pend:#x}"
        + ("" if pend <= PVH_MMIO_HOLE else f" is above the PVH MMIO hole at {PVH_MMIO_HOLE:#x}"))
    # ovmfgen: the FD is loaded whole (its top holds the reset vector, SEC and the PVH entry).
    gap = _first_unmapped(loads, n)
    add("fd-loaded", gap is None,
        f"PT_LOAD maps the whole file ({n:#x} bytes)" if gap is None
        else f"PT_LOAD maps {gap:#x} of the file's {n:#x} bytes: the FD's top (reset vector, SEC) is not loaded")

    # Xen: elf_xen_parse looks for the note in PT_NOTEs with p_offset != 0; xc_dom_guest_type then
    # needs PHYS32_ENTRY set for an HVM container ("image not capable of booting inside a HVM container").
    xen_found, xen_skipped, xen_error = elf.xen_notes()
    qemu = elf.qemu()
    note = xen_found[-1] if xen_found else None
    if note is not None:
        add("pvh-note", xen_error is None,
            xen_error or f"Xen PHYS32_ENTRY note (type {XEN_ELFNOTE_PHYS32_ENTRY}) in PT_NOTE #{note.phdr.index} "
            f"at {note.offset:#x}")
    elif xen_skipped:
        note = xen_skipped[-1]
        add("pvh-note", False,
            f"the PHYS32_ENTRY note is in PT_NOTE #{note.phdr.index} with p_offset 0, which Xen skips")
    elif not elf.notes:
        add("pvh-note", False, "no PT_NOTE segment")
    else:
        add("pvh-note", False,
            f"no 'Xen' note of type {XEN_ELFNOTE_PHYS32_ENTRY} (PHYS32_ENTRY) in the PT_NOTE segments")
    # The note's own shape: judged on the note Xen uses, else on the one QEMU found.
    shape = note or (qemu.notes[-1] if qemu.notes else None)
    if shape is None:
        add("note-name", False, "no PHYS32_ENTRY note")
        add("note-descsz", False, "no PHYS32_ENTRY note")
    else:
        # Xen strcmp()s the C string; namesz 4 with "Xen\0" keeps its and QEMU's offsets in step.
        good_name = shape.namesz == len(XEN_NOTE_NAME) and shape.name == XEN_NOTE_NAME
        add("note-name", good_name,
            f"namesz {shape.namesz}, name {shape.name!r}" + ("" if good_name else ": expected namesz 4, b'Xen\\x00'"))
        # Xen elf_note_numeric reads descsz 1, 2, 4 or 8 bytes, else yields 0.
        add("note-descsz", shape.descsz in (1, 2, 4, 8),
            f"descsz {shape.descsz}" + ("" if shape.descsz in (1, 2, 4, 8) else ": Xen reads only 1, 2, 4 or 8"))

    # QEMU read_pvh_start_addr: the descriptor sits at 12 + QEMU_ALIGN_UP(namesz, p_align): p_align 0
    # divides by zero (QEMU 7.2 SIGFPE); an alignment that moves the descriptor off the 4-byte
    # boundary the ELF spec (and Xen) use reads the wrong bytes.
    if qemu.crash is not None:
        add("note-align", False, qemu.crash)
    elif not qemu.notes:
        aligns = ", ".join(f"#{p.index} p_align {p.align}" for p in elf.notes) or "no PT_NOTE"
        add("note-align", False, f"QEMU finds no note of type {XEN_ELFNOTE_PHYS32_ENTRY} ({aligns})")
    else:
        q = qemu.notes[-1]
        spec = NOTE_HDR.size + _align4(q.namesz)
        got = NOTE_HDR.size + _align_up(q.namesz, q.phdr.align, 64 if elf.is64 else 32)
        add("note-align", got == spec,
            f"PT_NOTE #{q.phdr.index} p_align {q.phdr.align}" + (
                "" if got == spec else f": QEMU reads the descriptor at note+{got:#x}, not note+{spec:#x}"))

    # Both loaders must arrive at the same, non-zero PVH entry (QEMU: "without PVH ELF Note" on 0).
    xen_entry = xen_found[-1].value if xen_found else None
    qemu_entry = qemu.value & 0xFFFFFFFF if qemu.crash is None else None
    if qemu.crash is None and qemu.value == 0:
        add("entry-agree", False,
            "QEMU finds no PVH entry (0): \"Error loading uncompressed kernel without PVH ELF Note\"")
    elif xen_entry is None or qemu_entry is None:
        add("entry-agree", False, "Xen: " + (f"{xen_entry:#x}" if xen_entry is not None else "no entry")
            + ", QEMU: " + (f"{qemu_entry:#x}" if qemu_entry is not None else "fails"))
    else:
        add("entry-agree", xen_entry == qemu_entry and xen_entry != 0,
            f"PVH entry {xen_entry:#x}" if xen_entry == qemu_entry and xen_entry
            else f"Xen reads {xen_entry:#x}, QEMU reads {qemu_entry:#x}")

    entry = xen_entry if xen_entry is not None else qemu_entry
    if entry is None:
        add("entry-in-load", False, "no PVH entry")
    else:
        # Both loaders jump to the entry in guest memory: it must be loaded code (file-backed bytes).
        seg = next((p for p in loads if p.paddr <= entry < p.paddr + p.filesz), None)
        add("entry-in-load", seg is not None,
            f"PVH entry {entry:#x} in PT_LOAD #{seg.index} [{seg.paddr:#x}, {seg.paddr + seg.filesz:#x})"
            if seg is not None else f"PVH entry {entry:#x} is outside every PT_LOAD's file bytes")
    # Xen elf_xen_addr_calc_check: e_entry (virt_entry) within [virt_kstart, virt_kend]
    # ("ELF start or entries are out of bounds").
    ok = pstart <= elf.e_entry <= pend
    add("e-entry", ok, f"e_entry {elf.e_entry:#x}" + (
        f" within [{pstart:#x}, {pend:#x}]" if ok else f" outside [{pstart:#x}, {pend:#x}]: Xen refuses it"))

    # ovmfgen: the entry is XenResetVector's PVH entry (a jmp to xenPVHMain, VTF and reset vector
    # above it), i.e. the header matches the image it sits on.
    if entry is None:
        add("entry-code", False, "no PVH entry")
    else:
        off = elf.offset_of(entry)
        if off is None:
            add("entry-code", False, f"PVH entry {entry:#x} is not in the file")
        else:
            problem, main = reset_vector_problem(data, off)
            add("entry-code", problem is None,
                f"PVH entry {entry:#x} (file offset {off:#x}) jumps to xenPVHMain at {main:#x}" if problem is None
                else f"PVH entry {entry:#x} (file offset {off:#x}): {problem}")
    assert [f.rule for f in out] == list(RULES)
    return out


def _multiboot_offset(data: bytes) -> int | None:
    """QEMU load_multiboot's scan: the first 4-aligned magic whose magic + flags + checksum wraps to 0."""
    head = data[:8192]
    for i in range(0, min(MULTIBOOT_SEARCH, len(head) - 11), 4):
        magic, flags, checksum = struct.unpack_from("<III", head, i)
        if magic == MULTIBOOT_MAGIC and (magic + flags + checksum) & 0xFFFFFFFF == 0:
            return i
    return None


def _first_unmapped(loads: list[_Phdr], n: int) -> int | None:
    """The first file offset no PT_LOAD's file bytes cover, or None when they cover [0, n)."""
    covered = 0
    for p in sorted(loads, key=lambda p: p.offset):
        if p.offset > covered:
            break
        covered = max(covered, p.offset + p.filesz)
    return None if covered >= n else covered


# --------------------------------------------------------------------------------------------------
# Commands.


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OvmfgenError(f"cannot read {what} {display_path(path)}: {exc.strerror or exc}") from None


def _located(exc: OvmfgenError, path: str | Path) -> OvmfgenError:
    return exc if exc.location is not None else OvmfgenError(exc.message, Location(display_path(path)))


def elf_command(fd_path: str | Path, output: str | Path, base: str | int = "0x100000") -> None:
    """``invoke elf``: write the PVH ELF for ``fd_path`` to ``output`` (atomically) and summarise it.

    Bad input is one OvmfgenError line and no output file.
    """
    try:
        load_base = base if isinstance(base, int) else int(str(base), 0)
    except ValueError:
        raise OvmfgenError(f"invalid load base {base!r}: expected a number such as 0x100000") from None
    fd = _read(fd_path, "FD")
    try:
        image = make_pvh_elf(fd, load_base)
    except OvmfgenError as exc:
        raise _located(exc, fd_path) from None
    findings = check_elf(image)
    failed = [f for f in findings if not f.ok]
    if failed:  # a bug in pvh_header, never the user's input: refuse to write a broken image
        raise OvmfgenError(f"internal: the generated ELF fails rule {failed[0].rule}: {failed[0].detail}")
    out = Path(output)
    atomic_write_bytes(out, image)
    size = len(image)
    entry = load_base + size - PVH_ENTRY_FROM_END
    print(
        f"{display_path(out)}: PVH ELF, entry {entry:#x}, loads {load_base:#x}-{load_base + size:#x} "
        f"({size // MIB} MiB), {len(findings)} loader rules ok"
    )


def check_elf_command(path: str | Path) -> None:
    """``invoke check-elf``: print one line per rule; raise OvmfgenError (exit 1) if any failed."""
    findings = check_elf(_read(path, "ELF"))
    for f in findings:
        print(f"{'ok  ' if f.ok else 'FAIL'} {f.rule}: {f.detail}")
    sys.stdout.flush()
    failed = [f.rule for f in findings if not f.ok]
    if failed:
        raise OvmfgenError(
            f"{len(failed)} of {len(findings)} loader rules failed ({', '.join(failed)})",
            Location(display_path(path)),
        )
