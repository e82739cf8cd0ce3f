"""What survives a restart: the Shell script the persistence guest runs twice, and what its output shows.

OvmfXen keeps UEFI variables in RAM (EmuVariableFvbRuntimeDxe); its PlatformBootManagerLib tries
to save them to ``\\NvVars`` on the first FAT file system it finds (NvVarsFileLib), when flash
variables are off. The guest boots twice with the same disk (the domain destroyed in between); each
time startup.nsh first reads back a non-volatile variable, a boot option and a file it writes to
the disk, then sets all three. Run 2's reading is the answer. A PVH guest's PV disk is found in time
only with xen-pvh's NvVars fix (overrides/xen-pvh/patches/PlatformBootManagerLib-NvVars-Xen-PVH.patch:
XenIo is connected before the look); without it only the disk's file survived.

The Secure Boot persistence guest (payload ``sb-persist``) asks the same of a Secure Boot build from
Linux: the Secure Boot disks' init (sbdisks.py) looks for the same variable in efivarfs, sets it, and
tries to append an unauthenticated entry to db, and prints one ``PERSIST_MARKER`` line per boot
(``sb_observe``). A Secure Boot firmware copies its pre-enrolled store over the RAM store at every
boot and keeps no ``\\NvVars``: the restart must not see the variable (``sb_stateless_problem``).
"""

from __future__ import annotations

import re

from ovmfgen.boot.xen.verdicts import PERSIST_MARKER

#: The markers startup.nsh prints (with ``@echo -off`` the Shell does not show the script's lines).
READ_BEGIN = "OVMFGEN-PERSIST-READ-BEGIN"
READ_END = "OVMFGEN-PERSIST-READ-END"
DONE = "OVMFGEN-PERSIST-DONE"
VARIABLE = "OvmfgenPersist"
#: Our own vendor GUID for the test variable.
VARIABLE_GUID = "5f3c9ad2-7a41-4a6e-9c1b-6f766d666765"
OPTION = "ovmfgen-persist-option"
DISK_FILE = "ovmfgen\\ran.txt"
#: The file a boot option may name (the disk holds it; bcfg wants an existing file).
TARGET = "ovmfgen\\target.efi"
_ANSI_RE = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]")


def startup_nsh() -> str:
    """startup.nsh: read back (variable, boot option, disk file, \\NvVars), then set them, then DONE."""
    return f"""@echo -off
echo {READ_BEGIN}
setvar {VARIABLE} -guid {VARIABLE_GUID}
bcfg boot dump
if exist fs0:\\{DISK_FILE} then
  echo disk-file: present
endif
if exist fs0:\\NvVars then
  echo nvvars-file: present
endif
echo {READ_END}
setvar {VARIABLE} -guid {VARIABLE_GUID} -nv -bs -rt =L"kept"
bcfg boot add 9 fs0:\\{TARGET} "{OPTION}"
echo ran > fs0:\\{DISK_FILE}
if exist fs0:\\NvVars then
  echo nvvars-file-after-set: present
endif
echo {DONE}
"""


def _reading(console: str) -> str | None:
    """The text between READ_BEGIN and READ_END of one run's console (ANSI codes removed), or None."""
    text = _ANSI_RE.sub("", console)
    start = text.find(READ_BEGIN)
    end = text.find(READ_END, start + 1)
    if start < 0 or end < 0:
        return None
    return text[start + len(READ_BEGIN):end]


def observe(console: str) -> dict[str, bool] | None:
    """What one run's reading saw: the variable, the boot option, the disk file, \\NvVars; None if it never read."""
    r = _reading(console)
    if r is None:
        return None
    text = _ANSI_RE.sub("", console)
    return {
        "variable": f"- {VARIABLE} -" in r,
        "boot_option": OPTION in r,
        "disk_file": "disk-file: present" in r,
        "nvvars_file": "nvvars-file: present" in r,
        "nvvars_file_after_set": "nvvars-file-after-set: present" in text,
        "done": DONE in text,
    }


def persistence_outcome(first: str, second: str) -> dict[str, object]:
    """The JSON record of a persistence guest from its two runs' consoles.

    ``persisted`` maps each thing set in run 1 to whether run 2 read it back (None when a run did
    not get that far); ``first``/``second`` are each run's own observations.
    """
    one, two = observe(first), observe(second)
    ready = one is not None and one["done"] and two is not None
    persisted = {k: (two[k] if ready and two is not None else None)
                 for k in ("variable", "boot_option", "disk_file", "nvvars_file")}
    return {"persisted": persisted, "first": one, "second": two}


_SB_LINE_RE = re.compile(rf"{PERSIST_MARKER} var=(\S+) db=(\S+) db-write=(\S+)")


def sb_observe(console: str) -> dict[str, str | None] | None:
    """One boot's ``PERSIST_MARKER var=BEFORE->SET db=DB db-write=WRITE`` line (the last one) as a record, or None.

    ``variable``: the test variable at boot (``absent``/``present``; None: no efivarfs); ``set``: setting it
    (``written``/``failed``); ``db``: db's efivarfs file before the append (``present``/``absent``);
    ``db_write``: appending to db (``written``, ``refused:EACCES``, ...). None where there was no efivarfs.
    """
    found = _SB_LINE_RE.findall(_ANSI_RE.sub("", console))
    if not found:
        return None
    var, db, write = found[-1]
    before, _, after = var.partition("->")
    return {"variable": None if before == "none" else before, "set": after or None,
            "db": None if db == "none" else db, "db_write": None if write == "none" else write}


def sb_persistence_outcome(first: str, second: str) -> dict[str, object]:
    """The JSON record of the Secure Boot persistence guest from its two boots' consoles (as
    ``persistence_outcome``): ``persisted.variable`` is whether the restart found the variable the first
    boot set (None when either boot did not say)."""
    one, two = sb_observe(first), sb_observe(second)
    ready = one is not None and one["set"] == "written" and two is not None and two["variable"] is not None
    return {"persisted": {"variable": (two["variable"] == "present") if ready and two is not None else None},
            "first": one, "second": two}


def sb_stateless_problem(outcome: dict[str, object] | None) -> str:
    """Why ``sb_persistence_outcome``'s record does not show a stateless Secure Boot firmware ('' when it does):
    the first boot found no variable, set it, and was refused the db append; the restart found no variable."""
    one = outcome.get("first") if outcome else None
    two = outcome.get("second") if outcome else None
    if not isinstance(one, dict):
        return "the first boot printed no persistence line"
    if one["variable"] != "absent" or one["set"] != "written":
        return f"the first boot did not find the variable absent and set it (var={one['variable']}->{one['set']})"
    if not str(one["db_write"]).startswith("refused"):
        return f"the first boot's unauthenticated db append was not refused (db-write={one['db_write']})"
    if not isinstance(two, dict):
        return "the restart printed no persistence line"
    if two["variable"] != "absent":
        return f"the variable the first boot set was {two['variable']} after the restart (expected absent: stateless)"
    return ""
