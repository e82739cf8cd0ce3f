"""``invoke bench --xen``: the real-Xen figure: ONE nested Xen boot of the guest set, warm cache.

Xen and dom0 come up once; dom0 then runs each guest of the set to its verdict. The figures come
from the host's watch of the serial log (``watch.RunWatch``): wall seconds until dom0 was up, each
guest's turn (``xl create`` to its verdict and ``xl destroy``), and the whole QEMU run. Goals on this
2-core machine: each guest under GUEST_GOAL_S, the whole set under SET_GOAL_S. It is a benchmark,
not a test: a missed goal is reported, never an error; an unexpected verdict is an error (the
figure would not be a boot). The Xen cache is made ready (and timed) before the clock starts.
Results go into ``bench/results.json`` under ``xen``, beside the build figures.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ovmfgen import paths
from ovmfgen.boot.xen.cache import prepare_xen_cache
from ovmfgen.boot.xen.guests import check_mode
from ovmfgen.boot.xen.nested import SUMMARY_NAME, boot_xen_guests, make_guests
from ovmfgen.builder.bench import RESULTS, merge_results
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.paths import Layout
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen.ui import say

GUEST_GOAL_S = 30.0
SET_GOAL_S = 200.0
#: The firmware the figure boots: its DEBUG output goes to Xen's console, as in the Xen tests.
FEATURES = ("debug_output=hypervisor-console",)
OUT_DIR = paths.REPO_ROOT / "bench" / "xen"


def xen_figures(summary: dict, load_before: float | None, cache_s: float) -> dict:
    """The ``xen`` entry of bench/results.json from a run's xen-boot.json (pure)."""
    run = (summary.get("runs") or [{}])[0]
    guests = {}
    for g in summary.get("guests") or []:
        wall = g.get("wall_seconds")
        guests[g["name"]] = {"verdict": g.get("verdict"), "ok": bool(g.get("ok")), "wall_s": wall,
                             "dom0_s_to_shell": g.get("seconds_to_shell"), "dom0_s_to_os": g.get("seconds_to_os"),
                             "dom0_s": g.get("dom0_seconds"), "met": wall is not None and wall <= GUEST_GOAL_S}
    set_s = run.get("qemu_seconds")
    # The set on dom0's clock (dom0's start, then each guest's turn): the figure that compares across hosts.
    parts = [run.get("dom0_up_dom0_s"), *(g["dom0_s"] for g in guests.values())]
    set_dom0_s = round(sum(parts), 1) if all(p is not None for p in parts) else None
    retried = len(summary.get("runs") or []) > 1
    return {
        "xen": summary.get("xen"), "device_model": summary.get("device_model"),
        "load_before": load_before, "cache_prepare_s": round(cache_s, 1),
        "dom0_up_wall_s": run.get("dom0_up_wall_s"), "dom0_up_dom0_s": run.get("dom0_up_dom0_s"),
        "wall_per_dom0_second": run.get("wall_per_dom0_second"),
        "qemu_max_rss_mib": run.get("qemu_max_rss_mib"), "retried": retried,
        "guests": guests,
        "set_s": set_s, "set_dom0_s": set_dom0_s,
        "goal": f"each guest <= {GUEST_GOAL_S:.0f} s, the whole set <= {SET_GOAL_S:.0f} s (wall)",
        "met": (not retried and set_s is not None and set_s <= SET_GOAL_S
                and all(g["met"] for g in guests.values())),
    }


def bench_xen_command(platform: str = "xen-pvh", target: str = "DEBUG", output: str | None = None,
                      edk2: str | None = None, mode: str = "core", layout: Layout | None = None) -> dict:
    """``invoke bench --xen``: boot the ``mode`` guest set once under real Xen, print and record the figures."""
    kinds = check_mode(mode)
    image = resolve(make_request(platform, target, features=FEATURES, edk2=edk2), layout).published()
    t0 = time.monotonic()
    prepare_xen_cache()  # warm cache: the figure is the boot, not the cache
    cache_s = time.monotonic() - t0
    load = round(os.getloadavg()[0], 1)
    say(f"bench: one nested Xen boot of {len(kinds)} guest(s) on {display_path(image)} (load {load})")
    # os and persist guests need their disks (the OS disk, a fresh persistence disk): make_guests gives them.
    outcomes = boot_xen_guests(make_guests(kinds, image, OUT_DIR), OUT_DIR)
    summary = json.loads((OUT_DIR / SUMMARY_NAME).read_text(encoding="utf-8"))
    figures = xen_figures(summary, load, cache_s)
    rows = [(name.removeprefix("ovmfgen-"), str(g["verdict"]), _s(g["wall_s"]), _s(g["dom0_s"], 1),
             f"<= {GUEST_GOAL_S:.0f} s", "met" if g["met"] else "MISSED") for name, g in figures["guests"].items()]
    rows.insert(0, ("Xen + dom0 up", "", _s(figures["dom0_up_wall_s"]), _s(figures["dom0_up_dom0_s"], 1), "", ""))
    rows.append(("whole set", "", _s(figures["set_s"]), _s(figures["set_dom0_s"], 1), f"<= {SET_GOAL_S:.0f} s",
                 "met" if figures["set_s"] is not None and figures["set_s"] <= SET_GOAL_S else "MISSED"))
    header = ("measure", "verdict", "wall", "dom0 s", "goal", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), flush=True)
    print(f"host: load {load} before the run, {figures['wall_per_dom0_second']} wall s per dom0 s, "
          f"peak RSS {figures['qemu_max_rss_mib']} MiB", flush=True)
    out = Path(output) if output else RESULTS
    merge_results(out, {"xen": figures})
    say(f"bench: results in {display_path(out)}; logs in {display_path(OUT_DIR)}")
    bad = [o for o in outcomes if not o.ok]
    if bad:
        raise OvmfgenError("bench: not a boot figure: " + ", ".join(
            f"{o.guest.name} {o.result.verdict} (expected {o.guest.expected})" for o in bad))
    return figures


def _s(value: object, digits: int = 0) -> str:
    return f"{value:.{digits}f} s" if isinstance(value, (int, float)) else "-"
