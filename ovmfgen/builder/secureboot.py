"""Secure Boot's post-build step: enroll the key set into the image's variable store, check it, describe it.

It runs after the PVH ELF header is written (the store sits after the header's page, see
``secure_boot.store`` in the platform file): virt-firmware's ``virt-fw-vars`` enrolls PK, KEK, db and
dbx and turns Secure Boot on; then this module reads the store back with its own parser
(``ovmfgen.varstore``), checks what the firmware will check and that the certificates enrolled are
exactly the key set's, and makes the manifest's ``secure_boot`` entry (fingerprints, dbx digest).
The same keys and the same image give the same bytes (virt-fw-vars dates each variable by its
certificates, not by the clock).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

from ovmfgen.edk2.conventions import NV_LAYOUTS
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.model import SecureBoot
from ovmfgen.run import CommandError, run
from ovmfgen.varstore import (
    IMAGE_SECURITY_DATABASE_GUID, SECURE_BOOT_KEYS, Store, StoreError,
    check_secure_boot_store, parse_store, signature_lists,
)


class EnrollFailed(OvmfgenError):
    """Enrolling the key set failed, or its result is not what the firmware needs (one line)."""


def enroll_argv(sb: SecureBoot, src: Path, dst: Path) -> list[str]:
    """virt-fw-vars' command line: the key set into ``src``'s store, Secure Boot on, written to ``dst``."""
    ks = sb.key_set
    argv = [sys.executable, "-m", "virt.firmware.vars", "--loglevel", "warning", "--input", str(src),
            "--output", str(dst), "--set-pk", ks.pk.owner, str(ks.pk.path)]
    for cert in ks.kek:
        argv += ["--add-kek", cert.owner, str(cert.path)]
    for cert in ks.db:
        argv += ["--add-db", cert.owner, str(cert.path)]
    if ks.dbx is not None:
        argv += ["--set-dbx", str(ks.dbx)]
    return argv + ["--secure-boot"]


def enroll(image: bytes, sb: SecureBoot, fd_size: int) -> bytes:
    """``image`` (the PVH ELF) with ``sb``'s key set enrolled; raises EnrollFailed (one line)."""
    layout = NV_LAYOUTS[fd_size]
    with tempfile.TemporaryDirectory(prefix="ovmfgen-enroll-") as tmp:
        src, dst = Path(tmp) / "image", Path(tmp) / "enrolled"
        src.write_bytes(image)
        try:
            run(enroll_argv(sb, src, dst))
        except CommandError as exc:
            raise EnrollFailed(f"virt-fw-vars could not enroll key set {sb.key_set.name}: "
                               f"{exc.first_error()}") from None
        except FileNotFoundError:
            raise EnrollFailed("virt-firmware is not installed (pip install virt-firmware)") from None
        enrolled = dst.read_bytes()
    lo, hi = sb.store_offset, sb.store_offset + layout.variable_size
    if len(enrolled) != len(image) or enrolled[:lo] != image[:lo] or enrolled[hi:] != image[hi:]:
        raise EnrollFailed(f"virt-fw-vars changed bytes outside the variable store ({lo:#x}-{hi:#x})")
    return enrolled


def read_store(image: bytes, sb: SecureBoot, fd_size: int) -> Store:
    """The store as the firmware will take it, checked (raises EnrollFailed)."""
    layout = NV_LAYOUTS[fd_size]
    try:
        store = parse_store(image, sb.store_offset, layout.fv_length, layout.variable_size)
        check_secure_boot_store(store, layout.max_auth_variable, sb.store_offset + sb.store_size)
    except StoreError as exc:
        raise EnrollFailed(exc.message) from None
    return store


def describe(store: Store, sb: SecureBoot) -> dict:
    """The manifest's ``secure_boot`` entry; checks that PK, KEK and db hold exactly the key set's certificates."""
    ks = sb.key_set
    wanted = {"PK": (ks.pk,), "KEK": ks.kek, "db": ks.db}
    out: dict = {"key_set": ks.name, "store": {"offset": hex(sb.store_offset), "size": hex(store.size),
                                                "used": store.end - sb.store_offset}}
    for name, certs in wanted.items():
        var = store.get(name, SECURE_BOOT_KEYS[name])
        assert var is not None  # read_store checked it
        entries = signature_lists(var.data)
        got = sorted(s.sha256 for s in entries if s.kind == "x509")
        if got != sorted(c.sha256 for c in certs) or len(entries) != len(got):
            raise EnrollFailed(f"{name} in the enrolled store holds {len(entries)} entries, not the key set's "
                               f"{len(certs)} certificates ({', '.join(c.spec for c in certs)})")
        out[name] = {"size": var.size, "certificates": [
            {"spec": c.spec, "subject": c.subject, "sha256": c.sha256, "owner": c.owner} for c in certs]}
    dbx = store.get("dbx", IMAGE_SECURITY_DATABASE_GUID)
    assert dbx is not None
    out["dbx"] = {"size": dbx.size, "entries": len(signature_lists(dbx.data)),
                  "sha256": hashlib.sha256(dbx.data).hexdigest(),
                  "source": str(ks.dbx.name) if ks.dbx is not None else "empty (virt-firmware's placeholder)"}
    out["secure_boot_enable"] = 1   # read_store checked it
    return out
