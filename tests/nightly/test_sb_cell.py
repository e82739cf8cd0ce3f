"""The nightly's Secure Boot cells load as cells of Secure Boot guests, and a cell's record and report show each
guest's Secure Boot state."""

from __future__ import annotations

import json


from helpers import REPO
from ovmfgen.boot.xen import guests as guestmod
from ovmfgen.nightly import cell as cellmod
from ovmfgen.nightly import matrix, report

def test_the_secure_boot_cells_load() -> None:
    by = {c.name: c for c in matrix.load_matrix(REPO / "nightly.yaml").cells}
    for name, xen in (("xen-pvh-DEBUG-secure-boot-xen417", None), ("xen-pvh-DEBUG-secure-boot-xen420", "4.20")):
        c = by[name]
        assert (c.fd_size, c.boot, c.optional, c.xen) == ("4M", ("xen",), True, xen)
        assert "secure_boot=test" in c.features and "debug_output=hypervisor-console" in c.features
        specs = [guestmod.parse_guest_spec(t) for t in c.xen_guests]
        assert [(s.mode, s.payload) for s in specs] == list(guestmod.check_mode("sb"))


def test_a_cells_record_and_report_show_each_guests_secure_boot_state(tmp_path):
    night = tmp_path / "night"
    out = night / "cells" / "sb" / "xen"
    out.mkdir(parents=True)
    on = {"enabled": True, "firmware": True, "store": "pre-enrolled variable store", "linux": True, "efivar": True,
          "refused": None, "verification": None}
    refused = {**on, "linux": None, "efivar": None, "refused": 'BdsDxe: failed to load Boot0001 "x" from y: '
               "Access Denied -- rejected probably by Secure Boot", "verification": "Image is not signed"}
    nothing = dict.fromkeys(on)
    entries = [
        {"name": "ovmfgen-pvh-sb-refused", "mode": "pvh", "payload": "sb-refused", "verdict": "SECURE_BOOT_REFUSED",
         "expected": "SECURE_BOOT_REFUSED", "ok": True, "secure_boot": refused},
        {"name": "ovmfgen-pvh-sb-signed", "mode": "pvh", "payload": "sb-signed", "verdict": "OS_REACHED",
         "expected": "OS_REACHED", "ok": True, "secure_boot": on},
        {"name": "ovmfgen-pvh-shell", "mode": "pvh", "payload": "shell", "verdict": "SHELL_REACHED",
         "expected": "SHELL_REACHED", "ok": True, "secure_boot": nothing},
    ]
    kept = "the variable the first boot set was present after the restart (expected absent: stateless)"
    persisted = [{"name": "ovmfgen-hvm-sb-persist", "mode": "hvm", "payload": "sb-persist", "verdict": "OS_REACHED",
                  "expected": "OS_REACHED", "ok": False, "why_not": kept, "secure_boot": on}]
    (out / "xen-boot.json").write_text(json.dumps({"xen": "4.17.test", "seconds": 1.0, "runs": [], "guests": entries}))
    rec = cellmod.xen_boot_record([], out, night)
    got = {g["name"]: g.get("secure_boot") for g in rec["guests"]}
    assert got == {
        "ovmfgen-pvh-sb-refused": "Secure Boot on (firmware: SecureBoot=1; XenPlatformPei: pre-enrolled variable store; "
                                  'refused: BdsDxe: failed to load Boot0001 "x" from y: Access Denied -- rejected '
                                  "probably by Secure Boot)",
        "ovmfgen-pvh-sb-signed": "Secure Boot on (firmware: SecureBoot=1; XenPlatformPei: pre-enrolled variable store; "
                                 "Linux: enabled; efivar: 01)",
        "ovmfgen-pvh-shell": None}
    assert rec["ok"] and rec["verdict"] == "ALL_EXPECTED"
    html = report._boot_cell({"xen": rec}, ".")
    assert "pvh-sb-refused: SECURE_BOOT_REFUSED" in html and "rejected probably by Secure Boot" in html
    assert "pvh-sb-signed: OS_REACHED" in html and "Linux: enabled; efivar: 01" in html
    # A Secure Boot persistence guest whose restart kept the variable: not ok, and the report says why.
    (out / "xen-boot.json").write_text(json.dumps({"xen": "4.17.test", "seconds": 1.0, "runs": [],
                                                   "guests": entries + persisted}))
    rec = cellmod.xen_boot_record([], out, night)
    assert not rec["ok"] and rec["verdict"] == "ovmfgen-hvm-sb-persist OS_REACHED"
    assert rec["guests"][-1]["why_not"] == kept and "why_not" not in rec["guests"][0]
    html = report._boot_cell({"xen": rec}, ".")
    assert "hvm-sb-persist: OS_REACHED" in html and kept in html
