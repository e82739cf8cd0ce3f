"""swtpm: the TPM2_PCR_Read command and its response, byte by byte (the real TPM: tests/integration/test_tpm.py)."""

from __future__ import annotations

import struct

import pytest

from ovmfgen.boot.swtpm import Swtpm, parse_pcr_read, pcr_read_command
from ovmfgen.errors import OvmfgenError


def test_pcr_read_command_selects_one_pcr_of_one_bank() -> None:
    cmd = pcr_read_command(7, "sha256")
    # TPM_ST_NO_SESSIONS, size 20, TPM_CC_PCR_Read; one selection: sha256, 3 bytes, PCR 7's bit.
    assert cmd.hex() == "8001" "00000014" "0000017e" "00000001" "000b" "03" "800000"
    assert pcr_read_command(8, "sha1")[-6:].hex() == "000403000100"


def _response(rc: int = 0, digests: list[bytes] = (bytes(range(32)),)) -> bytes:
    body = struct.pack(">I", 5) + struct.pack(">IHB", 1, 0x000B, 3) + b"\x80\x00\x00"
    body += struct.pack(">I", len(digests)) + b"".join(struct.pack(">H", len(d)) + d for d in digests)
    return struct.pack(">HII", 0x8001, 10 + len(body), rc) + (body if rc == 0 else b"")


def test_the_digest_is_read_from_the_response() -> None:
    assert parse_pcr_read(_response()) == bytes(range(32))


def test_tpm_errors_and_empty_banks_are_one_line() -> None:
    with pytest.raises(OvmfgenError, match="TPM error 0x100 \\(TPM not started"):
        parse_pcr_read(_response(rc=0x100))
    with pytest.raises(OvmfgenError, match="0 digests for one PCR"):
        parse_pcr_read(_response(digests=[]))
    with pytest.raises(OvmfgenError, match="with 3 bytes"):
        parse_pcr_read(b"\x80\x01\x00")


def test_qemu_args_name_the_control_socket(tmp_path) -> None:
    tpm = Swtpm(tmp_path / "state", tmp_path / "run,1")
    assert tpm.qemu_args() == ["-chardev", f"socket,id=chrtpm,path={tmp_path}/run,,1/swtpm-ctrl.sock",
                               "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0"]
