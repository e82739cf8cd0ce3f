"""ovmfgen.boot.xen.persist: the persistence guest's script and the reading of its two runs."""

from __future__ import annotations

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


def test_captured_pvh_restart_without_the_nvvars_fix_keeps_the_disk_but_not_the_variables():
    """Real consoles (tests/data/xen): a PVH guest of Xen 4.17 without the NvVars fix, run 1 then run 2 after
    xl destroy."""
    from pathlib import Path

    data = Path(__file__).parent / "data" / "xen"
    first = (data / "pvh-persist.console.log").read_text(errors="replace")
    second = (data / "pvh-persist-restart.console.log").read_text(errors="replace")
    out = persist.persistence_outcome(first, second)
    assert out["first"] == {"variable": False, "boot_option": False, "disk_file": False, "nvvars_file": False,
                            "nvvars_file_after_set": False, "done": True}
    assert out["persisted"] == {"variable": False, "boot_option": False, "disk_file": True, "nvvars_file": False}


def test_captured_hvm_restart_keeps_the_variable_the_boot_option_and_the_disk():
    """Real consoles (tests/data/xen): an HVM guest of Xen 4.17 (the disk as xvda: IDE and PV), run 1 then run 2.

    BDS had saved \\NvVars on the disk's FAT before the Shell ran (the platform PCI device and the IDE
    disk are connected before it looks), and run 2's BDS restored the variables from it."""
    from pathlib import Path

    data = Path(__file__).parent / "data" / "xen"
    first = (data / "hvm-persist.console.log").read_text(errors="replace")
    second = (data / "hvm-persist-restart.console.log").read_text(errors="replace")
    out = persist.persistence_outcome(first, second)
    assert out["first"] == {"variable": False, "boot_option": False, "disk_file": False, "nvvars_file": True,
                            "nvvars_file_after_set": True, "done": True}
    assert out["persisted"] == {"variable": True, "boot_option": True, "disk_file": True, "nvvars_file": True}


def test_captured_pvh_restart_with_the_nvvars_fix_keeps_everything():
    """Real consoles (tests/data/xen): the same guest with xen-pvh's NvVars fix (XenIo connected before the
    boot manager looks for \\NvVars): the file is written in run 1, and run 2 reads everything back."""
    from pathlib import Path

    data = Path(__file__).parent / "data" / "xen"
    first = (data / "pvh-persist-nvvars.console.log").read_text(errors="replace")
    second = (data / "pvh-persist-nvvars-restart.console.log").read_text(errors="replace")
    out = persist.persistence_outcome(first, second)
    assert out["first"] == {"variable": False, "boot_option": False, "disk_file": False, "nvvars_file": True,
                            "nvvars_file_after_set": True, "done": True}
    assert out["persisted"] == {"variable": True, "boot_option": True, "disk_file": True, "nvvars_file": True}
