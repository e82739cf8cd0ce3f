"""Text generated for one nested run: the guest's xl config, dom0's /init and test script, the overlay cpio."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ovmfgen.boot.xen.debian import DOM0_MODULES, XEN_SERIES
from ovmfgen.boot.xen.verdicts import (
    EVENT,
    GUEST_BEGIN,
    GUEST_END,
    GUEST_PREFIX,
    RESULT,
    XL_PREFIX,
)

GUEST_NAME = "ovmfgen-pvh"
GUEST_MEMORY_MIB = 256

# --- Generated text: xl config, dom0 /init, test script -----------------------------------------------


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


