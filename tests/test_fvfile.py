"""A file's PE32 out of an OVMF image: volumes built here byte by byte (PI spec layout); the real images are
checked in tests/integration/test_boot_qemu.py."""

from __future__ import annotations

import lzma
import uuid
import pytest

from ovmfgen.fvfile import LZMA_GUID, SHELL_FILE_GUID, file_pe32, volumes
from ovmfgen.errors import OvmfgenError

OTHER = "11111111-2222-3333-4444-555555555555"
COMPACT = "22222222-2222-3333-4444-555555555555"


def section(kind: int, body: bytes) -> bytes:
    data = (4 + len(body)).to_bytes(3, "little") + bytes([kind]) + body
    return data + b"\0" * (-len(data) % 4)


def lzma_section(inner: bytes) -> bytes:
    # EFI_GUID_DEFINED_SECTION: GUID, DataOffset (from the section's start), Attributes.
    stream = lzma.compress(inner, format=lzma.FORMAT_ALONE)
    # edk2's LzmaCompress writes the real size where the alone format allows "unknown".
    stream = stream[:5] + len(inner).to_bytes(8, "little") + stream[13:]
    return section(0x02, LZMA_GUID + (4 + 20).to_bytes(2, "little") + (1).to_bytes(2, "little") + stream)


def ffs(guid: str, kind: int, body: bytes) -> bytes:
    header = uuid.UUID(guid).bytes_le + b"\0\0" + bytes([kind, 0]) + (24 + len(body)).to_bytes(3, "little") + b"\xf8"
    data = header + body
    return data + b"\xff" * (-len(data) % 8)


def volume(files: list[bytes], size: int = 0x4000, name: str | None = None) -> bytes:
    """An FV of ``size`` bytes holding ``files``; ``name``: an extended header with that FvNameGuid."""
    header = bytearray(0x48)
    header[0x20:0x28] = size.to_bytes(8, "little")
    header[0x28:0x2C] = b"_FVH"
    header[0x30:0x32] = (0x48).to_bytes(2, "little")
    header[0x37] = 2
    ext = b""
    if name:
        header[0x34:0x36] = (0x48).to_bytes(2, "little")
        ext = uuid.UUID(name).bytes_le + (20).to_bytes(4, "little") + b"\xff" * 4   # FvName, ExtHeaderSize, pad
    checksum = (-sum(int.from_bytes(header[i:i + 2], "little") for i in range(0, 0x48, 2))) % 0x10000
    header[0x32:0x34] = checksum.to_bytes(2, "little")
    body = bytes(header) + ext + b"".join(files)
    assert len(body) <= size
    return body + b"\xff" * (size - len(body))


def fd_with_shell(pe32: bytes) -> bytes:
    """A variable-store-like FV, then FVMAIN_COMPACT: an LZMA section holding DXEFV, which holds the file."""
    dxefv = volume([ffs(OTHER, 0x07, section(0x10, b"MZother")), ffs(SHELL_FILE_GUID, 0x09, section(0x10, pe32))])
    compact = volume([ffs(COMPACT, 0x0B, lzma_section(section(0x17, dxefv)))], size=0x8000)
    return volume([], size=0x1000) + compact


def test_the_file_is_found_through_the_compressed_volume() -> None:
    assert file_pe32(fd_with_shell(b"MZ" + bytes(range(200)))) == b"MZ" + bytes(range(200))
    assert file_pe32(fd_with_shell(b"MZx"), OTHER) == b"MZother"


def test_a_missing_file_or_section_is_one_clear_error() -> None:
    image = fd_with_shell(b"MZx")
    with pytest.raises(OvmfgenError, match=r"error: the firmware image holds no file 99999999-2222"):
        file_pe32(image, "99999999-2222-3333-4444-555555555555")
    no_pe = volume([ffs(SHELL_FILE_GUID, 0x09, section(0x19, b"raw"))])
    with pytest.raises(OvmfgenError, match=f"error: file {SHELL_FILE_GUID} of the firmware image has no PE32 section$"):
        file_pe32(no_pe)
    with pytest.raises(OvmfgenError, match="holds no file"):
        file_pe32(b"\0" * 0x3000)


def test_a_corrupt_compressed_section_is_one_clear_error() -> None:
    bad = volume([ffs(OTHER, 0x0B, section(0x02, LZMA_GUID + (24).to_bytes(2, "little") + b"\1\0" + b"junk" * 8))])
    with pytest.raises(OvmfgenError, match="error: a compressed firmware section does not decompress"):
        file_pe32(bad)


def test_volumes_lists_the_nested_volumes_with_their_names_and_bytes() -> None:
    pei = volume([ffs(OTHER, 0x06, section(0x10, b"MZpei"))], size=0x2000, name="6938079B-B503-4E3D-9D24-B28337A25806")
    dxe = volume([ffs(SHELL_FILE_GUID, 0x09, section(0x10, b"MZshell"))], size=0x3000, name=OTHER)
    compact = volume([ffs(COMPACT, 0x0B, lzma_section(section(0x17, pei) + section(0x17, dxe)))], size=0x8000,
                     name=COMPACT)
    found = volumes(volume([], size=0x1000) + compact)
    assert [(n, len(b)) for n, b in found] == [(None, 0x1000), (COMPACT.upper(), 0x8000),
                                               ("6938079B-B503-4E3D-9D24-B28337A25806", 0x2000), (OTHER, 0x3000)]
    assert found[2][1] == pei and found[3][1] == dxe
    # The Shell is still found through the named volumes (files start after the extended header).
    assert file_pe32(compact) == b"MZshell"
