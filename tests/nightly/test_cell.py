"""Unit tests of ovmfgen.nightly.cell's Xen part: the guests of a cell, the extra FD-size build, the record.

The build and the nested Xen boot are replaced by fakes that do what the real ones leave on disk
(the published dist dir; xen-boot.json and a log per guest); the real run is the optional nightly
cell itself (``invoke nightly --cell xen-pvh-DEBUG-hvcon-xen417``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ovmfgen.boot import xen
from ovmfgen.boot.xen import nested
from ovmfgen.boot.xen.verdicts import Verdict, XenBootResult
from ovmfgen.builder import command as build_cmd
from ovmfgen.nightly import cell as cellmod
from ovmfgen.nightly.matrix import Cell

# The cells resolve their builds for real (on the real tree); only the build and the boot are fakes.
pytestmark = pytest.mark.usefixtures("real_cache")

XEN_CELL = Cell(name="x", platform="xen-pvh", fd_size="2M", features=("debug_output=hypervisor-console",),
                boot=("xen",), xen_guests=("pvh-shell", "hvm-shell", "pvh-ud2", "pvh-shell-4M"))


def _fake_build(tmp_path: Path, builds: list[str | None]):
    def build(resolved):
        req = resolved.request
        size = f"{req.fd_size}M" if isinstance(req.fd_size, int) else req.fd_size
        builds.append(size)
        dist = tmp_path / "dist" / f"DEBUG-{size}"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "ovmf.elf").write_bytes(f"elf {size}".encode())
        (dist / "manifest.json").write_text("{}")
        return build_cmd.BuildResult(dist, {"fd_size": size or "2M"}, noop=False, seconds=1.0)
    return build


versions: list[str | None] = []


def _fake_boot(booted: list[list[xen.XenGuest]], verdicts: dict[str, Verdict]):
    def boot_xen_guests(guests, out_dir, timeout=None, xen=None, **_):
        booted.append(list(guests))
        versions.append(xen)
        out_dir.mkdir(parents=True, exist_ok=True)
        outcomes, entries = [], []
        for g in guests:
            v = verdicts.get(g.name, g.expected)
            log = out_dir / nested.guest_log_names(g)[0]
            log.write_text(f"log of {g.name}\n")
            r = XenBootResult(v, "fake", create_at=1.0, shell_at=8.0, wall_seconds=42.0, serial_log=log)
            o = nested.GuestOutcome(g, r)
            outcomes.append(o)
            entries.append({"name": g.name, "mode": g.mode, "payload": g.payload, "variant": g.variant,
                            "verdict": v.value, "expected": g.expected.value, "ok": o.ok, "detail": "fake",
                            "seconds_to_shell": 7.0, "wall_seconds": 42.0, "attempts": 1, "log": log.name})
        (out_dir / nested.SUMMARY_NAME).write_text(json.dumps(
            {"xen": "4.17.test", "seconds": 300.0, "runs": [{"guests": [g.name for g in guests]}],
             "guests": entries}))
        return outcomes
    return boot_xen_guests


def _run(tmp_path, monkeypatch, cell: Cell = XEN_CELL, verdicts: dict[str, Verdict] | None = None):
    builds: list[str | None] = []
    booted: list[list[xen.XenGuest]] = []
    monkeypatch.setattr(cellmod.build_cmd, "build", _fake_build(tmp_path, builds))
    monkeypatch.setattr(cellmod.elf, "check_elf", lambda data: [])
    monkeypatch.setattr(cellmod.xen, "boot_xen_guests", _fake_boot(booted, verdicts or {}))
    record = cellmod.run_cell(cell, tmp_path / "night" / "cells" / cell.name)
    return record, builds, booted


def test_the_xen_cell_builds_the_4m_variant_and_boots_every_guest_in_one_run(tmp_path, monkeypatch):
    record, builds, booted = _run(tmp_path, monkeypatch)
    assert builds == ["2M", "4M"]  # the cell's own build, then the 4 MiB one its last guest needs
    assert [s["name"] for s in record["steps"]] == ["build", "check-elf", "build-4M", "boot-xen"]
    assert len(booted) == 1, "all guests go into ONE nested boot"
    guests = booted[0]
    assert [g.name for g in guests] == ["ovmfgen-pvh-shell", "ovmfgen-hvm-shell", "ovmfgen-pvh-ud2",
                                        "ovmfgen-pvh-shell-4M"]
    # The 2 MiB guests boot the cell's own ELF (its snapshot in the night), the 4 MiB one the 4M build's.
    assert {g.image.read_bytes() for g in guests[:3]} == {b"elf 2M"} and guests[3].image.read_bytes() == b"elf 4M"
    assert record["artifacts"]["4M/ovmf.elf"] == "cells/x/artifacts-4M/ovmf.elf"
    assert record["status"] == "passed"
    xen_rec = record["boot"]["xen"]
    assert xen_rec["ok"] and xen_rec["verdict"] == "ALL_EXPECTED" and xen_rec["xen"] == "4.17.test"
    assert xen_rec["log"] == "cells/x/xen/xen-boot.json" and xen_rec["seconds"] == 300.0
    assert [(g["name"], g["verdict"], g["ok"]) for g in xen_rec["guests"]] == [
        ("ovmfgen-pvh-shell", "SHELL_REACHED", True), ("ovmfgen-hvm-shell", "SHELL_REACHED", True),
        ("ovmfgen-pvh-ud2", "GUEST_CRASHED", True), ("ovmfgen-pvh-shell-4M", "SHELL_REACHED", True)]
    assert xen_rec["guests"][3]["variant"] == "4M" and xen_rec["guests"][3]["log"] == "cells/x/xen/xen-pvh-shell-4M.log"
    assert xen_rec["detail"].startswith("4/4 guests got their expected verdict")


def test_one_unexpected_verdict_fails_the_cell_and_names_the_guest(tmp_path, monkeypatch):
    record, _, _ = _run(tmp_path, monkeypatch, verdicts={"ovmfgen-pvh-shell-4M": Verdict.TIMEOUT,
                                                         "ovmfgen-pvh-ud2": Verdict.SHELL_REACHED})
    assert record["status"] == "failed" and record["failed_steps"] == ["boot-xen"]
    xen_rec = record["boot"]["xen"]
    assert xen_rec["verdict"] == "ovmfgen-pvh-ud2 SHELL_REACHED, ovmfgen-pvh-shell-4M TIMEOUT"
    assert [g["ok"] for g in xen_rec["guests"]] == [True, True, False, False]
    assert xen_rec["detail"].startswith("2/4 guests")


def test_a_xen_cell_without_guests_boots_one_pvh_guest_and_builds_nothing_more(tmp_path, monkeypatch):
    record, builds, booted = _run(tmp_path, monkeypatch, Cell(name="y", platform="xen-pvh", boot=("xen",)))
    assert builds == [None] and [g.name for g in booted[0]] == ["ovmfgen-pvh-shell"]
    assert record["status"] == "passed"


def test_guests_of_the_cells_own_size_need_no_other_build(tmp_path, monkeypatch):
    cell = Cell(name="z", platform="xen-pvh", fd_size="4M", boot=("xen",), xen_guests=("pvh-shell-4M", "hvm-shell"))
    record, builds, booted = _run(tmp_path, monkeypatch, cell)
    assert builds == ["4M"] and "build-4M" not in [s["name"] for s in record["steps"]]
    assert {g.image.read_bytes() for g in booted[0]} == {b"elf 4M"}


def test_the_cells_xen_version_goes_to_the_nested_boot(tmp_path, monkeypatch):
    versions.clear()
    _run(tmp_path, monkeypatch, Cell(name="v", platform="xen-pvh", boot=("xen",), xen="4.20"))
    assert versions == ["4.20"]
