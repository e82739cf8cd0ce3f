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
- PCR 7, Tcg2Dxe once variables can be written (MeasureSecureBootPolicy): ``EV_EFI_VARIABLE_DRIVER_CONFIG``
  of SecureBoot, PK, KEK, db and dbx (UEFI_VARIABLE_DATA), then of dbt if it exists, then PCR 7's
  ``EV_SEPARATOR``. An image without Secure Boot has none of the variables: each is measured with no
  data (Tcg2Dxe's ReadAndMeasureSecureVariable). A Secure Boot image (feature ``secure_boot``) measures
  what its pre-enrolled store holds (``ovmfgen.varstore``, the store the post-build step enrolled and
  checked): PK, KEK, db, dbx as enrolled, and SecureBoot = 1 (AuthVariableLib sets it at start-up when
  PK is enrolled and SecureBootEnable is 1, which the store check requires).
- PCR 0-6, Tcg2Dxe at ReadyToBoot: ``EV_SEPARATOR`` over four zero bytes.

With Secure Boot on, PCR 7 changes again each time an image is verified against db (DxeImageVerificationLib
logs the db entry that allowed it, ``EV_EFI_VARIABLE_AUTHORITY``, once per entry): a signed boot loader,
an option ROM. The prediction is PCR 7 before the first of those.

PCR 0 cannot be predicted from the image alone: SEC decompresses PEIFV into RAM and the PEIMs that
run before memory is installed execute in place there, writing their global variables into PEIFV's
bytes, before Tcg2Pei measures it (a boot of qemu-x64 with swtpm: two bytes of PeiCore, the ACPI PM
timer port BaseAcpiTimerLib caches; with the PEIFV read back from the guest the computed PCR 0 is the
TPM's). So the manifest publishes PCR 7 as the prediction and PCR 0 only "as built", with the note.

virt-fw-measure (virt-firmware) models PCR 0 of OvmfPkg's own images: the same digests, but the PEIFV
base it writes into the event data is guessed from the version string's date (0x830000 from 2025-12 on,
where OvmfPkgX64 moved it; XenOvmf did not), and it measures PCR 7 only from a variable store (a
build without Secure Boot has none; a Secure Boot image's store claims an FvLength that covers the
volumes after it, so virt-fw-measure finds no PEIFV in the enrolled FD). So ovmfgen computes the log
itself and checks it against virt-fw-measure (``cross_check``), an independent reading of the same
bytes: PCR 0 from the FD as the build wrote it (the store does not touch the volumes), and for a Secure
Boot image PCR 7 from the enrolled FD's store (``--vars``: SecureBoot = 1, PK, KEK, db, dbx, separator).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.builder.plan import Plan
from ovmfgen.builder.report import fv_bases_from_report
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fvfile import volumes
from ovmfgen.run import CommandError, run
from ovmfgen.varstore import FV_HEADER_LENGTH, Store

#: The PCR banks predicted (PcdTpm2HashMask's SHA family; a TPM extends the banks it has allocated).
BANKS = ("sha1", "sha256", "sha384", "sha512")
PEIFV_NAME = "6938079B-B503-4E3D-9D24-B28337A25806"   # OvmfPkg's PEIFV FvNameGuid
DXEFV_NAME = "7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1"   # OvmfPkg's DXEFV FvNameGuid
EFI_GLOBAL_VARIABLE = uuid.UUID("8BE4DF61-93CA-11D2-AA0D-00E098032B8C")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("D719B2CB-3D3A-4596-A3BC-DAD00E67656F")
SECURE_BOOT_VARIABLES = (("SecureBoot", EFI_GLOBAL_VARIABLE), ("PK", EFI_GLOBAL_VARIABLE),
                         ("KEK", EFI_GLOBAL_VARIABLE), ("db", EFI_IMAGE_SECURITY_DATABASE),
                         ("dbx", EFI_IMAGE_SECURITY_DATABASE))
DBT = ("dbt", EFI_IMAGE_SECURITY_DATABASE)          # measured after them only when it exists
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


def secure_boot_events(store: Store | None) -> list[Event]:
    """PCR 7's policy events: Secure Boot's variables as ``store`` (a Secure Boot image's enrolled store)
    holds them, or all absent (None: an image without Secure Boot)."""
    if store is None:
        values: list[tuple[str, uuid.UUID, bytes]] = [(n, g, b"") for n, g in SECURE_BOOT_VARIABLES]
    else:
        values = [("SecureBoot", EFI_GLOBAL_VARIABLE, b"\x01")]
        for name, guid in (*SECURE_BOOT_VARIABLES[1:], DBT):
            var = store.get(name, guid)
            if var is not None:
                values.append((name, guid, var.data))
            elif (name, guid) != DBT:
                raise OvmfgenError(f"the Secure Boot store has no {name} to predict PCR 7 from")
    events = []
    for name, guid, data in values:
        var = _variable(name, guid, data)
        events.append(Event(7, "EV_EFI_VARIABLE_DRIVER_CONFIG", var, var))
    return events


def firmware_events(image: bytes, version_string: str, fv_bases: Mapping[str, int],
                    store: Store | None = None) -> list[Event]:
    """The firmware's own events, in the order the log holds them (separators last); ``store``: a
    Secure Boot image's enrolled variable store (None: no Secure Boot)."""
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
    events += secure_boot_events(store)
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


def cross_check(events: Sequence[Event], virt_fw_values: Mapping, pcr: int = 0) -> str | None:
    """virt-fw-measure's ``--digests`` answer against ours: None when PCR ``pcr`` (sha256) agrees, else why not."""
    ours = pcr_values(events, ("sha256",))[str(pcr)]["sha256"]
    theirs = [v.get("digest") for v in virt_fw_values.get("values", [])
              if v.get("pcr") == pcr and v.get("hashAlg") == "sha256"]
    if theirs != [ours]:
        return (f"PCR {pcr} (sha256) predicted {ours}, virt-fw-measure computes "
                f"{theirs[0] if theirs else 'nothing'}")
    return None


def virt_fw_measure(what: list[str], shown: str) -> dict:
    """virt-fw-measure's expected PCR values (sha256, ``--digests``) for ``what`` (its input options)."""
    argv = [sys.executable, "-m", "virt.firmware.measure", *what, "--digests", "--bank", "sha256"]
    try:
        out = run(argv, timeout=300).stdout
    except CommandError as exc:
        raise OvmfgenError(f"virt-fw-measure failed on {shown}: {exc.first_error()}") from None
    try:
        return json.loads(out[out.index("{"):])
    except ValueError:
        raise OvmfgenError(f"virt-fw-measure gave no JSON for {shown}") from None


def _next_volume(fd: bytes, after: int) -> int:
    """The FD offset of the first firmware volume header after offset ``after`` (4 KiB aligned)."""
    for offset in range(after + 0x1000 - after % 0x1000, len(fd) - FV_HEADER_LENGTH, 0x1000):
        if fd[offset + 0x28:offset + 0x2C] == b"_FVH":
            return offset
    raise OvmfgenError(f"the image has no firmware volume after its variable store at {after:#x}")


def virt_fw_check(events: Sequence[Event], fd: bytes, version_string: str, store: Store | None) -> str | None:
    """``events`` against virt-fw-measure reading the published ``fd``: PCR 0 from its volumes and, for a
    Secure Boot image, PCR 7 from its store. None when they agree, else the first difference.

    For PCR 0 virt-fw-measure reads a Secure Boot image from its first volume after the store: the
    store's FvLength (the emulated store's size) reaches past the start of the next volume, so read
    from the top virt-fw-measure steps over it and finds no PEIFV. The volumes' bytes are the FD's own."""
    with tempfile.TemporaryDirectory(prefix="ovmfgen-measure-") as tmp:
        image, enrolled = Path(tmp) / "OVMF.fd", Path(tmp) / "OVMF-enrolled.fd"
        image.write_bytes(fd if store is None else fd[_next_volume(fd, store.offset):])
        why = cross_check(events, virt_fw_measure(["--image", str(image), "--version", version_string],
                                                  "the built FD"))
        if why is None and store is not None:
            enrolled.write_bytes(fd)
            why = cross_check(events, virt_fw_measure(["--vars", str(enrolled)], "the enrolled FD's variable store"),
                              pcr=7)
    return why


def predict(p: Plan, fd: bytes, store: Store | None = None) -> tuple[dict, bytes]:
    """The manifest's ``measurements`` and the pcrlock file for a TPM build's FD (as published: with a
    Secure Boot image's enrolled ``store``), checked against virt-fw-measure (raises one line when they
    disagree or a part of the image is missing)."""
    try:
        report = p.report_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        raise OvmfgenError(f"no build report {display_path(p.report_path)} to find PEIFV/DXEFV's addresses in") \
            from None
    events = firmware_events(fd, p.version_string, fv_bases_from_report(report), store)
    disagreement = virt_fw_check(events, fd, p.version_string, store)
    if disagreement:
        raise OvmfgenError(f"predicted measurements disagree with virt-fw-measure: {disagreement}")
    values = pcr_values(events)
    measurements = {
        "pcrs": {"7": values["7"]},
        "after": ("ReadyToBoot (the separators of PCR 0-7 measured), before any boot option"
                  + (" and before any image verified against db" if store is not None else "")),
        "events": [{"pcr": ev.pcr, "type": ev.event_type, "sha256": ev.digests(("sha256",))["sha256"]}
                   for ev in events],
        "pcrlock": PCRLOCK_NAME,
        "secure_boot": ("none in the image: PCR 7 measures SecureBoot, PK, KEK, db and dbx absent" if store is None
                        else "on: PCR 7 measures SecureBoot = 1 and PK, KEK, db and dbx as the image's store "
                             "enrolls them"),
        "pcr0_as_built": values["0"],
        "pcr0_note": PCR0_NOTE,
        "checked_with": ("virt-fw-measure (PCR 0 as built, sha256)" if store is None
                         else "virt-fw-measure (PCR 0 as built and PCR 7, sha256)"),
    }
    return measurements, pcrlock([ev for ev in events if ev.pcr != 0])
