"""ovmfgen.boot.xen.limits: a known emulator limit needs its exact combination and message."""

from __future__ import annotations


from ovmfgen.boot.xen import verdicts
from ovmfgen.boot.xen import Verdict


def test_known_emulator_limit_needs_the_combination_the_qemu_and_its_message():
    from ovmfgen.boot.xen import limits
    abort = verdicts.XenBootResult(Verdict.HARNESS_FAILURE, "QEMU exited with status -6: QEMU 10.0.13 (Debian "
                                   "1:10.0.13+ds-0+deb13u1): ERROR:../accel/tcg/tcg-accel-ops.c:90:"
                                   "tcg_handle_interrupt: assertion failed: (bql_locked())")
    # Every combination CI runs passes today: no abort is excused, on any QEMU.
    assert limits.KNOWN_LIMITS == ()
    assert limits.known_limit("4.20", "pvh", "shell", "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)", abort) is None
    table = [limits.EmulatorLimit("4.20", "*", "*", "10.0", r"tcg_handle_interrupt: assertion failed", "e")]
    lim = limits.known_limit("4.20", "hvm", "os", "10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)", abort, table)
    assert lim is table[0]
    assert lim.reason("10.0.13").startswith("known emulator limit (QEMU 10.0.13: tcg_handle_interrupt: assertion failed): ")
    # never for another combination, another QEMU, another message, or anything but a harness failure
    assert limits.known_limit("4.17", "hvm", "os", "10.0.13", abort, table) is None
    assert limits.known_limit("4.20", "hvm", "os", "7.2.22", abort, table) is None
    assert limits.known_limit("4.20", "hvm", "os", "11.1.0", abort, table) is None
    # a limit scoped to one guest kind does not cover another
    one = limits.EmulatorLimit("4.20", "hvm", "os", "10.0", "tcg_handle_interrupt", "e")
    assert limits.known_limit("4.20", "pvh", "os", "10.0.13", abort, [one]) is None
    assert limits.known_limit("4.20", "hvm", "os", "10.0.13", abort, [one]) is one
    other = verdicts.XenBootResult(Verdict.HARNESS_FAILURE, "QEMU exited with status 1: QEMU 10.0.13: out of memory")
    assert limits.known_limit("4.20", "hvm", "os", "10.0.13", other, table) is None
    for v in (Verdict.SHELL_REACHED, Verdict.TIMEOUT, Verdict.GUEST_CRASHED):
        assert limits.known_limit("4.20", "hvm", "os", "10.0.13",
                                  verdicts.XenBootResult(v, abort.detail), table) is None
