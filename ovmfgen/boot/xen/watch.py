"""The host's watch over one nested Xen run: when (wall clock) dom0 and each guest got where, and stalls.

QEMU writes Xen's serial console to a file; the host reads what is new about once a second and
feeds it to a ``RunWatch`` with the wall time it read it at. The watch notes the wall second each
marker appeared (dom0 up, each guest's start and stop) and dom0's own clock at its events, so a run
yields wall seconds per guest and the measured host speed (wall seconds per dom0 second). It also
says when the run has stalled: dom0 prints a heartbeat (``OVMFGEN-EVENT tick``) every few of its
seconds while it waits for a guest, so a serial log that stops growing means QEMU, Xen or dom0 hung,
never a slow guest. Pure logic (no I/O): unit-tested with made-up clocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ovmfgen.boot.xen.verdicts import EVENT, GUEST_START, GUEST_STOP

#: Wall seconds without a byte of serial output after which the run counts as stalled. dom0's
#: heartbeat comes every TICK_S of its seconds; its longest silence otherwise (unpacking the
#: initramfs) is about a dom0 second. 600 s covers more than 100 wall seconds per dom0 second.
STALL_S = 600.0
#: Once the run's own pace is known (wall seconds per dom0 second, over at least PACE_DOM0_S of dom0's
#: clock), a silence of STALL_HEARTBEATS heartbeats at that pace is a stall too, if shorter: a guest that
#: stops dom0's clock (a spin under icount) is recognised in minutes on a quiet host, not after STALL_S.
#: Never below STALL_FLOOR_S. A host that slows down more than that many times mid-run gets a stall, which
#: is a HARNESS_FAILURE (the guest runs again), never a firmware verdict.
STALL_HEARTBEATS = 20
STALL_FLOOR_S = 180.0
PACE_DOM0_S = 10.0

_EVENT_RE = re.compile(rf"{EVENT} (\S+) ([0-9.]+)")


@dataclass
class RunWatch:
    """What the serial log showed so far, stamped with the host's wall clock (seconds since QEMU started)."""

    stall_s: float = STALL_S
    #: dom0's heartbeat period, in its seconds (``guests.GuestDeadline.tick_s``)
    tick_s: float = 5.0
    last_output: float = 0.0
    #: wall second at which dom0 reported it was up (its first event), and dom0's own clock then
    dom0_up: float | None = None
    dom0_up_uptime: float | None = None
    #: guest name -> wall second its part of the log started / stopped
    guest_start: dict[str, float] = field(default_factory=dict)
    guest_stop: dict[str, float] = field(default_factory=dict)
    #: (wall second, dom0 uptime) of the first and the latest dom0 event: the host's speed
    first_event: tuple[float, float] | None = None
    last_event: tuple[float, float] | None = None
    _partial: str = ""

    def feed(self, text: str, now: float) -> None:
        """Take ``text``, the serial output read at wall second ``now`` (may end mid-line)."""
        if not text:
            return
        self.last_output = now
        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line.rstrip("\r"), now)

    def _line(self, line: str, now: float) -> None:
        if GUEST_START in line:
            self.guest_start.setdefault(line.split(GUEST_START, 1)[1].strip(), now)
        elif GUEST_STOP in line:
            self.guest_stop.setdefault(line.split(GUEST_STOP, 1)[1].strip(), now)
        m = _EVENT_RE.search(line)
        if m:
            stamp = (now, float(m.group(2)))
            if self.first_event is None:
                self.first_event = stamp
            if m.group(1) == "dom0-up" and self.dom0_up is None:
                self.dom0_up, self.dom0_up_uptime = now, stamp[1]
            self.last_event = stamp

    def stall_limit(self) -> float:
        """Wall seconds of silence that make a stall: ``stall_s``, or fewer once the run's pace is known
        (STALL_HEARTBEATS heartbeats at that pace, at least STALL_FLOOR_S)."""
        pace = self.wall_per_dom0_second()
        if pace is None or self.first_event is None or self.last_event is None \
                or self.last_event[1] - self.first_event[1] < PACE_DOM0_S:
            return self.stall_s
        return min(self.stall_s, max(STALL_FLOOR_S, STALL_HEARTBEATS * self.tick_s * pace))

    def stalled(self, now: float) -> bool:
        """True when nothing came for ``stall_limit()`` wall seconds."""
        return now - self.last_output > self.stall_limit()

    def guest_wall_seconds(self, name: str) -> float | None:
        """Wall seconds from the guest's start to its stop (None unless both were seen)."""
        if name in self.guest_start and name in self.guest_stop:
            return round(self.guest_stop[name] - self.guest_start[name], 1)
        return None

    def wall_per_dom0_second(self) -> float | None:
        """The measured host speed: wall seconds per dom0 (guest-visible) second, between dom0's events."""
        if self.first_event is None or self.last_event is None:
            return None
        wall = self.last_event[0] - self.first_event[0]
        guest = self.last_event[1] - self.first_event[1]
        if guest < 1.0 or wall <= 0:
            return None
        return round(wall / guest, 2)
