"""A file's PE32 image out of a built OVMF image: firmware volumes, FFS files, sections (PI spec).

The Shell boot takes the UEFI Shell from the image under test, as edk2's own PlatformCI copies the
build's Shell.efi to ``\\EFI\\BOOT\\BOOTX64.EFI`` on its FAT disk: since edk2-stable202605 OVMF
registers its built-in Shell as an application (LOAD_OPTION_CATEGORY_APP), which BDS no longer boots
on its own. The Shell sits in DXEFV, inside FVMAIN_COMPACT's LZMA-compressed section; Python's
``lzma`` reads edk2's LZMA (the "alone" format: properties, size, stream). Pure bytes, no tools.
"""

from __future__ import annotations

import lzma
import uuid
from collections.abc import Iterator

from ovmfgen.elf import fv_header_ok, fv_headers, read_fv_header
from ovmfgen.errors import OvmfgenError

#: ShellPkg's gUefiShellFileGuid, the Shell application's FILE_GUID in every OvmfPkg platform.
SHELL_FILE_GUID = "7C04A583-9E3E-4F1C-AD65-E05268D0B4D1"
#: gLzmaCustomDecompressGuid: a GUID-defined section holding edk2's LZMA stream.
LZMA_GUID = uuid.UUID("EE4E5898-3914-4259-9D6E-DC7BD79403CF").bytes_le

_FFS_ATTRIB_LARGE_FILE = 0x01
_FFS_PAD = 0xF0
_SECTION_COMPRESSION = 0x01
_SECTION_GUID_DEFINED = 0x02
_SECTION_PE32 = 0x10
_SECTION_FV_IMAGE = 0x17
# Nesting deeper than an FD -> FVMAIN_COMPACT -> DXEFV -> file is not an OVMF image.
_MAX_DEPTH = 8


def _u24(b: bytes, off: int) -> int:
    return int.from_bytes(b[off:off + 3], "little")


def _sections(data: bytes, depth: int) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each section in ``data``, GUID-defined LZMA and compression sections opened."""
    off = 0
    while off + 4 <= len(data):
        size, kind, head = _u24(data, off), data[off + 3], 4
        if size == 0xFFFFFF:
            size, head = int.from_bytes(data[off + 4:off + 8], "little"), 8
        if size < head or off + size > len(data):
            return
        body = data[off + head:off + size]
        if kind == _SECTION_GUID_DEFINED and len(body) >= 20:
            data_offset = int.from_bytes(body[16:18], "little") - head
            if body[:16] == LZMA_GUID and depth < _MAX_DEPTH:
                try:
                    inner = lzma.decompress(body[data_offset:], format=lzma.FORMAT_ALONE)
                except lzma.LZMAError as exc:
                    raise OvmfgenError(f"a compressed firmware section does not decompress: {exc}") from None
                yield from _sections(inner, depth + 1)
            elif depth < _MAX_DEPTH:
                yield from _sections(body[data_offset:], depth + 1)
        elif kind == _SECTION_COMPRESSION and len(body) >= 5 and body[4] == 0 and depth < _MAX_DEPTH:
            yield from _sections(body[5:], depth + 1)    # EFI_NOT_COMPRESSED
        else:
            yield kind, body
        off = (off + size + 3) & ~3


def _files(fv: bytes, depth: int) -> Iterator[tuple[bytes, bytes]]:
    """(name GUID bytes, sections) of each FFS file in the volume ``fv`` and the volumes inside it."""
    header = read_fv_header(fv, 0)
    if header is None:
        return
    off, ext = header.header_length, header.ext_header_offset
    if ext:
        off = ext + int.from_bytes(fv[ext + 16:ext + 20], "little")
    end = min(len(fv), header.length)
    while True:
        off = (off + 7) & ~7
        if off + 24 > end or fv[off:off + 24] == b"\xff" * 24:
            return
        name, kind, attrs = fv[off:off + 16], fv[off + 18], fv[off + 19]
        size, head = _u24(fv, off + 20), 24
        if attrs & _FFS_ATTRIB_LARGE_FILE:
            size, head = int.from_bytes(fv[off + 24:off + 32], "little"), 32
        if size < head or off + size > end:
            return
        if kind != _FFS_PAD:
            body = fv[off + head:off + size]
            yield name, body
            for skind, sbody in _sections(body, depth):
                if skind == _SECTION_FV_IMAGE and depth < _MAX_DEPTH and fv_header_ok(sbody, 0):
                    yield from _files(sbody, depth + 1)
        off += size


def file_pe32(image: bytes, file_guid: str = SHELL_FILE_GUID) -> bytes:
    """The PE32 image of the FFS file ``file_guid`` in an OVMF image (an FD, or a PVH ELF of one).

    Every firmware volume of the image is searched, with the volumes nested in (compressed)
    sections; one clear error when the file or its PE32 section is not there.
    """
    want = uuid.UUID(file_guid).bytes_le
    for header in fv_headers(image):
        fv = image[header.offset:header.end]
        for name, body in _files(fv, 0):
            if name != want:
                continue
            for kind, data in _sections(body, 0):
                if kind == _SECTION_PE32:
                    return data
            raise OvmfgenError(f"file {file_guid} of the firmware image has no PE32 section")
    raise OvmfgenError(f"the firmware image holds no file {file_guid}")


def _fv_name(fv: bytes, ext_header_offset: int) -> str | None:
    """The FvNameGuid of the extended header (upper case), or None without one."""
    if not ext_header_offset or ext_header_offset + 20 > len(fv):
        return None
    return str(uuid.UUID(bytes_le=fv[ext_header_offset:ext_header_offset + 16])).upper()


def _nested(fv: bytes, depth: int) -> Iterator[tuple[str | None, bytes]]:
    """The volume ``fv`` (name, its FvLength bytes) and, depth first in file order, the volumes in its files."""
    header = read_fv_header(fv, 0)
    if header is None:
        return
    fv = fv[:header.length]
    yield _fv_name(fv, header.ext_header_offset), fv
    if depth >= _MAX_DEPTH:
        return
    for _name, body in _files(fv, _MAX_DEPTH):     # files of this volume only: nested ones come below
        for kind, data in _sections(body, depth):
            if kind == _SECTION_FV_IMAGE and fv_header_ok(data, 0):
                yield from _nested(data, depth + 1)


def volumes(image: bytes) -> list[tuple[str | None, bytes]]:
    """Every firmware volume of an OVMF image (an FD, or a PVH ELF of one) with the volumes inside its
    files' (compressed) sections, as (FvNameGuid or None, the volume's bytes): the bytes SEC puts in RAM
    for PEIFV and DXEFV are these."""
    out: list[tuple[str | None, bytes]] = []
    for header in fv_headers(image):
        out.extend(_nested(image[header.offset:header.end], 0))
    return out
