"""Predicted TPM measurements of a built image (feature ``tpm``): what the firmware itself extends into
PCR 0 and PCR 7 before anything else runs, the PCR values that follow, and a systemd-pcrlock file.

What edk2 measures (SecurityPkg Tcg2Pei/Tcg2Dxe as OvmfPkg's TPM includes build them, both trees:
PcdTcgPfpMeasurementRevision 0, PcdTpm2ScrtmPolicy 1, no pre-hashed or excluded volumes):

- PCR 0, Tcg2Pei once memory is installed: ``EV_S_CRTM_VERSION`` over PcdFirmwareVersionString (UTF-16
  with its NUL: the build's version string); ``EV_EFI_PLATFORM_FIRMWARE_BLOB`` of the boot firmware
  volume, PEIFV, as SEC decompressed it into RAM; then of DXEFV, whose FV info the platform PEIM
  installs. The digest covers the whole volume (FvLength bytes, the bytes of the FV_IMAGE section in
  FVMAIN_COMPACT); the event data are the volume's RAM base and length (UEFI_PLATFORM_FIRMWARE_BLOB).
  The bases come from the build's report (FD MEMFD): XenOvmf keeps PEIFV at 0x820000 on every tree.
- PCR 7, Tcg2Dxe once variables can be written: ``EV_EFI_VARIABLE_DRIVER_CONFIG`` of SecureBoot, PK, KEK,
  db and dbx (UEFI_VARIABLE_DATA). An image without Secure Boot has none of them: each is measured with
  no data (Tcg2Dxe's ReadAndMeasureVariable).
- PCR 0-7, Tcg2Dxe at ReadyToBoot: ``EV_SEPARATOR`` over four zero bytes.

PCR 0 cannot be predicted from the image alone: SEC decompresses PEIFV into RAM and the PEIMs that
run before memory is installed execute in place there, writing their global variables into PEIFV's
bytes, before Tcg2Pei measures it (a boot of qemu-x64 with swtpm: two bytes of PeiCore, the ACPI PM
timer port BaseAcpiTimerLib caches; with the PEIFV read back from the guest the computed PCR 0 is the
TPM's). So the manifest publishes PCR 7 as the prediction and PCR 0 only "as built", with the note.

virt-fw-measure (virt-firmware) models PCR 0 of OvmfPkg's own images: the same digests, but the PEIFV
base it writes into the event data is guessed from the version string's date (0x830000 from 2025-12 on,
where OvmfPkgX64 moved it; XenOvmf did not), and it measures PCR 7 only from a variable store in the
image (this FD has none). So ovmfgen computes the log itself and checks PCR 0 against virt-fw-measure's
(``cross_check``), an independent reading of the same image.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ovmfgen.builder.plan import Plan
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fvfile import volumes
from ovmfgen.run import CommandError, run

#: The PCR banks predicted (PcdTpm2HashMask's SHA family; a TPM extends the banks it has allocated).
BANKS = ("sha1", "sha256", "sha384", "sha512")
PEIFV_NAME = "6938079B-B503-4E3D-9D24-B28337A25806"   # OvmfPkg's PEIFV FvNameGuid
DXEFV_NAME = "7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1"   # OvmfPkg's DXEFV FvNameGuid
EFI_GLOBAL_VARIABLE = uuid.UUID("8BE4DF61-93CA-11D2-AA0D-00E098032B8C")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("D719B2CB-3D3A-4596-A3BC-DAD00E67656F")
SECURE_BOOT_VARIABLES = (("SecureBoot", EFI_GLOBAL_VARIABLE), ("PK", EFI_GLOBAL_VARIABLE),
                         ("KEK", EFI_GLOBAL_VARIABLE), ("db", EFI_IMAGE_SECURITY_DATABASE),
                         ("dbx", EFI_IMAGE_SECURITY_DATABASE))
SEPARATOR = bytes(4)
PCRLOCK_NAME = "ovmf-firmware.pcrlock"
PCR0_NOTE = ("PCR 0 as built: a boot reads another value. Tcg2Pei measures PEIFV once memory is installed, "
             "after the PEIMs dispatched before it ran in place from PEIFV in RAM and wrote their globals "
             "there (qemu-x64: PeiCore's cached ACPI PM timer port; xen-pvh: XenPlatformPei's state), so "
             "the measured PEIFV depends on the machine; only PCR 7 is predicted")


@dataclass(frozen=True)
class Event:
    """One event of the predicted log: the PCR, its type, the logged data and the bytes hashed."""

    pcr: int
    event_type: str
    data: bytes
    hashed: bytes

    def digests(self, banks: Sequence[str] = BANKS) -> dict[str, str]:
        return {bank: hashlib.new(bank, self.hashed).hexdigest() for bank in banks}


def _variable(name: str, guid: uuid.UUID, data: bytes = b"") -> bytes:
    """UEFI_VARIABLE_DATA: VariableName, UnicodeNameLength, VariableDataLength, UnicodeName (no NUL), data."""
    uname = name.encode("utf-16-le")
    return (guid.bytes_le + (len(uname) // 2).to_bytes(8, "little") + len(data).to_bytes(8, "little")
            + uname + data)


def firmware_events(image: bytes, version_string: str, fv_bases: Mapping[str, int]) -> list[Event]:
    """The firmware's own events, in the order the log holds them (separators last)."""
    found = {name: fv for name, fv in volumes(image) if name in (PEIFV_NAME, DXEFV_NAME)}
    events = [Event(0, "EV_S_CRTM_VERSION", (version_string + "\0").encode("utf-16-le"),
                    (version_string + "\0").encode("utf-16-le"))]
    for label, name in (("PEIFV", PEIFV_NAME), ("DXEFV", DXEFV_NAME)):
        if name not in found:
            raise OvmfgenError(f"the image holds no {label} (FvNameGuid {name}) to predict its measurement from")
        if label not in fv_bases:
            raise OvmfgenError(f"the build report names no RAM address for {label} (FD MEMFD)")
        fv = found[name]
        blob = fv_bases[label].to_bytes(8, "little") + len(fv).to_bytes(8, "little")
        events.append(Event(0, "EV_EFI_PLATFORM_FIRMWARE_BLOB", blob, fv))
    for name, guid in SECURE_BOOT_VARIABLES:
        var = _variable(name, guid)
        events.append(Event(7, "EV_EFI_VARIABLE_DRIVER_CONFIG", var, var))
    events += [Event(pcr, "EV_SEPARATOR", SEPARATOR, SEPARATOR) for pcr in (0, 7)]
    return events


def pcr_values(events: Sequence[Event], banks: Sequence[str] = BANKS) -> dict[str, dict[str, str]]:
    """PCR index (as text) -> bank -> the value after ``events`` (each PCR starts at zero)."""
    values: dict[int, dict[str, bytes]] = {}
    for ev in events:
        pcr = values.setdefault(ev.pcr, {b: bytes(hashlib.new(b).digest_size) for b in banks})
        for bank in banks:
            pcr[bank] = hashlib.new(bank, pcr[bank] + hashlib.new(bank, ev.hashed).digest()).digest()
    return {str(i): {b: v.hex() for b, v in sorted(values[i].items())} for i in sorted(values)}


def pcrlock(events: Sequence[Event], banks: Sequence[str] = BANKS) -> bytes:
    """A systemd-pcrlock file of the firmware's events before the separators (systemd ships those as
    500-separator.pcrlock): records of pcr, digests and the event for reading."""
    records = [{"pcr": ev.pcr,
                "digests": [{"hashAlg": b, "digest": d} for b, d in ev.digests(banks).items()],
                "content_type": "pcclient_std",
                "content": {"event_type": ev.event_type, "event_data": ev.data.hex()}}
               for ev in events if ev.event_type != "EV_SEPARATOR"]
    return (json.dumps({"records": records}, indent=2) + "\n").encode()


_FD_NAME = re.compile(r"^FD Name:\s*(\S+)")
_BASE = re.compile(r"^Base Address:\s*(0x[0-9A-Fa-f]+)")
_FV_NAME = re.compile(r"^Fv Name:\s*(\S+)")


def fv_bases_from_report(text: str, fd: str = "MEMFD") -> dict[str, int]:
    """FV name -> its address, for the volumes of FD ``fd`` in a ``-Y FLASH`` build report (FD base +
    region offset): where SEC puts the volumes it decompresses."""
    bases: dict[str, int] = {}
    current: str | None = None
    fd_base: int | None = None
    region: int | None = None
    for raw in text.splitlines():
        line = raw.strip()
        m = _FD_NAME.match(line)
        if m:
            current, fd_base, region = m.group(1), None, None
            continue
        if current != fd:
            continue
        m = _BASE.match(line)
        if m:
            if fd_base is None:
                fd_base = int(m.group(1), 16)
            else:
                region = int(m.group(1), 16)
            continue
        m = _FV_NAME.match(line)
        if m and fd_base is not None and region is not None:
            bases.setdefault(m.group(1), fd_base + region)
    return bases


def cross_check(events: Sequence[Event], virt_fw_values: Mapping) -> str | None:
    """virt-fw-measure's ``--digests`` answer against ours: None when PCR 0 (sha256) agrees, else why not."""
    ours = pcr_values(events, ("sha256",))["0"]["sha256"]
    theirs = [v.get("digest") for v in virt_fw_values.get("values", [])
              if v.get("pcr") == 0 and v.get("hashAlg") == "sha256"]
    if theirs != [ours]:
        return f"PCR 0 (sha256) predicted {ours}, virt-fw-measure computes {theirs[0] if theirs else 'nothing'}"
    return None


def virt_fw_measure(p: Plan) -> dict:
    """virt-fw-measure's expected PCR values (sha256) for the built FD (``--digests``)."""
    argv = [sys.executable, "-m", "virt.firmware.measure", "--image", str(p.fd_path),
            "--version", p.version_string, "--digests", "--bank", "sha256"]
    try:
        out = run(argv, timeout=300).stdout
    except CommandError as exc:
        raise OvmfgenError(f"virt-fw-measure failed on {display_path(p.fd_path)}: {exc.first_error()}") from None
    try:
        return json.loads(out[out.index("{"):])
    except ValueError:
        raise OvmfgenError(f"virt-fw-measure gave no JSON for {display_path(p.fd_path)}") from None


def predict(p: Plan, fd: bytes) -> tuple[dict, bytes]:
    """The manifest's ``measurements`` and the pcrlock file for a TPM build's FD, checked against
    virt-fw-measure (raises one line when they disagree or a part of the image is missing)."""
    try:
        report = p.report_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        raise OvmfgenError(f"no build report {display_path(p.report_path)} to find PEIFV/DXEFV's addresses in") \
            from None
    events = firmware_events(fd, p.version_string, fv_bases_from_report(report))
    disagreement = cross_check(events, virt_fw_measure(p))
    if disagreement:
        raise OvmfgenError(f"predicted measurements disagree with virt-fw-measure: {disagreement}")
    values = pcr_values(events)
    measurements = {
        "pcrs": {"7": values["7"]},
        "after": "ReadyToBoot (the separators of PCR 0-7 measured), before any boot option",
        "events": [{"pcr": ev.pcr, "type": ev.event_type, "sha256": ev.digests(("sha256",))["sha256"]}
                   for ev in events],
        "pcrlock": PCRLOCK_NAME,
        "secure_boot": "none in the image: PCR 7 measures SecureBoot, PK, KEK, db and dbx absent",
        "pcr0_as_built": values["0"],
        "pcr0_note": PCR0_NOTE,
        "checked_with": "virt-fw-measure (PCR 0 as built, sha256)",
    }
    return measurements, pcrlock([ev for ev in events if ev.pcr != 0])
