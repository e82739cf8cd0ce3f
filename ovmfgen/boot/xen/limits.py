"""Known emulator limits: (Xen version, guest kind, outer QEMU) combinations the emulator cannot run reliably.

Such a run is a HARNESS_FAILURE (QEMU aborted or stalled: nothing about the firmware), and it never
counts as a pass. Where one combination fails that way in every run on this machine, the tests mark
it as an expected failure (pytest xfail) naming QEMU's message and version, with the evidence of what
was tried; any other HARNESS_FAILURE, or a known limit whose QEMU message differs, stays a failure.
A guest of such a combination that the emulator did run is judged on its verdict as usual.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ovmfgen.boot.xen.verdicts import Verdict, XenBootResult


@dataclass(frozen=True)
class EmulatorLimit:
    """One combination the outer QEMU cannot run reliably, and the evidence."""

    xen: str           # Xen series, "4.20"
    mode: str          # guest mode, "hvm" ("*": any)
    payload: str       # guest payload, "os" ("*": any)
    qemu: str          # the outer QEMU's version prefix, "10.0"
    message: str       # a regular expression QEMU's own message matches
    evidence: str      # what was measured and tried

    def matches(self, xen: str, mode: str, payload: str, qemu_version: str, result: XenBootResult) -> bool:
        """True when ``result`` is this limit: a HARNESS_FAILURE of this combination with QEMU's message."""
        return (result.verdict is Verdict.HARNESS_FAILURE and xen == self.xen
                and self.mode in ("*", mode) and self.payload in ("*", payload)
                and qemu_version.startswith(self.qemu) and re.search(self.message, result.detail) is not None)

    def reason(self, qemu_version: str) -> str:
        """The xfail reason: the QEMU version and message, then the evidence."""
        return f"known emulator limit (QEMU {qemu_version}: {self.message}): {self.evidence}"


#: None today: every combination CI and the nightly run passed in every run on this machine.
#: History (issue #16), so that nobody goes back: QEMU's TCG calls cpu_interrupt() without the BQL
#: when a nested SVM guest writes CR8 (edk2's interrupt exit does) while Xen has an interrupt window
#: (V_IRQ) open, and aborts in tcg_handle_interrupt. Without icount that hit QEMU 7.2 under Xen 4.17
#: and 4.20 in most or all runs, and trixie's QEMU 10.0.13 under Xen 4.20 in 8 of 8 attempts
#: (HVM with a disk also on QEMU 11.1); QEMU 10/11 with icount stop on "Bad icount read". Xen 4.20
#: under the host's QEMU 7.2 WITH icount (what 4.17 uses) ran PVH/HVM to the Shell and PVH from a
#: PV disk to Linux (3 of 3 runs, 2026-11-30), and HVM with the OS disk to
#: Linux (1 of 1, 25.6 dom0 s, 705 s wall at load ~6), so both versions run that way now.
KNOWN_LIMITS: tuple[EmulatorLimit, ...] = ()


def known_limit(xen: str, mode: str, payload: str, qemu_version: str, result: XenBootResult,
                limits: Sequence[EmulatorLimit] = KNOWN_LIMITS) -> EmulatorLimit | None:
    """The known limit ``result`` is, or None (then a HARNESS_FAILURE is a plain failure of the harness)."""
    return next((lim for lim in limits if lim.matches(xen, mode, payload, qemu_version, result)), None)
