"""Predicted measurements: the events edk2 logs for an image, the PCR values they make, the pcrlock file.

Volumes are built here byte by byte (tests/test_fvfile.py's helpers); the real images, their
virt-fw-measure check and a real TPM's PCRs are in tests/integration/test_tpm.py.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from ovmfgen.builder.measure import (DXEFV_NAME, PEIFV_NAME, cross_check, firmware_events, fv_bases_from_report,
                                     pcr_values, pcrlock)
from ovmfgen.errors import OvmfgenError
from tests.test_fvfile import COMPACT, OTHER, ffs, lzma_section, section, volume

BASES = {"PEIFV": 0x820000, "DXEFV": 0x900000}


def image() -> tuple[bytes, bytes, bytes]:
    pei = volume([ffs(OTHER, 0x06, section(0x10, b"MZpei"))], size=0x2000, name=PEIFV_NAME)
    dxe = volume([ffs(OTHER, 0x07, section(0x10, b"MZdxe"))], size=0x3000, name=DXEFV_NAME)
    compact = volume([ffs(COMPACT, 0x0B, lzma_section(section(0x17, pei) + section(0x17, dxe)))], size=0x8000)
    return volume([], size=0x1000) + compact, pei, dxe


def extend(*measured: bytes, bank: str = "sha256") -> str:
    value = bytes(hashlib.new(bank).digest_size)
    for data in measured:
        value = hashlib.new(bank, value + hashlib.new(bank, data).digest()).digest()
    return value.hex()


def test_the_events_are_edk2s_in_its_order() -> None:
    fd, pei, dxe = image()
    events = firmware_events(fd, "v1", BASES)
    assert [(e.pcr, e.event_type) for e in events] == [
        (0, "EV_S_CRTM_VERSION"), (0, "EV_EFI_PLATFORM_FIRMWARE_BLOB"), (0, "EV_EFI_PLATFORM_FIRMWARE_BLOB"),
        *[(7, "EV_EFI_VARIABLE_DRIVER_CONFIG")] * 5, (0, "EV_SEPARATOR"), (7, "EV_SEPARATOR")]
    assert events[0].data == "v1\0".encode("utf-16-le")                    # StrSize: the NUL counts
    assert events[1].hashed == pei and events[1].data == (0x820000).to_bytes(8, "little") + (0x2000).to_bytes(8, "little")
    assert events[2].hashed == dxe and events[2].data == (0x900000).to_bytes(8, "little") + (0x3000).to_bytes(8, "little")
    # UEFI_VARIABLE_DATA of an absent "PK": EFI_GLOBAL_VARIABLE, name length 2, data length 0, L"PK".
    assert events[4].data.hex() == "61dfe48bca93d211aa0d00e098032b8c" + "0200000000000000" + "0000000000000000" + "50004b00"


def test_pcr_values_extend_each_bank_from_zero() -> None:
    fd, pei, dxe = image()
    events = firmware_events(fd, "v1", BASES)
    values = pcr_values(events)
    sep = bytes(4)
    for bank in ("sha1", "sha256", "sha384", "sha512"):
        assert values["0"][bank] == extend("v1\0".encode("utf-16-le"), pei, dxe, sep, bank=bank)
    assert values["7"]["sha256"] == extend(*[e.hashed for e in events if e.pcr == 7])
    assert set(values) == {"0", "7"}
    # Another version string, another PCR 0; PCR 7 does not depend on the image.
    other = pcr_values(firmware_events(fd, "v2", BASES))
    assert other["0"] != values["0"] and other["7"] == values["7"]


def test_the_pcrlock_file_leaves_the_separators_to_systemd() -> None:
    fd, _pei, _dxe = image()
    events = firmware_events(fd, "v1", BASES)
    records = json.loads(pcrlock(events))["records"]
    assert len(records) == 8 and all(r["content"]["event_type"] != "EV_SEPARATOR" for r in records)
    assert records[1]["digests"][1] == {"hashAlg": "sha256", "digest": hashlib.sha256(events[1].hashed).hexdigest()}
    assert pcrlock(events) == pcrlock(firmware_events(fd, "v1", BASES))     # deterministic


def test_a_missing_volume_or_address_is_one_clear_error() -> None:
    fd, pei, _dxe = image()
    with pytest.raises(OvmfgenError, match=f"error: the image holds no DXEFV \\(FvNameGuid {DXEFV_NAME}\\)"):
        firmware_events(volume([ffs(COMPACT, 0x0B, lzma_section(section(0x17, pei)))], size=0x8000), "v", BASES)
    with pytest.raises(OvmfgenError, match="names no RAM address for PEIFV"):
        firmware_events(fd, "v", {"DXEFV": 1})


REPORT = """\
FD Name:            OVMF
Base Address:       0xFFE00000
Fd Region
Base Address:       0x20000
Fv Name:            PEIFV (21.6% Full)
>======<
Firmware Device (FD)
FD Name:            MEMFD
Base Address:       0x800000
Size:               0xB00000 (11264K)
FD Region
Type:               None
Base Address:       0x0
Fd Region
Type:               FV
Base Address:       0x20000
Size:               0xE0000 (896K)
Fv Name:            PEIFV (21.6% Full)
Fd Region
Type:               FV
Base Address:       0x100000
Fv Name:            DXEFV (40.1% Full)
"""


def test_the_addresses_are_memfds_from_the_build_report() -> None:
    assert fv_bases_from_report(REPORT) == {"PEIFV": 0x820000, "DXEFV": 0x900000}
    assert fv_bases_from_report("") == {}


def test_cross_check_with_virt_fw_measure() -> None:
    fd, _pei, _dxe = image()
    events = firmware_events(fd, "v1", BASES)
    pcr0 = pcr_values(events, ("sha256",))["0"]["sha256"]
    assert cross_check(events, {"values": [{"pcr": 0, "hashAlg": "sha256", "digest": pcr0}]}) is None
    assert "virt-fw-measure computes 00" in cross_check(events, {"values": [{"pcr": 0, "hashAlg": "sha256",
                                                                             "digest": "00"}]})
    assert "computes nothing" in cross_check(events, {"values": []})
