"""An edk2 authenticated variable store inside a firmware image, read without the tool that wrote it.

A Secure Boot image of a Xen platform carries its keys in a variable store after the PVH ELF header
(``secure_boot.store`` of the platform): an ``EFI_FIRMWARE_VOLUME_HEADER`` (gEfiSystemNvDataFvGuid), a
``VARIABLE_STORE_HEADER`` (gEfiAuthenticatedVariableGuid), then ``AUTHENTICATED_VARIABLE_HEADER``s,
each followed by its UCS-2 name and data, 4-byte aligned (MdeModulePkg/Include/Guid/VariableFormat.h).
XenPlatformPei copies it into the RAM store at every boot and stops if it is not what this module
checks (the patch in overrides/xen-pvh/patches/). Pure bytes, no I/O.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass

from ovmfgen.errors import OvmfgenError

NV_DATA_FV_GUID = uuid.UUID("fff12b8d-7696-4c8b-a985-2747075b4f50")
AUTH_VARIABLE_GUID = uuid.UUID("aaf32c78-947b-439a-a180-2e144ec37792")
GLOBAL_VARIABLE_GUID = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
IMAGE_SECURITY_DATABASE_GUID = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
SECURE_BOOT_ENABLE_GUID = uuid.UUID("f0a30bc7-af08-4556-99c4-001009c93a44")
CERT_X509_GUID = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
CERT_SHA256_GUID = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")

FV_SIGNATURE = b"_FVH"
FV_HEADER_LENGTH = 0x48       # EFI_FIRMWARE_VOLUME_HEADER with one block map entry and its terminator
STORE_HEADER_LENGTH = 28      # VARIABLE_STORE_HEADER
VAR_HEADER_LENGTH = 60        # AUTHENTICATED_VARIABLE_HEADER
VARIABLE_DATA = 0x55AA        # StartId
VAR_ADDED = 0x3F              # State of a variable in force
STORE_FORMATTED, STORE_HEALTHY = 0x5A, 0xFE

#: The keys a Secure Boot store must hold, with their vendor GUID.
SECURE_BOOT_KEYS = {"PK": GLOBAL_VARIABLE_GUID, "KEK": GLOBAL_VARIABLE_GUID,
                    "db": IMAGE_SECURITY_DATABASE_GUID, "dbx": IMAGE_SECURITY_DATABASE_GUID}


class StoreError(OvmfgenError):
    """The variable store is not what the firmware accepts (one line)."""


@dataclass(frozen=True)
class Variable:
    """One variable in force: name, vendor GUID, attributes and data."""

    name: str
    guid: uuid.UUID
    attributes: int
    data: bytes
    offset: int          # of its header, in the image
    size: int            # header + name + data, as it sits in the store


@dataclass(frozen=True)
class Signature:
    """One entry of an EFI_SIGNATURE_LIST: an X.509 certificate or a SHA-256 hash, with its owner."""

    kind: str            # "x509" or "sha256" (or the list type's GUID)
    owner: uuid.UUID
    data: bytes

    @property
    def sha256(self) -> str:
        """The certificate's fingerprint (sha256 of its DER), or the hash itself."""
        return self.data.hex() if self.kind == "sha256" else hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Store:
    """The store at ``offset``: its variables in force and where its used part ends."""

    offset: int
    size: int            # the store's Size field + FV header: the bytes the firmware copies
    variables: tuple[Variable, ...]
    end: int             # image offset just after the last variable

    def get(self, name: str, guid: uuid.UUID) -> Variable | None:
        """The variable ``name`` of vendor ``guid``, if in force."""
        return next((v for v in self.variables if v.name == name and v.guid == guid), None)


def _sum16(data: bytes) -> int:
    return sum(struct.unpack(f"<{len(data) // 2}H", data)) & 0xFFFF


def parse_store(image: bytes, offset: int, fv_length: int, variable_size: int) -> Store:
    """Read the store at ``offset`` of ``image`` as XenPlatformPei checks it.

    ``fv_length`` is the FV length the emulated store expects (2 * PcdFlashNvStorageFtwSpareSize),
    ``variable_size`` the bytes it copies (PcdFlashNvStorageVariableSize). Raises StoreError.
    """
    if offset < 0 or offset + variable_size > len(image):
        raise StoreError(f"no room for a {variable_size:#x}-byte variable store at {offset:#x} in a "
                         f"{len(image):#x}-byte image")
    fv = image[offset:offset + FV_HEADER_LENGTH]
    guid = uuid.UUID(bytes_le=fv[0x10:0x20])
    length, signature, _attrs, header_length = struct.unpack_from("<Q4sIH", fv, 0x20)
    if signature != FV_SIGNATURE or guid != NV_DATA_FV_GUID:
        raise StoreError(f"no variable store at {offset:#x} (no NV data firmware volume header there)")
    if length != fv_length or header_length != FV_HEADER_LENGTH:
        raise StoreError(f"the variable store at {offset:#x} has FvLength {length:#x} and HeaderLength "
                         f"{header_length:#x}; the firmware wants {fv_length:#x} and {FV_HEADER_LENGTH:#x}")
    if _sum16(fv) != 0:
        raise StoreError(f"the variable store's firmware volume header at {offset:#x} has a bad checksum")
    start = offset + FV_HEADER_LENGTH
    sguid = uuid.UUID(bytes_le=image[start:start + 16])
    size, fmt, state = struct.unpack_from("<IBB", image, start + 16)
    if sguid != AUTH_VARIABLE_GUID or fmt != STORE_FORMATTED or state != STORE_HEALTHY:
        raise StoreError(f"the variable store at {offset:#x} is not a formatted, healthy authenticated store")
    if size != variable_size - FV_HEADER_LENGTH:
        raise StoreError(f"the variable store's Size is {size:#x}; the firmware wants "
                         f"{variable_size - FV_HEADER_LENGTH:#x}")
    limit = offset + variable_size
    pos = start + STORE_HEADER_LENGTH
    variables: list[Variable] = []
    while pos + VAR_HEADER_LENGTH <= limit:
        start_id, vstate, attributes = struct.unpack_from("<HBxI", image, pos)
        if start_id != VARIABLE_DATA:
            break
        name_size, data_size = struct.unpack_from("<II", image, pos + 36)
        vguid = uuid.UUID(bytes_le=image[pos + 44:pos + 60])
        body = pos + VAR_HEADER_LENGTH
        if name_size > limit - body or data_size > limit - body - name_size:
            raise StoreError(f"the variable at {pos:#x} runs past the end of the store")
        raw_name = image[body:body + name_size]
        name = raw_name.decode("utf-16-le", errors="replace").rstrip("\x00")
        end = body + name_size + data_size
        if vstate == VAR_ADDED:
            variables.append(Variable(name, vguid, attributes, image[body + name_size:end], pos, end - pos))
        pos = (end + 3) & ~3
    return Store(offset, variable_size, tuple(variables), pos)


def signature_lists(data: bytes) -> list[Signature]:
    """The entries of the EFI_SIGNATURE_LISTs in ``data`` (a PK/KEK/db/dbx variable's data)."""
    out: list[Signature] = []
    pos = 0
    while pos < len(data):
        if pos + 28 > len(data):
            raise StoreError("a signature list is cut short")
        ltype = uuid.UUID(bytes_le=data[pos:pos + 16])
        list_size, header_size, sig_size = struct.unpack_from("<III", data, pos + 16)
        if list_size < 28 + header_size or pos + list_size > len(data) or sig_size < 16:
            raise StoreError("a signature list has impossible sizes")
        kind = {CERT_X509_GUID: "x509", CERT_SHA256_GUID: "sha256"}.get(ltype, str(ltype))
        entry = pos + 28 + header_size
        while entry + sig_size <= pos + list_size:
            out.append(Signature(kind, uuid.UUID(bytes_le=data[entry:entry + 16]), data[entry + 16:entry + sig_size]))
            entry += sig_size
        pos += list_size
    return out


def check_secure_boot_store(store: Store, max_auth_variable_size: int, store_end: int) -> None:
    """What a Secure Boot image needs of its store: PK, KEK, db and dbx enrolled, SecureBootEnable set,
    every variable within PcdMaxAuthVariableSize, and the used part within ``store_end`` (the region
    the platform gives it). Raises StoreError naming the first problem."""
    for name, guid in SECURE_BOOT_KEYS.items():
        var = store.get(name, guid)
        if var is None:
            raise StoreError(f"the Secure Boot variable store has no {name}")
        if not signature_lists(var.data):
            raise StoreError(f"the Secure Boot variable store's {name} is empty")
    for var in store.variables:
        if var.size > max_auth_variable_size:
            raise StoreError(f"variable {var.name} takes {var.size} bytes in the store, more than "
                             f"PcdMaxAuthVariableSize ({max_auth_variable_size}): the firmware would reject it")
    enable = store.get("SecureBootEnable", SECURE_BOOT_ENABLE_GUID)
    if enable is None or enable.data != b"\x01":
        raise StoreError("the Secure Boot variable store does not set SecureBootEnable to 1")
    if store.end > store_end:
        raise StoreError(f"the variable store's variables end at {store.end:#x}, past the {store_end:#x} the "
                         "platform gives the store")
