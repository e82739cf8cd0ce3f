"""ovmfgen.boot.xen.watch: the host's watch of a nested run (markers, the host's speed)."""

from __future__ import annotations


from ovmfgen.boot.xen import watch


# --- the host's watch of a run ---------------------------------------------------------------------


def test_watch_stamps_markers_with_the_wall_clock_and_measures_the_host():
    w = watch.RunWatch(stall_s=100)
    w.feed("(XEN) booting\nOVMFGEN-EVENT dom0-up 4.", 50.0)  # a line cut in the middle
    assert w.dom0_up is None
    w.feed("68\nOVMFGEN-GUEST-START ovmfgen-pvh-shell\nOVMFGEN-EVENT create 4.70\n", 52.0)
    assert w.dom0_up == 52.0 and w.dom0_up_uptime == 4.68 and w.guest_start == {"ovmfgen-pvh-shell": 52.0}
    w.feed("OVMFGEN-EVENT tick 9.70 polls=5\r\n", 102.0)  # a tick says how many times dom0 polled
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


def test_a_known_pace_shortens_the_stall_limit():
    """dom0 ticking at 2 wall s per dom0 s: 20 heartbeats of 5 dom0 s are 200 wall s, below the 600 s limit."""
    w = watch.RunWatch()
    assert w.stall_limit() == watch.STALL_S
    w.feed("OVMFGEN-EVENT dom0-up 5.00\n", 10.0)
    w.feed("OVMFGEN-EVENT tick 10.00\n", 20.0)
    assert w.stall_limit() == watch.STALL_S  # 5 dom0 s seen: too few to trust a pace
    w.feed("OVMFGEN-EVENT tick 15.00\n", 30.0)
    assert w.wall_per_dom0_second() == 2.0 and w.stall_limit() == 200.0
    assert not w.stalled(229.0) and w.stalled(231.0)


def test_the_stall_limit_has_a_floor_and_a_ceiling():
    fast = watch.RunWatch()
    fast.feed("OVMFGEN-EVENT dom0-up 5.00\nOVMFGEN-EVENT tick 25.00\n", 10.0)
    fast.feed("OVMFGEN-EVENT tick 30.00\n", 11.0)  # 1 wall s for 25 dom0 s
    assert fast.stall_limit() == watch.STALL_FLOOR_S
    slow = watch.RunWatch()
    slow.feed("OVMFGEN-EVENT dom0-up 5.00\n", 10.0)
    slow.feed("OVMFGEN-EVENT tick 15.00\n", 510.0)  # 100 wall s per dom0 s: a loaded host
    assert slow.stall_limit() == watch.STALL_S
