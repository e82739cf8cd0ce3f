"""Verdicts of a boot under Xen: the markers dom0 prints, and the pure log classification."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ovmfgen.boot.verdict import Verdict

# Markers the dom0 side prints on its console (which Xen copies to the serial log).
EVENT = "OVMFGEN-EVENT"
RESULT = "OVMFGEN-RESULT"
XL_PREFIX = "OVMFGEN-XL| "
GUEST_PREFIX = "OVMFGEN-G| "
GUEST_BEGIN = "OVMFGEN-GUEST-CONSOLE-BEGIN"
GUEST_END = "OVMFGEN-GUEST-CONSOLE-END"
# One guest's part of a run with several guests: GUEST_START <name> ... GUEST_STOP <name>.
GUEST_START = "OVMFGEN-GUEST-START"
GUEST_STOP = "OVMFGEN-GUEST-STOP"
# Why dom0 stopped waiting for a guest that showed no shell (its deadline, in dom0's words).
DEADLINE = "OVMFGEN-DEADLINE"
#: What dom0 prints when it cannot run a guest for a reason of its own (no drive with the guest's serial, a disk
#: it cannot attach, a driver that did not load): ``DOM0_FAILURE <why>``. A HARNESS_FAILURE naming the cause.
DOM0_FAILURE = "OVMFGEN-DOM0-FAILURE"
#: What the OS disk's init prints once Linux runs user space (split so that no file holding the
#: script or the command line matches it whole).
OS_MARKER = "OVMFGEN-OS-" "REACHED"
#: What the Secure Boot disks' init prints before the OS marker: ``SB_MARKER efivar=01 kernel=enabled``
#: (the SecureBoot variable's last byte, or ``none``; Linux's own word, or ``none``).
SB_MARKER = "OVMFGEN-SECURE-" "BOOT"
#: What the Secure Boot disks' init prints after it: ``PERSIST_MARKER var=absent->written db=present
#: db-write=refused:EACCES`` (the test variable at boot (absent/present) -> setting it (written/failed); db's
#: efivarfs file; appending an unauthenticated entry to db: written, or refused with the error Linux returned;
#: ``none`` without efivarfs).
PERSIST_MARKER = "OVMFGEN-PER" "SIST"
#: What the Secure Boot disks' grub.cfg echoes before each step (how far GRUB got).
GRUB_MARKER = "OVMFGEN-GRUB:"
#: A Secure Boot refusal on the guest's console (grep -E, also dom0's): edk2's BdsDxe (PlatformBmPrintScLib)
#: prints ``BdsDxe: failed to load Boot0001 "..." from ...: Access Denied``, from edk2-stable202511 on
#: followed by `` -- rejected probably by Secure Boot`` (LoadImage under the DENY policy, 0x04), or
#: ``failed to start ...: Security Violation`` (a deferred policy); shim prints ``Verification failed:
#: (0x1A) Security Violation``; Debian's GRUB, through shim's protocol, ``bad shim signature``.
SB_REFUSED = (r"rejected probably by Secure Boot"
              r"|BdsDxe: failed to load Boot[0-9A-Fa-f]{4} .*: Access Denied"
              r"|BdsDxe: failed to start Boot[0-9A-Fa-f]{4} .*: Security Violation"
              r"|Verification failed: \(0x1A\)|bad shim signature|prohibited by secure boot policy")
#: The Linux kernel's banner: a user's disk (``--disk``) that shows it has handed over to an OS.
LINUX_BANNER = "Linux version "
#: The kernel's report of the CPUs it brought up (grep -E; ``smp: Brought up 1 node, 128 CPUs``), an info
#: line: ovmfgen's disks boot Linux with ``loglevel=7`` (osdisk.KERNEL_CMDLINE), which puts info lines on
#: the console, as they put its Secure Boot line (``secureboot: Secure boot enabled``). One pattern for
#: dom0's grep -E and for Python (its group, the count, is what cpu_state reads).
LINUX_SMP = r"smp: Brought up [0-9]+ nodes?, ([0-9]+) CPUs?"
#: OvmfPkg's gXenBusProtocolGuid: a device path through it is a Xen PV device (XenBusDxe's child).
XENBUS_PROTOCOL_GUID = "3D3CA290-B9A5-11E3-B75D-B8AC6F7D65E6"

# --- Verdicts (the one vocabulary: boot/verdict.py's Verdict) -------------------------------------

#: The verdicts a guest under Xen gets (classify_xen_run), of the one vocabulary.
XEN_VERDICTS = frozenset({Verdict.SHELL_REACHED, Verdict.OS_REACHED, Verdict.FW_ASSERT, Verdict.GUEST_CRASHED,
                          Verdict.GUEST_GONE, Verdict.TIMEOUT, Verdict.HARNESS_FAILURE,
                          Verdict.SECURE_BOOT_REFUSED})


@dataclass(frozen=True)
class SecureBootState:
    """What a guest's logs say about Secure Boot (None: that source said nothing).

    ``firmware``: the variable driver's DEBUG line ``Variable SecureBoot is 1`` (AuthVariableLib);
    ``store``: XenPlatformPei's ``Secure Boot: ...`` line (the pre-enrolled store found, or why not);
    ``linux``: the kernel's ``Secure boot enabled``/``disabled``; ``efivar``: the SecureBoot variable as
    the Secure Boot disks' init read it; ``refused``: the refusal line; ``verification``: the firmware's
    first ``DxeImageVerificationLib:`` DEBUG line (why it refused).
    """

    firmware: bool | None = None
    store: str | None = None
    linux: bool | None = None
    efivar: bool | None = None
    refused: str | None = None
    verification: str | None = None

    @property
    def enabled(self) -> bool | None:
        """On when some source says on and none says off; off when one says off; None when none said."""
        said = [v for v in (self.firmware, self.linux, self.efivar) if v is not None]
        if not said:
            return True if self.refused else None
        return all(said)

    @property
    def seen(self) -> bool:
        """True when any source said anything."""
        return any(v is not None for v in (self.firmware, self.store, self.linux, self.efivar, self.refused))

    @property
    def text(self) -> str:
        """One line for people: ``Secure Boot on (firmware: SecureBoot=1; Linux: enabled)``."""
        word = {True: "on", False: "off", None: "unknown"}
        parts = []
        if self.firmware is not None:
            parts.append(f"firmware: SecureBoot={int(self.firmware)}")
        if self.store:
            parts.append(f"XenPlatformPei: {self.store}")
        if self.linux is not None:
            parts.append(f"Linux: {'enabled' if self.linux else 'disabled'}")
        if self.efivar is not None:
            parts.append(f"efivar: {int(self.efivar):02x}")
        if self.refused:
            parts.append(f"refused: {self.refused}")
        return f"Secure Boot {word[self.enabled]}" + (f" ({'; '.join(parts)})" if parts else "")

    def as_json(self) -> dict[str, object]:
        """xen-boot.json's ``secure_boot`` record."""
        return {"enabled": self.enabled, "firmware": self.firmware, "store": self.store, "linux": self.linux,
                "efivar": self.efivar, "refused": self.refused, "verification": self.verification}


@dataclass(frozen=True)
class CpuState:
    """What a guest's logs say about its processors (None: that source said nothing).

    ``firmware``: MpInitLib's last ``MpInitLib: Find N processors in system.`` DEBUG line; ``over_limit``:
    its line when more processors woke up than the build has room for (PcdCpuMaxLogicalProcessorNumber,
    the ``max_cpus`` feature: ``N processors woke up, more than ... (L): using L, the others stay halted``);
    ``linux``: the kernel's ``smp: Brought up N nodes, M CPUs``; ``madt``: the processors xen-pvh's
    XenPlatformPei counted in the MADT Xen's toolstack built (``XenCpuCountInitialization: N processors in
    the MADT``), the count MpInitLib then waits for (a firmware without that fix says nothing).
    """

    firmware: int | None = None
    over_limit: str | None = None
    linux: int | None = None
    madt: int | None = None

    @property
    def seen(self) -> bool:
        """True when any source said anything."""
        return any(v is not None for v in (self.firmware, self.over_limit, self.linux, self.madt))

    @property
    def text(self) -> str:
        """One line for people: ``MADT: 128; firmware: 128 processors; Linux: 128 CPUs``."""
        parts = []
        if self.madt is not None:
            parts.append(f"MADT: {self.madt}")
        if self.firmware is not None:
            parts.append(f"firmware: {self.firmware} processors")
        if self.over_limit:
            parts.append(f"MpInitLib: {self.over_limit}")
        if self.linux is not None:
            parts.append(f"Linux: {self.linux} CPUs")
        return "; ".join(parts)

    def as_json(self) -> dict[str, object]:
        """xen-boot.json's ``cpus`` record."""
        return {"firmware": self.firmware, "over_limit": self.over_limit, "linux": self.linux, "madt": self.madt}


@dataclass(frozen=True)
class BootStart:
    """A boot option BdsDxe started: ``BdsDxe: starting Boot0001 "UEFI Misc Device" from <device path>``."""

    option: str        # "Boot0001"
    description: str   # "UEFI Misc Device", "UEFI QEMU HARDDISK QM00001 "
    device_path: str   # the option's device path as BdsDxe printed it

    @property
    def disk_kind(self) -> str:
        """Which path to the disk: ``pv`` (XenBus, XenPvBlkDxe), ``ide``/``ahci``/``scsi`` (a controller the
        device model in dom0 emulates), ``other``."""
        path = self.device_path.upper()
        if f"VENHW({XENBUS_PROTOCOL_GUID}" in path:
            return "pv"
        for node, kind in (("/ATA(", "ide"), ("/SATA(", "ahci"), ("/SCSI(", "scsi")):
            if node in path:
                return kind
        return "other"

    @property
    def text(self) -> str:
        """One line for people: the option, and the firmware driver that gave it its disk."""
        how = {"pv": "the PV disk (XenBus, XenPvBlkDxe)",
               "ide": "the emulated IDE disk (dom0's device model, AtaAtapiPassThruDxe)",
               "ahci": "the emulated AHCI disk (dom0's device model)",
               "scsi": "the emulated SCSI disk (dom0's device model)"}.get(self.disk_kind, self.device_path)
        return f'{self.option} "{self.description.strip()}" from {how}'


@dataclass(frozen=True)
class XenBootResult:
    """What a boot under Xen showed. ``detail`` explains the verdict in one line."""

    verdict: Verdict
    detail: str = ""
    #: dom0 uptime (s) at ``xl create`` and when the shell prompt was seen; None when unknown.
    create_at: float | None = None
    shell_at: float | None = None
    os_at: float | None = None
    refused_at: float | None = None
    #: dom0 uptime (s) once dom0 had destroyed the guest (its turn's end); None when unknown.
    stopped_at: float | None = None
    #: Filled in by ``boot_xen``: wall time and peak RSS of the QEMU run, attempts made, the logs.
    qemu_seconds: float | None = None
    qemu_max_rss_mib: float | None = None
    #: Wall seconds from this guest's start to its verdict (the host's watch of the serial log).
    wall_seconds: float | None = None
    attempts: int = 1
    serial_log: Path | None = None
    guest_log: Path | None = None
    guest_console: str = field(default="", repr=False)
    #: The boot option the firmware's boot manager started last (``booted_from``), if it started one.
    boot: BootStart | None = None
    #: What the logs say about Secure Boot (``secure_boot_state``).
    secure_boot: SecureBootState = field(default_factory=SecureBootState)
    #: What the logs say about the guest's processors (``cpu_state``).
    cpus: CpuState = field(default_factory=CpuState)
    #: A HARNESS_FAILURE dom0 explained (its ``DOM0_FAILURE`` report, or its kernel running out of space
    #: or memory): the same run fails the same way, so ``boot_xen_guests`` does not run it again.
    explained: bool = False

    @property
    def ok(self) -> bool:
        """True for SHELL_REACHED and OS_REACHED (whether that was the aim is the guest's business)."""
        return self.verdict in (Verdict.SHELL_REACHED, Verdict.OS_REACHED)

    @property
    def shell_seconds(self) -> float | None:
        """Seconds from ``xl create`` to the shell prompt (dom0's clock)."""
        if self.create_at is None or self.shell_at is None:
            return None
        return round(self.shell_at - self.create_at, 2)

    @property
    def os_seconds(self) -> float | None:
        """Seconds from ``xl create`` to the OS's marker (dom0's clock)."""
        if self.create_at is None or self.os_at is None:
            return None
        return round(self.os_at - self.create_at, 2)

    @property
    def dom0_seconds(self) -> float | None:
        """Seconds of dom0's clock the guest's turn took, ``xl create`` to destroyed: under icount the nested
        Xen's clock advances with the instructions run (and over idle waits at once), so unlike wall seconds
        it does not depend on the host's load."""
        if self.create_at is None or self.stopped_at is None:
            return None
        return round(self.stopped_at - self.create_at, 2)

    @property
    def refused_seconds(self) -> float | None:
        """Seconds from ``xl create`` to dom0 seeing a Secure Boot refusal (dom0's clock)."""
        if self.create_at is None or self.refused_at is None:
            return None
        return round(self.refused_at - self.create_at, 2)


# --- Log classification (pure) --------------------------------------------------------------------

_ASSERT_RE = re.compile(r"ASSERT[ _\[(].*")
_EVENT_RE = re.compile(rf"{EVENT} (\S+) ([0-9.]+)")
_RESULT_RE = re.compile(rf"{RESULT} (\S+)")
_TRIPLE_RE = re.compile(r"\(XEN\).*\bd\d+v\d+ Triple fault.*")
_DOMAIN_CRASH_RE = re.compile(r"\(XEN\).*(?:domain_crash|Domain \d+ crashed|crashed on CPU).*", re.I)
_XEN_PANIC_RE = re.compile(r"\(XEN\) (?:\*+ )?Panic on CPU.*|\(XEN\) FATAL .*")
_DOM0_PANIC_RE = re.compile(r"Kernel panic - not syncing.*")
_DOM0_FAILURE_RE = re.compile(rf"{DOM0_FAILURE} (.*)")
#: dom0's own lines (its kernel's, its shell's) that say why it could not go on: (pattern, what it means).
_DOM0_TROUBLE = (
    (re.compile(r"Initramfs unpacking failed: .*"), "dom0's initramfs did not fit in its RAM"),
    (re.compile(r".*No space left on device.*"), "dom0 ran out of space in its RAM root file system"),
    (re.compile(r"Out of memory: Killed process .*|.*invoked oom-killer.*"), "dom0 ran out of memory"),
    (re.compile(r".*Cannot allocate memory.*"), "dom0 ran out of memory"),
)
_SHELL_RE = re.compile(r"Shell>")
_DEADLINE_RE = re.compile(rf"{DEADLINE} (.*)")
_ANSI_RE = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]")
_BDS_START_RE = re.compile(r'BdsDxe: starting (Boot[0-9A-Fa-f]{4}) "([^"]*)" from (\S+)')
_SB_VARIABLE_RE = re.compile(r"Variable SecureBoot is ([0-9A-Fa-f]+)")
_SB_STORE_RE = re.compile(r"XenPlatformPei: Secure Boot: (.*)")
_SB_LINUX_RE = re.compile(r"Secure boot (enabled|disabled)")
_SB_MARKER_RE = re.compile(rf"{SB_MARKER} efivar=(\S+) kernel=(\S+)")
_SB_REFUSED_RE = re.compile(rf".*(?:{SB_REFUSED}).*")
_SB_VERIFY_RE = re.compile(r"DxeImageVerificationLib: (.*)")
_MADT_RE = re.compile(r"XenCpuCountInitialization: (\d+) processors in the MADT")
_MP_FOUND_RE = re.compile(r"MpInitLib: Find (\d+) processors in system")
_MP_OVER_RE = re.compile(r"MpInitLib: (\d+ processors woke up, more than .*)")
_LINUX_SMP_RE = re.compile(LINUX_SMP)


def cpu_state(serial_log: str, guest_console: str) -> CpuState:
    """What ``serial_log`` (the firmware's ``(dN)`` DEBUG lines) and ``guest_console`` (Linux's) say about the
    guest's processors; the last line of each kind (DXE counts again after PEI; a restart says it again)."""
    firmware = over = linux = madt = None
    for line in _guest_lines(serial_log):
        m = _MADT_RE.search(line)
        if m:
            madt = int(m.group(1))
        m = _MP_FOUND_RE.search(line)
        if m:
            firmware = int(m.group(1))
        m = _MP_OVER_RE.search(line)
        if m:
            over = m.group(1).strip()
    for m in _LINUX_SMP_RE.finditer(_ANSI_RE.sub("", guest_console)):
        linux = int(m.group(1))
    return CpuState(firmware, over, linux, madt)


def secure_boot_state(serial_log: str, guest_console: str) -> SecureBootState:
    """What ``serial_log`` (the firmware's ``(dN)`` DEBUG lines) and ``guest_console`` say about Secure Boot.

    The firmware's lines are the last of each kind (a guest that restarts says it again); the
    refusal is the first (where the boot stopped).
    """
    firmware = store = verification = None
    for line in _guest_lines(serial_log):
        m = _SB_VARIABLE_RE.search(line)
        if m:
            firmware = int(m.group(1), 16) != 0
        m = _SB_STORE_RE.search(line)
        if m:
            store = m.group(1).strip()
        m = _SB_VERIFY_RE.search(line)
        if m and verification is None:
            verification = m.group(1).strip()
    console = _ANSI_RE.sub("", guest_console)
    linux = efivar = None
    m = None
    for m in _SB_LINUX_RE.finditer(console):
        pass
    if m is not None:
        linux = m.group(1) == "enabled"
    for m in _SB_MARKER_RE.finditer(console):
        efivar = None if m.group(1) == "none" else m.group(1).lower() not in ("00", "0")
    refused = _SB_REFUSED_RE.search(console)
    return SecureBootState(firmware, store, linux, efivar, refused.group(0).strip() if refused else None,
                           verification)


def os_evidence(guest_console: str) -> str:
    """What on the guest's console shows that its OS ran, the strongest first: the OS disk's marker (its
    init ran), Linux's report of the CPUs it brought up (the smp payload's goal), Linux's banner."""
    if OS_MARKER in guest_console:
        return f"{OS_MARKER} printed by the OS disk's init"
    smp = _LINUX_SMP_RE.search(_ANSI_RE.sub("", guest_console))
    if smp:
        return f"Linux's report of its CPUs on the guest's console ({smp.group(0)})"
    return "the Linux kernel's banner on the guest's console"


def booted_from(guest_console: str) -> BootStart | None:
    """The last boot option BdsDxe started, from the guest's console (None when it started none)."""
    found = _BDS_START_RE.findall(_ANSI_RE.sub("", guest_console))
    return BootStart(*found[-1]) if found else None


def linux_tail(guest_console: str, lines: int = 3) -> str:
    """The last ``lines`` non-empty console lines from Linux's banner on ('' when Linux never started)."""
    at = guest_console.rfind(LINUX_BANNER)
    if at < 0:
        return ""
    text = _ANSI_RE.sub("", guest_console[at:])
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(kept[-lines:])


def last_words(serial_log: str, guest_console: str, width: int = 160) -> str:
    """Where a guest was when its run stopped, for a detail: its console's last non-empty line, else (dom0
    copies the console out only when the guest's turn ends) its last ``(dN)`` debug line; '' when neither."""
    lines = [ln.strip() for ln in _ANSI_RE.sub("", guest_console).splitlines() if ln.strip()]
    if lines:
        return f"its console last said: {lines[-1][:width]}"
    debug = [ln.strip() for ln in _guest_lines(serial_log) if ln.strip()]
    return f"its last debug line: {debug[-1][:width]}" if debug else ""


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


def dom0_failure(serial_log: str) -> str | None:
    """Why dom0 could not go on, from its lines in ``serial_log`` (None when they say nothing): its own
    ``DOM0_FAILURE`` report first, else the first of its kernel's or shell's lines that tell (out of space,
    out of memory, the initramfs not unpacked). Guest lines (a guest's console, ``(dN)``) do not count."""
    lines = [ln.strip("\r ") for ln in serial_log.splitlines()
             if GUEST_PREFIX not in ln and not re.search(r"\(d[1-9]\d*\)", ln)]
    for line in lines:
        m = _DOM0_FAILURE_RE.search(line)
        if m:
            return f"dom0: {m.group(1).strip()}"
    for line in lines:
        for pattern, meaning in _DOM0_TROUBLE:
            m = pattern.search(line)
            if m:
                said = m.group(0).strip().removeprefix(XL_PREFIX.strip()).strip()
                return f"{meaning} ({said})"
    return None


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
    timing = {"create_at": events.get("create"), "shell_at": events.get("shell"), "os_at": events.get("os"),
              "refused_at": events.get("refused"), "stopped_at": events.get("stopped")}
    shell_seen = "shell" in events or bool(_SHELL_RE.search(guest_console))
    os_seen = "os" in events or OS_MARKER in guest_console
    sb = secure_boot_state(serial_log, guest_console)
    verdict = classify_events(serial_log, qemu_returncode, result, timing, shell_seen, os_seen,
                              os_evidence(guest_console), sb.refused or ("dom0 saw a Secure Boot refusal"
                                                                         if result == "refused" else None))
    verdict = replace(verdict, secure_boot=sb, cpus=cpu_state(serial_log, guest_console))
    boot = booted_from(guest_console)
    if boot is not None:
        verdict = replace(verdict, boot=boot)
        if boot.disk_kind != "other":
            # Which disk path the firmware took (an HVM guest's disk is both a PV and an emulated one).
            verdict = replace(verdict, detail=f"{verdict.detail}; the firmware booted {boot.text}")
    tail = linux_tail(guest_console)
    if tail and verdict.verdict is not Verdict.OS_REACHED:
        # Linux started and did not get to the marker: its last words say why.
        return replace(verdict, detail=f"{verdict.detail}; Linux's last lines: {tail}")
    return verdict


def classify_events(serial_log: str, qemu_returncode: int | None, result: str | None,
                    timing: dict[str, float | None], shell_seen: bool, os_seen: bool,
                    os_what: str, refused: str | None = None) -> XenBootResult:
    """``classify_xen_run``'s decision, from what it has parsed out of the logs.

    ``os_what``: what showed that the OS ran (``os_evidence``), for OS_REACHED's detail.
    ``refused``: the Secure Boot refusal line, if any: SECURE_BOOT_REFUSED unless the OS ran after all
    (then the refusal is in the detail: the firmware refused one boot option and started another).
    """
    if qemu_returncode not in (None, 0):
        seen = (" (the guest's OS had started)" if os_seen else
                " (the guest had reached the shell)" if shell_seen else "")
        return XenBootResult(Verdict.HARNESS_FAILURE,
                             f"QEMU exited with status {qemu_returncode}{seen}", **timing)
    panic = _XEN_PANIC_RE.search(serial_log)
    if panic:
        return XenBootResult(Verdict.HARNESS_FAILURE, f"Xen died: {panic.group(0).strip()}", **timing)
    if result == "dom0-failed":
        cause = dom0_failure(serial_log)
        return XenBootResult(Verdict.HARNESS_FAILURE, cause or "dom0 could not start the guest",
                             explained=cause is not None, **timing)

    for line in _guest_lines(serial_log):
        m = _ASSERT_RE.search(line)
        if m:
            return XenBootResult(Verdict.FW_ASSERT, m.group(0).strip(), **timing)
    if result == "assert":
        return XenBootResult(Verdict.FW_ASSERT, "xl dmesg showed a guest ASSERT (line not in the serial log)",
                             **timing)
    if os_seen:
        what = os_what
        if refused:
            what += f", after a Secure Boot refusal: {refused}"
        return XenBootResult(Verdict.OS_REACHED, what, **timing)
    if refused:
        return XenBootResult(Verdict.SECURE_BOOT_REFUSED, refused, **timing)
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
        why = _DEADLINE_RE.search(serial_log)
        return XenBootResult(Verdict.TIMEOUT, why.group(1).strip() if why else "no shell prompt before dom0's deadline",
                             **timing)
    if qemu_returncode is None:
        # dom0 judges a guest against its own deadline (a TIMEOUT above) well before the wall-clock
        # limit: a run killed before dom0 could report means the emulator stalled or crawled, and
        # says nothing about the firmware.
        cause = dom0_failure(serial_log)
        if timing["create_at"] is not None:
            return XenBootResult(Verdict.HARNESS_FAILURE, "QEMU stalled: the run hit its wall-clock limit "
                                 "before dom0's own deadline for the guest" + (f"; {cause}" if cause else ""),
                                 **timing)
        return XenBootResult(Verdict.HARNESS_FAILURE, cause or "dom0 never reached xl create before the timeout",
                             **timing)
    dom0_panic = _DOM0_PANIC_RE.search(serial_log)
    cause = dom0_failure(serial_log)
    if dom0_panic:
        return XenBootResult(Verdict.HARNESS_FAILURE, f"dom0 died: {dom0_panic.group(0).strip()}"
                             + (f"; {cause}" if cause else ""), **timing)
    return XenBootResult(Verdict.HARNESS_FAILURE, cause or "dom0 ended without reporting a result",
                         explained=cause is not None, **timing)


def guest_segments(serial_log: str) -> tuple[dict[str, str], set[str], str]:
    """Split a run with several guests: (each guest's part of the log, the guests whose part ended, the rest).

    A guest's part runs from ``GUEST_START name`` to ``GUEST_STOP name``; a part that never ended
    (QEMU died or was killed during that guest) runs to the end of the log.
    """
    parts: dict[str, list[str]] = {}
    stopped: set[str] = set()
    rest: list[str] = []
    current: str | None = None
    for line in serial_log.splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        if GUEST_START in bare:
            current = bare.split(GUEST_START, 1)[1].strip()
            parts[current] = []
            continue
        if current is not None and GUEST_STOP in bare:
            stopped.add(current)
            current = None
            continue
        (parts[current] if current is not None else rest).append(line)
    return {k: "".join(v) for k, v in parts.items()}, stopped, "".join(rest)


def classify_guest(serial_log: str, name: str, qemu_returncode: int | None) -> XenBootResult:
    """The verdict of guest ``name`` in a run with several guests, one after the other.

    A guest whose part of the run ended is judged on that part alone, whatever happened to QEMU
    later; the guest in progress when QEMU died or was killed gets that run's ending; a guest that
    never started is a HARNESS_FAILURE (the run says nothing about it).
    """
    parts, stopped, rest = guest_segments(serial_log)
    if name not in parts:
        if parts:  # others ran: this one's turn never came
            cause = dom0_failure(rest) if qemu_returncode == 0 else None
            why = ("the QEMU run timed out" if qemu_returncode is None
                   else f"QEMU exited with status {qemu_returncode}" if qemu_returncode != 0
                   else cause or "dom0 stopped")
            return XenBootResult(Verdict.HARNESS_FAILURE, f"never started: {why} before its turn",
                                 explained=cause is not None)
        why = classify_xen_run(rest, "", qemu_returncode)
        failed = why.verdict is Verdict.HARNESS_FAILURE
        detail = why.detail if failed else "dom0 ended before any guest"
        return XenBootResult(Verdict.HARNESS_FAILURE, f"never started: {detail}", explained=failed and why.explained)
    text = parts[name]
    rc = 0 if name in stopped else qemu_returncode
    return classify_xen_run(text, extract_guest_console(text), rc)



def format_result(result: XenBootResult) -> str:
    """One line for people: verdict, detail, timings."""
    parts = [f"xen: {result.verdict}"]
    if result.detail:
        parts.append(f"({result.detail})")
    if result.secure_boot.seen:
        parts.append(f"[{result.secure_boot.text}]")
    if result.cpus.seen:
        parts.append(f"[{result.cpus.text}]")
    timings = []
    if result.shell_seconds is not None:
        timings.append(f"shell {result.shell_seconds:.1f} s after xl create")
    if result.os_seconds is not None:
        timings.append(f"OS {result.os_seconds:.1f} s after xl create")
    if result.refused_seconds is not None:
        timings.append(f"refused {result.refused_seconds:.1f} s after xl create")
    if result.wall_seconds is not None:
        timings.append(f"{result.wall_seconds:.0f} s wall")
    if result.qemu_seconds is not None:
        timings.append(f"QEMU run {result.qemu_seconds:.1f} s")
    if result.qemu_max_rss_mib is not None:
        timings.append(f"peak RSS {result.qemu_max_rss_mib:.0f} MiB")
    if result.attempts > 1:
        timings.append(f"{result.attempts} attempts")
    if timings:
        parts.append("- " + ", ".join(timings))
    return " ".join(parts)


