"""Text generated for one nested run: the guest's xl config, dom0's /init and test script, the overlay cpio."""

from __future__ import annotations

import re
import shlex
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ovmfgen.boot.xen.debian import DOM0_MODULES, XEN_SERIES
from ovmfgen.boot.xen.persist import DONE
from ovmfgen.edk2.conventions import fd_size_label, parse_fd_size
from ovmfgen.errors import OvmfgenError
from ovmfgen.boot.xen.verdicts import (
    DEADLINE,
    DOM0_FAILURE,
    EVENT,
    GUEST_BEGIN,
    GUEST_END,
    GUEST_PREFIX,
    GUEST_START,
    GUEST_STOP,
    LINUX_BANNER,
    LINUX_SMP,
    OS_MARKER,
    RESULT,
    SB_REFUSED,
    CpuState,
    Verdict,
    XL_PREFIX,
)

GUEST_NAME = "ovmfgen-pvh"
XEN_ELFNOTE_PHYS32_ENTRY = 18
GUEST_MEMORY_MIB = 256
#: The most vCPUs an HVM or PVH guest may have (Xen's HVM_MAX_VCPUS).
MAX_VCPUS = 128
#: Payloads that need more memory than that: Debian's GRUB cannot allocate Debian's kernel in a 256 MiB
#: guest ("error: out of memory" under Xen PVH, "cannot allocate kernel buffer" under QEMU with Debian's
#: own OVMF, both measured 2026-12-05); with 512 MiB it boots it.
PAYLOAD_MEMORY_MIB = {"sb-os": 512}
#: What each vCPU beyond the first adds to a guest's memory. Linux sizes per-CPU data by its possible CPUs
#: (all the vCPUs in the MADT): Debian's kernel in a 256 MiB HVM guest with 128 vCPUs ran out of memory
#: in its crypto self-tests ("System is deadlocked on memory", Xen 4.17, 2026-12-05); a PVH guest with
#: 128 vCPUs and 510 MiB reached its init (Xen 4.20).
MEMORY_MIB_PER_VCPU = 2

# --- How long dom0 waits for a guest ---------------------------------------------------------------
#
# In dom0's own (guest-visible) seconds, never derived from the host's wall clock: under QEMU's
# icount a dom0 second is a fixed amount of work, however loaded the host is (it was 6 wall s per
# dom0 s on a quiet machine, ~25 under load 12). Without icount guest time is wall time and a loaded
# host does less per second: dom0 times a fixed shell loop first and stretches the limits by how much
# slower than CALIBRATION_REFERENCE_S it ran (1..MAX_SCALE). A hang still ends: no new output from the
# guest (its console, its ``(dN)`` lines in Xen's ring) for ``idle_s`` is a timeout, and so is
# ``cap_s`` in all, output or not.

#: Iterations of dom0's calibration loop, and the dom0 seconds it may take before the limits stretch:
#: under icount shift=0 it took 0.57 s (Xen 4.17, measured; icount makes that the same on any host,
#: so the scale is then 1); without icount a loaded host makes it slower.
CALIBRATION_LOOPS = 50000
CALIBRATION_REFERENCE_S = 0.75
MAX_SCALE = 8
#: What each vCPU beyond the first adds to a run's cap: Linux brings its CPUs up one after the other,
#: all time-sharing the guest's one pCPU; an HVM guest's 127th took it 1.35 dom0 s (Xen 4.17, measured
#: 2026-12-05), ~175 dom0 s for all of them.
CAP_S_PER_VCPU = 2


@dataclass(frozen=True)
class GuestDeadline:
    """How long dom0 waits for one guest, in dom0 seconds (before the host-speed scale)."""

    idle_s: int = 60    # no new guest output for this long: a hang (TIMEOUT)
    cap_s: int = 300    # at most this long per guest, even while output keeps coming
    tick_s: int = 5     # dom0's heartbeat on the serial console while it waits (the host's stall watch)

    def __post_init__(self) -> None:
        if not 0 < self.tick_s <= self.idle_s <= self.cap_s:
            raise OvmfgenError(f"bad guest deadline {self}: want 0 < tick <= idle <= cap")

    def for_vcpus(self, vcpus: int) -> GuestDeadline:
        """This deadline for a run whose biggest guest has ``vcpus`` vCPUs: ``cap_s`` plus CAP_S_PER_VCPU
        for each vCPU beyond the first (the idle limit stays: a hang is still found as soon)."""
        return replace(self, cap_s=self.cap_s + CAP_S_PER_VCPU * (vcpus - 1))

# --- Generated text: xl config, dom0 /init, test script -----------------------------------------------


#: Guest kinds: how the firmware is started (``mode``) and what it is expected to do (``payload``).
MODES = ("pvh", "hvm")
#: shell: the firmware as built, no disk, to the UEFI Shell; os: the OS disk (osdisk.py) booted by the
#: firmware's boot manager, to the marker its Linux prints; smp: the OS disk, to Linux's report of the CPUs
#: it brought up (``smp: Brought up 1 node, 128 CPUs``: the firmware's processors handed over; the guest
#: stops there, before Linux's first stop_machine, where guests with 128 vCPUs sharing one pCPU of the
#: nested Xen have stalled: docs/booting.md); persist: the persistence disk, booted twice (persist.py);
#: disk: a user's disk (``--disk``), as far as it gets; ud2: the negative control.
#: The Secure Boot guests (sbdisks.py; for a Secure Boot build): sb-refused: the project's UKI unsigned,
#: which the firmware must refuse; sb-signed: the same UKI signed with the key set's db key, to the OS;
#: sb-shim: Debian's Microsoft-signed shim -> the signed UKI; sb-os: shim -> Debian-signed GRUB ->
#: Debian-signed kernel; sb-persist: the signed UKI booted twice, the same disk (its init sets a variable
#: and tries to append to db; the restart must not see the variable). An sb-* guest that reaches the OS
#: passes only with Secure Boot on.
PAYLOADS = ("shell", "os", "smp", "persist", "disk", "ud2", "sb-refused", "sb-signed", "sb-shim", "sb-os",
            "sb-persist")
#: The Secure Boot payloads and the disk each boots (``sbdisks.SB_DISK_NAMES``).
SB_PAYLOAD_DISKS = {"sb-refused": "unsigned", "sb-signed": "signed", "sb-shim": "shim-uki", "sb-os": "shim-grub",
                    "sb-persist": "signed"}
#: The payloads whose guest boots twice, the same disk (``XenGuest.runs``).
TWICE = ("persist", "sb-persist")
#: The Secure Boot guest set of one mode: the refusal first (quick), the GRUB chain last.
_SB_SET = ("sb-refused", "sb-signed", "sb-shim", "sb-persist", "sb-os")
_ALL_SET = (("pvh", "shell"), ("pvh", "os"), ("hvm", "shell"), ("hvm", "os"), ("pvh", "persist"), ("hvm", "persist"),
            ("pvh", "ud2"))
#: ``--mode`` choices and the guest set each runs, in order; ``all`` ends with the negative control.
MODE_SETS = {
    "pvh": (("pvh", "shell"),),
    "hvm": (("hvm", "shell"),),
    "os": (("pvh", "os"), ("hvm", "os")),
    "smp": (("pvh", "smp"), ("hvm", "smp")),
    "persist": (("pvh", "persist"), ("hvm", "persist")),
    # The set whose one boot `invoke bench --xen` times: PVH and HVM to the Shell and to Linux, the control.
    "core": tuple(k for k in _ALL_SET if k[1] != "persist"),
    "all": _ALL_SET,
    # A Secure Boot build's guest set (``--feature secure_boot=...``): PVH, then HVM.
    "sb": tuple((mode, payload) for mode in ("pvh", "hvm") for payload in _SB_SET),
}
#: The payloads a nightly cell can name (``parse_guest_spec``): the guest set's (an os or smp guest boots the
#: project's OS disk, an sb-* guest its Secure Boot disk, ``nested.with_disks``).
SPEC_PAYLOADS = ("shell", "os", "smp", "ud2", *_SB_SET)
#: The payloads that boot the project's OS disk (osdisk.py).
OS_DISK_PAYLOADS = ("os", "smp")
#: HVM guests' device model as Debian's qemu-system-xen installs it in dom0.
DEVICE_MODEL = "/usr/libexec/xen-qemu-system-i386"
#: dom0's hotplug script for a guest disk: the block device (or a loop device on an image file), announced in
#: xenstore.
BLOCK_SCRIPT = "/ovmfgen/block-loop"
#: Where the hotplug script leaves why it could not attach a disk (dom0's test script reports it).
BLOCK_ERROR = "/run/ovmfgen-block.err"
#: In a guest's xl config, where dom0's test script writes the guest's disk (the block device whose serial
#: is the guest's, ``disk_drives``).
DISK_PLACEHOLDER = "@OVMFGEN_DISK@"
#: The most guest disks (virtio-blk drives, a PCI slot each) one nested run gives dom0.
MAX_DISKS = 24
#: A virtio-blk serial's length (VIRTIO_BLK_ID_BYTES).
SERIAL_BYTES = 20
#: What the UEFI Shell prints during its startup countdown (between ANSI colour codes: grep, not a string).
SHELL_COUNTDOWN = "Press .*ESC.* in [0-9]* seconds"
#: What dom0 waits for on each payload's console (grep -E), and the event it reports.
WANT = {"shell": ("Shell>", "shell"), "os": (OS_MARKER, "os"), "smp": (LINUX_SMP, "os"),
        "persist": (DONE, "persist"), "disk": (f"{OS_MARKER}|{LINUX_BANNER}[0-9]", "os"),
        "ud2": ("Shell>", "shell"),
        "sb-refused": (SB_REFUSED, "refused"), "sb-signed": (OS_MARKER, "os"), "sb-shim": (OS_MARKER, "os"),
        "sb-os": (OS_MARKER, "os"), "sb-persist": (OS_MARKER, "os")}


@dataclass(frozen=True)
class XenGuest:
    """One guest of a nested run: its firmware, how Xen starts it, and the verdict a good firmware gets."""

    mode: str        # "pvh": Xen loads the ELF and jumps to its PVH entry; "hvm": hvmloader, reset vector
    payload: str     # one of PAYLOADS
    image: Path      # the firmware file on the host
    #: Tells apart guests of one run with the same mode and payload but another image, e.g. "4M".
    variant: str = ""
    disk: Path | None = None  # the disk image on the host, attached as xvda (a PV disk)
    vcpus: int = 1   # the guest's vCPUs (xl ``vcpus``), all on the guest's pCPU
    #: The processors the firmware must report finding (``MpInitLib: Find N processors``): ``vcpus`` by
    #: default; fewer for a build whose ``max_cpus`` is below ``vcpus`` (it must then say it left the others
    #: halted). Checked for a guest with more than one vCPU.
    firmware_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.variant and not re.fullmatch(r"[A-Za-z0-9]+", self.variant):
            raise OvmfgenError(f"a guest variant is letters and digits, got {self.variant!r}")
        if not 1 <= self.vcpus <= MAX_VCPUS:
            raise OvmfgenError(f"a guest has 1 to {MAX_VCPUS} vCPUs, got {self.vcpus}")
        if self.firmware_cpus is not None and not 1 <= self.firmware_cpus <= self.vcpus:
            raise OvmfgenError(f"a guest's firmware finds 1 to its {self.vcpus} vCPUs, not {self.firmware_cpus}")

    def memory_mib(self, base: int = GUEST_MEMORY_MIB) -> int:
        """The guest's memory (xl ``memory``): ``base``, more for a payload that needs it, and
        MEMORY_MIB_PER_VCPU for each vCPU beyond the first."""
        return max(base, PAYLOAD_MEMORY_MIB.get(self.payload, 0)) + MEMORY_MIB_PER_VCPU * (self.vcpus - 1)

    def cpu_problem(self, cpus: CpuState, os_reached: bool) -> str:
        """Why what the logs say about the processors is wrong for this guest ('' when right; a guest with
        one vCPU is not checked): the firmware found its processors (all, or as many as its build allows,
        saying so), and Linux, when it ran, brought up every vCPU (Linux counts them from the ACPI tables)."""
        if self.vcpus == 1:
            return ""
        want = self.firmware_cpus or self.vcpus
        if cpus.firmware != want:
            found = "said nothing" if cpus.firmware is None else f"found {cpus.firmware}"
            return f"the firmware {found}: expected {want} of {self.vcpus} processors"
        if want < self.vcpus and not cpus.over_limit:
            return f"the firmware used {want} of {self.vcpus} processors without saying it left the others halted"
        if os_reached and self.payload in (*OS_DISK_PAYLOADS, "disk") and cpus.linux != self.vcpus:
            found = "said nothing" if cpus.linux is None else f"brought up {cpus.linux}"
            return f"Linux {found}: expected {self.vcpus} CPUs"
        return ""

    @property
    def name(self) -> str:
        """The xl domain name, also (without ``ovmfgen-``) the stem of this guest's log files."""
        return f"ovmfgen-{self.mode}-{self.payload}" + (f"-{self.variant}" if self.variant else "")

    @property
    def expected(self) -> Verdict:
        """What a correct firmware yields: the Shell, the OS, for the ud2 control a crash, for the unsigned
        image a Secure Boot refusal."""
        if self.payload == "ud2":
            return Verdict.GUEST_CRASHED
        if self.payload == "sb-refused":
            return Verdict.SECURE_BOOT_REFUSED
        return (Verdict.OS_REACHED if self.payload in (*OS_DISK_PAYLOADS, "disk", *SB_PAYLOAD_DISKS)
                else Verdict.SHELL_REACHED)

    @property
    def secure_boot(self) -> bool:
        """True for the Secure Boot guests: they pass only with Secure Boot on."""
        return self.payload in SB_PAYLOAD_DISKS

    @property
    def runs(self) -> tuple[str, ...]:
        """The labels of this guest's boots in the log: the persistence guests boot twice, the same disk."""
        return (self.name, f"{self.name}-restart") if self.payload in TWICE else (self.name,)


@dataclass(frozen=True)
class GuestSpec:
    """A guest as the nightly matrix names it: ``MODE-PAYLOAD[-FDSIZE][-NcpuS]`` (``pvh-shell``,
    ``pvh-shell-4M``, ``hvm-smp-128cpus``).

    With an FD size the guest boots that size's build of the cell's firmware; with ``Ncpus`` it has N vCPUs
    (both go into its ``variant``).
    """

    mode: str
    payload: str
    fd_size: str | None = None    # "4M"; None: the cell's own build
    vcpus: int = 1

    @property
    def text(self) -> str:
        """The spelling in nightly.yaml."""
        return "-".join((self.mode, self.payload, *self._suffixes))

    @property
    def _suffixes(self) -> tuple[str, ...]:
        return tuple(x for x in (self.fd_size, f"{self.vcpus}cpus" if self.vcpus > 1 else None) if x)

    @property
    def variant(self) -> str:
        """The guest's variant (letters and digits): ``4M``, ``128cpus``, ``4M96cpus``."""
        return "".join(self._suffixes)

    def guest(self, image: Path) -> XenGuest:
        """This guest booting ``image``."""
        return XenGuest(self.mode, self.payload, image, variant=self.variant, vcpus=self.vcpus)


_CPUS_RE = re.compile(r"([0-9]+)cpus")


def parse_guest_spec(text: str) -> GuestSpec:
    """``pvh-shell``, ``hvm-shell``, ``pvh-ud2``, ``pvh-shell-4M``, ``hvm-sb-refused``, ``hvm-smp-128cpus``... ->
    GuestSpec, or one clear error (a payload may hold a dash: the longest payload that fits wins)."""
    mode, _, rest = str(text).partition("-")
    payload = next((p for p in sorted(SPEC_PAYLOADS, key=len, reverse=True)
                    if rest == p or rest.startswith(p + "-")), None)
    tails = rest[len(payload) + 1:].split("-") if payload is not None and payload != rest else []
    vcpus = 1
    if tails and _CPUS_RE.fullmatch(tails[-1]):
        vcpus = int(_CPUS_RE.fullmatch(tails.pop())[1])  # type: ignore[index]
    if mode not in MODES or payload is None or len(tails) > 1 or (payload != rest and tails == [""]):
        raise OvmfgenError(f"guest '{text}' is not MODE-PAYLOAD[-FDSIZE][-Ncpus] (modes: {', '.join(MODES)}; "
                           f"payloads: {', '.join(SPEC_PAYLOADS)}; e.g. pvh-shell-4M, hvm-smp-128cpus)")
    if not 1 <= vcpus <= MAX_VCPUS:
        raise OvmfgenError(f"guest '{text}': a guest has 1 to {MAX_VCPUS} vCPUs, not {vcpus}")
    size = None
    if tails:
        try:
            size = fd_size_label(parse_fd_size(tails[0]) or 0)
        except OvmfgenError as exc:
            raise OvmfgenError(f"guest '{text}': {exc.message}") from None
    return GuestSpec(mode, payload, size, vcpus)


def check_vcpus(vcpus: object) -> int:
    """``--vcpus``: a whole number of vCPUs, 1 to MAX_VCPUS, or one clear error."""
    text = str(vcpus).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_VCPUS:
        raise OvmfgenError(f"--vcpus takes a whole number from 1 to {MAX_VCPUS} (Xen's most for a PVH or HVM "
                           f"guest), not {text!r}")
    return int(text)


def check_mode(mode: str) -> tuple[tuple[str, str], ...]:
    """The (mode, payload) guest set ``--mode`` names, or one clear error."""
    if mode not in MODE_SETS:
        raise OvmfgenError(f"unknown Xen boot mode {mode!r}: expected {', '.join(sorted(MODE_SETS))}")
    return MODE_SETS[mode]


def pvh_entry_offset(data: bytes) -> int:
    """File offset of the PVH entry (XEN_ELFNOTE_PHYS32_ENTRY) of a little-endian PVH ELF."""
    if data[:4] != b"\x7fELF" or len(data) < 64:
        raise OvmfgenError("not an ELF file")
    is64 = data[4] == 2
    phoff, phentsize, phnum = (struct.unpack_from("<Q", data, 32)[0], *struct.unpack_from("<HH", data, 54)) \
        if is64 else (struct.unpack_from("<I", data, 28)[0], *struct.unpack_from("<HH", data, 42))
    phdrs = []
    for i in range(phnum):
        off = phoff + i * phentsize
        if is64:
            p_type, _, p_offset, _, p_paddr, p_filesz = struct.unpack_from("<IIQQQQ", data, off)
        else:
            p_type, p_offset, _, p_paddr, p_filesz = struct.unpack_from("<IIIII", data, off)
        phdrs.append((p_type, p_offset, p_paddr, p_filesz))
    entry = None
    for p_type, p_offset, _, p_filesz in phdrs:
        pos, stop = p_offset, p_offset + p_filesz
        while p_type == 4 and pos + 12 <= stop:  # PT_NOTE
            namesz, descsz, n_type = struct.unpack_from("<III", data, pos)
            name_at = pos + 12
            desc_at = name_at + (-(-namesz // 4) * 4)
            if data[name_at:name_at + namesz] == b"Xen\0" and n_type == XEN_ELFNOTE_PHYS32_ENTRY:
                entry = struct.unpack_from("<I", data, desc_at)[0]
            pos = desc_at + (-(-descsz // 4) * 4)
    if entry is None:
        raise OvmfgenError("no XEN_ELFNOTE_PHYS32_ENTRY note: not a PVH ELF")
    for p_type, p_offset, p_paddr, p_filesz in phdrs:
        if p_type == 1 and p_paddr <= entry < p_paddr + p_filesz:  # PT_LOAD
            return p_offset + entry - p_paddr
    raise OvmfgenError(f"the PVH entry {entry:#x} lies in no PT_LOAD segment")


def ud2_image(image: bytes) -> bytes:
    """The negative control: ``image`` with ud2 at its PVH entry (#UD before any IDT: a triple fault)."""
    at = pvh_entry_offset(image)
    return image[:at] + b"\x0f\x0b" + image[at + 2:]


def guest_image(guest: XenGuest) -> bytes:
    """The bytes dom0 boots for ``guest``."""
    data = guest.image.read_bytes()
    return ud2_image(data) if guest.payload == "ud2" else data


# --- Generated text: xl config, dom0 /init, test script -----------------------------------------------


def xl_config(kernel: str, name: str = GUEST_NAME, memory_mib: int = GUEST_MEMORY_MIB, mode: str = "pvh",
              disk: str | None = None, vcpus: int = 1) -> str:
    """The xl domain config that runs ``kernel`` as a PVH guest, or (``mode="hvm"``) as an HVM guest's BIOS.

    ``disk`` (a block device or file in dom0; in the overlay ``DISK_PLACEHOLDER``, which dom0's test script
    replaces by the guest's drive) becomes the guest's PV disk xvda through dom0's hotplug script (Debian's
    block script waits for udev, which this dom0 has not); ``target=`` must come last.
    """
    if mode == "hvm":
        # hvmloader copies the blob below 4 GiB and jumps to its reset vector; the PVH ELF's header
        # sits in the FD's reserved first pages, so the published ovmf.elf is that blob as it is.
        start = ('type = "hvm"\n'
                 'bios = "ovmf"\n'
                 f'bios_path_override = "{kernel}"\n'
                 'device_model_version = "qemu-xen"\n'
                 f'device_model_override = "{DEVICE_MODEL}"\n'
                 # An emulated serial port, as a user's HVM guest has; the firmware and Linux print on
                 # the PV console, which xenconsoled logs (the serial port's output is logged nowhere).
                 'serial = "pty"\n'
                 "vnc = 0\n"
                 # No PV keyboard (xl adds one to every HVM guest; neither the firmware nor the harness
                 # uses it): tearing down a paused guest's QEMU-backed device costs libxl a 2 s timeout.
                 "vkb_device = 0\n")
    else:
        start = f'type = "pvh"\nkernel = "{kernel}"\n'
    return (
        f'name = "{name}"\n'
        + start +
        f"memory = {memory_mib}\n"
        f"vcpus = {vcpus}\n"
        # dom0 is pinned to pCPU 0 (dom0_vcpus_pin): the guest gets pCPU 1 to itself, so Xen never
        # preempts it for dom0 (a preempted vCPU piles up timer ticks, see timer_mode below); a guest
        # with more vCPUs time-shares that one pCPU.
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
        + (f'disk = [ "format=raw,vdev=xvda,access=rw,script={BLOCK_SCRIPT},target={disk}" ]\n' if disk else "")
    )


def block_script() -> str:
    """dom0's hotplug script (xl runs it with add/remove, XENBUS_PATH set): tell blkback about the block device
    in params (a file gets a loop device first). When it cannot, it says why in ``BLOCK_ERROR`` (dom0's test
    script reports that line) and in xenstore, and fails."""
    return f"""#!/bin/sh
# Written by ovmfgen.boot.xen: give blkback the block device in params (a file: on a loop device).
fail() {{
    echo "$*" > {BLOCK_ERROR}
    xenstore-write "$XENBUS_PATH/hotplug-error" "$*" "$XENBUS_PATH/hotplug-status" error
    exit 1
}}
case "$1" in
add)
    target=$(xenstore-read "$XENBUS_PATH/params") || fail "no params in $XENBUS_PATH"
    if [ -b "$target" ]; then
        dev=$target
    elif [ -f "$target" ]; then
        dev=$(losetup -f --show "$target" 2>&1) || fail "losetup $target: $dev"
    else
        fail "$target is neither a block device nor a file"
    fi
    xenstore-write "$XENBUS_PATH/physical-device" "$(stat -L -c '%t:%T' "$dev")"
    xenstore-write "$XENBUS_PATH/physical-device-path" "$dev"
    xenstore-write "$XENBUS_PATH/hotplug-status" connected
    ;;
remove)
    dev=$(xenstore-read "$XENBUS_PATH/physical-device-path" 2>/dev/null)
    case "$dev" in /dev/loop*) losetup -d "$dev" ;; esac
    ;;
esac
exit 0
"""


def dom0_init_script(series: str = XEN_SERIES) -> str:
    """dom0's /init: mount the basics, load the Xen drivers, start the Xen daemons (of Xen ``series``), run the test."""
    insmods = "\n".join(f"insmod /ovmfgen/modules/{m}.ko || echo '{DOM0_FAILURE} insmod {m} failed'"
                        for m in DOM0_MODULES)
    return f"""#!/bin/sh
# dom0 /init written by ovmfgen.boot.xen: bring up Xen's dom0 services, run the test, power off.
# The versioned tools first: xen-init-dom0 has no wrapper in /usr/sbin.
export PATH=/usr/lib/xen-{series}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
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
if [ -f /ovmfgen/test.sh ]; then
    sh /ovmfgen/test.sh
else
    # The kernel unpacks the initramfs into RAM; what did not fit is missing, this run's files (last) first.
    echo "{DOM0_FAILURE} this run's files are not in dom0's RAM root file system" \
        "($(dmesg 2>/dev/null | grep -o 'Initramfs unpacking failed.*' | head -n 1))"
fi
echo "{EVENT} done $(cut -d' ' -f1 /proc/uptime)"
sync
busybox poweroff -f
echo o > /proc/sysrq-trigger
sleep 30
"""


DOM0_TEST = Path(__file__).resolve().parent / "dom0" / "test.sh"


def dom0_test_script(deadline: GuestDeadline, names: Sequence[str] = (GUEST_NAME,),
                     runs: Sequence[tuple[str, ...]] | None = None) -> str:
    """The dom0 test (``dom0/test.sh``) with its parameters in front and its runs after it: for each guest
    in turn, ``xl create`` it, wait for what it should show (or death), report.

    ``runs`` lists (domain name, label, what to wait for (grep -E), event name[, disk serial]); by default
    each of ``names`` waits for the Shell prompt under its own name. A run with a disk serial gets the block
    device with that serial (``disk_drives``) in its xl config, in place of ``DISK_PLACEHOLDER``; when dom0
    has none, or cannot attach it, dom0 says so (``DOM0_FAILURE``) and the run ends without starting. Each
    run's part of the log lies between ``GUEST_START label`` and ``GUEST_STOP label``, so that
    ``classify_xen_run`` reads it as if the guest had had the run to itself. A domain that runs twice (same
    name) keeps its disk (its drive): the second run is a restart after ``xl destroy``. The wait ends on what
    the guest should show, the Shell when it should have shown something else, an ASSERT, a crash, the domain
    going away, or ``deadline`` (see ``GuestDeadline``); every ``deadline.tick_s`` dom0 seconds dom0 prints a
    heartbeat event.
    """
    runs = list(runs) if runs is not None else [(n, n, "Shell>", "shell") for n in names]
    params = {
        "OV_EVENT": EVENT, "OV_RESULT": RESULT, "OV_GUEST_START": GUEST_START, "OV_GUEST_STOP": GUEST_STOP,
        "OV_XL_PREFIX": XL_PREFIX, "OV_GUEST_PREFIX": GUEST_PREFIX, "OV_GUEST_BEGIN": GUEST_BEGIN,
        "OV_GUEST_END": GUEST_END, "OV_DEADLINE": DEADLINE, "OV_SHELL_COUNTDOWN": SHELL_COUNTDOWN,
        "OV_SB_REFUSED": SB_REFUSED, "OV_DOM0_FAILURE": DOM0_FAILURE, "OV_BLOCK_ERROR": BLOCK_ERROR,
        "OV_DISK_PLACEHOLDER": DISK_PLACEHOLDER,
        "OV_IDLE_S": deadline.idle_s, "OV_CAP_S": deadline.cap_s, "OV_TICK_S": deadline.tick_s,
        "OV_CALIBRATION_LOOPS": CALIBRATION_LOOPS, "OV_CALIBRATION_REFERENCE_S": CALIBRATION_REFERENCE_S,
        "OV_MAX_SCALE": MAX_SCALE,
    }
    head = "".join(f"{name}={shlex.quote(str(value))}\n" for name, value in params.items())
    calls = "".join(f"run_guest {r[0]} {r[1]} '{r[2]}' {r[3]}{' ' + r[4] if len(r) > 4 and r[4] else ''}\n"
                    for r in runs)
    return "#!/bin/sh\n" + head + DOM0_TEST.read_text(encoding="utf-8") + calls


def guest_runs(guests: Sequence[XenGuest]) -> list[tuple[str, ...]]:
    """``dom0_test_script``'s runs for ``guests``: (domain, label, what to wait for, event) per boot, and the
    serial of the guest's disk for a guest with one."""
    serials = dict(disk_drives(guests))
    return [(g.name, label, *WANT[g.payload], *((serials[g.name],) if g.name in serials else ()))
            for g in guests for label in g.runs]


def disk_serial(index: int, guest: XenGuest) -> str:
    """The serial of the drive that holds ``guest``'s disk (the ``index``-th disk of the run): ``d<index>-`` and
    the guest's name, cut to a virtio-blk serial's 20 bytes (the index keeps it unique)."""
    return f"d{index}-{guest.name.removeprefix('ovmfgen-')}"[:SERIAL_BYTES]


def disk_drives(guests: Sequence[XenGuest]) -> list[tuple[str, str]]:
    """(guest name, drive serial) of each guest with a disk, in order: each guest has a drive of its own
    (``nested.qemu_argv`` makes them, copy-on-write: what one guest writes, no other guest and not the host
    file sees); a guest that boots twice keeps its drive. At most ``MAX_DISKS``."""
    with_disk = [g for g in guests if g.disk is not None]
    if len(with_disk) > MAX_DISKS:
        raise OvmfgenError(f"{len(with_disk)} guests with disks in one run: at most {MAX_DISKS} (a PCI slot each)")
    return [(g.name, disk_serial(i, g)) for i, g in enumerate(with_disk)]


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


def overlay_cpio(guests: Sequence[XenGuest], modules_dir: Path, deadline: GuestDeadline,
                 memory_mib: int = GUEST_MEMORY_MIB, series: str = XEN_SERIES) -> bytes:
    """The per-run cpio appended to dom0's initramfs: /init, the Xen and virtio modules, each guest's firmware
    and config, the hotplug script, the test.

    No disk is in it: dom0's root file system is RAM (a disk image there fills it: "No space left on
    device"). Each guest's disk is a drive of the outer QEMU (``disk_drives``, ``nested.qemu_argv``), its own
    copy-on-write view of the file on the host, as each VM has its own disk: the firmware writes ``\\NvVars``
    (BootOrder included) on the first FAT it finds, and an HVM guest that restored a PVH guest's boot options
    from a shared copy booted the Shell instead of the disk (measured). The persistence guests' two boots are
    one guest: they share its drive. The guest's config names its disk ``DISK_PLACEHOLDER``; dom0's test
    script puts the drive's device there.
    """
    entries: list[tuple[str, int, bytes]] = [
        ("init", 0o100755, dom0_init_script(series).encode()),
        ("ovmfgen", 0o040755, b""),
        ("ovmfgen/modules", 0o040755, b""),
    ]
    for m in DOM0_MODULES:
        entries.append((f"ovmfgen/modules/{m}.ko", 0o100644, (modules_dir / f"{m}.ko").read_bytes()))
    drives = dict(disk_drives(guests))
    if drives:
        entries.append((BLOCK_SCRIPT, 0o100755, block_script().encode()))
    for g in guests:
        fw = f"/ovmfgen/ovmf-{g.name.removeprefix('ovmfgen-')}.elf"
        disk = DISK_PLACEHOLDER if g.name in drives else None
        entries += [
            (fw, 0o100644, guest_image(g)),
            (f"ovmfgen/{g.name}.cfg", 0o100644,
             xl_config(fw, g.name, g.memory_mib(memory_mib), g.mode, disk, g.vcpus).encode()),
        ]
    entries.append(("ovmfgen/test.sh", 0o100755, dom0_test_script(deadline, runs=guest_runs(guests)).encode()))
    return newc_archive(entries)
