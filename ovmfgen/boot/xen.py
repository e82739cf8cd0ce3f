"""Boot truth on real Xen: run a PVH ELF as a guest of Xen 4.17, itself running nested under QEMU TCG.

The pieces all come from Debian bookworm packages and are cached under ``cache_dir()/xen``:

* the hypervisor (``xen-hypervisor-4.17-amd64``), gunzipped, because QEMU's multiboot loader wants
  the plain ELF;
* a dom0 kernel (the ``linux-image-<abi>-amd64`` that ``linux-image-amd64`` depends on) and the five
  Xen driver modules dom0 needs (privcmd, xenfs, evtchn, gntdev, gntalloc);
* a dom0 root file system (debootstrap minbase + ``xen-utils-4.17`` from bookworm and
  bookworm-security, so the tools match the hypervisor), packed once as a newc cpio (~155 MB).

Each entry is keyed by the package versions apt reports, so it is rebuilt only when those change.
Per run, a small second cpio is appended to the big one: ``/init`` (brings up dom0's Xen services),
the firmware and the test script. QEMU boots Xen with dom0 = that kernel + initramfs; dom0 runs
``xl create`` on the firmware as a ``type="pvh"`` guest and watches its PV console for the UEFI Shell
prompt. Everything dom0 prints goes to Xen's console, so a single serial log holds the hypervisor's
messages, the guest's debug output (``(d1) ...``, when the firmware writes debug output to the
hypervisor console port 0xe9), dom0's events and, at the end, the guest console copied out.

``classify_xen_run`` turns those logs into exactly one verdict (a pure function, unit-tested on
captured logs); ``boot_xen`` runs it all; ``boot_xen_command`` is the CLI entry.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fsutil import atomic_write_bytes, replace_dir
from ovmfgen.paths import DIST_DIR, cache_dir
from ovmfgen.host.setup import AptSource, ensure_apt_packages, read_apt_sources
from ovmfgen.run import DEVNULL, STDOUT, CommandError, popen, run, stop, wait
from ovmfgen.ui import say

# --- What we run: Debian bookworm's Xen 4.17 ------------------------------------------------------

SUITE = "bookworm"
SECURITY_SUITE = f"{SUITE}-security"
XEN_SERIES = "4.17"
HYPERVISOR_PACKAGE = f"xen-hypervisor-{XEN_SERIES}-amd64"
UTILS_PACKAGE = f"xen-utils-{XEN_SERIES}"
KERNEL_META_PACKAGE = "linux-image-amd64"
#: Host tools a Xen boot needs (apt package names): the dom0 build and QEMU itself.
HOST_PACKAGES = ("debootstrap", "cpio", "qemu-system-x86")
#: Packages debootstrap adds to minbase: modprobe/insmod, ps, and busybox for poweroff.
DEBOOTSTRAP_INCLUDE = ("kmod", "procps", "busybox")
#: dom0's Xen driver modules, in load order (xenfs needs xen-privcmd).
DOM0_MODULES = ("xen-privcmd", "xenfs", "xen-evtchn", "xen-gntdev", "xen-gntalloc")
#: Bump when the way the dom0 root file system is made changes (forces a rebuild of that entry).
ROOTFS_RECIPE = 2
#: Stripped from the root file system: only people read these, and they cost initramfs unpack time.
ROOTFS_STRIP = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
                "usr/share/lintian", "var/cache/apt", "var/lib/apt/lists")

GUEST_NAME = "ovmfgen-pvh"
GUEST_MEMORY_MIB = 256

# QEMU settings that make Xen work nested under TCG here (each was needed):
# -smap,-smep: without them dom0 dies at once (#PF in create_bounce_frame); -rdtscp: without it PVH
# guests die ("SVM Insn len emulation failed"); 2 GiB / dom0_mem=1024M: with less, dom0's initramfs
# (the root file system) does not unpack.
QEMU_BINARY = "qemu-system-x86_64"
QEMU_CPU = "max,-smap,-smep,-rdtscp"
QEMU_MEMORY_MIB = 2048
# -icount with a fixed shift and sleep=off: guest time advances by instructions executed, not by
# the host's clock. Without it QEMU 7.2 aborted in most boots of an edk2 guest ("tcg_handle_interrupt:
# assertion failed: (qemu_mutex_iothread_locked())"): edk2's interrupt exit path writes CR8, and a
# CR8 write by a nested SVM guest while Xen has an interrupt window (V_IRQ) open calls
# cpu_interrupt() without the BQL. Windows open when a second interrupt is pending during the
# handler, which wall-clock time (host load, TCG translation) makes common. With icount the run is
# also close to deterministic. The cost: one TCG thread for both vCPUs (~70 s instead of ~30 s).
# A retry (see boot_xen) uses the next shift, so it does not replay the same instruction stream.
QEMU_ICOUNT_SHIFTS = (0, 1)
XEN_CMDLINE = ("console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all "
               "dom0_mem=1024M,max:1024M dom0_max_vcpus=1 dom0_vcpus_pin noreboot")
DOM0_CMDLINE = "console=hvc0 earlyprintk=xen rdinit=/init"

#: Wall seconds dom0 needs to boot and report back, reserved out of the overall timeout.
DOM0_OVERHEAD_S = 60.0
#: Wall seconds per guest (virtual, icount) second, measured here (~70 s wall for ~12 s virtual);
#: used only to turn the wall-clock timeout into dom0's deadline for the guest.
WALL_PER_GUEST_SECOND = 6.0
MIN_GUEST_TIMEOUT_S = 20

# Markers the dom0 side prints on its console (which Xen copies to the serial log).
EVENT = "OVMFGEN-EVENT"
RESULT = "OVMFGEN-RESULT"
XL_PREFIX = "OVMFGEN-XL| "
GUEST_PREFIX = "OVMFGEN-G| "
GUEST_BEGIN = "OVMFGEN-GUEST-CONSOLE-BEGIN"
GUEST_END = "OVMFGEN-GUEST-CONSOLE-END"

SERIAL_LOG_NAME = "xen-serial.log"
GUEST_LOG_NAME = "xen-guest-console.log"
QEMU_LOG_NAME = "xen-qemu.log"
SUMMARY_NAME = "xen-boot.json"


# --- Verdicts -------------------------------------------------------------------------------------


class Verdict(str, Enum):
    """The one outcome of a boot under Xen."""

    SHELL_REACHED = "SHELL_REACHED"    # the guest printed the UEFI Shell prompt on its PV console
    FW_ASSERT = "FW_ASSERT"            # the firmware hit an ASSERT (detail: the ASSERT line)
    GUEST_CRASHED = "GUEST_CRASHED"    # Xen saw the guest crash (triple fault, domain_crash, state c)
    GUEST_GONE = "GUEST_GONE"          # the domain vanished (or was never created) without a shell
    TIMEOUT = "TIMEOUT"                # still running, no shell, when time ran out
    HARNESS_FAILURE = "HARNESS_FAILURE"  # QEMU/Xen/dom0 failed: says nothing about the firmware

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class XenBootResult:
    """What a boot under Xen showed. ``detail`` explains the verdict in one line."""

    verdict: Verdict
    detail: str = ""
    #: dom0 uptime (s) at ``xl create`` and when the shell prompt was seen; None when unknown.
    create_at: float | None = None
    shell_at: float | None = None
    #: Filled in by ``boot_xen``: wall time and peak RSS of the QEMU run, attempts made, the logs.
    qemu_seconds: float | None = None
    qemu_max_rss_mib: float | None = None
    attempts: int = 1
    serial_log: Path | None = None
    guest_log: Path | None = None
    guest_console: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        """True only for SHELL_REACHED."""
        return self.verdict is Verdict.SHELL_REACHED

    @property
    def shell_seconds(self) -> float | None:
        """Seconds from ``xl create`` to the shell prompt (dom0's clock)."""
        if self.create_at is None or self.shell_at is None:
            return None
        return round(self.shell_at - self.create_at, 2)


# --- Log classification (pure) --------------------------------------------------------------------

_ASSERT_RE = re.compile(r"ASSERT[ _\[(].*")
_EVENT_RE = re.compile(rf"{EVENT} (\S+) ([0-9.]+)")
_RESULT_RE = re.compile(rf"{RESULT} (\S+)")
_TRIPLE_RE = re.compile(r"\(XEN\).*\bd\d+v\d+ Triple fault.*")
_DOMAIN_CRASH_RE = re.compile(r"\(XEN\).*(?:domain_crash|Domain \d+ crashed|crashed on CPU).*", re.I)
_XEN_PANIC_RE = re.compile(r"\(XEN\) (?:\*+ )?Panic on CPU.*|\(XEN\) FATAL .*")
_DOM0_PANIC_RE = re.compile(r"Kernel panic - not syncing.*")
_SHELL_RE = re.compile(r"Shell>")


def extract_guest_console(serial_log: str) -> str:
    """The guest console dom0 copied into the serial log (between the BEGIN/END markers)."""
    lines: list[str] = []
    inside = False
    for raw in serial_log.splitlines():
        line = raw.rstrip("\r")
        if GUEST_BEGIN in line:
            inside, lines = True, []
            continue
        if GUEST_END in line:
            inside = False
            continue
        if inside:
            pos = line.find(GUEST_PREFIX)
            if pos >= 0:
                lines.append(line[pos + len(GUEST_PREFIX):])
    return "\n".join(lines) + ("\n" if lines else "")


def _guest_lines(serial_log: str) -> list[str]:
    """Guest debug lines Xen printed as ``(d1) ...`` (domain 0 is dom0 itself, excluded)."""
    out = []
    for line in serial_log.splitlines():
        m = re.search(r"\(d([1-9]\d*)\) ?(.*)", line)
        if m:
            out.append(m.group(2).rstrip("\r"))
    return out


def classify_xen_run(serial_log: str, guest_console: str, qemu_returncode: int | None) -> XenBootResult:
    """Turn one Xen-in-QEMU run's logs into exactly one verdict.

    ``serial_log`` is Xen's serial console (hypervisor lines, ``(d1)`` guest debug lines, dom0's
    console with the ``OVMFGEN-*`` markers); ``guest_console`` the guest's PV console log;
    ``qemu_returncode`` QEMU's exit status, or None when it was killed because time ran out.
    A QEMU that died by itself is a HARNESS_FAILURE whatever the guest had shown: such a run counts
    neither as a firmware pass nor as a firmware failure.
    """
    events: dict[str, float] = {}
    for m in _EVENT_RE.finditer(serial_log):
        events.setdefault(m.group(1), float(m.group(2)))
    results = _RESULT_RE.findall(serial_log)
    result = results[-1] if results else None
    timing = {"create_at": events.get("create"), "shell_at": events.get("shell")}
    shell_seen = "shell" in events or bool(_SHELL_RE.search(guest_console))

    if qemu_returncode not in (None, 0):
        seen = " (the guest had reached the shell)" if shell_seen else ""
        return XenBootResult(Verdict.HARNESS_FAILURE,
                             f"QEMU exited with status {qemu_returncode}{seen}", **timing)
    panic = _XEN_PANIC_RE.search(serial_log)
    if panic:
        return XenBootResult(Verdict.HARNESS_FAILURE, f"Xen died: {panic.group(0).strip()}", **timing)

    for line in _guest_lines(serial_log):
        m = _ASSERT_RE.search(line)
        if m:
            return XenBootResult(Verdict.FW_ASSERT, m.group(0).strip(), **timing)
    if result == "assert":
        return XenBootResult(Verdict.FW_ASSERT, "xl dmesg showed a guest ASSERT (line not in the serial log)",
                             **timing)
    if shell_seen:
        return XenBootResult(Verdict.SHELL_REACHED, "UEFI Shell prompt on the guest's PV console", **timing)

    crash = _TRIPLE_RE.search(serial_log) or _DOMAIN_CRASH_RE.search(serial_log)
    if result == "crashed" or crash:
        why = crash.group(0).strip() if crash else "xl list shows the domain crashed"
        return XenBootResult(Verdict.GUEST_CRASHED, why, **timing)
    if result == "create-failed":
        errors = [ln.split(XL_PREFIX, 1)[1].strip() for ln in serial_log.splitlines() if XL_PREFIX in ln]
        worst = next((e for e in errors if "error" in e.lower()), errors[-1] if errors else "")
        return XenBootResult(Verdict.GUEST_GONE, f"xl create failed: {worst}".rstrip(": "), **timing)
    if result == "gone":
        return XenBootResult(Verdict.GUEST_GONE, "the domain went away without reaching the shell", **timing)
    if result == "timeout":
        return XenBootResult(Verdict.TIMEOUT, "no shell prompt before dom0's deadline", **timing)
    if qemu_returncode is None:
        if "create" in events:
            return XenBootResult(Verdict.TIMEOUT, "no shell prompt before the QEMU run timed out", **timing)
        return XenBootResult(Verdict.HARNESS_FAILURE, "dom0 never reached xl create before the timeout",
                             **timing)
    dom0_panic = _DOM0_PANIC_RE.search(serial_log)
    if dom0_panic:
        return XenBootResult(Verdict.HARNESS_FAILURE, f"dom0 died: {dom0_panic.group(0).strip()}", **timing)
    return XenBootResult(Verdict.HARNESS_FAILURE, "dom0 ended without reporting a result", **timing)


# --- Generated text: xl config, dom0 /init, test script, QEMU argv ----------------------------------


def xl_config(kernel: str, name: str = GUEST_NAME, memory_mib: int = GUEST_MEMORY_MIB) -> str:
    """The xl domain config that runs ``kernel`` (a PVH ELF) as a PVH guest."""
    return (
        f'name = "{name}"\n'
        'type = "pvh"\n'
        f'kernel = "{kernel}"\n'
        f"memory = {memory_mib}\n"
        "vcpus = 1\n"
        # dom0 is pinned to pCPU 0 (dom0_vcpus_pin): the guest gets pCPU 1 to itself, so Xen never
        # preempts it for dom0 (a preempted vCPU piles up timer ticks, see timer_mode below).
        'cpus = "1"\n'
        'on_poweroff = "destroy"\n'
        'on_reboot = "destroy"\n'
        # Keep a crashed domain so xl list shows it in state c (that is how we tell crash from exit).
        'on_crash = "preserve"\n'
        # Xen's default (delay_for_missed_ticks) delivers the ticks a stalled vCPU missed back to
        # back; under TCG a stall is common, and a tick pending while the firmware's interrupt
        # handler runs makes Xen request an interrupt window (V_IRQ), whereupon the handler's
        # `mov cr8` hits a QEMU 7.2 bug (cpu_interrupt without the BQL: QEMU aborts). Holding no
        # missed ticks pending avoids that pattern; the firmware sees the same periodic timer.
        'timer_mode = "no_missed_ticks_pending"\n'
    )


def dom0_init_script() -> str:
    """dom0's /init: mount the basics, load the Xen drivers, start the Xen daemons, run the test."""
    insmods = "\n".join(f"insmod /ovmfgen/modules/{m}.ko || echo 'ovmfgen: insmod {m} failed'"
                        for m in DOM0_MODULES)
    return f"""#!/bin/sh
# dom0 /init written by ovmfgen.boot.xen: bring up Xen's dom0 services, run the test, power off.
# The versioned tools first: xen-init-dom0 has no wrapper in /usr/sbin.
export PATH=/usr/lib/xen-{XEN_SERIES}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/xen /run/xenstored /var/lib/xen /var/lib/xenstored /var/log/xen/console
{insmods}
mount -t xenfs xenfs /proc/xen
echo "{EVENT} dom0-up $(cut -d' ' -f1 /proc/uptime)"
xenstored --pid-file=/run/xenstored.pid
xen-init-dom0
xenconsoled --log=all --log-dir=/var/log/xen/console
sh /ovmfgen/test.sh
echo "{EVENT} done $(cut -d' ' -f1 /proc/uptime)"
sync
busybox poweroff -f
echo o > /proc/sysrq-trigger
sleep 30
"""


def dom0_test_script(guest_timeout_s: int, name: str = GUEST_NAME) -> str:
    """The dom0 test: ``xl create`` the guest, wait for its shell prompt (or death), report."""
    return f"""#!/bin/sh
# Written by ovmfgen.boot.xen. Prints {EVENT}/{RESULT} lines that classify_xen_run reads.
NAME={name}
LOG=/var/log/xen/console/guest-$NAME.log
ev() {{ echo "{EVENT} $1 $(cut -d' ' -f1 /proc/uptime)"; }}
now() {{ cut -d. -f1 /proc/uptime; }}
ev create
if ! xl create /ovmfgen/guest.cfg > /tmp/xl-create.log 2>&1; then
    sed 's/^/{XL_PREFIX}/' /tmp/xl-create.log
    echo "{RESULT} create-failed"
    exit 0
fi
sed 's/^/{XL_PREFIX}/' /tmp/xl-create.log
ev created
result=timeout
deadline=$(( $(now) + {guest_timeout_s} ))
while [ "$(now)" -lt "$deadline" ]; do
    if grep -q 'Shell>' "$LOG" 2>/dev/null; then
        ev shell
        result=shell
        # Freeze the guest at once: nothing it does after this counts, and a guest that keeps
        # taking interrupts can still trip QEMU's TCG bug before dom0 has reported.
        xl pause "$NAME"
        break
    fi
    # A DEBUG firmware that writes to the hypervisor console shows its ASSERT in Xen's ring, then
    # dead-loops: stop waiting at once.
    if xl dmesg 2>/dev/null | grep -Eq '\\(d[1-9][0-9]*\\) ASSERT'; then
        ev assert
        result=assert
        break
    fi
    state=$(xl list 2>/dev/null | awk -v n="$NAME" '$1 == n {{ print $6 }}')
    if [ -z "$state" ]; then
        result=gone
        break
    fi
    case "$state" in *c*) result=crashed; break ;; esac
    sleep 1
done
xl list 2>&1 | sed 's/^/{XL_PREFIX}/'
echo "{GUEST_BEGIN}"
tail -c 65536 "$LOG" 2>/dev/null | sed 's/^/{GUEST_PREFIX}/'
echo
echo "{GUEST_END}"
echo "{RESULT} $result"
xl destroy "$NAME" > /dev/null 2>&1
"""


def qemu_argv(xen: Path, dom0_kernel: Path, dom0_initrd: Path, serial_log: Path,
              icount_shift: int = QEMU_ICOUNT_SHIFTS[0], qemu: str = QEMU_BINARY) -> list[str]:
    """QEMU's command line: Xen by multiboot, dom0 kernel and initramfs as its modules."""
    for p in (dom0_kernel, dom0_initrd):
        # QEMU splits multiboot modules at commas and a module's path from its arguments at spaces.
        if "," in str(p) or " " in str(p):
            raise OvmfgenError(f"path unusable as a QEMU multiboot module (comma or space): {p}")
    return [
        qemu, "-machine", "pc", "-accel", "tcg", "-icount", f"shift={icount_shift},sleep=off",
        "-cpu", QEMU_CPU, "-smp", "2", "-m", str(QEMU_MEMORY_MIB),
        "-display", "none", "-vga", "none", "-no-reboot", "-nodefaults", "-monitor", "none",
        "-serial", f"file:{serial_log}",
        "-kernel", str(xen),
        "-append", XEN_CMDLINE,
        "-initrd", f"{dom0_kernel} {DOM0_CMDLINE},{dom0_initrd}",
    ]


# --- newc cpio (for the small per-run overlay) ----------------------------------------------------


def newc_archive(entries: Sequence[tuple[str, int, bytes]]) -> bytes:
    """A newc ("070701") cpio archive of ``(name, mode, data)`` entries, deterministic (mtime 0).

    Directories are entries with a directory ``mode`` and empty data; list them before their files.
    """
    out = bytearray()

    def put(name: str, mode: int, data: bytes, ino: int) -> None:
        encoded = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1 if not (mode & 0o040000) else 2, 0, len(data), 0, 0, 0, 0,
                  len(encoded), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(encoded)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate(entries, start=1):
        put(name.lstrip("/"), mode, data, ino)
    put("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def overlay_cpio(image: Path, modules_dir: Path, guest_timeout_s: int,
                 memory_mib: int = GUEST_MEMORY_MIB) -> bytes:
    """The per-run cpio appended to dom0's initramfs: /init, the Xen modules, firmware, test."""
    entries: list[tuple[str, int, bytes]] = [
        ("init", 0o100755, dom0_init_script().encode()),
        ("ovmfgen", 0o040755, b""),
        ("ovmfgen/modules", 0o040755, b""),
    ]
    for m in DOM0_MODULES:
        entries.append((f"ovmfgen/modules/{m}.ko", 0o100644, (modules_dir / f"{m}.ko").read_bytes()))
    entries += [
        ("ovmfgen/ovmf.elf", 0o100644, image.read_bytes()),
        ("ovmfgen/guest.cfg", 0o100644, xl_config("/ovmfgen/ovmf.elf", memory_mib=memory_mib).encode()),
        ("ovmfgen/test.sh", 0o100755, dom0_test_script(guest_timeout_s).encode()),
    ]
    return newc_archive(entries)


# --- apt: mirrors, versions, downloads ------------------------------------------------------------


def pick_mirror(sources: Sequence[AptSource], suite: str) -> str | None:
    """The URI of the first binary (``deb``) source carrying ``suite``'s main component, or None."""
    for s in sources:
        if "deb" in s.types and suite in s.suites and "main" in s.components \
                and not s.uri.startswith(("cdrom:", "file:")):
            return s.uri.rstrip("/")
    return None


def debian_mirrors(sources: Sequence[AptSource] | None = None) -> tuple[str, str | None]:
    """(bookworm mirror, bookworm-security mirror or None), taken from the machine's apt sources."""
    sources = read_apt_sources() if sources is None else sources  # the setup stage's reader
    main = pick_mirror(sources, SUITE)
    if main is None:
        raise OvmfgenError(f"no apt source for Debian {SUITE} main in /etc/apt: cannot fetch Xen packages")
    return main, pick_mirror(sources, SECURITY_SUITE)


def parse_apt_show(text: str) -> dict[str, dict[str, str]]:
    """``apt-cache show`` records as {package: {Field: value}} (first record per package wins)."""
    records: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text):
        rec: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1].isspace() and key:
                rec[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                rec[key] = value.strip()
        if "Package" in rec:
            records.setdefault(rec["Package"], rec)
    return records


def _apt_candidates(packages: Sequence[str]) -> dict[str, dict[str, str]]:
    proc = run(["apt-cache", "show", "--no-all-versions", *packages], check=False)
    return parse_apt_show(proc.stdout)


def apt_candidates(packages: Sequence[str]) -> dict[str, dict[str, str]]:
    """apt's candidate record of each package; runs ``apt-get update`` once if one is unknown."""
    recs = _apt_candidates(packages)
    if any(p not in recs for p in packages):
        say("apt does not know every Xen package yet: apt-get update")
        run(["apt-get", "update"], timeout=600)
        recs = _apt_candidates(packages)
    missing = [p for p in packages if p not in recs]
    if missing:
        raise OvmfgenError(f"apt has no candidate for {', '.join(missing)} (is this Debian {SUITE}?)")
    return recs


def kernel_package(meta_record: dict[str, str]) -> str:
    """The ``linux-image-<abi>-amd64`` package the meta package's candidate depends on."""
    for dep in meta_record.get("Depends", "").split(","):
        name = dep.strip().split(" ", 1)[0]
        if re.fullmatch(r"linux-image-\d.*-amd64", name):
            return name
    raise OvmfgenError(f"{KERNEL_META_PACKAGE} depends on no linux-image-*-amd64 package")


@dataclass(frozen=True)
class XenVersions:
    """Package versions the cache is keyed by."""

    hypervisor: str
    utils: str
    kernel_package: str
    kernel: str

    def rootfs_key(self) -> str:
        """Key of the dom0 root file system: what goes into it, and how it is made."""
        recipe = {"suite": SUITE, "utils": self.utils, "include": list(DEBOOTSTRAP_INCLUDE),
                  "strip": list(ROOTFS_STRIP), "recipe": ROOTFS_RECIPE}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def query_versions() -> XenVersions:
    """The candidate versions apt reports for the hypervisor, the tools and dom0's kernel."""
    recs = apt_candidates([HYPERVISOR_PACKAGE, UTILS_PACKAGE, KERNEL_META_PACKAGE])
    kpkg = kernel_package(recs[KERNEL_META_PACKAGE])
    krec = apt_candidates([kpkg])[kpkg]
    return XenVersions(recs[HYPERVISOR_PACKAGE]["Version"], recs[UTILS_PACKAGE]["Version"], kpkg,
                       krec["Version"])


def safe_name(version: str) -> str:
    """A Debian version as a directory-name component (epoch colon and other oddities made ``_``)."""
    return re.sub(r"[^A-Za-z0-9.+~-]", "_", version)


def ensure_host_packages(packages: Sequence[str] = HOST_PACKAGES) -> None:
    """apt-get install whichever of ``packages`` is missing (the setup stage's installer)."""
    ensure_apt_packages(tuple(packages))


def _apt_download(package: str, version: str, dest: Path) -> Path:
    """``apt-get download PACKAGE=VERSION`` into ``dest``; the .deb path."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "download", f"{package}={version}"], cwd=dest, timeout=900)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise OvmfgenError(f"apt-get download {package}={version} left no .deb in {dest}")
    return debs[-1]


# --- The cache ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XenAssets:
    """Everything a Xen boot needs besides the firmware, all inside the cache."""

    xen: Path            # the hypervisor, plain ELF (multiboot)
    dom0_kernel: Path    # vmlinuz
    modules_dir: Path    # the DOM0_MODULES as <name>.ko
    rootfs_cpio: Path    # dom0's root file system, newc cpio
    versions: XenVersions


def xen_cache_dir() -> Path:
    """Where the Xen boot assets live (inside ovmfgen's cache; safe to delete)."""
    return cache_dir() / "xen"


@contextmanager
def _cache_lock(root: Path) -> Iterator[None]:
    """Serialize cache preparation between concurrent ovmfgen runs."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _staging(root: Path, name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))


def _drop_siblings(root: Path, prefix: str, keep: Path) -> None:
    """Remove older entries of the same kind (each dom0 cpio is ~155 MB)."""
    for p in root.glob(f"{prefix}-*"):
        if p != keep and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _stamp(d: Path, info: dict[str, object]) -> None:
    atomic_write_bytes(d / "stamp.json", (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())


def _prepare_hypervisor(root: Path, v: XenVersions) -> Path:
    final = root / f"hypervisor-{safe_name(v.hypervisor)}"
    xen = final / f"xen-{XEN_SERIES}"
    if (final / "stamp.json").is_file() and xen.is_file():
        return xen
    say(f"xen cache: hypervisor {v.hypervisor}")
    stage = _staging(root, "hypervisor")
    try:
        deb = _apt_download(HYPERVISOR_PACKAGE, v.hypervisor, stage / "dl")
        run(["dpkg", "-x", deb, stage / "x"])
        gz = stage / "x" / "boot" / f"xen-{XEN_SERIES}-amd64.gz"
        if not gz.is_file():
            raise OvmfgenError(f"{deb.name} has no boot/{gz.name}")
        with gzip.open(gz, "rb") as src:
            data = src.read()
        if data[:4] != b"\x7fELF":
            raise OvmfgenError(f"{gz.name} does not hold an ELF image")
        (stage / xen.name).write_bytes(data)
        shutil.rmtree(stage / "dl")
        shutil.rmtree(stage / "x")
        _stamp(stage, {"package": HYPERVISOR_PACKAGE, "version": v.hypervisor})
        replace_dir(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _drop_siblings(root, "hypervisor", final)
    return xen


def _prepare_kernel(root: Path, v: XenVersions) -> tuple[Path, Path]:
    final = root / f"kernel-{safe_name(v.kernel_package)}-{safe_name(v.kernel)}"
    if (final / "stamp.json").is_file():
        return final / "vmlinuz", final / "modules"
    say(f"xen cache: dom0 kernel {v.kernel_package} {v.kernel}")
    stage = _staging(root, "kernel")
    try:
        deb = _apt_download(v.kernel_package, v.kernel, stage / "dl")
        x = stage / "x"
        run(["dpkg", "-x", deb, x])
        vmlinuz = sorted((x / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise OvmfgenError(f"{deb.name} has no boot/vmlinuz-*")
        shutil.copyfile(vmlinuz[0], stage / "vmlinuz")
        mods = stage / "modules"
        mods.mkdir()
        found = {p.name[:-3]: p for p in (x / "lib" / "modules").glob("*/kernel/drivers/xen/**/*.ko")}
        for m in DOM0_MODULES:
            if m not in found:
                raise OvmfgenError(f"{deb.name} has no module {m}.ko under drivers/xen (built in?)")
            shutil.copyfile(found[m], mods / f"{m}.ko")
        shutil.rmtree(stage / "dl")
        shutil.rmtree(x)
        _stamp(stage, {"package": v.kernel_package, "version": v.kernel})
        replace_dir(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _drop_siblings(root, "kernel", final)
    return final / "vmlinuz", final / "modules"


def _chroot_apt_install(rootfs: Path, packages: Sequence[str]) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8",
           "HOME": "/root"}
    # The mirror may be a dated snapshot whose Release files are past Valid-Until, as on the host.
    opts = ["-o", "Acquire::Check-Valid-Until=false"]
    run(["chroot", rootfs, "apt-get", *opts, "update"], env=env, timeout=900)
    run(["chroot", rootfs, "apt-get", *opts, "install", "-y", "--no-install-recommends", *packages],
        env=env, timeout=1800)


def _pack_cpio(tree: Path, out: Path) -> None:
    """Pack ``tree`` as a newc cpio (sorted names, for a stable archive) with GNU cpio."""
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(tree):
        rel = os.path.relpath(dirpath, tree)
        if rel != ".":
            names.append(rel)
        # A symlink to a directory (bookworm's merged /bin, /lib, /sbin -> usr/...) is listed among
        # dirnames but never walked: archive it as the link it is.
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        names += [os.path.join(rel, f) if rel != "." else f for f in sorted(filenames + links)]
    run(["cpio", "--create", "--format=newc", "--null", "--reproducible", "--quiet", "-O", out],
        cwd=tree, input_text="\0".join(names) + "\0", timeout=900)


def _prepare_rootfs(root: Path, v: XenVersions) -> Path:
    final = root / f"dom0-{v.rootfs_key()}"
    cpio = final / "dom0.cpio"
    if (final / "stamp.json").is_file() and cpio.is_file():
        return cpio
    if os.geteuid() != 0:
        raise OvmfgenError("building the Xen dom0 root file system (debootstrap, chroot) needs root")
    main, security = debian_mirrors()
    say(f"xen cache: dom0 root file system (debootstrap {SUITE} + {UTILS_PACKAGE} {v.utils}); "
        "a few minutes, once")
    stage = _staging(root, "dom0")
    rootfs = stage / "root"
    try:
        run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBOOTSTRAP_INCLUDE)}", SUITE,
             rootfs, main], timeout=1800)
        lines = [f"deb {main} {SUITE} main"]
        if security:
            lines.append(f"deb {security} {SECURITY_SUITE} main")
        else:
            say(f"no {SECURITY_SUITE} apt source on this machine: dom0 gets {SUITE}'s Xen tools")
        (rootfs / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
        # No daemons may start inside the chroot while packages install.
        policy = rootfs / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        _chroot_apt_install(rootfs, [f"{UTILS_PACKAGE}={v.utils}"])
        policy.unlink()
        got = run(["chroot", rootfs, "dpkg-query", "-W", "-f=${Version}", UTILS_PACKAGE]).stdout.strip()
        for rel in ROOTFS_STRIP:
            d = rootfs / rel
            if d.is_dir():
                shutil.rmtree(d)
                d.mkdir()
        (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        _pack_cpio(rootfs, stage / "dom0.cpio")
        shutil.rmtree(rootfs)
        _stamp(stage, {"suite": SUITE, "utils": got, "recipe": ROOTFS_RECIPE, "key": v.rootfs_key()})
        replace_dir(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _drop_siblings(root, "dom0", final)
    return cpio


def prepare_xen_cache() -> XenAssets:
    """Make sure the cache holds Xen, dom0's kernel + modules and dom0's root file system.

    Idempotent; each entry is keyed by the package versions apt reports and rebuilt only when
    they change; built in a temp dir and renamed into place. Needs root (apt, debootstrap, chroot).
    """
    root = xen_cache_dir()
    with _cache_lock(root):
        ensure_host_packages()
        v = query_versions()
        if v.hypervisor != v.utils:
            say(f"note: {HYPERVISOR_PACKAGE} {v.hypervisor} and {UTILS_PACKAGE} {v.utils} differ")
        xen = _prepare_hypervisor(root, v)
        vmlinuz, modules = _prepare_kernel(root, v)
        cpio = _prepare_rootfs(root, v)
    return XenAssets(xen, vmlinuz, modules, cpio, v)


# --- Booting --------------------------------------------------------------------------------------


def _peak_rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _run_qemu(argv: list[str], qemu_log: Path, timeout: float) -> tuple[int | None, float, int | None]:
    """Run QEMU to completion or ``timeout``; (returncode or None if killed, seconds, peak RSS KiB)."""
    start = time.monotonic()
    peak: int | None = None
    with open(qemu_log, "w", encoding="utf-8", errors="replace") as log:
        proc = popen(argv, stdin=DEVNULL, stdout=log, stderr=STDOUT)
        try:
            while True:
                rc = wait(proc, 1.0)
                if rc is not None:
                    return rc, time.monotonic() - start, peak
                hwm = _peak_rss_kib(proc.pid)
                if hwm is not None:
                    peak = max(peak or 0, hwm)
                if time.monotonic() - start > timeout:
                    stop(proc, signals=(signal.SIGKILL,))
                    return None, time.monotonic() - start, peak
        finally:
            stop(proc, signals=(signal.SIGKILL,))


def guest_deadline_s(timeout: float) -> int:
    """dom0's deadline for the guest (guest seconds) so that dom0 reports before ``timeout`` (wall)."""
    return max(MIN_GUEST_TIMEOUT_S, int((timeout - DOM0_OVERHEAD_S) / WALL_PER_GUEST_SECOND))


def _attempt(image: Path, out_dir: Path, assets: XenAssets, timeout: float, memory_mib: int,
             icount_shift: int) -> XenBootResult:
    guest_timeout = guest_deadline_s(timeout)
    serial, guest, qemu_log = (out_dir / n for n in (SERIAL_LOG_NAME, GUEST_LOG_NAME, QEMU_LOG_NAME))
    serial.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ovmfgen-xen-") as tmp:
        t = Path(tmp)
        # dom0's initramfs = the cached root file system + this run's overlay, one file (Xen takes
        # one initrd module; the kernel unpacks concatenated cpio archives in order).
        initrd = t / "dom0-initrd.cpio"
        with open(initrd, "wb") as fh:
            with open(assets.rootfs_cpio, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)
            fh.write(overlay_cpio(image, assets.modules_dir, guest_timeout, memory_mib))
        kernel = t / "vmlinuz"
        shutil.copyfile(assets.dom0_kernel, kernel)
        argv = qemu_argv(assets.xen, kernel, initrd, serial, icount_shift=icount_shift)
        say(f"booting {display_path(image)} under Xen {assets.versions.hypervisor} in QEMU (TCG)")
        rc, seconds, peak = _run_qemu(argv, qemu_log, timeout)
    serial_text = serial.read_text(encoding="utf-8", errors="replace") if serial.is_file() else ""
    guest_text = extract_guest_console(serial_text)
    atomic_write_bytes(guest, guest_text.encode())
    result = classify_xen_run(serial_text, guest_text, rc)
    if result.verdict is Verdict.HARNESS_FAILURE and rc not in (None, 0):
        tail = qemu_log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        if tail:
            result = replace(result, detail=f"{result.detail}: {tail[0].strip()}")
    return replace(result, qemu_seconds=round(seconds, 1),
                   qemu_max_rss_mib=None if peak is None else round(peak / 1024, 1),
                   serial_log=serial, guest_log=guest, guest_console=guest_text)


def boot_xen(image: Path, out_dir: Path, timeout: float = 300,
             memory_mib: int = GUEST_MEMORY_MIB) -> XenBootResult:
    """Boot ``image`` (a PVH ELF) as a PVH guest of Xen 4.17 nested in QEMU TCG; one verdict.

    Logs go to ``out_dir``: ``xen-serial.log`` (Xen's console: hypervisor, ``(d1)`` guest debug,
    dom0), ``xen-guest-console.log`` (the guest's PV console), ``xen-qemu.log``, ``xen-boot.json``.
    ``timeout`` bounds each QEMU run (wall seconds). A HARNESS_FAILURE (QEMU itself died, ...) is
    retried once with another icount shift; the first attempt's logs are kept as ``*.attempt1.log``.
    """
    image = Path(image)
    if not image.is_file():
        raise OvmfgenError(f"no firmware image at {display_path(image)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    assets = prepare_xen_cache()
    for name in (SERIAL_LOG_NAME, GUEST_LOG_NAME, QEMU_LOG_NAME):
        (out_dir / name.replace(".log", ".attempt1.log")).unlink(missing_ok=True)
    result = _attempt(image, out_dir, assets, timeout, memory_mib, QEMU_ICOUNT_SHIFTS[0])
    if result.verdict is Verdict.HARNESS_FAILURE:
        say(f"harness failure ({result.detail}); retrying once")
        for name in (SERIAL_LOG_NAME, GUEST_LOG_NAME, QEMU_LOG_NAME):
            p = out_dir / name
            if p.exists():
                os.replace(p, out_dir / name.replace(".log", ".attempt1.log"))
        result = replace(_attempt(image, out_dir, assets, timeout, memory_mib, QEMU_ICOUNT_SHIFTS[1]),
                         attempts=2)
    summary = {
        "image": str(image), "verdict": result.verdict.value, "detail": result.detail,
        "attempts": result.attempts, "qemu_seconds": result.qemu_seconds,
        "qemu_max_rss_mib": result.qemu_max_rss_mib, "shell_seconds_after_xl_create": result.shell_seconds,
        "xen": assets.versions.hypervisor, "xen_utils": assets.versions.utils,
        "dom0_kernel": f"{assets.versions.kernel_package} {assets.versions.kernel}",
    }
    atomic_write_bytes(out_dir / SUMMARY_NAME, (json.dumps(summary, indent=2) + "\n").encode())
    return result


def format_result(result: XenBootResult) -> str:
    """One line for people: verdict, detail, timings."""
    parts = [f"xen: {result.verdict}"]
    if result.detail:
        parts.append(f"({result.detail})")
    timings = []
    if result.shell_seconds is not None:
        timings.append(f"shell {result.shell_seconds:.1f} s after xl create")
    if result.qemu_seconds is not None:
        timings.append(f"QEMU run {result.qemu_seconds:.1f} s")
    if result.qemu_max_rss_mib is not None:
        timings.append(f"peak RSS {result.qemu_max_rss_mib:.0f} MiB")
    if result.attempts > 1:
        timings.append(f"{result.attempts} attempts")
    if timings:
        parts.append("- " + ", ".join(timings))
    return " ".join(parts)


def boot_xen_command(platform: str = "xen-pvh", target: str = "DEBUG", image: Path | str | None = None,
                     timeout: float = 300) -> XenBootResult:
    """CLI entry: boot the published (or given) ELF under real Xen; raise unless SHELL_REACHED.

    The image defaults to ``dist/<platform>/<target>/ovmf.elf``; logs are written beside it.
    """
    path = Path(image) if image else DIST_DIR / platform / target / "ovmf.elf"
    if not path.is_file():
        hint = "" if image else f" (build it: invoke build --platform {platform} --target {target})"
        raise OvmfgenError(f"no firmware image at {display_path(path)}{hint}")
    started = time.monotonic()
    result = boot_xen(path, path.parent, timeout=timeout)
    print(f"{format_result(result)}; total {time.monotonic() - started:.1f} s; "
          f"logs: {display_path(result.serial_log or path.parent)}", flush=True)
    if not result.ok:
        raise OvmfgenError(f"{display_path(path)} did not reach the UEFI Shell under Xen: "
                           f"{result.verdict}{': ' + result.detail if result.detail else ''}")
    return result
