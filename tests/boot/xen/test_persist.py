"""ovmfgen.boot.xen.persist: the persistence guest's script and the reading of its two runs."""

from __future__ import annotations


import pytest

from helpers import DATA
from ovmfgen.boot.xen import persist


def _console(*, variable: bool, option: bool, disk_file: bool, nvvars: bool, done: bool = True) -> str:
    lines = ["UEFI Interactive Shell v2.2", persist.READ_BEGIN]
    lines.append(f"{persist.VARIABLE_GUID.upper()} - {persist.VARIABLE} - 000A Bytes" if variable
                 else f"setvar: Unable to get - {persist.VARIABLE_GUID.upper()} - {persist.VARIABLE}")
    lines.append("Option: 00. Variable: Boot0000\n  Desc    - UiApp")
    if option:
        lines.append(f"Option: 01. Variable: Boot0009\n  Desc    - {persist.OPTION}")
    if disk_file:
        lines.append("disk-file: present")
    if nvvars:
        lines.append("nvvars-file: present")
    lines.append(persist.READ_END)
    if done:
        lines.append(persist.DONE)
    return "\x1b[0m" + "\r\n".join(lines) + "\r\nShell> "


def test_startup_nsh_reads_before_it_writes():
    nsh = persist.startup_nsh()
    assert nsh.startswith("@echo -off\n")
    read = nsh.index(persist.READ_BEGIN), nsh.index(persist.READ_END)
    assert read[0] < nsh.index(f"setvar {persist.VARIABLE} -guid {persist.VARIABLE_GUID}\n") < read[1]
    assert read[1] < nsh.index("-nv -bs -rt") < nsh.index("bcfg boot add") < nsh.index(persist.DONE)
    assert f'"{persist.OPTION}"' in nsh and persist.TARGET in nsh


def test_what_a_restart_kept():
    first = _console(variable=False, option=False, disk_file=False, nvvars=False)
    second = _console(variable=False, option=False, disk_file=True, nvvars=False)
    out = persist.persistence_outcome(first, second)
    assert out["persisted"] == {"variable": False, "boot_option": False, "disk_file": True, "nvvars_file": False}
    everything = _console(variable=True, option=True, disk_file=True, nvvars=True)
    assert all(persist.persistence_outcome(first, everything)["persisted"].values())


def test_a_run_that_did_not_finish_proves_nothing():
    first = _console(variable=False, option=False, disk_file=False, nvvars=False, done=False)
    second = _console(variable=True, option=True, disk_file=True, nvvars=True)
    assert set(persist.persistence_outcome(first, second)["persisted"].values()) == {None}
    assert persist.persistence_outcome(first, "BdsDxe: no bootable option")["second"] is None
    assert persist.observe("") is None


#: What a real guest's consoles (tests/data/xen: run 1, then run 2 after xl destroy) read, all Xen 4.17:
#: - pvh-persist: PVH without the NvVars fix: the disk keeps its file, the variables are lost;
#: - hvm-persist: HVM (the disk as xvda: IDE and PV): BDS had saved \NvVars on the disk's FAT before the
#:   Shell ran (the platform PCI device and the IDE disk are connected before it looks), and run 2's BDS
#:   restored the variables from it;
#: - pvh-persist-nvvars: PVH with xen-pvh's NvVars fix (XenIo connected before the boot manager looks for
#:   \NvVars): the file is written in run 1, and run 2 reads everything back.
_NOTHING_YET = {"variable": False, "boot_option": False, "disk_file": False, "nvvars_file": False,
                "nvvars_file_after_set": False, "done": True}
_NVVARS_WRITTEN = {**_NOTHING_YET, "nvvars_file": True, "nvvars_file_after_set": True}
_EVERYTHING = {"variable": True, "boot_option": True, "disk_file": True, "nvvars_file": True}
CAPTURED_RESTARTS = [
    ("pvh-persist", _NOTHING_YET, {"variable": False, "boot_option": False, "disk_file": True, "nvvars_file": False}),
    ("hvm-persist", _NVVARS_WRITTEN, _EVERYTHING),
    ("pvh-persist-nvvars", _NVVARS_WRITTEN, _EVERYTHING),
]


@pytest.mark.parametrize(("name", "first", "persisted"), CAPTURED_RESTARTS, ids=[c[0] for c in CAPTURED_RESTARTS])
def test_captured_restart_reads_what_survived(name: str, first: dict, persisted: dict) -> None:
    data = DATA / "xen"
    out = persist.persistence_outcome((data / f"{name}.console.log").read_text(errors="replace"),
                                      (data / f"{name}-restart.console.log").read_text(errors="replace"))
    assert out["first"] == first
    assert out["persisted"] == persisted


# --- the Secure Boot persistence guest ----------------------------------------------------------------


def test_sb_line_is_read_from_the_last_copy_and_none_means_no_efivarfs():
    line = "OVMFGEN-PERSIST var={} db={} db-write={}"
    text = "\r\n".join([line.format("present->failed", "present", "written"),
                        "[    2.2] " + line.format("absent->written", "absent", "refused:EACCES")])
    assert persist.sb_observe(text) == {"variable": "absent", "set": "written", "db": "absent",
                                        "db_write": "refused:EACCES"}
    assert persist.sb_observe(line.format("none", "none", "none")) == {"variable": None, "set": None, "db": None,
                                                                       "db_write": None}
    assert persist.sb_observe("OVMFGEN-PERSIST-READ-BEGIN\r\nOVMFGEN-OS-REACHED 6.1") is None


def test_captured_secure_boot_restart_kept_nothing():
    data = DATA / "xen" / "sb"
    first, second = ((data / f"xen-pvh-sb-persist{s}.console.log").read_text() for s in ("", "-restart"))
    seen = {"variable": "absent", "set": "written", "db": "present", "db_write": "refused:EPERM"}
    out = persist.sb_persistence_outcome(first, second)
    assert out == {"persisted": {"variable": False}, "first": seen, "second": seen}
    assert persist.sb_stateless_problem(out) == ""
    # Had the store kept it, the restart would have said so, and that fails the guest.
    kept = persist.sb_persistence_outcome(first, second.replace("var=absent->", "var=present->"))
    assert kept["persisted"] == {"variable": True}
    assert persist.sb_stateless_problem(kept) == ("the variable the first boot set was present after the restart "
                                                  "(expected absent: stateless)")
    assert persist.sb_stateless_problem(None) == "the first boot printed no persistence line"
