"""The Secure Boot guests' disks: the project's UKI unsigned and signed, and Debian's signed boot chain.

Four GPT disks, each with one EFI system partition (FAT16) whose ``\\EFI\\BOOT\\BOOTX64.EFI`` the
firmware's boot manager starts (no Shell: a Secure Boot build has none):

* ``unsigned``: the project's UKI (osdisk.py's recipe) as it is: a Secure Boot firmware must refuse it;
* ``signed``: the same UKI signed (sbsign) with a db key of the platform's key set: it must boot;
* ``shim-uki``: Debian's Microsoft-signed shim, which starts ``\\EFI\\BOOT\\grubx64.efi`` = the signed
  UKI (shim checks it against db);
* ``shim-grub``: shim -> Debian-signed GRUB -> Debian-signed kernel (GRUB verifies it through shim's
  protocol against Debian's CA, shim's vendor certificate) with the same initramfs.

Every disk's Linux runs the same initramfs: before the OS marker it prints ``SB_MARKER`` with the
SecureBoot variable's last byte (efivarfs, whose module comes with the kernel) and what Linux said
("Secure boot enabled"/"disabled"), then ``PERSIST_MARKER``: whether persist.py's test variable was
there at boot, setting it (NV|BS|RT), whether db is there, and appending an unauthenticated entry to
it (what a restart keeps: the ``sb-persist`` guest boots the signed disk twice). The UKIs use
osdisk's kernel, stub and busybox; shim and GRUB come from ``shim-signed`` and ``grub-efi-amd64-signed``. Made without mounting and byte-for-byte
reproducible (sbsign runs under faketime at the signing certificate's notBefore, so the PKCS#7
signing time is fixed); cached under ``disks_cache_dir()``, keyed by the package versions, the
recipe and the signing key.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ovmfgen.apt import ensure_apt_packages
from ovmfgen.boot.xen.cache import CACHE_LOCK, CACHE_LOCK_WHAT
from ovmfgen.cacheentry import ensure
from ovmfgen.boot.xen.debian import apt_candidates
from ovmfgen.boot.xen.gpt import gpt_disk
from ovmfgen.boot.xen.guests import newc_archive
from ovmfgen.boot.xen.osdisk import (
    BUSYBOX_PACKAGE,
    KERNEL_CMDLINE,
    STUB_PACKAGE,
    OsDiskVersions,
    _extract,
    disks_cache_dir,
    ensure_disk_tools,
    fat_image,
    make_uki,
    query_os_disk_versions,
)
from ovmfgen.boot.xen.persist import VARIABLE, VARIABLE_GUID
from ovmfgen.boot.xen.verdicts import GRUB_MARKER, OS_MARKER, PERSIST_MARKER, SB_MARKER
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import PLATFORMS_DIR
from ovmfgen.varstore import IMAGE_SECURITY_DATABASE_GUID
from ovmfgen.run import CommandError, run
from ovmfgen.ui import say

SHIM_PACKAGE = "shim-signed"
GRUB_PACKAGE = "grub-efi-amd64-signed"
SHIM_FILE = "usr/lib/shim/shimx64.efi.signed"
GRUB_FILE = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"
#: Host tools the signed disks need besides osdisk's: sbsign/sbverify, and faketime for a fixed signing time.
SIGN_TOOLS = {"sbsign": "sbsigntool", "sbverify": "sbsigntool", "faketime": "faketime"}
#: The key set the tests enroll (``--feature secure_boot=test``): its db key signs the ``signed`` UKI.
TEST_KEYS = PLATFORMS_DIR / "keys" / "ovmfgen-test"
#: Bump when the way the disks are made changes (forces a rebuild of the cache entry).
SB_DISK_RECIPE = 3
#: The disks, in the order they are made; ``SbDisks.path`` names them.
SB_DISK_NAMES = ("unsigned", "signed", "shim-uki", "shim-grub")
#: Where the kernel and initramfs sit on the shim-grub disk's ESP (GRUB's ``linux``/``initrd`` paths).
GRUB_KERNEL = "ovmfgen/vmlinuz"
GRUB_INITRD = "ovmfgen/initrd.img"
SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
#: The test variable the init sets (persist.py's name and vendor GUID), and db (EFI_IMAGE_SECURITY_DATABASE_GUID).
PERSIST_VAR = f"{VARIABLE}-{VARIABLE_GUID}"
DB_VAR = f"db-{IMAGE_SECURITY_DATABASE_GUID}"
#: Room on each ESP beyond its files (FATs, directories), and its least size (FAT16 with one sector per
#: cluster wants at least 4085 clusters). The disks are sized to their files: every guest's disk is
#: copied into dom0's initramfs, which shares dom0's memory with everything else.
ESP_SLACK_KIB = 1024
ESP_MIN_KIB = 4 * 1024

_BB = "/bin/busybox"
_INIT = f"""#!/bin/busybox sh
# /init of ovmfgen's Secure Boot disks: say whether Secure Boot is on, then that Linux reached user
# space (on every console), then power off.
{_BB} mkdir -p /proc /sys /dev
{_BB} mount -t devtmpfs devtmpfs /dev
{_BB} mount -t proc proc /proc
{_BB} mount -t sysfs sysfs /sys
# efivarfs is a module in Debian's kernel (signed by Debian: loadable under lockdown too).
{_BB} insmod /lib/efivarfs.ko 2>/dev/null
V=none
P=none
DB=none
D=none
if {_BB} mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null; then
    F=/sys/firmware/efi/efivars/{SECURE_BOOT_VAR}
    [ -f "$F" ] && V=$({_BB} tail -c 1 "$F" | {_BB} od -An -tx1 | {_BB} tr -d ' \\n')
    # What lasts: was our test variable there at boot? Then set it (attributes NV|BS|RT, then "kept"),
    # and append an unauthenticated entry to db (attributes NV|BS|RT|TIME_BASED_AUTH|APPEND): was db's
    # file there (efivarfs makes it immutable: EPERM, before the firmware is asked)?
    F=/sys/firmware/efi/efivars/{PERSIST_VAR}
    P=absent
    [ -f "$F" ] && P=present
    {_BB} printf '\\007\\000\\000\\000kept' > /persist.bin
    if ( {_BB} cat /persist.bin > "$F" ) 2>/dev/null; then P="$P->written"; else P="$P->failed"; fi
    B=/sys/firmware/efi/efivars/{DB_VAR}
    DB=absent
    [ -f "$B" ] && DB=present
    {_BB} printf '\\147\\000\\000\\000ovmfgen' > /db.bin
    E=$( ( {_BB} cat /db.bin > "$B" ) 2>&1 ) && D=written || case "$E" in
        *"not permitted"*) D=refused:EPERM ;;
        *"denied"*) D=refused:EACCES ;;
        *"Invalid argument"*) D=refused:EINVAL ;;
        *"Read-only"*) D=refused:EROFS ;;
        *"I/O error"*|*"Input/output"*) D=refused:EIO ;;
        *) D=refused:other ;;
    esac
fi
K=$({_BB} dmesg | {_BB} grep -o 'Secure boot [a-z]*' | {_BB} tail -n 1 | {_BB} cut -d' ' -f3)
S="{SB_MARKER[:11]}""{SB_MARKER[11:]} efivar=$V kernel=${{K:-none}}"
R="{PERSIST_MARKER[:11]}""{PERSIST_MARKER[11:]} var=$P db=$DB db-write=$D"
M="{OS_MARKER[:11]}""{OS_MARKER[11:]} $({_BB} uname -r)"
for line in "$S" "$R" "$M"; do
    echo "$line" > /dev/kmsg
    echo "$line" > /dev/console
    for c in /dev/hvc0 /dev/ttyS0; do ( echo "$line" > $c ) 2>/dev/null & done
done
{_BB} sleep 2
{_BB} poweroff -f
"""

#: GRUB's configuration (shim-grub): no menu, straight to Linux; each step echoed, so a console shows how far it got.
GRUB_CFG = f"""set timeout=0
echo "{GRUB_MARKER} loading Linux"
linux /{GRUB_KERNEL} {KERNEL_CMDLINE}
echo "{GRUB_MARKER} loading the initramfs"
initrd /{GRUB_INITRD}
echo "{GRUB_MARKER} starting Linux"
boot
"""


@dataclass(frozen=True)
class SbDiskVersions:
    """What the Secure Boot disks are made of: the OS disk's packages, shim's and GRUB's, the signing key."""

    os: OsDiskVersions
    shim: str
    grub: str
    #: sha256 of the db certificate and of its private key that sign the ``signed`` UKI.
    cert_sha256: str
    key_sha256: str

    def key(self) -> str:
        """Key of the cache entry."""
        recipe = {"os": self.os.key(), "shim": self.shim, "grub": self.grub, "cert": self.cert_sha256,
                  "key": self.key_sha256, "init": _INIT, "grub_cfg": GRUB_CFG, "recipe": SB_DISK_RECIPE}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SbDisks:
    """The cached Secure Boot disks (one directory)."""

    root: Path

    def path(self, name: str) -> Path:
        """The disk ``name`` (one of SB_DISK_NAMES)."""
        if name not in SB_DISK_NAMES:
            raise OvmfgenError(f"no Secure Boot disk {name!r}: expected {', '.join(SB_DISK_NAMES)}")
        return self.root / f"sb-{name}.img"


def signing_pair(keys: Path) -> tuple[Path, Path]:
    """(db.pem, db.key) of the key set directory ``keys``, or one clear error."""
    cert, key = keys / "db.pem", keys / "db.key"
    for p in (cert, key):
        if not p.is_file():
            raise OvmfgenError(f"{p}: no such file (a key set directory holds db.pem and db.key)")
    return cert, key


def ensure_sign_tools() -> None:
    """apt-get install sbsigntool and faketime, if one is missing."""
    missing = sorted({pkg for tool, pkg in SIGN_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        ensure_apt_packages(tuple(missing))


# --- Pieces (each deterministic) --------------------------------------------------------------------


def sb_initramfs(busybox: bytes, efivarfs_ko: bytes) -> bytes:
    """The Secure Boot disks' initramfs: /init (reports the SB state, then the marker), busybox, efivarfs.ko."""
    return newc_archive([
        ("bin", 0o040755, b""),
        ("bin/busybox", 0o100755, busybox),
        ("dev", 0o040755, b""),
        ("lib", 0o040755, b""),
        ("lib/efivarfs.ko", 0o100644, efivarfs_ko),
        ("proc", 0o040755, b""),
        ("sys", 0o040755, b""),
        ("init", 0o100755, _INIT.encode()),
    ])


def cert_not_before(cert: Path) -> datetime:
    """The certificate's notBefore (UTC), read by openssl."""
    out = run(["openssl", "x509", "-noout", "-startdate", "-in", cert]).stdout.strip()
    text = " ".join(out.removeprefix("notBefore=").split())
    try:
        return datetime.strptime(text, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=timezone.utc)
    except ValueError:
        raise OvmfgenError(f"{cert}: cannot read its notBefore from openssl ({out!r})") from None


def sign_image(image: Path, cert: Path, key: Path, out: Path) -> Path:
    """``image`` signed with ``key``/``cert`` by sbsign (Authenticode), reproducibly, checked by sbverify.

    sbsign puts the time it runs into the PKCS#7 signing time: it runs under faketime at the
    certificate's notBefore (inside the certificate's validity), so the same inputs give the same bytes.
    """
    when = cert_not_before(cert).strftime("%Y-%m-%d %H:%M:%S")
    env = {**os.environ, "TZ": "UTC"}
    run(["faketime", "-f", f"@{when}", "sbsign", "--key", key, "--cert", cert, "--output", out, image], env=env)
    try:
        run(["sbverify", "--cert", cert, out])
    except CommandError as exc:
        raise OvmfgenError(f"sbverify does not accept {out.name} signed with {cert}: {exc.first_error()}") from None
    return out


def esp_kib(files: dict[str, Path]) -> int:
    """The size of an ESP holding ``files``: their sizes plus ESP_SLACK_KIB, in whole MiB, at least ESP_MIN_KIB."""
    need = sum(-(-p.stat().st_size // 1024) for p in files.values()) + ESP_SLACK_KIB
    return max(ESP_MIN_KIB, -(-need // 1024) * 1024)


def build_sb_disks(kernel: Path, stub: Path, busybox: Path, efivarfs_ko: Path, shim: Path, grub: Path,
                   cert: Path, key: Path, work: Path) -> dict[str, bytes]:
    """The Secure Boot disks' bytes by name (SB_DISK_NAMES) from their pieces (paths on the host)."""
    work.mkdir(parents=True, exist_ok=True)
    initrd = work / "initrd.img"
    initrd.write_bytes(sb_initramfs(busybox.read_bytes(), efivarfs_ko.read_bytes()))
    uki = make_uki(stub, kernel, initrd, KERNEL_CMDLINE, work)
    signed = sign_image(uki, cert, key, work / "BOOTX64.signed.EFI")
    cfg = work / "grub.cfg"
    cfg.write_text(GRUB_CFG)
    esps: dict[str, dict[str, Path]] = {
        "unsigned": {"EFI/BOOT/BOOTX64.EFI": uki},
        "signed": {"EFI/BOOT/BOOTX64.EFI": signed},
        "shim-uki": {"EFI/BOOT/BOOTX64.EFI": shim, "EFI/BOOT/grubx64.efi": signed},
        # Debian's GRUB reads $prefix/grub.cfg (its built-in prefix is /EFI/debian), else $cmdpath/grub.cfg.
        "shim-grub": {"EFI/BOOT/BOOTX64.EFI": shim, "EFI/BOOT/grubx64.efi": grub, "EFI/BOOT/grub.cfg": cfg,
                      "EFI/debian/grub.cfg": cfg, GRUB_KERNEL: kernel, GRUB_INITRD: initrd},
    }
    return {name: gpt_disk(fat_image(work / f"esp-{name}.img", esps[name], size_kib=esp_kib(esps[name]),
                                     label="OVMFGENSB"),
                           label=f"ovmfgen-sb-{name}")
            for name in SB_DISK_NAMES}


# --- The disks (cached) -----------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query_sb_disk_versions(keys: Path = TEST_KEYS) -> SbDiskVersions:
    """apt's candidate versions of everything the disks hold, and the signing key's digests."""
    cert, key = signing_pair(keys)
    recs = apt_candidates([SHIM_PACKAGE, GRUB_PACKAGE])
    return SbDiskVersions(query_os_disk_versions(), recs[SHIM_PACKAGE]["Version"], recs[GRUB_PACKAGE]["Version"],
                          _sha256(cert), _sha256(key))


def prepare_sb_disks(keys: Path = TEST_KEYS) -> SbDisks:
    """The cached Secure Boot disks (made once per set of package versions and signing key; temp dir + rename).

    ``keys``: the key set directory whose db.pem/db.key sign the ``signed`` UKI (default: the test keys).
    """
    root = disks_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    ensure_disk_tools()
    ensure_sign_tools()
    v = query_sb_disk_versions(keys)
    final = root / f"sbdisks-{v.key()}"
    disks = SbDisks(final)
    o = v.os

    def make(stage: Path) -> dict:
        say(f"xen cache: Secure Boot disks ({o.kernel_package} {o.kernel}, {STUB_PACKAGE} {o.stub}, "
            f"{BUSYBOX_PACKAGE} {o.busybox}, {SHIM_PACKAGE} {v.shim}, {GRUB_PACKAGE} {v.grub})")
        cert, key = signing_pair(keys)
        kernel = _extract(o.kernel_package, o.kernel, stage / "k", "boot/vmlinuz-*")
        efivarfs = sorted((stage / "k" / "x").glob("lib/modules/*/kernel/fs/efivarfs/efivarfs.ko"))
        if not efivarfs:
            raise OvmfgenError(f"{o.kernel_package} {o.kernel} has no efivarfs.ko (built in?)")
        stub = _extract(STUB_PACKAGE, o.stub, stage / "s", "usr/lib/systemd/boot/efi/linuxx64.efi.stub")
        busybox = _extract(BUSYBOX_PACKAGE, o.busybox, stage / "b", "bin/busybox")
        shim = _extract(SHIM_PACKAGE, v.shim, stage / "sh", SHIM_FILE)
        grub = _extract(GRUB_PACKAGE, v.grub, stage / "g", GRUB_FILE)
        data = build_sb_disks(kernel, stub, busybox, efivarfs[0], shim, grub, cert, key, stage / "work")
        for d in ("k", "s", "b", "sh", "g", "work"):
            shutil.rmtree(stage / d)
        for name, blob in data.items():
            (stage / disks.path(name).name).write_bytes(blob)
        return {"sha256": {n: hashlib.sha256(b).hexdigest() for n, b in data.items()}}

    ensure(final, make, stamp={"kernel": f"{o.kernel_package} {o.kernel}", STUB_PACKAGE: o.stub,
                               BUSYBOX_PACKAGE: o.busybox, SHIM_PACKAGE: v.shim, GRUB_PACKAGE: v.grub,
                               "signing_cert_sha256": v.cert_sha256, "recipe": SB_DISK_RECIPE, "key": v.key()},
           lock=root / CACHE_LOCK, what=CACHE_LOCK_WHAT,
           complete=lambda d: all((d / disks.path(n).name).is_file() for n in SB_DISK_NAMES), siblings="sbdisks-*")
    return disks
