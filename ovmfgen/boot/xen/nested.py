"""Run Xen nested in QEMU TCG with a Debian dom0 and turn the run into a verdict; the CLI entry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ovmfgen.boot.xen.cache import XenAssets, prepare_xen_cache
from ovmfgen.boot.xen.debian import XEN_417, XenRelease, check_xen
from ovmfgen.boot.xen.gpt import check_disk_image
from ovmfgen.boot.xen.guests import (
    GUEST_MEMORY_MIB,
    OS_DISK_PAYLOADS,
    SB_PAYLOAD_DISKS,
    GuestDeadline,
    XenGuest,
    check_mode,
    check_vcpus,
    disk_drives,
    overlay_cpio,
)
from ovmfgen.boot.xen.limits import known_limit
from ovmfgen.boot.xen.osdisk import persist_disk, prepare_os_disk
from ovmfgen.boot.xen.persist import persistence_outcome, sb_persistence_outcome, sb_stateless_problem, startup_nsh
from ovmfgen.boot.xen.sbdisks import prepare_sb_disks
from ovmfgen.boot.xen.verdicts import (
    Verdict,
    XenBootResult,
    classify_guest,
    extract_guest_console,
    guest_segments,
    format_result,
    last_words,
)
from ovmfgen.boot.xen.watch import STALL_S, RunWatch
from ovmfgen.builder.noop import read_manifest
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fsutil import atomic_write_bytes, exclusive
from ovmfgen.run import DEVNULL, STDOUT, CommandError, popen, run, stop, wait
from ovmfgen.ui import say

# QEMU settings that make Xen work nested under TCG here (each was needed):
# -smap,-smep: without them dom0 dies at once (#PF in create_bounce_frame); -rdtscp: without it PVH
# guests die ("SVM Insn len emulation failed"); 3 GiB / dom0_mem=1536M for both versions: dom0's root file
# system is its initramfs, RAM, and held every guest's firmware and disk copy; with 2 GiB / 1024M Xen 4.17's
# dom0 could not unpack the CI guest set once the Secure Boot guests joined it ("Initramfs unpacking
# failed: write error", then "No space left on device"). Guests' disks are now drives of this QEMU
# (``qemu_argv``), not files in that RAM.
QEMU_BINARY = "qemu-system-x86_64"
QEMU_CPU = "max,-smap,-smep,-rdtscp"
# -icount with a fixed shift and sleep=off: guest time advances by instructions executed, not by
# the host's clock. Without it QEMU 7.2 aborted in most boots of an edk2 guest ("tcg_handle_interrupt:
# assertion failed: (qemu_mutex_iothread_locked())"): edk2's interrupt exit path writes CR8, and a
# CR8 write by a nested SVM guest while Xen has an interrupt window (V_IRQ) open calls
# cpu_interrupt() without the BQL. Windows open when a second interrupt is pending during the
# handler, which wall-clock time (host load, TCG translation) makes common. With icount the run is
# also close to deterministic. The cost: one TCG thread for both vCPUs (~70 s instead of ~30 s).
# A retry (see boot_xen) uses the next shift, so it does not replay the same instruction stream.
# Both Xen versions run this way. Xen 4.20 aborted QEMU 7.2 in every run without icount, and
# trixie's QEMU 10.0 (run from a trixie chroot until 2026-11-30) aborted the same way without icount
# in 8 of 8 attempts here and stopped on "Bad icount read" with it; QEMU 7.2 with icount ran its
# guest set (PVH, HVM, PVH from a PV disk) in every run (limits.py).
QEMU_ICOUNT_SHIFTS = (0, 1)
# Runs of one guest set at most: the first, a retry of its harness failures, and more only while QEMU
# dies by itself in each (the abort above, at an HVM guest's start; one CI-like dry run's Xen 4.17 set
# saw it in two runs in a row).
QEMU_ATTEMPTS = 4


def xen_cmdline(dom0_mem_mib: int = XEN_417.dom0_mem_mib) -> str:
    """Xen's command line: serial console, all log levels, dom0 with ``dom0_mem_mib`` on pCPU 0."""
    return ("console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all "
            f"dom0_mem={dom0_mem_mib}M,max:{dom0_mem_mib}M dom0_max_vcpus=1 dom0_vcpus_pin noreboot")


XEN_CMDLINE = xen_cmdline()
DOM0_CMDLINE = "console=hvc0 earlyprintk=xen rdinit=/init"

#: The default wall-clock cap of one QEMU run: a safety net only. What bounds a run is dom0's
#: deadline per guest (in dom0 seconds, ``GuestDeadline``) and the host's stall watch (no serial
#: output for ``watch.STALL_S``), both independent of how loaded the host is. The cap allows ~25
#: wall seconds per dom0 second (measured at load 12): dom0's boot (~40 s) and ~30 s per guest.
WALL_CAP_BASE_S = 1800.0
WALL_CAP_PER_GUEST_S = 900.0


SERIAL_LOG_NAME = "xen-serial.log"
QEMU_LOG_NAME = "xen-qemu.log"
SUMMARY_NAME = "xen-boot.json"


def qemu_argv(xen: Path, dom0_kernel: Path, dom0_initrd: Path, serial_log: Path,
              icount_shift: int = QEMU_ICOUNT_SHIFTS[0], release: XenRelease = XEN_417,
              drives: Sequence[tuple[str, Path]] = ()) -> list[str]:
    """QEMU's command line: Xen by multiboot, dom0 kernel and initramfs as its modules, and for each of
    ``drives`` (serial, disk image on the host; ``guests.disk_drives``) a virtio-blk drive for dom0.

    Each drive is ``snapshot=on``: the guest writes to a temporary copy-on-write layer of its own, the image
    on the host is opened read-only and never written. Guest time runs by instructions
    (``-icount shift=icount_shift,sleep=off``); memory and dom0's share of it are ``release``'s.
    """
    for p in (dom0_kernel, dom0_initrd):
        # QEMU splits multiboot modules at commas and a module's path from its arguments at spaces.
        if "," in str(p) or " " in str(p):
            raise OvmfgenError(f"path unusable as a QEMU multiboot module (comma or space): {p}")
    disks: list[str] = []
    for i, (serial, image) in enumerate(drives):
        if not serial.replace("-", "").isalnum() or len(serial) > 20:
            raise OvmfgenError(f"bad drive serial {serial!r}: letters, digits and dashes, at most 20")
        # file.filename= takes the path as it is (no protocol prefix); a comma is doubled in QEMU's options.
        disks += ["-drive", f"if=none,id=disk{i},format=raw,snapshot=on,file.driver=file,"
                            f"file.filename={str(image).replace(',', ',,')}",
                  "-device", f"virtio-blk-pci,drive=disk{i},serial={serial}"]
    return [
        QEMU_BINARY, "-machine", "pc", "-accel", "tcg", "-icount", f"shift={icount_shift},sleep=off",
        "-cpu", QEMU_CPU, "-smp", "2", "-m", str(release.qemu_memory_mib),
        "-display", "none", "-vga", "none", "-no-reboot", "-nodefaults", "-monitor", "none",
        "-serial", f"file:{serial_log}",
        "-kernel", str(xen),
        "-append", xen_cmdline(release.dom0_mem_mib),
        "-initrd", f"{dom0_kernel} {DOM0_CMDLINE},{dom0_initrd}",
        *disks,
    ]


def qemu_version() -> str:
    """The outer QEMU's own version (``7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)``), or "unknown"."""
    try:
        out = run([QEMU_BINARY, "--version"], timeout=60).stdout
    except CommandError:
        return "unknown"
    first = out.splitlines()[0].strip() if out.strip() else "unknown"
    return first.replace("QEMU emulator version ", "")


_QEMU_ERROR_WORDS = ("assertion", "ERROR", "error", "Bad ", "abort", "qemu-system")


def qemu_message(qemu_output: str) -> str:
    """QEMU's own message about why it stopped: the last line that reads like an error, else its last line."""
    lines = [ln.strip() for ln in qemu_output.splitlines() if ln.strip()]
    for line in reversed(lines):
        if any(w in line for w in _QEMU_ERROR_WORDS):
            return line
    return lines[-1] if lines else ""


# --- Booting --------------------------------------------------------------------------------------


def _peak_rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


@dataclass(frozen=True)
class QemuRun:
    """How one QEMU run ended, and what the host saw of it while it ran."""

    returncode: int | None     # None: killed (the wall cap, or a stall)
    seconds: float
    peak_rss_kib: int | None
    watch: RunWatch
    stalled: bool = False      # killed because the serial log stopped growing


def _run_qemu(argv: list[str], qemu_log: Path, serial: Path, timeout: float, stall_s: float = STALL_S,
              tick_s: float = GuestDeadline.tick_s) -> QemuRun:
    """Run QEMU to completion, ``timeout`` or a stall (no serial output for ``stall_s``, or less once the run's
    pace is known: ``RunWatch.stall_limit``), watching the serial log."""
    start = time.monotonic()
    peak: int | None = None
    watch = RunWatch(stall_s=stall_s, tick_s=tick_s)
    offset = 0

    def read_new() -> None:
        nonlocal offset
        try:
            with open(serial, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except OSError:
            return
        offset += len(data)
        watch.feed(data.decode("utf-8", errors="replace"), time.monotonic() - start)

    with open(qemu_log, "w", encoding="utf-8", errors="replace") as log:
        proc = popen(argv, stdin=DEVNULL, stdout=log, stderr=STDOUT)
        try:
            while True:
                rc = wait(proc, 1.0)
                read_new()
                now = time.monotonic() - start
                if rc is not None:
                    return QemuRun(rc, now, peak, watch)
                hwm = _peak_rss_kib(proc.pid)
                if hwm is not None:
                    peak = max(peak or 0, hwm)
                if watch.stalled(now) or now > timeout:
                    stop(proc, signals=(signal.SIGKILL,))
                    return QemuRun(None, time.monotonic() - start, peak, watch, stalled=watch.stalled(now))
        finally:
            stop(proc, signals=(signal.SIGKILL,))


def wall_cap_s(guests: int) -> float:
    """The default wall-clock cap of a run with ``guests`` guests (a safety net, see WALL_CAP_BASE_S)."""
    return WALL_CAP_BASE_S + WALL_CAP_PER_GUEST_S * max(guests, 1)


@dataclass(frozen=True)
class GuestOutcome:
    """One guest of a nested run and its verdict; ``ok`` when the verdict is the one a good firmware gets."""

    guest: XenGuest
    result: XenBootResult
    #: A persistence guest's ``persist.persistence_outcome`` (what its second boot read back), the Secure Boot
    #: persistence guest's ``persist.sb_persistence_outcome``.
    persistence: dict[str, object] | None = None

    @property
    def ok(self) -> bool:
        """True when the verdict is the expected one (the Shell; a crash for the ud2 control); a Secure Boot
        guest that reached its OS also needs its logs to say Secure Boot was on, the Secure Boot
        persistence guest its two boots to show a stateless firmware (``persist.sb_stateless_problem``), and
        a guest with several vCPUs the processor counts it should have (``XenGuest.cpu_problem``)."""
        if self.result.verdict is not self.guest.expected:
            return False
        if self.guest.payload == "sb-persist" and sb_stateless_problem(self.persistence):
            return False
        if self.guest.secure_boot and self.result.verdict is Verdict.OS_REACHED \
                and self.result.secure_boot.enabled is not True:
            return False
        return not self._cpu_problem

    @property
    def _cpu_problem(self) -> str:
        return self.guest.cpu_problem(self.result.cpus, self.result.verdict is Verdict.OS_REACHED)

    @property
    def why_not(self) -> str:
        """Why ``ok`` is False, in words ('' when it is True)."""
        if self.ok:
            return ""
        if self.result.verdict is self.guest.expected and self.guest.payload == "sb-persist" \
                and sb_stateless_problem(self.persistence):
            return sb_stateless_problem(self.persistence)
        if self.result.verdict is self.guest.expected and self._cpu_problem:
            return self._cpu_problem
        if self.result.verdict is self.guest.expected:
            return f"{self.result.secure_boot.text}: a Secure Boot guest passes only with Secure Boot on"
        return f"expected {self.guest.expected}"


def guest_log_names(guest: XenGuest, label: str | None = None) -> tuple[str, str]:
    """(this guest's part of Xen's serial log, its console log): file names in the output directory.

    ``label`` names one of the guest's runs (``XenGuest.runs``; the first one by default).
    """
    stem = guest.name.removeprefix("ovmfgen-") + (label[len(guest.name):] if label else "")
    return f"xen-{stem}.log", f"xen-{stem}.console.log"


def make_guests(kinds: Sequence[tuple[str, str]], image: Path, out_dir: Path,
                disk: Path | None = None) -> list[XenGuest]:
    """The guests of ``kinds`` (``check_mode``) for ``image``, each with the disk its payload needs (``with_disks``)."""
    return with_disks([XenGuest(mode, payload, Path(image)) for mode, payload in kinds], out_dir, disk)


def firmware_cpu_limit(image: Path) -> int | None:
    """The processors the firmware ``image`` has room for: the ``max_cpus`` feature its build's manifest
    (beside it) records; None when there is no manifest or it does not say."""
    manifest = read_manifest(Path(image).parent) or {}
    features = manifest.get("features")
    value = features.get("max_cpus") if isinstance(features, dict) else None
    return int(value) if isinstance(value, (int, str)) and str(value).isdigit() else None


def with_cpu_limit(guest: XenGuest) -> XenGuest:
    """``guest``, expecting its firmware to find as many processors as its build allows
    (``firmware_cpu_limit``): fewer than its vCPUs when the build's limit is lower."""
    if guest.vcpus == 1 or guest.firmware_cpus is not None:
        return guest
    limit = firmware_cpu_limit(guest.image)
    return replace(guest, firmware_cpus=min(limit, guest.vcpus)) if limit else guest


def with_disks(guests: Sequence[XenGuest], out_dir: Path, disk: Path | None = None) -> list[XenGuest]:
    """``guests``, each with the disk its payload needs.

    os, smp: the cached OS disk; persist: a fresh persistence disk per guest in ``out_dir``; disk: ``disk``;
    sb-*: the cached Secure Boot disks (``sbdisks``, signed with the test key set's db key).
    """
    out: list[XenGuest] = []
    for g in guests:
        d: Path | None = g.disk
        if g.payload in OS_DISK_PAYLOADS:
            d = prepare_os_disk()
        elif g.payload in SB_PAYLOAD_DISKS:
            d = prepare_sb_disks().path(SB_PAYLOAD_DISKS[g.payload])
        elif g.payload == "persist":
            d = Path(out_dir) / f"xen-{g.mode}-persist{'-' + g.variant if g.variant else ''}-disk.img"
            with tempfile.TemporaryDirectory(prefix="ovmfgen-persist-") as tmp:
                atomic_write_bytes(d, persist_disk(Path(tmp), startup_nsh()))
        elif g.payload == "disk":
            if disk is None:
                raise OvmfgenError("the disk payload needs a disk image (--disk IMAGE)")
            d = Path(disk)
        out.append(replace(g, disk=d))
    return out


def _attempt(guests: Sequence[XenGuest], out_dir: Path, assets: XenAssets, timeout: float, memory_mib: int,
             icount_shift: int, deadline: GuestDeadline, stall_s: float,
             qemu_ver: str) -> tuple[list[list[XenBootResult]], QemuRun]:
    """One nested run of ``guests``; per guest, one result per boot of it (``XenGuest.runs``)."""
    release = assets.release
    serial, qemu_log = out_dir / SERIAL_LOG_NAME, out_dir / QEMU_LOG_NAME
    serial.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ovmfgen-xen-") as tmp:
        t = Path(tmp)
        # dom0's initramfs = the cached root file system + this run's overlay, one file (Xen takes
        # one initrd module; the kernel unpacks concatenated cpio archives in order).
        initrd = t / "dom0-initrd.cpio"
        with open(initrd, "wb") as fh:
            with open(assets.rootfs_cpio, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)
            fh.write(overlay_cpio(guests, assets.modules_dir, deadline, memory_mib, release.series))
        disks = {g.name: g.disk for g in guests if g.disk is not None}
        drives = [(sn, Path(disks[name]).resolve()) for name, sn in disk_drives(guests)]
        argv = qemu_argv(assets.xen, assets.dom0_kernel, initrd, serial, icount_shift=icount_shift, release=release,
                         drives=drives)
        names = ", ".join(g.name for g in guests)
        say(f"booting {names} under Xen {assets.versions.hypervisor} in QEMU {qemu_ver} (TCG, icount)")
        qrun = _run_qemu(argv, qemu_log, serial, timeout, stall_s, deadline.tick_s)
    rc, seconds, peak = qrun.returncode, qrun.seconds, qrun.peak_rss_kib
    serial_text = serial.read_text(encoding="utf-8", errors="replace") if serial.is_file() else ""
    parts, _, _ = guest_segments(serial_text)
    tail = ""
    if rc not in (None, 0):
        # The emulator's own words and version: an abort says nothing about the firmware.
        msg = qemu_message(qemu_log.read_text(encoding="utf-8", errors="replace"))
        tail = f"QEMU {qemu_ver}: {msg}" if msg else f"QEMU {qemu_ver}"
    results = []
    for g in guests:
        per_run = []
        for label in g.runs:
            log_name, console_name = guest_log_names(g, label)
            part = parts.get(label, "")
            console = extract_guest_console(part)
            atomic_write_bytes(out_dir / log_name, part.encode())
            atomic_write_bytes(out_dir / console_name, console.encode())
            result = classify_guest(serial_text, label, rc)
            if qrun.stalled and label not in qrun.watch.guest_stop:
                # dom0 prints a heartbeat while it waits: silence is QEMU, Xen or dom0 stopping, which a guest
                # spinning under icount can cause too (dom0's clock stopped with it): its last words say where.
                during = label in qrun.watch.guest_start
                last = last_words(part, console) if during else ""
                result = replace(result, verdict=Verdict.HARNESS_FAILURE,
                                 detail=f"the nested run stalled: no serial output for "
                                        f"{qrun.watch.stall_limit():.0f} s (wall)"
                                        f"{' during this guest' if during else ''}"
                                        f"{f'; {last}' if last else ''}")
            if result.verdict is Verdict.HARNESS_FAILURE:
                extra = tail or (f"QEMU {qemu_ver}" if rc is None else "")
                if extra:
                    result = replace(result, detail=f"{result.detail}: {extra}")
            per_run.append(replace(result, qemu_seconds=round(seconds, 1),
                                   wall_seconds=qrun.watch.guest_wall_seconds(label),
                                   qemu_max_rss_mib=None if peak is None else round(peak / 1024, 1),
                                   serial_log=out_dir / log_name, guest_log=out_dir / console_name,
                                   guest_console=console))
        results.append(per_run)
    return results, qrun


def _combine(guest: XenGuest, runs: list[XenBootResult]) -> GuestOutcome:
    """One outcome from a guest's boots: the first that went wrong, else the last; and what persisted."""
    if len(runs) == 1:
        return GuestOutcome(guest, runs[0])
    bad = next((r for r in runs if r.verdict is not guest.expected), None)
    result = runs[-1] if bad is None else replace(
        bad, detail=f"boot {runs.index(bad) + 1} of {len(runs)}: {bad.detail}")
    outcome = sb_persistence_outcome if guest.payload == "sb-persist" else persistence_outcome
    return GuestOutcome(guest, result, outcome(runs[0].guest_console, runs[-1].guest_console))


def _run_record(guests: Sequence[XenGuest], qrun: QemuRun) -> dict[str, object]:
    """One QEMU run in xen-boot.json: its guests, wall seconds, peak RSS, and the host's speed."""
    w = qrun.watch
    return {"guests": [g.name for g in guests], "qemu_seconds": round(qrun.seconds, 1),
            "qemu_max_rss_mib": None if qrun.peak_rss_kib is None else round(qrun.peak_rss_kib / 1024, 1),
            "dom0_up_wall_s": None if w.dom0_up is None else round(w.dom0_up, 1), "dom0_up_dom0_s": w.dom0_up_uptime,
            "wall_per_dom0_second": w.wall_per_dom0_second(), "stalled": qrun.stalled,
            "returncode": qrun.returncode}


def boot_xen_guests(guests: Sequence[XenGuest], out_dir: Path, timeout: float | None = None,
                    memory_mib: int = GUEST_MEMORY_MIB, deadline: GuestDeadline = GuestDeadline(),
                    stall_s: float = STALL_S, xen: str | XenRelease | None = None) -> list[GuestOutcome]:
    """Boot ``guests`` one after the other in ONE nested Xen run; one verdict per guest.

    Logs go to ``out_dir``: ``xen-serial.log`` (Xen's console for the whole run), per guest
    ``xen-<mode>-<payload>.log`` (its part of it: ``(dN)`` debug lines, Xen's lines about it, dom0's
    events) and ``xen-<mode>-<payload>.console.log``, ``xen-qemu.log`` and ``xen-boot.json``.
    dom0 waits for each guest by ``deadline`` (dom0 seconds: no new output for ``idle_s``, at most
    ``cap_s``, stretched by dom0's measure of the host's speed); the host kills QEMU when its serial
    log has not grown for ``stall_s`` wall seconds (a HARNESS_FAILURE) or, as a safety net, after
    ``timeout`` wall seconds (default ``wall_cap_s``). The cap grows with the biggest guest's vCPUs
    (``GuestDeadline.for_vcpus``). Guests that got a HARNESS_FAILURE (QEMU itself
    died, a stall, ...) run again, once, in a second nested run with another icount shift (and in a third
    when QEMU died by itself in the second too); an earlier run's logs are kept as ``*.attemptN.log``. A
    failure dom0 explained (``XenBootResult.explained``: it could not attach the guest's disk, ran out of
    space or memory) would fail the same way: not retried.
    ``xen``: the Xen version (``4.17``, the default, or ``4.20``; ``debian.XenRelease``).
    """
    release = check_xen(xen)
    guests = [with_cpu_limit(g) for g in guests]
    if not guests:
        raise OvmfgenError("no guests to boot")
    for g in guests:
        if not g.image.is_file():
            raise OvmfgenError(f"no firmware image at {display_path(g.image)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("xen-*.attempt[0-9].log"):
        old.unlink()
    names = [g.name for g in guests]
    if len(set(names)) != len(names):
        raise OvmfgenError(f"two guests of one run have the same name ({', '.join(names)}): give one a variant")
    cap = wall_cap_s(sum(len(g.runs) for g in guests)) if timeout is None else timeout
    deadline = deadline.for_vcpus(max(g.vcpus for g in guests))
    assets = prepare_xen_cache(release)
    qemu_ver = qemu_version()
    started = time.monotonic()
    first, qrun = _attempt(guests, out_dir, assets, cap, memory_mib, QEMU_ICOUNT_SHIFTS[0], deadline, stall_s, qemu_ver)
    results = {g.name: _combine(g, r) for g, r in zip(guests, first)}
    runs = [_run_record(guests, qrun)]

    def retryable(among: Sequence[XenGuest]) -> list[XenGuest]:
        """The guests of ``among`` with a harness failure dom0 did not explain."""
        return [g for g in among if results[g.name].result.verdict is Verdict.HARNESS_FAILURE
                and not results[g.name].result.explained]

    again = retryable(guests)
    for g in guests:
        if results[g.name].result.explained:
            say(f"{g.name}: harness failure ({results[g.name].result.detail}): not retried, dom0 said why")
    attempt = 1
    while again and (attempt == 1 or (attempt < QEMU_ATTEMPTS and qrun.returncode not in (None, 0))):
        say(f"harness failure ({results[again[0].name].result.detail}); "
            f"{'retrying' if attempt == 1 else 'QEMU died again: one more run for'} {len(again)} guest(s)")
        for p in [out_dir / SERIAL_LOG_NAME, out_dir / QEMU_LOG_NAME,
                  *(out_dir / n for g in again for label in g.runs for n in guest_log_names(g, label))]:
            if p.exists():
                os.replace(p, p.with_name(p.name.replace(".log", f".attempt{attempt}.log")))
        retried, qrun = _attempt(again, out_dir, assets, cap, memory_mib,
                                 QEMU_ICOUNT_SHIFTS[attempt % len(QEMU_ICOUNT_SHIFTS)], deadline, stall_s, qemu_ver)
        attempt += 1
        for g, r in zip(again, retried):
            o = _combine(g, r)
            results[g.name] = replace(o, result=replace(o.result, attempts=attempt))
        runs.append(_run_record(again, qrun))
        again = retryable(again)
    outcomes = [results[g.name] for g in guests]
    v = assets.versions
    summary = {
        "xen_series": release.series, "xen": v.hypervisor, "xen_utils": v.utils, "device_model": v.device_model,
        "dom0_suite": v.suite, "outer_qemu": qemu_ver, "icount": True,
        "dom0_kernel": f"{v.kernel_package} {v.kernel}", "seconds": round(time.monotonic() - started, 1),
        "runs": runs,
        "guests": [{
            "name": o.guest.name, "xen": v.hypervisor, "mode": o.guest.mode, "payload": o.guest.payload,
            "variant": o.guest.variant, "image": display_path(o.guest.image), "verdict": o.result.verdict.value,
            "expected": o.guest.expected.value, "ok": o.ok, "why_not": o.why_not or None, "detail": o.result.detail,
            "seconds_to_shell": o.result.shell_seconds, "seconds_to_os": o.result.os_seconds,
            "seconds_to_refusal": o.result.refused_seconds, "secure_boot": o.result.secure_boot.as_json(),
            "vcpus": o.guest.vcpus, "cpus": o.result.cpus.as_json(),
            "wall_seconds": o.result.wall_seconds, "dom0_seconds": o.result.dom0_seconds,
            "disk": display_path(o.guest.disk) if o.guest.disk else None,
            "persistence": o.persistence, "attempts": o.result.attempts,
            "boot": None if o.result.boot is None else {
                "option": o.result.boot.option, "description": o.result.boot.description.strip(),
                "device_path": o.result.boot.device_path, "disk": o.result.boot.disk_kind},
            "known_emulator_limit": _limit_reason(release, o, qemu_ver),
            "log": o.result.serial_log.name if o.result.serial_log else None,
            "console_log": o.result.guest_log.name if o.result.guest_log else None,
        } for o in outcomes],
    }
    atomic_write_bytes(out_dir / SUMMARY_NAME, (json.dumps(summary, indent=2) + "\n").encode())
    return outcomes


def _limit_reason(release: XenRelease, o: GuestOutcome, qemu_ver: str) -> str | None:
    lim = known_limit(release.series, o.guest.mode, o.guest.payload, qemu_ver, o.result)
    return lim.reason(qemu_ver) if lim else None


def boot_xen(image: Path, out_dir: Path, timeout: float | None = None,
             memory_mib: int = GUEST_MEMORY_MIB, xen: str | XenRelease | None = None) -> XenBootResult:
    """Boot ``image`` (a PVH ELF) as a PVH guest of Xen ``xen`` (default 4.17) nested in QEMU TCG; one verdict.

    The one-guest case of ``boot_xen_guests`` (same logs in ``out_dir``).
    """
    return boot_xen_guests([XenGuest("pvh", "shell", Path(image))], out_dir, timeout, memory_mib,
                           xen=xen)[0].result


#: ``--mode`` choices that can take ``--disk`` (the user's disk replaces the firmware-only guests).
DISK_MODES = {"pvh": ("pvh",), "hvm": ("hvm",), "all": ("pvh", "hvm")}


def check_disk_request(mode: str, disk: Path | str | None) -> tuple[tuple[str, str], ...]:
    """The (mode, payload) guest set for ``--mode`` and ``--disk``, or one clear error (bad mode, bad disk)."""
    kinds = check_mode(mode)
    if disk is None:
        return kinds
    if mode not in DISK_MODES:
        raise OvmfgenError(f"--disk boots your disk in --mode {', '.join(sorted(DISK_MODES))}, not {mode!r}")
    check_disk_image(Path(disk))
    return tuple((m, "disk") for m in DISK_MODES[mode])


def xen_output_dir(image: Path, release: XenRelease) -> Path:
    """Where ``invoke boot --on xen`` writes a run's logs and ``xen-boot.json``: ``xen-<series>/`` beside the firmware."""
    return Path(image).parent / f"xen-{release.series}"


def boot_xen_command(image: Path | str, timeout: float | None = None, mode: str = "pvh", xen: str | None = None,
                     disk: Path | str | None = None, vcpus: int = 1) -> list[GuestOutcome]:
    """CLI entry: boot the published (or given) ELF under real Xen as the ``mode`` guest set; raise unless
    every guest got the verdict a good firmware gets.

    With ``disk`` (a disk image: GPT or MBR) the guests (PVH, HVM or both) boot it as their PV disk
    and report how far it got (OS_REACHED once Linux prints its banner). ``image`` is the firmware
    (``invoke boot`` finds the published build's); logs go to ``xen-<series>/`` beside it. ``vcpus``: each
    guest's vCPUs; with more than one, each guest must also show the firmware finding them (as many as its
    build's ``max_cpus`` allows, saying so when that is fewer) and Linux bringing up every one.
    """
    kinds = check_disk_request(mode, disk)
    vcpus = check_vcpus(vcpus)
    release = check_xen(xen)
    path = Path(image)
    if not path.is_file():
        raise OvmfgenError(f"no firmware image at {display_path(path)}")
    started = time.monotonic()
    # Each Xen version's run of this firmware has its own directory beside it (xen-4.17/, xen-4.20/):
    # runs of two versions at once never share a log; a second run of the same version waits.
    out_dir = xen_output_dir(path, release)
    with exclusive(out_dir / ".lock", f"Xen {release.series} boot of {display_path(path)}"):
        guests = [replace(g, vcpus=vcpus) for g in make_guests(kinds, path, out_dir, Path(disk) if disk else None)]
        outcomes = boot_xen_guests(guests, out_dir, timeout=timeout, xen=release)
    for o in outcomes:
        mark = "ok" if o.ok else f"FAILED ({o.why_not})"
        print(f"{o.guest.mode} {o.guest.payload}: {format_result(o.result)} - {mark}; "
              f"log: {display_path(o.result.serial_log or out_dir)}", flush=True)
        if o.persistence is not None:
            print(f"{o.guest.mode} {o.guest.payload}: after a restart, read back: "
                  + ", ".join(f"{k} {'yes' if v else 'no' if v is False else '?'}"
                              for k, v in sorted(o.persistence["persisted"].items())), flush=True)
    print(f"xen: {len(outcomes)} guest(s) in {time.monotonic() - started:.1f} s; "
          f"summary: {display_path(out_dir / SUMMARY_NAME)}", flush=True)
    bad = [o for o in outcomes if not o.ok]
    if bad:
        o = bad[0]
        raise OvmfgenError(f"{display_path(path)}: {o.guest.mode} {o.guest.payload} guest under Xen {release.series}: "
                           f"{o.result.verdict}{': ' + o.result.detail if o.result.detail else ''} "
                           f"({o.why_not})")
    return outcomes
