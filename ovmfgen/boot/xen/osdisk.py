"""Guest disks for the Xen boot: an OS disk made from Debian packages (cached), and the persistence disk.

The OS disk is GPT with one EFI system partition (FAT16) holding ``\\EFI\\BOOT\\BOOTX64.EFI``, the
firmware's default boot path: a unified kernel image (systemd-boot-efi's ``linuxx64.efi.stub`` with
Debian's kernel, its command line and a tiny busybox initramfs added as sections by objcopy), so no
boot loader or Shell is involved. The initramfs prints ``OS_MARKER`` on every console and powers off.
The image is built without mounting (mkfs.fat --invariant, mtools, ``gpt.gpt_disk``) and is
byte-for-byte the same for the same package versions; it is cached under ``disks_cache_dir()``,
keyed by those versions and the recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.boot.xen.cache import CACHE_LOCK, CACHE_LOCK_WHAT
from ovmfgen.boot.xen.debian import KERNEL_META_PACKAGE, _apt_download, apt_candidates, kernel_package
from ovmfgen.boot.xen.gpt import gpt_disk
from ovmfgen.boot.xen.guests import newc_archive
from ovmfgen.boot.xen.verdicts import OS_MARKER
from ovmfgen.cacheentry import ensure
from ovmfgen.errors import OvmfgenError
from ovmfgen.apt import ensure_apt_packages
from ovmfgen.paths import cache_dir
from ovmfgen.run import run
from ovmfgen.ui import say

STUB_PACKAGE = "systemd-boot-efi"
BUSYBOX_PACKAGE = "busybox-static"
#: Host tools the disks need: mkfs.fat, mtools, objcopy.
DISK_TOOLS = {"mkfs.fat": "dosfstools", "mcopy": "mtools", "mmd": "mtools", "objcopy": "binutils"}
#: The kernel's console is hvc0, the Xen PV console: in PVH and HVM guests alike the console the firmware
#: prints on (SerialDxe over XenConsoleSerialPortLib) and the one xenconsoled logs. None on the serial
#: port: a PVH guest has none (Debian's kernel with 128 vCPUs and a console there stopped making progress,
#: 4 of 4 boots, Xen 4.20, after "vgaarb: loaded"), and an HVM guest's emulated UART is logged nowhere
#: while each character is a trap to dom0's device model (128 vCPUs, Xen 4.17: all CPUs up 192 dom0 s
#: after xl create with it, 71 without). ``loglevel=7``: the console gets the kernel's info lines too
#: (350-430 lines with one vCPU), among them the two the verdicts read, as the kernel prints them: its
#: report of the CPUs it brought up (verdicts.LINUX_SMP, the smp payload's goal, long before the init
#: runs) and its Secure Boot state; and a kernel that stalls shows where.
KERNEL_CMDLINE = "console=hvc0 loglevel=7 panic=-1 rdinit=/init"
#: Bump when the way the disk is made changes (forces a rebuild of the cache entry).
OS_DISK_RECIPE = 1
#: The EFI system partition: FAT16, 30 MiB (a UKI of ~11 MiB fits twice).
ESP_KIB = 30 * 1024
VOLUME_ID = "4f564d46"  # "OVMF": FAT's volume serial, fixed for reproducible bytes
#: Timestamps on the FAT volume: 1980-01-01, FAT's epoch.
FAT_EPOCH = 315532800

_INIT = f"""#!/bin/busybox sh
# /init of ovmfgen's OS disk: say that Linux reached user space, on every console, then power off.
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t proc proc /proc
M="{OS_MARKER[:11]}""{OS_MARKER[11:]} $(/bin/busybox uname -r)"
echo "$M" > /dev/kmsg
echo "$M" > /dev/console
for c in /dev/hvc0 /dev/ttyS0; do ( echo "$M" > $c ) 2>/dev/null & done
/bin/busybox sleep 2
/bin/busybox poweroff -f
"""


@dataclass(frozen=True)
class OsDiskVersions:
    """The Debian packages the OS disk is made of, with their versions: the cache key."""

    kernel_package: str
    kernel: str
    stub: str
    busybox: str

    def key(self) -> str:
        """Key of the cache entry: what goes into the disk (the kernel's command line too), how it is made."""
        recipe = {"kernel": [self.kernel_package, self.kernel], "stub": self.stub, "busybox": self.busybox,
                  "cmdline": KERNEL_CMDLINE, "init": _INIT, "esp_kib": ESP_KIB, "recipe": OS_DISK_RECIPE}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def query_os_disk_versions() -> OsDiskVersions:
    """apt's candidate versions of the kernel, the UEFI stub and busybox-static."""
    recs = apt_candidates([KERNEL_META_PACKAGE, STUB_PACKAGE, BUSYBOX_PACKAGE])
    kpkg = kernel_package(recs[KERNEL_META_PACKAGE])
    krec = apt_candidates([kpkg])[kpkg]
    return OsDiskVersions(kpkg, krec["Version"], recs[STUB_PACKAGE]["Version"], recs[BUSYBOX_PACKAGE]["Version"])


def ensure_disk_tools() -> None:
    """apt-get install the tools the disks need, if one is missing."""
    missing = sorted({pkg for tool, pkg in DISK_TOOLS.items() if shutil.which(tool) is None})
    if missing:
        ensure_apt_packages(tuple(missing))


# --- Pieces (each deterministic) --------------------------------------------------------------------


def initramfs(busybox: bytes) -> bytes:
    """The guest's initramfs: /init (a busybox script) and /bin/busybox; newc, mtime 0."""
    return newc_archive([
        ("bin", 0o040755, b""),
        ("bin/busybox", 0o100755, busybox),
        ("dev", 0o040755, b""),
        ("proc", 0o040755, b""),
        ("sys", 0o040755, b""),
        ("init", 0o100755, _INIT.encode()),
    ])


def _align(n: int, to: int) -> int:
    return -(-n // to) * to


def uki_sections(stub: Path, sections: dict[str, Path]) -> list[str]:
    """objcopy arguments adding ``sections`` (in order) to ``stub`` above its image, 64 KiB aligned."""
    out = run(["objdump", "-h", stub]).stdout
    end = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit():
            end = max(end, int(parts[3], 16) + int(parts[2], 16))
    if not end:
        raise OvmfgenError(f"{stub}: objdump shows no sections")
    args: list[str] = []
    vma = _align(end, 0x10000)
    for name, path in sections.items():
        args += ["--add-section", f"{name}={path}", "--change-section-vma", f"{name}={vma:#x}"]
        vma = _align(vma + path.stat().st_size, 0x10000)
    return args


def make_uki(stub: Path, kernel: Path, initrd: Path, cmdline: str, work: Path) -> Path:
    """A unified kernel image: the stub plus .osrel, .cmdline, .linux and .initrd sections."""
    osrel = work / "os-release"
    osrel.write_text('NAME="ovmfgen OS disk"\nID=ovmfgen\n')
    cmd = work / "cmdline"
    cmd.write_text(cmdline + "\0")
    out = work / "BOOTX64.EFI"
    run(["objcopy", *uki_sections(stub, {".osrel": osrel, ".cmdline": cmd, ".linux": kernel, ".initrd": initrd}),
         stub, out])
    out.write_bytes(pe_without_timestamp(out.read_bytes()))
    return out


def pe_checksum(data: bytes, checksum_at: int) -> int:
    """The PE image checksum (16-bit one's-complement sum of the file, its CheckSum field as zero, plus the size)."""
    buf = bytearray(data)
    buf[checksum_at:checksum_at + 4] = b"\0\0\0\0"
    if len(buf) % 2:
        buf.append(0)
    total = sum(struct.unpack_from(f"<{len(buf) // 2}H", buf))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total + len(data)


def pe_without_timestamp(data: bytes) -> bytes:
    """``data`` (a PE image) with its COFF TimeDateStamp zeroed and its checksum made right again.

    objcopy stamps the time it ran, and has no switch against it: this makes the UKI reproducible.
    """
    if data[:2] != b"MZ":
        raise OvmfgenError("objcopy's output is not a PE image")
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        raise OvmfgenError("objcopy's output has no PE signature")
    buf = bytearray(data)
    buf[pe + 8:pe + 12] = b"\0\0\0\0"
    checksum_at = pe + 24 + 64  # the optional header's CheckSum (PE32 and PE32+ alike)
    struct.pack_into("<I", buf, checksum_at, pe_checksum(bytes(buf), checksum_at))
    return bytes(buf)


def fat_image(path: Path, files: dict[str, Path], size_kib: int = ESP_KIB, label: str = "OVMFGEN") -> bytes:
    """A FAT16 volume of ``size_kib`` holding ``files`` (path on the volume, e.g. ``EFI/BOOT/X.EFI``).

    Reproducible: mkfs.fat --invariant with a fixed volume id, every timestamp FAT's epoch.
    """
    path.unlink(missing_ok=True)
    # One sector per cluster: FAT16 wants >= 4085 clusters, which small volumes only reach that way.
    run(["mkfs.fat", "--invariant", "-i", VOLUME_ID, "-n", label, "-F", "16", "-s", "1", "-C", path, str(size_kib)])
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(FAT_EPOCH), "MTOOLS_SKIP_CHECK": "1"}
    dirs = sorted({"/".join(name.split("/")[:i]) for name in files for i in range(1, name.count("/") + 1)})
    if dirs:
        run(["mmd", "-i", path, *(f"::/{d}" for d in dirs)], env=env)
    for name, src in sorted(files.items()):
        os.utime(src, (FAT_EPOCH, FAT_EPOCH))
        run(["mcopy", "-m", "-i", path, src, f"::/{name}"], env=env)
    return path.read_bytes()


# --- The OS disk (cached) ----------------------------------------------------------------------------


def build_os_disk(kernel: Path, stub: Path, busybox: Path, work: Path) -> bytes:
    """The OS disk's bytes from the kernel (vmlinuz), the UEFI stub and busybox (paths on the host)."""
    work.mkdir(parents=True, exist_ok=True)
    initrd = work / "initrd.cpio"
    initrd.write_bytes(initramfs(busybox.read_bytes()))
    uki = make_uki(stub, kernel, initrd, KERNEL_CMDLINE, work)
    return gpt_disk(fat_image(work / "esp.img", {"EFI/BOOT/BOOTX64.EFI": uki}), label="ovmfgen-os")


def _extract(package: str, version: str, stage: Path, member: str) -> Path:
    """``member`` (glob, relative to /) of the package's .deb, unpacked under ``stage``."""
    deb = _apt_download(package, version, stage / "dl")
    x = stage / "x"
    run(["dpkg", "-x", deb, x])
    found = sorted(x.glob(member))
    if not found:
        raise OvmfgenError(f"{deb.name} has no {member}")
    return found[0]


def disks_cache_dir() -> Path:
    """Where guest disks live (inside ovmfgen's cache, with a lock of their own: making a disk need not
    wait for a dom0 being made)."""
    return cache_dir() / "disks"


def prepare_os_disk() -> Path:
    """The cached OS disk image, built once per set of package versions (temp dir + rename)."""
    root = disks_cache_dir()
    ensure_disk_tools()
    v = query_os_disk_versions()
    key = v.key()
    final = root / f"osdisk-{key}"
    disk = final / "os-disk.img"

    def make(stage: Path) -> dict[str, object]:
        say(f"xen cache: OS disk ({v.kernel_package} {v.kernel}, {STUB_PACKAGE} {v.stub}, "
            f"{BUSYBOX_PACKAGE} {v.busybox})")
        kernel = _extract(v.kernel_package, v.kernel, stage / "k", "boot/vmlinuz-*")
        stub = _extract(STUB_PACKAGE, v.stub, stage / "s", "usr/lib/systemd/boot/efi/linuxx64.efi.stub")
        busybox = _extract(BUSYBOX_PACKAGE, v.busybox, stage / "b", "bin/busybox")
        data = build_os_disk(kernel, stub, busybox, stage / "work")
        for d in ("k", "s", "b", "work"):
            shutil.rmtree(stage / d)
        (stage / disk.name).write_bytes(data)
        return {"sha256": hashlib.sha256(data).hexdigest()}

    ensure(final, make, stamp={"kernel": f"{v.kernel_package} {v.kernel}", STUB_PACKAGE: v.stub,
                               BUSYBOX_PACKAGE: v.busybox, "recipe": OS_DISK_RECIPE, "cmdline": KERNEL_CMDLINE,
                               "key": key},
           lock=root / CACHE_LOCK, what=CACHE_LOCK_WHAT, complete=lambda d: (d / disk.name).is_file(),
           siblings="osdisk-*")
    return disk


# --- The persistence disk (made per run: no packages) ---------------------------------------------


def persist_disk(work: Path, script: str) -> bytes:
    """A GPT disk whose FAT partition holds ``startup.nsh`` (``script``) and a file a boot option can name.

    No ``\\EFI\\BOOT\\BOOTX64.EFI``: the firmware's disk option fails and BDS falls through to the
    Shell, which runs startup.nsh.
    """
    work.mkdir(parents=True, exist_ok=True)
    nsh = work / "startup.nsh"
    nsh.write_bytes(script.replace("\n", "\r\n").encode())
    target = work / "target.efi"
    target.write_bytes(b"ovmfgen: the file a persistence test boot option points at\r\n")
    esp = fat_image(work / "persist.img", {"startup.nsh": nsh, "ovmfgen/target.efi": target}, size_kib=8 * 1024,
                    label="OVMFGENNV")
    return gpt_disk(esp, label="ovmfgen-persist")

