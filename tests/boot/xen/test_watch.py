"""ovmfgen.boot.xen.watch: the host's watch of a nested run (markers, the host's speed)."""

from __future__ import annotations


from ovmfgen.boot.xen import watch


# --- the host's watch of a run ---------------------------------------------------------------------


def test_watch_stamps_markers_with_the_wall_clock_and_measures_the_host():
    w = watch.RunWatch(stall_s=100)
    w.feed("(XEN) booting\nOVMFGEN-EVENT dom0-up 4.", 50.0)  # a line cut in the middle
    assert w.dom0_up is None
    w.feed("68\nOVMFGEN-GUEST-START ovmfgen-pvh-shell\nOVMFGEN-EVENT create 4.70\n", 52.0)
    assert w.dom0_up == 52.0 and w.guest_start == {"ovmfgen-pvh-shell": 52.0}
    w.feed("OVMFGEN-EVENT tick 9.70\r\n", 102.0)
    w.feed("OVMFGEN-EVENT shell 11.70\nOVMFGEN-GUEST-STOP ovmfgen-pvh-shell\n", 122.0)
    assert w.guest_wall_seconds("ovmfgen-pvh-shell") == 70.0 and w.guest_wall_seconds("other") is None
    assert w.wall_per_dom0_second() == 9.97  # 70 wall s for 7.02 dom0 s (dom0-up to shell)
    assert not w.stalled(200.0) and w.stalled(222.5)
    w.feed("", 300.0)  # nothing read: still silent since 122
    assert w.stalled(300.0)


def test_watch_without_events_has_no_speed():
    w = watch.RunWatch()
    w.feed("(XEN) only Xen\n", 3.0)
    assert w.wall_per_dom0_second() is None and w.dom0_up is None and not w.stalled(3.0 + watch.STALL_S)
